import Foundation
import Synchronization

/// The `model` section of tokenizer.json for `type: BPE`: a vocabulary and a
/// ranked merge list. A word starts as one symbol per character (or per UTF-8
/// byte with byte fallback) and the adjacent pair with the lowest merge rank
/// is merged, leftmost first, until no ranked pair remains. As in Hugging
/// Face's tokenizers the candidate pairs sit in a priority queue over a
/// linked list of symbols, so a word of n characters costs O(n log n), not
/// the O(n²) of rescanning the word for every merge (the server issue
/// reported 6 s for a 32,000-character word that way).
final class BPEModel: Sendable {
    let vocab: [String: Int32]
    let idToToken: [String]
    /// `(left << 32 | right)` → (rank, merged id).
    let merges: [UInt64: (rank: Int32, id: Int32)]
    let unkId: Int32?
    let fuseUnk: Bool
    let byteFallback: Bool
    let ignoreMerges: Bool
    let byteTokenIds: [Int32?]
    /// The longest token in bytes of text it can stand for (an upper bound:
    /// a SentencePiece `▁` counts 3 bytes for one space, `<0x41>` 6 for one).
    let maxTokenBytes: Int
    private let cache = Mutex<[String: [Int32]]>([:])
    /// Words longer than this are not cached (they are rare, and a cache of
    /// megabyte keys would hold the memory of hostile input).
    static let cachedWordLimit = 256

    init(json obj: [String: Any], file: String) throws {
        guard (obj["type"] as? String ?? "BPE") == "BPE" else {
            throw TokenizerError.unsupported(file: file, component: "model type \(obj["type"] ?? "nil")")
        }
        guard let v = obj["vocab"] as? [String: Any] else {
            throw TokenizerError.invalid(file: file, reason: "model.vocab is missing")
        }
        var vocab: [String: Int32] = [:]
        vocab.reserveCapacity(v.count)
        var maxId = -1
        for (tok, idAny) in v {
            guard let id = (idAny as? NSNumber)?.intValue else {
                throw TokenizerError.invalid(file: file, reason: "model.vocab[\(tok)] is not an integer")
            }
            vocab[tok] = Int32(id)
            maxId = max(maxId, id)
        }
        var idToToken = [String](repeating: "", count: maxId + 1)
        for (tok, id) in vocab { idToToken[Int(id)] = tok }
        var merges: [UInt64: (rank: Int32, id: Int32)] = [:]
        let rawMerges = obj["merges"] as? [Any] ?? []
        merges.reserveCapacity(rawMerges.count)
        for (rank, m) in rawMerges.enumerated() {
            let pair: [String]
            if let s = m as? String {
                // Old format "a b"; neither side contains a space.
                guard let space = s.firstIndex(of: " ") else { continue }
                pair = [String(s[..<space]), String(s[s.index(after: space)...])]
            } else if let a = m as? [String], a.count == 2 {
                pair = a
            } else {
                throw TokenizerError.invalid(file: file, reason: "merge \(rank) is neither \"a b\" nor [a, b]")
            }
            guard let l = vocab[pair[0]], let r = vocab[pair[1]], let id = vocab[pair[0] + pair[1]] else { continue }
            let key = UInt64(UInt32(bitPattern: l)) << 32 | UInt64(UInt32(bitPattern: r))
            if merges[key] == nil { merges[key] = (Int32(rank), id) }
        }
        self.vocab = vocab
        maxTokenBytes = vocab.keys.reduce(1) { max($0, $1.utf8.count) }
        self.idToToken = idToToken
        self.merges = merges
        unkId = (obj["unk_token"] as? String).flatMap { vocab[$0] }
        fuseUnk = obj["fuse_unk"] as? Bool ?? false
        byteFallback = obj["byte_fallback"] as? Bool ?? false
        ignoreMerges = obj["ignore_merges"] as? Bool ?? false
        byteTokenIds = (0..<256).map { vocab[String(format: "<0x%02X>", $0)] }
    }

