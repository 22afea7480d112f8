import Foundation

/// The `normalizer` section of tokenizer.json.
indirect enum Normalizer: Sendable {
    case sequence([Normalizer])
    case nfc, nfd, nfkc, nfkd
    case lowercase
    case prepend(String)
    case replace(pattern: String, content: String)
    case strip(left: Bool, right: Bool)

    init?(json: Any?, file: String) throws {
        guard let obj = json as? [String: Any] else { return nil }
        let type = obj["type"] as? String ?? ""
        switch type {
        case "Sequence":
            let items = obj["normalizers"] as? [Any] ?? []
            self = .sequence(try items.compactMap { try Normalizer(json: $0, file: file) })
        case "NFC": self = .nfc
        case "NFD": self = .nfd
        case "NFKC": self = .nfkc
        case "NFKD": self = .nfkd
        case "Lowercase": self = .lowercase
        case "Prepend": self = .prepend(obj["prepend"] as? String ?? "")
        case "Replace":
            guard let pattern = (obj["pattern"] as? [String: Any])?["String"] as? String else {
                throw TokenizerError.unsupported(file: file, component: "Replace normalizer with a regex pattern")
            }
            self = .replace(pattern: pattern, content: obj["content"] as? String ?? "")
        case "Strip":
            self = .strip(left: obj["strip_left"] as? Bool ?? true, right: obj["strip_right"] as? Bool ?? true)
        default:
            throw TokenizerError.unsupported(file: file, component: "normalizer \(type)")
        }
    }

    func apply(_ s: String) -> String {
        switch self {
        case .sequence(let items): return items.reduce(s) { $1.apply($0) }
        case .nfc: return s.precomposedStringWithCanonicalMapping
        case .nfd: return s.decomposedStringWithCanonicalMapping
        case .nfkc: return s.precomposedStringWithCompatibilityMapping
        case .nfkd: return s.decomposedStringWithCompatibilityMapping
        case .lowercase: return s.lowercased()
        case .prepend(let p): return s.isEmpty ? s : p + s
        case .replace(let pattern, let content): return s.replacingOccurrences(of: pattern, with: content)
        case .strip(let left, let right):
            var sub = Substring(s)
            if left { sub = sub.drop(while: { $0.isWhitespace }) }
            if right { while let last = sub.last, last.isWhitespace { sub = sub.dropLast() } }
            return String(sub)
        }
    }
}
