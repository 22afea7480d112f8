/// A compiled template: the statements of a Jinja template as a tree.
indirect enum JinjaNode: Sendable {
    case text(String)
    case output(JinjaExpr)
    case ifBlock(branches: [(JinjaExpr, [JinjaNode])], otherwise: [JinjaNode])
    case forBlock(targets: [String], iterable: JinjaExpr, condition: JinjaExpr?, body: [JinjaNode], otherwise: [JinjaNode])
    case set(target: String, attribute: String?, value: JinjaExpr)
    case setBlock(target: String, body: [JinjaNode])
    case breakLoop
    case continueLoop
    /// `{% generation %}`: Hugging Face's marker around assistant text; renders its body.
    case generation([JinjaNode])
    /// `{% macro name(a, b=default) %}…{% endmacro %}`.
    case macro(name: String, parameters: [(name: String, defaultValue: JinjaExpr?)], body: [JinjaNode])
}

indirect enum JinjaExpr: Sendable {
    case constant(JinjaConstant)
    case name(String)
    case list([JinjaExpr])
    case dict([(JinjaExpr, JinjaExpr)])
    case attribute(JinjaExpr, String)
    case item(JinjaExpr, JinjaExpr)
    case slice(JinjaExpr, JinjaExpr?, JinjaExpr?, JinjaExpr?)
    case call(JinjaExpr, [JinjaExpr], [(String, JinjaExpr)])
    case filter(JinjaExpr, String, [JinjaExpr], [(String, JinjaExpr)])
    case test(JinjaExpr, String, [JinjaExpr], negated: Bool)
    case not(JinjaExpr)
    case negate(JinjaExpr)
    case and(JinjaExpr, JinjaExpr)
    case or(JinjaExpr, JinjaExpr)
    case binary(String, JinjaExpr, JinjaExpr)
    case conditional(JinjaExpr, then: JinjaExpr, otherwise: JinjaExpr?)
}

enum JinjaConstant: Sendable {
    case none, bool(Bool), int(Int), double(Double), string(String)
}

/// Recursive descent over the lexer's segments, with Jinja's operator
/// precedence: conditional, `or`, `and`, `not`, comparisons (`in`, `is`
/// tests bind tighter, with filters), `~`, `+ -`, `* / // %`, unary minus,
/// then postfix (`.attr`, `[item]`, `[a:b]`, calls, `|filter`).
struct JinjaParser {
    private var segments: [JinjaLexer.Segment]
    private var position = 0
    /// How many `for` bodies enclose the statement being parsed.
    private var loopDepth = 0

    static func parse(_ source: String) throws(JinjaError) -> [JinjaNode] {
        var p = JinjaParser(segments: try JinjaLexer.segments(source))
        let (body, end) = try p.nodes(until: [])
        if let end { throw .syntax("unexpected `{% \(end) %}`") }
        return body
    }

    private init(segments: [JinjaLexer.Segment]) { self.segments = segments }

    /// Nodes up to one of the statements named in `ends` (returned with its
    /// tokens left for the caller in `pendingTokens`).
    private var pendingTokens: [JinjaToken] = []

    private mutating func nodes(until ends: Set<String>) throws(JinjaError) -> ([JinjaNode], String?) {
        var out: [JinjaNode] = []
        while position < segments.count {
            let segment = segments[position]
            position += 1
            switch segment {
            case .text(let t): out.append(.text(t))
            case .output(let tokens):
                var e = ExprParser(tokens: tokens)
                out.append(.output(try e.parseAll()))
            case .statement(let tokens):
                guard case .name(let keyword)? = tokens.first else { throw .syntax("empty or malformed `{% %}` tag") }
                if ends.contains(keyword) {
                    pendingTokens = Array(tokens.dropFirst())
                    return (out, keyword)
                }
                out.append(try statement(keyword, Array(tokens.dropFirst())))
            }
        }
        return (out, nil)
    }