    func encode(word: String, into out: inout [Int32]) {
        if let cached = cache.withLock({ $0[word] }) {
            out.append(contentsOf: cached)
            return
        }
        let ids = encodeUncached(word)
        if word.utf8.count <= Self.cachedWordLimit {
            cache.withLock { c in
                if c.count > 100_000 { c.removeAll(keepingCapacity: true) }
                c[word] = ids
            }
        }
        out.append(contentsOf: ids)
    }

    private func encodeUncached(_ word: String) -> [Int32] {
        if ignoreMerges, let id = vocab[word] { return [id] }
        var symbols: [Int32] = []
        symbols.reserveCapacity(word.unicodeScalars.count)
        var lastWasUnk = false
        for ch in word {
            // HF splits words into chars (Unicode scalars in Rust); a Swift
            // Character may hold several scalars, so go through scalars.
            for scalar in ch.unicodeScalars {
                let s = String(scalar)
                if let id = vocab[s] {
                    symbols.append(id)
                    lastWasUnk = false
                } else if byteFallback, let byteIds = Optional(Array(s.utf8).map { byteTokenIds[Int($0)] }),
                          byteIds.allSatisfy({ $0 != nil }) {
                    symbols.append(contentsOf: byteIds.map { $0! })
                    lastWasUnk = false
                } else if let unk = unkId {
                    if !(fuseUnk && lastWasUnk) { symbols.append(unk) }
                    lastWasUnk = true
                }
            }
        }
        return mergeAll(symbols)
    }

    @inline(__always)
    private func merge(_ left: Int32, _ right: Int32) -> (rank: Int32, id: Int32)? {
        merges[UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))]
    }

    /// Applies merges lowest rank first, leftmost first among equal ranks.
    /// Symbols form a linked list; the queue holds (rank, position) of every
    /// pair that could merge, and an entry whose pair has since changed is
    /// skipped when it comes up (ranks are unique per pair).
    func mergeAll(_ start: [Int32]) -> [Int32] {
        let n = start.count
        guard n > 1 else { return start }
        var symbol = start
        var next = (0..<n).map { $0 + 1 }
        var prev = (0..<n).map { $0 - 1 }
        next[n - 1] = -1
        var queue = MergeQueue()
        for i in 0..<(n - 1) { if let m = merge(symbol[i], symbol[i + 1]) { queue.push(rank: m.rank, position: i) } }
        while let (rank, i) = queue.pop() {
            let j = next[i]
            guard symbol[i] >= 0, j >= 0, let m = merge(symbol[i], symbol[j]), m.rank == rank else { continue }
            symbol[i] = m.id
            symbol[j] = -1
            next[i] = next[j]
            if next[j] >= 0 { prev[next[j]] = i }
            if prev[i] >= 0, let p = merge(symbol[prev[i]], symbol[i]) { queue.push(rank: p.rank, position: prev[i]) }
            if next[i] >= 0, let q = merge(symbol[i], symbol[next[i]]) { queue.push(rank: q.rank, position: i) }
        }
        var out: [Int32] = []
        var i = 0
        while i >= 0 {
            out.append(symbol[i])
            i = next[i]
        }
        return out
    }


}

/// A binary min-heap of merge candidates ordered by (rank, position).
struct MergeQueue {
    private var items: [(rank: Int32, position: Int)] = []

    @inline(__always)
    private static func less(_ a: (rank: Int32, position: Int), _ b: (rank: Int32, position: Int)) -> Bool {
        a.rank != b.rank ? a.rank < b.rank : a.position < b.position
    }

    mutating func push(rank: Int32, position: Int) {
        items.append((rank, position))
        var c = items.count - 1
        while c > 0 {
            let p = (c - 1) / 2
            guard Self.less(items[c], items[p]) else { break }
            items.swapAt(c, p)
            c = p
        }
    }

    mutating func pop() -> (Int32, Int)? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var p = 0
            while true {
                let l = 2 * p + 1, r = l + 1
                var m = p
                if l < items.count && Self.less(items[l], items[m]) { m = l }
                if r < items.count && Self.less(items[r], items[m]) { m = r }
                if m == p { break }
                items.swapAt(p, m)
                p = m
            }
        }
        return (top.rank, top.position)
    }
}
