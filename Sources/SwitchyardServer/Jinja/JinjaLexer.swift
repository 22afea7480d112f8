/// Splits a template into text and tags, applying Jinja's whitespace rules as
/// Hugging Face renders chat templates (`trim_blocks` and `lstrip_blocks` on):
/// a block or comment tag drops the newline after it and the indentation
/// before it on its line; `{%-` / `-%}` (and the same on `{{ }}` and
/// `{# #}`) strip all whitespace on that side; `{%+` keeps the indentation.
struct JinjaLexer {
    enum Segment: Equatable {
        case text(String)
        case output([JinjaToken])
        case statement([JinjaToken])
    }

    static func segments(_ source: String) throws(JinjaError) -> [Segment] {
        let s = Array(source.unicodeScalars)
        var out: [Segment] = []
        var text: [Unicode.Scalar] = []
        var i = 0
        // Whether the last tag's match ended a line (or nothing came yet):
        // then a block tag at the very start of the following text is at
        // the start of its line, as Jinja's lexer tracks it.
        var lineStarting = true
        func flushText() {
            if !text.isEmpty { out.append(.text(String(String.UnicodeScalarView(text)))) }
            text = []
        }
        while i < s.count {
            let opens = i + 1 < s.count && s[i] == "{" && (s[i + 1] == "{" || s[i + 1] == "%" || s[i + 1] == "#")
            if !opens {
                text.append(s[i])
                i += 1
                continue
            }
            let kind = s[i + 1]
            let close: Unicode.Scalar = kind == "{" ? "}" : kind
            var start = i + 2
            let modifier: Unicode.Scalar? = start < s.count && (s[start] == "-" || s[start] == "+") ? s[start] : nil
            if modifier != nil { start += 1 }
            if modifier == "-" {
                while let last = text.last, last.properties.isWhitespace { text.removeLast() }
            } else if modifier == nil && kind != "{" {
                // lstrip_blocks: a block or comment tag with only spaces or
                // tabs before it on its line loses them.
                var j = text.count
                while j > 0, text[j - 1] == " " || text[j - 1] == "\t" { j -= 1 }
                if j > 0 ? text[j - 1] == "\n" : lineStarting { text.removeLast(text.count - j) }
            }
            // Find the closing delimiter, skipping string literals in tags.
            var j = start
            var quote: Unicode.Scalar?
            var end: Int?
            while j + 1 < s.count {
                if let q = quote {
                    if s[j] == "\\" { j += 2; continue }
                    if s[j] == q { quote = nil }
                } else if kind != "#" && (s[j] == "'" || s[j] == "\"") {
                    quote = s[j]
                } else if s[j] == close && s[j + 1] == "}" {
                    end = j
                    break
                }
                j += 1
            }
            guard let end else {
                throw .syntax("unclosed `{\(Character(kind))` tag at character \(i)")
            }
            var innerEnd = end
            var rightStrip = false, keepNewline = false
            if innerEnd > start, s[innerEnd - 1] == "-" { rightStrip = true; innerEnd -= 1 }
            else if innerEnd > start, s[innerEnd - 1] == "+", kind != "{" { keepNewline = true; innerEnd -= 1 }
            flushText()
            let inner = String(String.UnicodeScalarView(s[start..<max(start, innerEnd)]))
            switch kind {
            case "{": out.append(.output(try JinjaToken.tokenize(inner)))
            case "%": out.append(.statement(try JinjaToken.tokenize(inner)))
            default: break
            }
            i = end + 2
            lineStarting = false
            if rightStrip {
                while i < s.count, s[i].properties.isWhitespace { lineStarting = s[i] == "\n"; i += 1 }
            } else if kind != "{" && !keepNewline {
                // trim_blocks: the newline right after a block or comment tag.
                if i < s.count, s[i] == "\n" { i += 1; lineStarting = true }
                else if i + 1 < s.count, s[i] == "\r", s[i + 1] == "\n" { i += 2; lineStarting = true }
            }
        }
        flushText()
        return out
    }
}

enum JinjaToken: Equatable {
    case name(String)
    case string(String)
    case int(Int)
    case double(Double)
    case op(String)

    static let operators = ["//", "**", "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "~",
                            "(", ")", "[", "]", "{", "}", ",", ".", ":", "|", "="]

    static func tokenize(_ source: String) throws(JinjaError) -> [JinjaToken] {
        let s = Array(source.unicodeScalars)
        var out: [JinjaToken] = []
        var i = 0
        while i < s.count {
            let c = s[i]
            if c.properties.isWhitespace { i += 1; continue }
            if c == "'" || c == "\"" {
                var value = String.UnicodeScalarView()
                var j = i + 1
                while j < s.count && s[j] != c {
                    if s[j] == "\\", j + 1 < s.count {
                        j += 1
                        switch s[j] {
                        case "n": value.append("\n")
                        case "t": value.append("\t")
                        case "r": value.append("\r")
                        case "0": value.append("\0")
                        default: value.append(s[j])
                        }
                    } else {
                        value.append(s[j])
                    }
                    j += 1
                }
                guard j < s.count else { throw .syntax("unterminated string in `\(source)`") }
                out.append(.string(String(value)))
                i = j + 1
                continue
            }
            if c.properties.numericType != nil, ("0"..."9").contains(c) {
                var j = i
                while j < s.count, ("0"..."9").contains(s[j]) || s[j] == "_" { j += 1 }
                var isFloat = false
                if j + 1 < s.count, s[j] == ".", ("0"..."9").contains(s[j + 1]) {
                    isFloat = true
                    j += 1
                    while j < s.count, ("0"..."9").contains(s[j]) { j += 1 }
                }
                let text = String(String.UnicodeScalarView(s[i..<j])).replacingOccurrences(of: "_", with: "")
                out.append(isFloat ? .double(Double(text) ?? 0) : .int(Int(text) ?? 0))
                i = j
                continue
            }
            if c == "_" || c.properties.isAlphabetic {
                var j = i
                while j < s.count, s[j] == "_" || s[j].properties.isAlphabetic || ("0"..."9").contains(s[j]) { j += 1 }
                out.append(.name(String(String.UnicodeScalarView(s[i..<j]))))
                i = j
                continue
            }
            guard let op = operators.first(where: { op in
                let o = Array(op.unicodeScalars)
                return i + o.count <= s.count && Array(s[i..<(i + o.count)]) == o
            }) else {
                throw .syntax("unexpected character `\(Character(c))` in `\(source)`")
            }
            out.append(.op(op))
            i += op.unicodeScalars.count
        }
        return out
    }
}

/// Why a template could not be compiled or rendered.
public enum JinjaError: Error, CustomStringConvertible, Equatable {
    case syntax(String)
    case unsupported(String)
    case runtime(String)
    /// The template called `raise_exception(message)`.
    case raised(String)

    public var description: String {
        switch self {
        case .syntax(let m): "chat template syntax error: \(m)"
        case .unsupported(let m): "chat template uses \(m), which Switchyard's Jinja does not support"
        case .runtime(let m): "chat template error: \(m)"
        case .raised(let m): m
        }
    }
}
