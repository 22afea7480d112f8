import Foundation

/// How a Split pre-tokenizer treats the matches of its pattern.
enum SplitBehavior: String, Sendable {
    case removed = "Removed"
    case isolated = "Isolated"
    case mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext"
    case contiguous = "Contiguous"
}

/// A compiled pattern; NSRegularExpression (ICU) understands the Unicode
/// classes and look-ahead the GPT-2 and Qwen patterns use.
struct Pattern: @unchecked Sendable {
    let regex: NSRegularExpression

    init(regex: String, file: String) throws {
        do { self.regex = try NSRegularExpression(pattern: regex) } catch {
            throw TokenizerError.invalid(file: file, reason: "pre-tokenizer regex does not compile: \(regex)")
        }
    }

    init(literal: String) {
        regex = try! NSRegularExpression(pattern: NSRegularExpression.escapedPattern(for: literal))
    }

    /// Match ranges as String index ranges.
    func matches(in s: String) -> [Range<String.Index>] {
        let ns = NSRange(s.startIndex..<s.endIndex, in: s)
        return regex.matches(in: s, range: ns).compactMap { Range($0.range, in: s) }
    }
}

/// The `pre_tokenizer` section of tokenizer.json: splits normalized text
/// into words that BPE encodes independently.
indirect enum PreTokenizer: Sendable {
    case sequence([PreTokenizer])
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    case split(Pattern, SplitBehavior, invert: Bool)
    case metaspace(replacement: String, prependScheme: String, split: Bool)
    case digits(individual: Bool)
    case whitespaceSplit

    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let gpt2 = try! Pattern(regex: gpt2Pattern, file: "")

    init?(json: Any?, file: String) throws {
        guard let obj = json as? [String: Any] else { return nil }
        let type = obj["type"] as? String ?? ""
        switch type {
        case "Sequence":
            let items = obj["pretokenizers"] as? [Any] ?? []
            self = .sequence(try items.compactMap { try PreTokenizer(json: $0, file: file) })
        case "ByteLevel":
            self = .byteLevel(addPrefixSpace: obj["add_prefix_space"] as? Bool ?? true,
                              useRegex: obj["use_regex"] as? Bool ?? true)
        case "Split":
            let pat = obj["pattern"] as? [String: Any] ?? [:]
            let pattern: Pattern
            if let r = pat["Regex"] as? String { pattern = try Pattern(regex: r, file: file) }
            else if let l = pat["String"] as? String { pattern = Pattern(literal: l) }
            else { throw TokenizerError.invalid(file: file, reason: "Split pre-tokenizer without a pattern") }
            guard let behavior = SplitBehavior(rawValue: obj["behavior"] as? String ?? "") else {
                throw TokenizerError.unsupported(file: file, component: "Split behavior \(obj["behavior"] ?? "nil")")
            }
            self = .split(pattern, behavior, invert: obj["invert"] as? Bool ?? false)
        case "Metaspace":
            let scheme: String
            if let s = obj["prepend_scheme"] as? String { scheme = s }
            else { scheme = (obj["add_prefix_space"] as? Bool ?? true) ? "always" : "never" }
            self = .metaspace(replacement: obj["replacement"] as? String ?? "▁", prependScheme: scheme,
                              split: obj["split"] as? Bool ?? true)
        case "Digits":
            self = .digits(individual: obj["individual_digits"] as? Bool ?? false)
        case "WhitespaceSplit":
            self = .whitespaceSplit
        default:
            throw TokenizerError.unsupported(file: file, component: "pre-tokenizer \(type)")
        }
    }

    /// `isFirst`: whether this text starts the input (not after an added token),
    /// which Metaspace's `prepend_scheme: first` depends on.
    func apply(_ pieces: [String], isFirst: Bool) -> [String] {
        switch self {
        case .sequence(let items):
            return items.reduce(pieces) { $1.apply($0, isFirst: isFirst) }
        case let .byteLevel(addPrefixSpace, useRegex):
            var out: [String] = []
            for p in pieces {
                let text = addPrefixSpace && !p.hasPrefix(" ") ? " " + p : p
                let words = useRegex ? Self.split(text, PreTokenizer.gpt2, .isolated, invert: false) : [text]
                for w in words { out.append(ByteLevelAlphabet.encode(Substring(w))) }
            }
            return out
        case let .split(pattern, behavior, invert):
            return pieces.flatMap { Self.split($0, pattern, behavior, invert: invert) }
        case let .metaspace(replacement, scheme, split):
            return pieces.flatMap { p -> [String] in
                var s = p.replacingOccurrences(of: " ", with: replacement)
                if (scheme == "always" || (scheme == "first" && isFirst)) && !s.hasPrefix(replacement) {
                    s = replacement + s
                }
                guard split else { return [s] }
                return Self.split(s, Pattern(literal: replacement), .mergedWithNext, invert: false)
            }
        case .digits(let individual):
            let pattern = try! Pattern(regex: individual ? "\\p{N}" : "\\p{N}+", file: "")
            return pieces.flatMap { Self.split($0, pattern, .isolated, invert: false) }
        case .whitespaceSplit:
            return pieces.flatMap { $0.split(whereSeparator: { $0.isWhitespace }).map(String.init) }
        }
    }

    /// Hugging Face's split semantics for one piece.
    static func split(_ s: String, _ pattern: Pattern, _ behavior: SplitBehavior, invert: Bool) -> [String] {
        guard !s.isEmpty else { return [] }
        // (range, isMatch) covering the whole string.
        var spans: [(Range<String.Index>, Bool)] = []
        var cursor = s.startIndex
        for m in pattern.matches(in: s) where !m.isEmpty {
            if cursor < m.lowerBound { spans.append((cursor..<m.lowerBound, false)) }
            spans.append((m, true))
            cursor = m.upperBound
        }
        if cursor < s.endIndex { spans.append((cursor..<s.endIndex, false)) }
        if invert { spans = spans.map { ($0.0, !$0.1) } }
        var out: [String] = []
        switch behavior {
        case .removed:
            for (r, isMatch) in spans where !isMatch { out.append(String(s[r])) }
        case .isolated:
            for (r, _) in spans { out.append(String(s[r])) }
        case .contiguous:
            var prev: Bool?
            for (r, isMatch) in spans {
                if prev == isMatch, isMatch { out[out.count - 1] += s[r] } else { out.append(String(s[r])) }
                prev = isMatch
            }
        case .mergedWithPrevious:
            var prevWasMatch = false
            for (r, isMatch) in spans {
                if isMatch, !out.isEmpty, !prevWasMatch { out[out.count - 1] += s[r] } else { out.append(String(s[r])) }
                prevWasMatch = isMatch
            }
        case .mergedWithNext:
            // Mirror image of mergedWithPrevious: walk backwards, a match joins
            // the piece after it unless that piece is itself a match.
            var reversed: [String] = []
            var nextWasMatch = false
            for (r, isMatch) in spans.reversed() {
                if isMatch, !reversed.isEmpty, !nextWasMatch { reversed[reversed.count - 1] = String(s[r]) + reversed[reversed.count - 1] }
                else { reversed.append(String(s[r])) }
                nextWasMatch = isMatch
            }
            out = reversed.reversed()
        }
        return out
    }
}
