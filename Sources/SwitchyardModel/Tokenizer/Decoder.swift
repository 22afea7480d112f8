import Foundation

/// The `decoder` section of tokenizer.json. Like Hugging Face's, decoders
/// transform the list of token strings step by step; the result is joined.
indirect enum TokenDecoder: Sendable {
    case sequence([TokenDecoder])
    case byteLevel
    case replace(pattern: String, content: String)
    case byteFallback
    case fuse
    case strip(content: Character, start: Int, stop: Int)
    case metaspace(replacement: String, prependScheme: String)

    init?(json: Any?, file: String) throws {
        guard let obj = json as? [String: Any] else { return nil }
        let type = obj["type"] as? String ?? ""
        switch type {
        case "Sequence":
            let items = obj["decoders"] as? [Any] ?? []
            self = .sequence(try items.compactMap { try TokenDecoder(json: $0, file: file) })
        case "ByteLevel": self = .byteLevel
        case "Replace":
            guard let pattern = (obj["pattern"] as? [String: Any])?["String"] as? String else {
                throw TokenizerError.unsupported(file: file, component: "Replace decoder with a regex pattern")
            }
            self = .replace(pattern: pattern, content: obj["content"] as? String ?? "")
        case "ByteFallback": self = .byteFallback
        case "Fuse": self = .fuse
        case "Strip":
            let content = (obj["content"] as? String)?.first ?? " "
            self = .strip(content: content, start: obj["start"] as? Int ?? 0, stop: obj["stop"] as? Int ?? 0)
        case "Metaspace":
            let scheme: String
            if let s = obj["prepend_scheme"] as? String { scheme = s }
            else { scheme = (obj["add_prefix_space"] as? Bool ?? true) ? "always" : "never" }
            self = .metaspace(replacement: obj["replacement"] as? String ?? "▁", prependScheme: scheme)
        default:
            throw TokenizerError.unsupported(file: file, component: "decoder \(type)")
        }
    }

    func apply(_ tokens: [String]) -> [String] {
        switch self {
        case .sequence(let items):
            return items.reduce(tokens) { $1.apply($0) }
        case .byteLevel:
            let bytes = tokens.flatMap { ByteLevelAlphabet.decode($0) }
            return [String(decoding: bytes, as: UTF8.self)]
        case let .replace(pattern, content):
            return tokens.map { $0.replacingOccurrences(of: pattern, with: content) }
        case .byteFallback:
            var out: [String] = []
            var pending: [UInt8] = []
            func flush() {
                guard !pending.isEmpty else { return }
                if let s = String(validating: pending, as: UTF8.self) { out.append(s) }
                else { out.append(contentsOf: Array(repeating: "\u{FFFD}", count: pending.count)) }
                pending.removeAll()
            }
            for t in tokens {
                if let b = TokenDecoder.byteValue(t) { pending.append(b) } else { flush(); out.append(t) }
            }
            flush()
            return out
        case .fuse:
            return [tokens.joined()]
        case let .strip(content, start, stop):
            return tokens.map { t in
                var s = Substring(t)
                var n = 0
                while n < start, s.first == content { s = s.dropFirst(); n += 1 }
                n = 0
                while n < stop, s.last == content { s = s.dropLast(); n += 1 }
                return String(s)
            }
        case let .metaspace(replacement, scheme):
            // As in tokenizers: in the first token every replacement character
            // is dropped (it stood for the prepended space), elsewhere it is a space.
            return tokens.enumerated().map { i, t in
                t.replacingOccurrences(of: replacement, with: i == 0 && scheme != "never" ? "" : " ")
            }
        }
    }

    /// `<0x41>` → 0x41.
    static func byteValue(_ t: String) -> UInt8? {
        let u = Array(t.utf8)
        guard u.count == 6, u[0] == UInt8(ascii: "<"), u[1] == UInt8(ascii: "0"), u[2] == UInt8(ascii: "x"),
              u[5] == UInt8(ascii: ">") else { return nil }
        return UInt8(String(decoding: u[3...4], as: UTF8.self), radix: 16)
    }
}
