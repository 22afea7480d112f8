import Foundation

/// A strategy's options, given on the command line as a JSON object
/// (`--scheduler-config '{"max_num_batched_tokens": 1024}'`). Strategies read
/// them through typed accessors that name the key and the expected type when
/// a value is wrong, and `finish()` rejects keys nobody read.
public final class StrategyConfig: @unchecked Sendable {
    public let strategy: String
    private let values: [String: Any]
    private var read: Set<String> = []
    private var known: [String] = []

    public init(strategy: String, json: String?) throws {
        self.strategy = strategy
        guard let json, !json.trimmingCharacters(in: .whitespaces).isEmpty else {
            values = [:]
            return
        }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any] else {
            throw StrategyError.invalidConfig(strategy: strategy, reason: "options must be a JSON object, e.g. '{\"max_num_seqs\": 64}'; got \(json)")
        }
        values = object
    }

    public init(strategy: String, values: [String: Any]) {
        self.strategy = strategy
        self.values = values
    }

    /// An integer option within `range`.
    public func int(_ key: String, default value: Int, in range: ClosedRange<Int> = 1...Int.max) throws -> Int {
        known.append(key)
        guard let raw = values[key] else { return value }
        read.insert(key)
        // JSON booleans arrive as NSNumber too, with a char objCType.
        guard let n = raw as? NSNumber, String(cString: n.objCType) != "c", n.doubleValue == n.doubleValue.rounded() else {
            throw StrategyError.invalidConfig(strategy: strategy, reason: "\"\(key)\" must be an integer, got \(StrategyConfig.describe(raw))")
        }
        guard range.contains(n.intValue) else {
            throw StrategyError.invalidConfig(strategy: strategy, reason: "\"\(key)\" must be in \(range.lowerBound)...\(range.upperBound == Int.max ? "" : "\(range.upperBound)"), got \(n.intValue)")
        }
        return n.intValue
    }

    /// A true/false option.
    public func bool(_ key: String, default value: Bool) throws -> Bool {
        known.append(key)
        guard let raw = values[key] else { return value }
        read.insert(key)
        guard let n = raw as? NSNumber, String(cString: n.objCType) == "c" else {
            throw StrategyError.invalidConfig(strategy: strategy, reason: "\"\(key)\" must be true or false, got \(StrategyConfig.describe(raw))")
        }
        return n.boolValue
    }

    /// A number option within `range` (integers are accepted).
    public func double(_ key: String, default value: Double, in range: ClosedRange<Double>) throws -> Double {
        known.append(key)
        guard let raw = values[key] else { return value }
        read.insert(key)
        guard let n = raw as? NSNumber, String(cString: n.objCType) != "c" else {
            throw StrategyError.invalidConfig(strategy: strategy, reason: "\"\(key)\" must be a number, got \(StrategyConfig.describe(raw))")
        }
        guard range.contains(n.doubleValue) else {
            throw StrategyError.invalidConfig(strategy: strategy, reason: "\"\(key)\" must be in \(range.lowerBound)...\(range.upperBound), got \(n.doubleValue)")
        }
        return n.doubleValue
    }

    /// A string option, one of `allowed` when given.
    public func string(_ key: String, default value: String, allowed: [String]? = nil) throws -> String {
        known.append(key)
        guard let raw = values[key] else { return value }
        read.insert(key)
        guard let s = raw as? String else {
            throw StrategyError.invalidConfig(strategy: strategy, reason: "\"\(key)\" must be a string, got \(StrategyConfig.describe(raw))")
        }
        if let allowed, !allowed.contains(s) {
            throw StrategyError.invalidConfig(strategy: strategy, reason: "\"\(key)\" must be one of \(allowed.joined(separator: ", ")), got \"\(s)\"")
        }
        return s
    }

    /// A JSON value as the user wrote it (booleans are NSNumbers underneath).
    static func describe(_ raw: Any) -> String {
        if let n = raw as? NSNumber, String(cString: n.objCType) == "c" { return n.boolValue ? "true" : "false" }
        if let s = raw as? String { return "\"\(s)\"" }
        return "\(raw)"
    }

    /// Options JSON (`--execution-config`) with command-line shorthands
    /// merged in (`--devices 2`, `--gpu-memory 8GiB`; nil: not given), for
    /// `strategy`. A key given both ways is an error naming the flag; the
    /// strategy itself then rejects keys it does not take.
    public static func merging(json: String?, shorthands: [(flag: String, key: String, value: Any?)], strategy: String) throws -> String {
        var values: [String: Any] = [:]
        if let json, !json.trimmingCharacters(in: .whitespaces).isEmpty {
            guard let object = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any] else {
                throw StrategyError.invalidConfig(strategy: strategy, reason: "options must be a JSON object, e.g. '{\"devices\": 2}'; got \(json)")
            }
            values = object
        }
        for (flag, key, value) in shorthands {
            guard let value else { continue }
            if values[key] != nil {
                throw StrategyError.invalidConfig(strategy: strategy, reason: "\(key) is given both in the options JSON and as \(flag); give it once")
            }
            values[key] = value
        }
        return String(decoding: try JSONSerialization.data(withJSONObject: values, options: .sortedKeys), as: UTF8.self)
    }

    /// Fails on keys the strategy did not ask for (typos must not pass silently).
    public func finish() throws {
        let unknown = Set(values.keys).subtracting(read).sorted()
        if let key = unknown.first {
            throw StrategyError.invalidConfig(strategy: strategy,
                reason: "unknown option \"\(key)\"; valid options: \(known.isEmpty ? "(none)" : known.joined(separator: ", "))")
        }
    }
}

public enum StrategyError: Error, CustomStringConvertible, Equatable {
    case unknown(kind: StrategyKind, name: String, valid: [String])
    case invalidConfig(strategy: String, reason: String)

    public var description: String {
        switch self {
        case let .unknown(kind, name, valid):
            return "unknown \(kind.rawValue) \"\(name)\"; valid: \(valid.joined(separator: ", ")) (see `switchyard strategies`)"
        case let .invalidConfig(strategy, reason):
            return "\(strategy): \(reason)"
        }
    }
}
