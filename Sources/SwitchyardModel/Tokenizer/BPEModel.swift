import Foundation
import Synchronization

/// The `model` section of tokenizer.json for `type: BPE`: a vocabulary and a
/// ranked merge list. A word starts as one symbol per character (or per UTF-8
/// byte with byte fallback) and the adjacent pair with the lowest merge rank
/// is merged, leftmost first, until no ranked pair remains.
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
    private let cache = Mutex<[String: [Int32]]>([:])

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
        cache.withLock { c in
            if c.count > 100_000 { c.removeAll(keepingCapacity: true) }
            c[word] = ids
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
        while symbols.count > 1 {
            var bestRank = Int32.max
            var bestPos = -1
            var bestId: Int32 = 0
            for i in 0..<(symbols.count - 1) {
                let key = UInt64(UInt32(bitPattern: symbols[i])) << 32 | UInt64(UInt32(bitPattern: symbols[i + 1]))
                if let m = merges[key], m.rank < bestRank {
                    bestRank = m.rank
                    bestPos = i
                    bestId = m.id
                }
            }
            if bestPos < 0 { break }
            symbols[bestPos] = bestId
            symbols.remove(at: bestPos + 1)
        }
        return symbols
    }
}