    private mutating func statement(_ keyword: String, _ tokens: [JinjaToken]) throws(JinjaError) -> JinjaNode {
        switch keyword {
        case "if":
            var branches: [(JinjaExpr, [JinjaNode])] = []
            var condition = try ExprParser(tokens: tokens).parseAllMutating()
            while true {
                let (body, end) = try nodes(until: ["elif", "else", "endif"])
                branches.append((condition, body))
                switch end {
                case "elif": condition = try ExprParser(tokens: pendingTokens).parseAllMutating()
                case "else":
                    let (otherwise, end2) = try nodes(until: ["endif"])
                    guard end2 == "endif" else { throw .syntax("`{% if %}` without `{% endif %}`") }
                    return .ifBlock(branches: branches, otherwise: otherwise)
                case "endif": return .ifBlock(branches: branches, otherwise: [])
                default: throw .syntax("`{% if %}` without `{% endif %}`")
                }
            }
        case "for":
            var targets: [String] = []
            var i = 0
            while i < tokens.count, case .name(let n) = tokens[i], n != "in" {
                targets.append(n)
                i += 1
                if i < tokens.count, tokens[i] == .op(",") { i += 1 }
            }
            guard !targets.isEmpty, i < tokens.count, tokens[i] == .name("in") else { throw .syntax("malformed `{% for %}`") }
            var e = ExprParser(tokens: Array(tokens[(i + 1)...]))
            let iterable = try e.parseConditionalFree()
            var condition: JinjaExpr?
            if e.accept(.name("if")) { condition = try e.parseConditionalFree() }
            if e.accept(.name("recursive")) { throw .unsupported("recursive loops") }
            try e.expectEnd()
            loopDepth += 1
            let (body, end) = try nodes(until: ["else", "endfor"])
            loopDepth -= 1
            var otherwise: [JinjaNode] = []
            if end == "else" {
                let (o, end2) = try nodes(until: ["endfor"])
                guard end2 == "endfor" else { throw .syntax("`{% for %}` without `{% endfor %}`") }
                otherwise = o
            } else if end != "endfor" {
                throw .syntax("`{% for %}` without `{% endfor %}`")
            }
            return .forBlock(targets: targets, iterable: iterable, condition: condition, body: body, otherwise: otherwise)
        case "set":
            guard case .name(let target)? = tokens.first else { throw .syntax("malformed `{% set %}`") }
            var rest = tokens.dropFirst()
            var attribute: String?
            if rest.first == .op("."), rest.count > 1, case .name(let a) = rest[rest.startIndex + 1] {
                attribute = a
                rest = rest.dropFirst(2)
            }
            if rest.isEmpty, attribute == nil {
                let (body, end) = try nodes(until: ["endset"])
                guard end == "endset" else { throw .syntax("`{% set \(target) %}` without `{% endset %}`") }
                return .setBlock(target: target, body: body)
            }
            if rest.first == .op(",") { throw .unsupported("tuple assignment in `{% set %}`") }
            guard rest.first == .op("=") else { throw .syntax("malformed `{% set %}`") }
            return .set(target: target, attribute: attribute, value: try ExprParser(tokens: Array(rest.dropFirst())).parseAllMutating())
        case "break", "continue":
            guard loopDepth > 0 else { throw .syntax("`{% \(keyword) %}` outside a loop") }
            return keyword == "break" ? .breakLoop : .continueLoop
        case "generation":
            let (body, end) = try nodes(until: ["endgeneration"])
            guard end == "endgeneration" else { throw .syntax("`{% generation %}` without `{% endgeneration %}`") }
            return .generation(body)
        case "macro":
            let (name, parameters) = try ExprParser(tokens: tokens).macroSignature()
            let (body, end) = try nodes(until: ["endmacro"])
            guard end == "endmacro" else { throw .syntax("`{% macro \(name) %}` without `{% endmacro %}`") }
            return .macro(name: name, parameters: parameters, body: body)
        case "call", "filter", "include", "import", "from", "extends", "block", "raw", "with", "autoescape":
            throw .unsupported("`{% \(keyword) %}`")
        default:
            throw .syntax("unknown tag `{% \(keyword) %}`")
        }
    }
}

/// One expression's tokens.
struct ExprParser {
    private let tokens: [JinjaToken]
    private var i = 0

    init(tokens: [JinjaToken]) { self.tokens = tokens }

    mutating func parseAll() throws(JinjaError) -> JinjaExpr {
        let e = try conditional()
        try expectEnd()
        return e
    }

    /// `parseAll` on a copy, for callers holding a `let` parser.
    func parseAllMutating() throws(JinjaError) -> JinjaExpr {
        var copy = self
        return try copy.parseAll()
    }

    /// `name(a, b=default, ...)`: a macro's name and parameters.
    func macroSignature() throws(JinjaError) -> (String, [(name: String, defaultValue: JinjaExpr?)]) {
        var p = self
        let name = try p.name()
        try p.expect(.op("("))
        var parameters: [(name: String, defaultValue: JinjaExpr?)] = []
        while !p.accept(.op(")")) {
            let parameter = try p.name()
            var value: JinjaExpr?
            if p.accept(.op("=")) { value = try p.conditional() }
            parameters.append((parameter, value))
            if !p.accept(.op(",")) {
                try p.expect(.op(")"))
                break
            }
        }
        try p.expectEnd()
        return (name, parameters)
    }

