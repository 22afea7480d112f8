import Foundation

/// A Jinja template compiled once and rendered per request: the subset of
/// Jinja that Hugging Face chat templates use (`if`, `for` with `loop`,
/// `set` and `namespace`, `break`/`continue`, filters, tests, string and
/// dict methods, `raise_exception`), rendered as `transformers`'
/// `apply_chat_template` does (`trim_blocks`, `lstrip_blocks`). Swift has no
/// maintained Jinja package in this project's mirror; the conformance tests
/// compare its output with Python's jinja2 on real chat templates.
public struct JinjaTemplate: Sendable, Equatable {
    public let source: String
    let nodes: [JinjaNode]

    public static func == (a: JinjaTemplate, b: JinjaTemplate) -> Bool { a.source == b.source }

    public init(_ source: String) throws(JinjaError) {
        // Jinja drops one newline at the very end of a template
        // (`keep_trailing_newline` is off in transformers too).
        self.source = source
        var source = source
        if source.hasSuffix("\r\n") || source.hasSuffix("\n") { source.removeLast() }
        nodes = try JinjaParser.parse(source)
    }

    /// Renders with `context` (JSON-like values: strings, numbers, bools,
    /// arrays, dictionaries, NSNull).
    public func render(_ context: [String: Any]) throws(JinjaError) -> String {
        var r = JinjaRenderer()
        for (k, v) in context { r.scopes[0][k] = JinjaValue(json: v) }
        var out = ""
        try r.run(nodes, into: &out)
        return out
    }
}

struct JinjaRenderer {
    var scopes: [[String: JinjaValue]] = [[:]]

    /// `{% break %}` and `{% continue %}` unwind to their loop as errors
    /// with these messages (typed throws allow one error type; a NUL never
    /// appears in a template's own messages).
    static let breakSignal = "\u{0}break", continueSignal = "\u{0}continue"

    func lookup(_ name: String) -> JinjaValue {
        for scope in scopes.reversed() { if let v = scope[name] { return v } }
        return .undefined
    }

    mutating func run(_ nodes: [JinjaNode], into out: inout String) throws(JinjaError) {
        for node in nodes { try run(node, into: &out) }
    }

    mutating func run(_ node: JinjaNode, into out: inout String) throws(JinjaError) {
        switch node {
        case .text(let t): out += t
        case .output(let e): out += try eval(e).text
        case .ifBlock(let branches, let otherwise):
            for (condition, body) in branches where try eval(condition).isTrue {
                try run(body, into: &out)
                return
            }
            try run(otherwise, into: &out)
        case .forBlock(let targets, let iterable, let condition, let body, let otherwise):
            try runFor(targets: targets, iterable: iterable, condition: condition, body: body, otherwise: otherwise, into: &out)
        case .set(let target, let attribute, let value):
            let v = try eval(value)
            if let attribute {
                guard case .namespace(let ns) = lookup(target) else {
                    throw .runtime("cannot set `\(target).\(attribute)`: `\(target)` is not a namespace")
                }
                ns.values[attribute] = v
            } else {
                scopes[scopes.count - 1][target] = v
            }
        case .setBlock(let target, let body):
            var captured = ""
            try run(body, into: &captured)
            scopes[scopes.count - 1][target] = .string(captured)
        case .breakLoop: throw .runtime(Self.breakSignal)
        case .continueLoop: throw .runtime(Self.continueSignal)
        case .generation(let body): try run(body, into: &out)
        case .macro(let name, let parameters, let body):
            scopes[scopes.count - 1][name] = .macro(JinjaMacro(name: name, parameters: parameters, body: body))
        }
    }

