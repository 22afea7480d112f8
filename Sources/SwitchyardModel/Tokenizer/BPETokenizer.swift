import Foundation

/// An entry of tokenizer.json's `added_tokens`: matched in the raw text
/// before normalization and never split by BPE.
struct AddedToken: Sendable {
    let id: Int32
    let content: String
    let special: Bool
    let lstrip: Bool
    let rstrip: Bool
}

/// The `post_processor` section: which special tokens surround an encoding.
struct PostProcessor: Sendable {
    var prefix: [Int32] = []
    var suffix: [Int32] = []

    init(json: Any?, vocab: (String) -> Int32?, file: String) throws {
        guard let obj = json as? [String: Any] else { return }
        switch obj["type"] as? String ?? "" {
        case "ByteLevel":
            break
        case "Sequence":
            for p in obj["processors"] as? [Any] ?? [] {
                let inner = try PostProcessor(json: p, vocab: vocab, file: file)
                prefix += inner.prefix
                suffix += inner.suffix
            }
        case "TemplateProcessing":
            let specials = obj["special_tokens"] as? [String: Any] ?? [:]
            var seenSequence = false
            for item in obj["single"] as? [Any] ?? [] {
                guard let entry = item as? [String: Any] else { continue }
                if entry["Sequence"] != nil { seenSequence = true; continue }
                guard let sp = entry["SpecialToken"] as? [String: Any], let name = sp["id"] as? String else { continue }
                var ids: [Int32] = []
                if let def = specials[name] as? [String: Any], let list = def["ids"] as? [Any] {
                    ids = list.compactMap { ($0 as? NSNumber).map { Int32($0.intValue) } }
                } else if let id = vocab(name) {
                    ids = [id]
                }
                if seenSequence { suffix += ids } else { prefix += ids }
            }
        case let other:
            throw TokenizerError.unsupported(file: file, component: "post-processor \(other)")
        }
    }
}

/// A Hugging Face `tokenizers` BPE tokenizer loaded from tokenizer.json:
/// byte-level BPE (GPT-2, Qwen, OLMoE) and SentencePiece-style BPE with byte
/// fallback (Llama, Mixtral) are both this class with different components.
public final class BPETokenizer: Tokenizer, @unchecked Sendable {
    let model: BPEModel
    let addedTokens: [AddedToken]
    let addedById: [Int32: AddedToken]
    let normalizer: Normalizer?
    let preTokenizer: PreTokenizer?
    let postProcessor: PostProcessor
    let decoder: TokenDecoder?
    public let bosTokenId: Int32?
    public let eosTokenId: Int32?
    public let vocabSize: Int
    /// Raw tokenizer_config.json, for the chat template.
    public let tokenizerConfig: [String: Any]

    public init(json data: Data, tokenizerConfig configData: Data? = nil, file: String = "tokenizer.json") throws {
        guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw TokenizerError.invalid(file: file, reason: "not a JSON object")
        }
        guard let modelJSON = root["model"] as? [String: Any] else {
            throw TokenizerError.invalid(file: file, reason: "no model section")
        }
        model = try BPEModel(json: modelJSON, file: file)
        var added: [AddedToken] = []
        for item in root["added_tokens"] as? [Any] ?? [] {
            guard let t = item as? [String: Any], let id = (t["id"] as? NSNumber)?.intValue,
                  let content = t["content"] as? String else { continue }
            added.append(AddedToken(id: Int32(id), content: content, special: t["special"] as? Bool ?? false,
                                    lstrip: t["lstrip"] as? Bool ?? false, rstrip: t["rstrip"] as? Bool ?? false))
        }
        // Longest first, so overlapping tokens match leftmost-longest.
        addedTokens = added.sorted { $0.content.utf8.count > $1.content.utf8.count }
        addedById = Dictionary(added.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        normalizer = try Normalizer(json: root["normalizer"], file: file)
        preTokenizer = try PreTokenizer(json: root["pre_tokenizer"], file: file)
        decoder = try TokenDecoder(json: root["decoder"], file: file)
        let m = model
        let addedMap = Dictionary(added.map { ($0.content, $0.id) }, uniquingKeysWith: { a, _ in a })
        let lookup: (String) -> Int32? = { addedMap[$0] ?? m.vocab[$0] }
        postProcessor = try PostProcessor(json: root["post_processor"], vocab: lookup, file: file)
        vocabSize = max(model.idToToken.count, (added.map { Int($0.id) }.max() ?? -1) + 1)
        let config = configData.flatMap { (try? JSONSerialization.jsonObject(with: $0)) as? [String: Any] } ?? [:]
        tokenizerConfig = config
        func tokenName(_ v: Any?) -> String? {
            if let s = v as? String { return s }
            return (v as? [String: Any])?["content"] as? String
        }
        bosTokenId = tokenName(config["bos_token"]).flatMap(lookup)
        eosTokenId = tokenName(config["eos_token"]).flatMap(lookup)
    }