    /// An expression without a trailing `if … else …` (a `for` loop's iterable,
    /// whose `if` is the loop filter).
    mutating func parseConditionalFree() throws(JinjaError) -> JinjaExpr { try or() }

    func expectEnd() throws(JinjaError) {
        if i < tokens.count { throw .syntax("unexpected `\(describe(tokens[i]))`") }
    }

    private var peek: JinjaToken? { i < tokens.count ? tokens[i] : nil }

    mutating func accept(_ t: JinjaToken) -> Bool {
        if peek == t { i += 1; return true }
        return false
    }

    mutating func expect(_ t: JinjaToken) throws(JinjaError) {
        guard accept(t) else { throw .syntax("expected `\(describe(t))`, found \(peek.map { "`\(describe($0))`" } ?? "the end")") }
    }

    private func describe(_ t: JinjaToken) -> String {
        switch t {
        case .name(let n): n
        case .string(let s): "'\(s)'"
        case .int(let n): String(n)
        case .double(let d): String(d)
        case .op(let o): o
        }
    }

    mutating func name() throws(JinjaError) -> String {
        guard case .name(let n)? = peek else { throw .syntax("expected a name, found \(peek.map { "`\(describe($0))`" } ?? "the end")") }
        i += 1
        return n
    }

    private mutating func conditional() throws(JinjaError) -> JinjaExpr {
        let value = try or()
        guard accept(.name("if")) else { return value }
        let condition = try or()
        let otherwise: JinjaExpr? = accept(.name("else")) ? try conditional() : nil
        return .conditional(condition, then: value, otherwise: otherwise)
    }

    private mutating func or() throws(JinjaError) -> JinjaExpr {
        var e = try and()
        while accept(.name("or")) { e = .or(e, try and()) }
        return e
    }

    private mutating func and() throws(JinjaError) -> JinjaExpr {
        var e = try not()
        while accept(.name("and")) { e = .and(e, try not()) }
        return e
    }

    private mutating func not() throws(JinjaError) -> JinjaExpr {
        if accept(.name("not")) { return .not(try not()) }
        return try comparison()
    }

    private mutating func comparison() throws(JinjaError) -> JinjaExpr {
        var e = try concat()
        while true {
            if case .op(let o)? = peek, ["==", "!=", "<", ">", "<=", ">="].contains(o) {
                i += 1
                e = .binary(o, e, try concat())
            } else if accept(.name("in")) {
                e = .binary("in", e, try concat())
            } else if peek == .name("not"), i + 1 < tokens.count, tokens[i + 1] == .name("in") {
                i += 2
                e = .not(.binary("in", e, try concat()))
            } else {
                return e
            }
        }
    }

    private mutating func concat() throws(JinjaError) -> JinjaExpr {
        var e = try additive()
        while accept(.op("~")) { e = .binary("~", e, try additive()) }
        return e
    }

    private mutating func additive() throws(JinjaError) -> JinjaExpr {
        var e = try multiplicative()
        while case .op(let o)? = peek, o == "+" || o == "-" {
            i += 1
            e = .binary(o, e, try multiplicative())
        }
        return e
    }

    private mutating func multiplicative() throws(JinjaError) -> JinjaExpr {
        var e = try unary()
        while case .op(let o)? = peek, ["*", "/", "//", "%"].contains(o) {
            i += 1
            e = .binary(o, e, try unary())
        }
        return e
    }

    /// As Jinja parses it, a filter after a unary minus applies to the
    /// negated value: `-3|abs` is 3.
    private mutating func unary(withFilter: Bool = true) throws(JinjaError) -> JinjaExpr {
        var e: JinjaExpr
        if accept(.op("-")) { e = .negate(try unary(withFilter: false)) }
        else if accept(.op("+")) { e = try unary(withFilter: false) }
        else { e = try postfix(try primary()) }
        return withFilter ? try filtered(e) : e
    }