    private mutating func runFor(targets: [String], iterable: JinjaExpr, condition: JinjaExpr?, body: [JinjaNode],
                                 otherwise: [JinjaNode], into out: inout String) throws(JinjaError) {
        let source = try eval(iterable)
        guard var items = source.items else { throw .runtime("cannot loop over a \(source.typeName)") }
        scopes.append([:])
        defer { scopes.removeLast() }
        if let condition {
            var kept: [JinjaValue] = []
            for item in items {
                try bind(targets, item)
                if try eval(condition).isTrue { kept.append(item) }
            }
            items = kept
        }
        for (n, item) in items.enumerated() {
            // Each iteration starts from the loop's own scope: Jinja's `set`
            // inside a loop does not outlive the iteration.
            scopes[scopes.count - 1] = [:]
            try bind(targets, item)
            scopes[scopes.count - 1]["loop"] = .object(JinjaObject([
                ("index", .int(n + 1)), ("index0", .int(n)), ("revindex", .int(items.count - n)),
                ("revindex0", .int(items.count - n - 1)), ("first", .bool(n == 0)), ("last", .bool(n == items.count - 1)),
                ("length", .int(items.count)), ("previtem", n > 0 ? items[n - 1] : .undefined),
                ("nextitem", n + 1 < items.count ? items[n + 1] : .undefined),
            ]))
            do {
                try run(body, into: &out)
            } catch .runtime(let m) where m == Self.breakSignal {
                break
            } catch .runtime(let m) where m == Self.continueSignal {
                continue
            }
        }
        if items.isEmpty { try run(otherwise, into: &out) }
    }

