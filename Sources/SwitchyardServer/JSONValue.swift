import Foundation

/// A parsed JSON value that keeps booleans, integers and other numbers apart,
/// so a wrong type can be reported against the field that has it.
public enum JSONValue: Sendable, Equatable, Decodable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int64.self) { self = .int(i) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    /// Parses a request body; anything but a JSON object is an error.
    public static func parseObject(_ data: Data) throws(APIError) -> [String: JSONValue] {
        let value: JSONValue
        do { value = try JSONDecoder().decode(JSONValue.self, from: data) } catch {
            throw .invalid(nil, "the request body is not valid JSON")
        }
        guard case .object(let o) = value else { throw .invalid(nil, "the request body must be a JSON object") }
        return o
    }

    var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .int: "an integer"
        case .double: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

/// Typed access to a request object's fields; a present field of the wrong
/// type throws a 400 naming it. `null` counts as absent, as in OpenAI's API.
struct Fields {
    let object: [String: JSONValue]
    /// Prefix for nested field names in errors (`stream_options.`).
    var prefix = ""

    init(_ object: [String: JSONValue], prefix: String = "") {
        self.object = object
        self.prefix = prefix
    }

    func value(_ key: String) -> JSONValue? {
        guard let v = object[key], v != .null else { return nil }
        return v
    }

    func wrong(_ key: String, _ expected: String, _ got: JSONValue) -> APIError {
        .invalid(prefix + key, "\(prefix + key) must be \(expected), got \(got.typeName)")
    }

    func string(_ key: String) throws(APIError) -> String? {
        guard let v = value(key) else { return nil }
        guard case .string(let s) = v else { throw wrong(key, "a string", v) }
        return s
    }

    func bool(_ key: String) throws(APIError) -> Bool? {
        guard let v = value(key) else { return nil }
        guard case .bool(let b) = v else { throw wrong(key, "a boolean", v) }
        return b
    }

    func int(_ key: String) throws(APIError) -> Int64? {
        guard let v = value(key) else { return nil }
        switch v {
        case .int(let i): return i
        case .double(let d) where d.rounded() == d && abs(d) < 9e15: return Int64(d)
        default: throw wrong(key, "an integer", v)
        }
    }

    func number(_ key: String) throws(APIError) -> Double? {
        guard let v = value(key) else { return nil }
        switch v {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: throw wrong(key, "a number", v)
        }
    }

    func object(_ key: String) throws(APIError) -> Fields? {
        guard let v = value(key) else { return nil }
        guard case .object(let o) = v else { throw wrong(key, "an object", v) }
        return Fields(o, prefix: prefix + key + ".")
    }
}