    /// Filters (`|name(args)`) and tests (`is [not] name args`).
    private mutating func filtered(_ base: JinjaExpr) throws(JinjaError) -> JinjaExpr {
        var e = base
        while true {
            if accept(.op("|")) {
                let n = try name()
                var args: [JinjaExpr] = [], kwargs: [(String, JinjaExpr)] = []
                if accept(.op("(")) { (args, kwargs) = try arguments() }
                e = try postfix(.filter(e, n, args, kwargs))
            } else if accept(.name("is")) {
                let negated = accept(.name("not"))
                let n: String
                if case .op(let o)? = peek, ["==", "!="].contains(o) { i += 1; n = o } else if accept(.name("none")) { n = "none" } else { n = try name() }
                var args: [JinjaExpr] = []
                if accept(.op("(")) {
                    args = try arguments().0
                } else if let t = peek, startsPrimary(t) {
                    args = [try postfix(try primary())]
                }
                e = .test(e, n, args, negated: negated)
            } else {
                return e
            }
        }
    }

    private func startsPrimary(_ t: JinjaToken) -> Bool {
        switch t {
        case .string, .int, .double: true
        case .name(let n): !["and", "or", "if", "else", "is", "in", "not"].contains(n)
        case .op(let o): o == "(" || o == "[" || o == "{"
        }
    }

    private mutating func postfix(_ base: JinjaExpr) throws(JinjaError) -> JinjaExpr {
        var e = base
        while true {
            if accept(.op(".")) {
                if case .int(let n)? = peek { i += 1; e = .item(e, .constant(.int(n))) } else { e = .attribute(e, try name()) }
            } else if accept(.op("[")) {
                var parts: [JinjaExpr?] = [nil]
                var isSlice = false
                while !accept(.op("]")) {
                    if accept(.op(":")) { isSlice = true; parts.append(nil); continue }
                    guard parts[parts.count - 1] == nil else { throw .syntax("malformed subscript") }
                    parts[parts.count - 1] = try conditional()
                }
                if isSlice {
                    guard parts.count <= 3 else { throw .syntax("malformed slice") }
                    while parts.count < 3 { parts.append(nil) }
                    e = .slice(e, parts[0], parts[1], parts[2])
                } else {
                    guard let index = parts[0] else { throw .syntax("empty subscript") }
                    e = .item(e, index)
                }
            } else if accept(.op("(")) {
                let (args, kwargs) = try arguments()
                e = .call(e, args, kwargs)
            } else {
                return e
            }
        }
    }

    /// Call arguments after `(`, through `)`.
    private mutating func arguments() throws(JinjaError) -> ([JinjaExpr], [(String, JinjaExpr)]) {
        var args: [JinjaExpr] = [], kwargs: [(String, JinjaExpr)] = []
        while !accept(.op(")")) {
            if case .name(let n)? = peek, i + 1 < tokens.count, tokens[i + 1] == .op("=") {
                i += 2
                kwargs.append((n, try conditional()))
            } else {
                args.append(try conditional())
            }
            if !accept(.op(",")) {
                try expect(.op(")"))
                break
            }
        }
        return (args, kwargs)
    }

    private mutating func primary() throws(JinjaError) -> JinjaExpr {
        guard let t = peek else { throw .syntax("expression ends early") }
        i += 1
        switch t {
        case .string(var s):
            // Adjacent string literals concatenate, as in Python.
            while case .string(let more)? = peek { s += more; i += 1 }
            return .constant(.string(s))
        case .int(let n): return .constant(.int(n))
        case .double(let d): return .constant(.double(d))
        case .name(let n):
            switch n {
            case "true", "True": return .constant(.bool(true))
            case "false", "False": return .constant(.bool(false))
            case "none", "None": return .constant(.none)
            default: return .name(n)
            }
        case .op("("):
            let e = try conditional()
            if accept(.op(",")) {
                // A tuple: a list will do for the templates' uses (`in`, iteration).
                var items = [e]
                while !accept(.op(")")) {
                    items.append(try conditional())
                    if !accept(.op(",")) { try expect(.op(")")); break }
                }
                return .list(items)
            }
            try expect(.op(")"))
            return e
        case .op("["):
            var items: [JinjaExpr] = []
            while !accept(.op("]")) {
                items.append(try conditional())
                if !accept(.op(",")) { try expect(.op("]")); break }
            }
            return .list(items)
        case .op("{"):
            var pairs: [(JinjaExpr, JinjaExpr)] = []
            while !accept(.op("}")) {
                let k = try conditional()
                try expect(.op(":"))
                pairs.append((k, try conditional()))
                if !accept(.op(",")) { try expect(.op("}")); break }
            }
            return .dict(pairs)
        default:
            throw .syntax("unexpected `\(describe(t))`")
        }
    }
}