    /// A macro call renders the body in a scope of its own over the
    /// template's top level (what Jinja's macros see: the context and the
    /// template's variables, not the caller's locals), with the arguments
    /// bound and the macro itself visible, so it can recurse.
    mutating func call(_ m: JinjaMacro, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)]) throws(JinjaError) -> JinjaValue {
        guard args.count <= m.parameters.count else {
            throw .runtime("macro `\(m.name)` takes \(m.parameters.count) arguments, \(args.count) given")
        }
        let saved = scopes
        defer { scopes = saved }
        scopes = [saved[0], [m.name: .macro(m)]]
        for (i, p) in m.parameters.enumerated() {
            if i < args.count {
                scopes[1][p.name] = args[i]
            } else if let v = kwargs.first(where: { $0.0 == p.name })?.1 {
                scopes[1][p.name] = v
            } else if let d = p.defaultValue {
                scopes[1][p.name] = try eval(d)
            } else {
                scopes[1][p.name] = .undefined
            }
        }
        for (key, _) in kwargs where !m.parameters.contains(where: { $0.name == key }) {
            throw .runtime("macro `\(m.name)` has no parameter `\(key)`")
        }
        var out = ""
        try run(m.body, into: &out)
        return .string(out)
    }

    private mutating func bind(_ targets: [String], _ item: JinjaValue) throws(JinjaError) {
        if targets.count == 1 {
            scopes[scopes.count - 1][targets[0]] = item
            return
        }
        guard case .array(let parts) = item, parts.count == targets.count else {
            throw .runtime("cannot unpack a \(item.typeName) into \(targets.count) loop variables")
        }
        for (t, v) in zip(targets, parts) { scopes[scopes.count - 1][t] = v }
    }

    // MARK: - Expressions

    mutating func eval(_ e: JinjaExpr) throws(JinjaError) -> JinjaValue {
        switch e {
        case .constant(let c):
            switch c {
            case .none: return .none
            case .bool(let b): return .bool(b)
            case .int(let i): return .int(i)
            case .double(let d): return .double(d)
            case .string(let s): return .string(s)
            }
        case .name(let n): return lookup(n)
        case .list(let items):
            var out: [JinjaValue] = []
            for item in items { out.append(try eval(item)) }
            return .array(out)
        case .dict(let pairs):
            var o = JinjaObject()
            for (k, v) in pairs { o[try eval(k).text] = try eval(v) }
            return .object(o)
        case .attribute(let base, let name):
            return Self.member(try eval(base), name)
        case .item(let base, let index):
            return try Self.item(try eval(base), try eval(index))
        case .slice(let base, let a, let b, let c):
            let v = try eval(base)
            let start = try a.map { e throws(JinjaError) in try eval(e) }
            let stop = try b.map { e throws(JinjaError) in try eval(e) }
            let step = try c.map { e throws(JinjaError) in try eval(e) }
            return try Self.slice(v, start, stop, step)
        case .call(let callee, let args, let kwargs):
            var a: [JinjaValue] = []
            for arg in args { a.append(try eval(arg)) }
            var k: [(String, JinjaValue)] = []
            for (n, arg) in kwargs { k.append((n, try eval(arg))) }
            if case .attribute(let base, let method) = callee {
                return try JinjaBuiltins.method(try eval(base), method, a, k)
            }
            guard case .name(let function) = callee else { throw .runtime("only named functions and methods can be called") }
            if case .macro(let m) = lookup(function) { return try call(m, a, k) }
            return try JinjaBuiltins.function(function, a, k)
        case .filter(let base, let name, let args, let kwargs):
            let v = try eval(base)
            var a: [JinjaValue] = []
            for arg in args { a.append(try eval(arg)) }
            var k: [(String, JinjaValue)] = []
            for (n, arg) in kwargs { k.append((n, try eval(arg))) }
            return try JinjaBuiltins.filter(name, v, a, k)
        case .test(let base, let name, let args, let negated):
            let v = try eval(base)
            var a: [JinjaValue] = []
            for arg in args { a.append(try eval(arg)) }
            return .bool(try JinjaBuiltins.test(name, v, a) != negated)
        case .not(let x): return .bool(!(try eval(x).isTrue))
        case .negate(let x):
            switch try eval(x) {
            case .int(let i): return .int(-i)
            case .double(let d): return .double(-d)
            case let v: throw .runtime("cannot negate a \(v.typeName)")
            }
        case .and(let a, let b):
            let x = try eval(a)
            return x.isTrue ? try eval(b) : x
        case .or(let a, let b):
            let x = try eval(a)
            return x.isTrue ? x : try eval(b)
        case .binary(let op, let a, let b):
            return try Self.binary(op, try eval(a), try eval(b))
        case .conditional(let condition, let then, let otherwise):
            if try eval(condition).isTrue { return try eval(then) }
            return try otherwise.map { e throws(JinjaError) in try eval(e) } ?? .undefined
        }
    }

    static func member(_ v: JinjaValue, _ name: String) -> JinjaValue {
        switch v {
        case .object(let o): return o[name] ?? .undefined
        case .namespace(let n): return n.values[name] ?? .undefined
        default: return .undefined
        }
    }

    static func item(_ v: JinjaValue, _ index: JinjaValue) throws(JinjaError) -> JinjaValue {
        switch (v, index) {
        case (.object(let o), _): return o[index.text] ?? .undefined
        case (.namespace(let n), _): return n.values[index.text] ?? .undefined
        case (.array(let a), .int(let i)):
            let j = i < 0 ? a.count + i : i
            return a.indices.contains(j) ? a[j] : .undefined
        case (.string(let s), .int(let i)):
            let chars = Array(s)
            let j = i < 0 ? chars.count + i : i
            return chars.indices.contains(j) ? .string(String(chars[j])) : .undefined
        case (.undefined, _): return .undefined
        default: return .undefined
        }
    }

    static func slice(_ v: JinjaValue, _ a: JinjaValue?, _ b: JinjaValue?, _ c: JinjaValue?) throws(JinjaError) -> JinjaValue {
        func int(_ x: JinjaValue?) throws(JinjaError) -> Int? {
            guard let x else { return nil }
            switch x {
            case .none, .undefined: return nil
            case .int(let i): return i
            default: throw .runtime("slice indices must be integers, not \(x.typeName)")
            }
        }
        let step = try int(c) ?? 1
        guard step != 0 else { throw .runtime("slice step cannot be zero") }
        func pick(_ count: Int) throws(JinjaError) -> [Int] {
            func clamp(_ i: Int?, _ dflt: Int) -> Int {
                guard var i else { return dflt }
                if i < 0 { i += count }
                return step > 0 ? min(max(i, 0), count) : min(max(i, -1), count - 1)
            }
            let start = clamp(try int(a), step > 0 ? 0 : count - 1)
            let stop = clamp(try int(b), step > 0 ? count : -1)
            return Array(stride(from: start, to: stop, by: step))
        }
        switch v {
        case .array(let arr): return .array(try pick(arr.count).map { arr[$0] })
        case .string(let s):
            let chars = Array(s)
            return .string(String(try pick(chars.count).map { chars[$0] }))
        case .undefined, .none: return .undefined
        default: throw .runtime("cannot slice a \(v.typeName)")
        }
    }

    static func binary(_ op: String, _ a: JinjaValue, _ b: JinjaValue) throws(JinjaError) -> JinjaValue {
        switch op {
        case "==": return .bool(JinjaValue.equal(a, b))
        case "!=": return .bool(!JinjaValue.equal(a, b))
        case "~": return .string(a.text + b.text)
        case "in":
            switch b {
            case .string(let s):
                guard case .string(let needle) = a else { throw .runtime("`in <string>` needs a string on the left, not \(a.typeName)") }
                return .bool(needle.isEmpty || s.contains(needle))
            case .array(let items): return .bool(items.contains { JinjaValue.equal($0, a) })
            case .object(let o): return .bool(o[a.text] != nil)
            case .undefined, .none: return .bool(false)
            default: throw .runtime("cannot test membership in a \(b.typeName)")
            }
        case "<", ">", "<=", ">=":
            let result: Bool
            if case .string(let x) = a, case .string(let y) = b {
                result = op == "<" ? x < y : op == ">" ? x > y : op == "<=" ? x <= y : x >= y
            } else if let x = a.number, let y = b.number {
                result = op == "<" ? x < y : op == ">" ? x > y : op == "<=" ? x <= y : x >= y
            } else {
                throw .runtime("cannot compare a \(a.typeName) with a \(b.typeName)")
            }
            return .bool(result)
        case "+":
            switch (a, b) {
            case (.string(let x), .string(let y)): return .string(x + y)
            case (.array(let x), .array(let y)): return .array(x + y)
            default: break
            }
        default: break
        }
        // Arithmetic: ints stay ints where Python keeps them.
        if case .int(let x) = a, case .int(let y) = b {
            switch op {
            case "+": return .int(x + y)
            case "-": return .int(x - y)
            case "*": return .int(x * y)
            case "/": guard y != 0 else { throw .runtime("division by zero") }; return .double(Double(x) / Double(y))
            case "//": guard y != 0 else { throw .runtime("division by zero") }; return .int(Int((Double(x) / Double(y)).rounded(.down)))
            case "%": guard y != 0 else { throw .runtime("modulo by zero") }; return .int(((x % y) + y) % y)
            default: break
            }
        }
        if case .string(let s) = a, op == "*", case .int(let n) = b { return .string(String(repeating: s, count: max(n, 0))) }
        guard let x = a.number, let y = b.number else {
            throw .runtime("unsupported operand types for \(op): \(a.typeName) and \(b.typeName)")
        }
        switch op {
        case "+": return .double(x + y)
        case "-": return .double(x - y)
        case "*": return .double(x * y)
        case "/": guard y != 0 else { throw .runtime("division by zero") }; return .double(x / y)
        case "//": guard y != 0 else { throw .runtime("division by zero") }; return .double((x / y).rounded(.down))
        case "%": guard y != 0 else { throw .runtime("modulo by zero") }; return .double(x - y * (x / y).rounded(.down))
        default: throw .runtime("unknown operator \(op)")
        }
    }
}