    public func tokenId(_ token: String) -> Int32? {
        addedTokens.first(where: { $0.content == token })?.id ?? model.vocab[token]
    }

    public var maxTokenBytes: Int { max(model.maxTokenBytes, addedTokens.first?.content.utf8.count ?? 0) }

    public func encode(_ text: String, addSpecialTokens: Bool) -> [Int32] {
        encode(text, addSpecialTokens: addSpecialTokens, maxTokens: .max)
    }

    /// Stops as soon as more than `maxTokens` ids are out (or the task is
    /// cancelled): a prompt that cannot fit is not encoded to its end.
    public func encode(_ text: String, addSpecialTokens: Bool, maxTokens: Int) -> [Int32] {
        var ids: [Int32] = []
        if addSpecialTokens { ids += postProcessor.prefix }
        var isFirst = true
        for segment in splitOnAddedTokens(text) {
            switch segment {
            case .added(let id):
                ids.append(id)
            case .text(let s):
                var normalized = s
                if let n = normalizer { normalized = n.apply(normalized) }
                guard !normalized.isEmpty else { continue }
                let words = preTokenizer?.apply([normalized], isFirst: isFirst) ?? [normalized]
                for w in words where !w.isEmpty {
                    model.encode(word: w, into: &ids)
                    if ids.count > maxTokens || Task.isCancelled { return ids }
                }
            }
            isFirst = false
        }
        if addSpecialTokens { ids += postProcessor.suffix }
        return ids
    }

    public func decode(_ ids: [Int32], skipSpecialTokens: Bool) -> String {
        var tokens: [String] = []
        tokens.reserveCapacity(ids.count)
        for id in ids {
            if let a = addedById[id] {
                if skipSpecialTokens && a.special { continue }
                tokens.append(a.content)
            } else if id >= 0, Int(id) < model.idToToken.count {
                tokens.append(model.idToToken[Int(id)])
            }
        }
        guard let decoder else { return tokens.joined() }
        return decoder.apply(tokens).joined()
    }

    enum Segment { case text(String), added(Int32) }

    /// Splits the raw text around added tokens (leftmost, then longest match),
    /// honouring their `lstrip` / `rstrip` whitespace absorption.
    func splitOnAddedTokens(_ text: String) -> [Segment] {
        guard !addedTokens.isEmpty else { return [.text(text)] }
        let bytes = Array(text.utf8)
        let patterns = addedTokens.map { Array($0.content.utf8) }
        var segments: [Segment] = []
        var textStart = 0
        var i = 0
        while i < bytes.count {
            var matched: Int?
            for (k, p) in patterns.enumerated() where !p.isEmpty && p.count <= bytes.count - i {
                if p[0] == bytes[i] && bytes[i..<(i + p.count)].elementsEqual(p) { matched = k; break }
            }
            guard let k = matched else { i += 1; continue }
            let token = addedTokens[k]
            var textEnd = i
            if token.lstrip {
                while textEnd > textStart, Self.isSpace(bytes[textEnd - 1]) { textEnd -= 1 }
            }
            if textEnd > textStart { segments.append(.text(String(decoding: bytes[textStart..<textEnd], as: UTF8.self))) }
            segments.append(.added(token.id))
            i += patterns[k].count
            if token.rstrip { while i < bytes.count, Self.isSpace(bytes[i]) { i += 1 } }
            textStart = i
        }
        if textStart < bytes.count { segments.append(.text(String(decoding: bytes[textStart...], as: UTF8.self))) }
        return segments
    }

    static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D }
}
