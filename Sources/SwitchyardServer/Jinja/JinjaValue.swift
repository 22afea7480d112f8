import Foundation

/// A value while a Jinja template renders, with Python's semantics where
/// chat templates rely on them (truthiness, `==` across int and float,
/// `str()` forms such as `True` and `None`).
enum JinjaValue {
    case undefined
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JinjaValue])
    /// A mapping that keeps its keys' insertion order, as Python's dict does.
    case object(JinjaObject)
    /// `namespace(...)`: the one mutable value, shared by reference so that
    /// `{% set ns.x = ... %}` inside a loop is seen after it.
    case namespace(JinjaNamespace)
    /// `{% macro %}`: called like a function, it renders its body to a string.
    case macro(JinjaMacro)

    var isTrue: Bool {
        switch self {
        case .undefined, .none: false
        case .bool(let b): b
        case .int(let i): i != 0
        case .double(let d): d != 0
        case .string(let s): !s.isEmpty
        case .array(let a): !a.isEmpty
        case .object(let o): !o.keys.isEmpty
        case .namespace, .macro: true
        }
    }

    var isUndefined: Bool { if case .undefined = self { true } else { false } }

    /// Python's `str()`, which is what `{{ }}` prints (undefined prints nothing).
    var text: String {
        switch self {
        case .undefined: ""
        case .string(let s): s
        default: repr
        }
    }

    /// Python's `repr()`.
    var repr: String {
        switch self {
        case .undefined: ""
        case .none: "None"
        case .bool(let b): b ? "True" : "False"
        case .int(let i): String(i)
        case .double(let d): Self.pythonFloat(d)
        case .string(let s): "'" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
        case .array(let a): "[" + a.map(\.repr).joined(separator: ", ") + "]"
        case .object(let o): "{" + o.keys.map { "'\($0)': \(o.values[$0]!.repr)" }.joined(separator: ", ") + "}"
        case .namespace(let n): "<Namespace " + n.values.keys.sorted().joined(separator: ", ") + ">"
        case .macro(let m): "<Macro '\(m.name)'>"
        }
    }

    static func pythonFloat(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d > 0 ? "inf" : "-inf" }
        if d == d.rounded(), abs(d) < 1e16 { return String(format: "%.1f", d) }
        return "\(d)"
    }

    /// `json.dumps` with Python's default separators, or `indent` spaces.
    func json(indent: Int?, level: Int = 0) -> String {
        let pad = indent.map { "\n" + String(repeating: " ", count: $0 * (level + 1)) } ?? ""
        let close = indent.map { "\n" + String(repeating: " ", count: $0 * level) } ?? ""
        let comma = indent == nil ? ", " : ","
        switch self {
        case .undefined, .none: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .double(let d): return d.isFinite ? Self.pythonFloat(d) : (d.isNaN ? "NaN" : (d > 0 ? "Infinity" : "-Infinity"))
        case .string(let s): return Self.jsonString(s)
        case .array(let a):
            if a.isEmpty { return "[]" }
            return "[" + pad + a.map { $0.json(indent: indent, level: level + 1) }.joined(separator: comma + pad) + close + "]"
        case .object(let o):
            if o.keys.isEmpty { return "{}" }
            return "{" + pad + o.keys.map { Self.jsonString($0) + ": " + o.values[$0]!.json(indent: indent, level: level + 1) }
                .joined(separator: comma + pad) + close + "}"
        case .namespace(let n):
            return JinjaValue.object(JinjaObject(n.values.sorted { $0.key < $1.key })).json(indent: indent, level: level)
        case .macro(let m):
            return Self.jsonString("<Macro '\(m.name)'>")
        }
    }

    static func jsonString(_ s: String) -> String {
        var out = ""
        JSONOut.writeString(s, into: &out)
        return out
    }

    /// Python's `==` for the types templates compare.
    static func equal(_ a: JinjaValue, _ b: JinjaValue) -> Bool {
        switch (a, b) {
        case (.undefined, .undefined), (.none, .none): return true
        case (.bool(let x), .bool(let y)): return x == y
        case (.string(let x), .string(let y)): return x == y
        case (.array(let x), .array(let y)): return x.count == y.count && zip(x, y).allSatisfy { equal($0, $1) }
        case (.object(let x), .object(let y)):
            return Set(x.keys) == Set(y.keys) && x.keys.allSatisfy { equal(x.values[$0]!, y.values[$0]!) }
        default:
            if let x = a.number, let y = b.number { return x == y }
            return false
        }
    }

    /// Ints, floats and bools as a number (Python's bool is an int).
    var number: Double? {
        switch self {
        case .int(let i): Double(i)
        case .double(let d): d
        case .bool(let b): b ? 1 : 0
        default: nil
        }
    }

    /// The items a `for` loop or a filter walks: list elements, a string's
    /// characters, a mapping's keys.
    var items: [JinjaValue]? {
        switch self {
        case .array(let a): a
        case .string(let s): s.map { .string(String($0)) }
        case .object(let o): o.keys.map { .string($0) }
        case .undefined, .none: []
        default: nil
        }
    }

    var typeName: String {
        switch self {
        case .undefined: "undefined"
        case .none: "none"
        case .bool: "bool"
        case .int: "int"
        case .double: "float"
        case .string: "string"
        case .array: "list"
        case .object: "dict"
        case .namespace: "namespace"
        case .macro: "macro"
        }
    }

    /// Converts what JSONSerialization produced (chat messages, tools).
    init(json: Any?) {
        switch json {
        case nil, is NSNull: self = .none
        case let s as String: self = .string(s)
        case let n as NSNumber:
            let type = String(cString: n.objCType)
            if type == "c" { self = .bool(n.boolValue) }
            else if type == "d" || type == "f" { self = .double(n.doubleValue) } else { self = .int(n.intValue) }
        case let b as Bool: self = .bool(b)
        case let i as Int: self = .int(i)
        case let d as Double: self = .double(d)
        case let a as [Any]: self = .array(a.map { JinjaValue(json: $0) })
        case let o as [String: Any]: self = .object(JinjaObject(o.keys.sorted().map { ($0, JinjaValue(json: o[$0])) }))
        default: self = .string("\(json!)")
        }
    }
}

struct JinjaObject {
    var keys: [String] = []
    var values: [String: JinjaValue] = [:]

    init(_ pairs: [(String, JinjaValue)] = []) {
        for (k, v) in pairs { self[k] = v }
    }

    subscript(key: String) -> JinjaValue? {
        get { values[key] }
        set {
            if values[key] == nil, newValue != nil { keys.append(key) }
            if newValue == nil { keys.removeAll { $0 == key } }
            values[key] = newValue
        }
    }
}

final class JinjaNamespace {
    var values: [String: JinjaValue]
    init(_ values: [String: JinjaValue]) { self.values = values }
}

/// A macro: its parameters (with defaults, evaluated per call in the
/// macro's scope, as Jinja does) and body.
final class JinjaMacro: @unchecked Sendable {
    let name: String
    let parameters: [(name: String, defaultValue: JinjaExpr?)]
    let body: [JinjaNode]

    init(name: String, parameters: [(name: String, defaultValue: JinjaExpr?)], body: [JinjaNode]) {
        self.name = name
        self.parameters = parameters
        self.body = body
    }
}
