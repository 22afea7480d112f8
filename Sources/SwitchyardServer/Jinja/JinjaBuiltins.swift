import Foundation

/// The functions, filters, tests and methods chat templates call.
enum JinjaBuiltins {
    static func kwarg(_ k: [(String, JinjaValue)], _ name: String) -> JinjaValue? { k.first { $0.0 == name }?.1 }

    static func function(_ name: String, _ a: [JinjaValue], _ k: [(String, JinjaValue)]) throws(JinjaError) -> JinjaValue {
        switch name {
        case "raise_exception":
            throw .raised(a.first?.text ?? "the chat template raised an exception")
        case "namespace":
            var values: [String: JinjaValue] = [:]
            if case .object(let o)? = a.first { for key in o.keys { values[key] = o[key] } }
            for (n, v) in k { values[n] = v }
            return .namespace(JinjaNamespace(values))
        case "range":
            let ints = a.compactMap { v -> Int? in if case .int(let i) = v { i } else { nil } }
            guard ints.count == a.count, (1...3).contains(ints.count) else { throw .runtime("range() takes 1 to 3 integers") }
            let (start, stop, step) = ints.count == 1 ? (0, ints[0], 1) : (ints[0], ints[1], ints.count == 3 ? ints[2] : 1)
            guard step != 0 else { throw .runtime("range() step must not be zero") }
            return .array(Array(stride(from: start, to: stop, by: step)).map { .int($0) })
        case "strftime_now":
            guard case .string(let format)? = a.first else { throw .runtime("strftime_now() takes a format string") }
            return .string(strftime(format, Date()))
        case "dict":
            return .object(JinjaObject(k))
        default:
            throw .unsupported("the function `\(name)()`")
        }
    }

    /// C's `strftime` in UTC (templates print dates such as "26 Nov 2026").
    static func strftime(_ format: String, _ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970)
        var parts = tm()
        gmtime_r(&t, &parts)
        var buffer = [Int8](repeating: 0, count: 256)
        let n = Foundation.strftime(&buffer, buffer.count, format, &parts)
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func filter(_ name: String, _ v: JinjaValue, _ a: [JinjaValue], _ k: [(String, JinjaValue)]) throws(JinjaError) -> JinjaValue {
        switch name {
        case "trim":
            return .string(v.text.trimmingCharacters(in: .whitespacesAndNewlines))
        case "length", "count":
            switch v {
            case .string(let s): return .int(s.count)
            case .array(let x): return .int(x.count)
            case .object(let o): return .int(o.keys.count)
            case .undefined, .none: return .int(0)
            default: throw .runtime("a \(v.typeName) has no length")
            }
        case "tojson":
            var indent: Int?
            if case .int(let n)? = kwarg(k, "indent") ?? a.first { indent = n }
            return .string(v.json(indent: indent))
        case "upper": return .string(v.text.uppercased())
        case "lower": return .string(v.text.lowercased())
        case "title": return .string(v.text.capitalized)
        case "capitalize":
            let s = v.text
            return .string(s.prefix(1).uppercased() + s.dropFirst().lowercased())
        case "default", "d":
            let fallback = a.first ?? kwarg(k, "default_value") ?? .string("")
            let boolean = (a.count > 1 ? a[1] : kwarg(k, "boolean"))?.isTrue ?? false
            return v.isUndefined || (boolean && !v.isTrue) ? fallback : v
        case "string": return .string(v.text)
        case "int":
            switch v {
            case .int: return v
            case .double(let d): return .int(Int(d))
            case .bool(let b): return .int(b ? 1 : 0)
            case .string(let s): return .int(Int(s.trimmingCharacters(in: .whitespaces)) ?? Int(Double(s) ?? 0))
            default: return .int(0)
            }
        case "float":
            return .double(v.number ?? Double(v.text.trimmingCharacters(in: .whitespaces)) ?? 0)
        case "list":
            guard let items = v.items else { throw .runtime("cannot make a list of a \(v.typeName)") }
            return .array(items)
        case "first":
            return v.items?.first ?? .undefined
        case "last":
            return v.items?.last ?? .undefined
        case "join":
            let sep = a.first?.text ?? ""
            var items = v.items ?? []
            if let attribute = kwarg(k, "attribute") { items = items.map { JinjaRenderer.member($0, attribute.text) } }
            return .string(items.map(\.text).joined(separator: sep))
        case "replace":
            guard a.count >= 2 else { throw .runtime("replace needs two arguments") }
            return .string(v.text.replacingOccurrences(of: a[0].text, with: a[1].text))
        case "reverse":
            if case .string(let s) = v { return .string(String(s.reversed())) }
            return .array((v.items ?? []).reversed())
        case "unique":
            var seen: [JinjaValue] = []
            for item in v.items ?? [] where !seen.contains(where: { JinjaValue.equal($0, item) }) { seen.append(item) }
            return .array(seen)
        case "items":
            guard case .object(let o) = v else { return .array([]) }
            return .array(o.keys.map { .array([.string($0), o[$0]!]) })
        case "selectattr", "rejectattr":
            guard let attribute = a.first?.text else { throw .runtime("\(name) needs an attribute name") }
            let keep = name == "selectattr"
            var out: [JinjaValue] = []
            for item in v.items ?? [] {
                let field = JinjaRenderer.member(item, attribute)
                let passes = a.count > 1 ? try test(a[1].text, field, Array(a.dropFirst(2))) : field.isTrue
                if passes == keep { out.append(item) }
            }
            return .array(out)
        case "select", "reject":
            let keep = name == "select"
            var out: [JinjaValue] = []
            for item in v.items ?? [] {
                let passes = a.isEmpty ? item.isTrue : try test(a[0].text, item, Array(a.dropFirst()))
                if passes == keep { out.append(item) }
            }
            return .array(out)
        case "map":
            if let attribute = kwarg(k, "attribute") {
                return .array((v.items ?? []).map { item in
                    let m = JinjaRenderer.member(item, attribute.text)
                    return m.isUndefined ? (kwarg(k, "default") ?? .undefined) : m
                })
            }
            guard let f = a.first?.text else { throw .runtime("map needs a filter name or attribute=") }
            var out: [JinjaValue] = []
            for item in v.items ?? [] { out.append(try filter(f, item, Array(a.dropFirst()), [])) }
            return .array(out)
        case "safe":
            return v
        case "abs":
            if case .int(let i) = v { return .int(abs(i)) }
            return .double(abs(v.number ?? 0))
        case "indent":
            let width = (a.first ?? kwarg(k, "width")).flatMap { if case .int(let n) = $0 { n } else { nil } } ?? 4
            let first = (a.count > 1 ? a[1] : kwarg(k, "first"))?.isTrue ?? false
            let pad = String(repeating: " ", count: width)
            let lines = v.text.components(separatedBy: "\n")
            return .string(lines.enumerated().map { i, l in (i == 0 && !first) || l.isEmpty ? l : pad + l }.joined(separator: "\n"))
        case "wordcount":
            return .int(v.text.split { $0.isWhitespace }.count)
        default:
            throw .unsupported("the filter `\(name)`")
        }
    }

    static func test(_ name: String, _ v: JinjaValue, _ a: [JinjaValue]) throws(JinjaError) -> Bool {
        switch name {
        case "defined": return !v.isUndefined
        case "undefined": return v.isUndefined
        case "none": if case .none = v { return true } else { return false }
        case "string": if case .string = v { return true } else { return false }
        case "number": switch v { case .int, .double: return true; default: return false }
        case "integer": if case .int = v { return true } else { return false }
        case "float": if case .double = v { return true } else { return false }
        case "boolean": if case .bool = v { return true } else { return false }
        case "true": if case .bool(true) = v { return true } else { return false }
        case "false": if case .bool(false) = v { return true } else { return false }
        case "mapping": switch v { case .object, .namespace: return true; default: return false }
        case "sequence", "iterable":
            switch v { case .array, .string, .object: return true; default: return false }
        case "callable": return false
        case "equalto", "eq", "==": return a.first.map { JinjaValue.equal(v, $0) } ?? false
        case "ne", "!=": return a.first.map { !JinjaValue.equal(v, $0) } ?? true
        case "odd": if case .int(let i) = v { return i % 2 != 0 } else { return false }
        case "even": if case .int(let i) = v { return i % 2 == 0 } else { return false }
        case "divisibleby":
            if case .int(let i) = v, case .int(let n)? = a.first, n != 0 { return i % n == 0 }
            return false
        case "in": return a.first.map { (try? JinjaRenderer.binary("in", v, $0))?.isTrue ?? false } ?? false
        case "lower": return v.text == v.text.lowercased()
        case "upper": return v.text == v.text.uppercased()
        default: throw .unsupported("the test `\(name)`")
        }
    }

    static func method(_ v: JinjaValue, _ name: String, _ a: [JinjaValue], _ k: [(String, JinjaValue)]) throws(JinjaError) -> JinjaValue {
        switch v {
        case .string(let s):
            func chars(_ x: JinjaValue?) -> CharacterSet {
                if case .string(let c)? = x { return CharacterSet(charactersIn: c) }
                return .whitespacesAndNewlines
            }
            switch name {
            case "strip": return .string(s.trimmingCharacters(in: chars(a.first)))
            case "lstrip":
                let set = chars(a.first)
                return .string(String(s.unicodeScalars.drop { set.contains($0) }))
            case "rstrip":
                let set = chars(a.first)
                var scalars = Array(s.unicodeScalars)
                while let last = scalars.last, set.contains(last) { scalars.removeLast() }
                return .string(String(String.UnicodeScalarView(scalars)))
            case "upper": return .string(s.uppercased())
            case "lower": return .string(s.lowercased())
            case "title": return .string(s.capitalized)
            case "capitalize": return .string(s.prefix(1).uppercased() + s.dropFirst().lowercased())
            case "startswith", "endswith":
                let options: [String]
                switch a.first {
                case .string(let p)?: options = [p]
                case .array(let ps)?: options = ps.map(\.text)
                default: throw .runtime("\(name)() takes a string or a tuple of strings")
                }
                return .bool(options.contains { name == "startswith" ? s.hasPrefix($0) : s.hasSuffix($0) })
            case "split":
                let maxSplit = (a.count > 1 ? a[1] : kwarg(k, "maxsplit")).flatMap { if case .int(let n) = $0 { n } else { nil } } ?? -1
                if case .string(let sep)? = a.first ?? kwarg(k, "sep"), !sep.isEmpty {
                    var parts = s.components(separatedBy: sep)
                    if maxSplit >= 0, parts.count > maxSplit + 1 {
                        parts = Array(parts[..<maxSplit]) + [parts[maxSplit...].joined(separator: sep)]
                    }
                    return .array(parts.map { .string($0) })
                }
                return .array(s.split(whereSeparator: { $0.isWhitespace }).map { .string(String($0)) })
            case "replace":
                guard a.count >= 2 else { throw .runtime("replace() takes two arguments") }
                return .string(s.replacingOccurrences(of: a[0].text, with: a[1].text))
            case "join":
                return .string((a.first?.items ?? []).map(\.text).joined(separator: s))
            case "find":
                guard let r = s.range(of: a.first?.text ?? "") else { return .int(-1) }
                return .int(s.distance(from: s.startIndex, to: r.lowerBound))
            case "count":
                let needle = a.first?.text ?? ""
                return .int(needle.isEmpty ? s.count + 1 : s.components(separatedBy: needle).count - 1)
            case "format":
                var out = s
                for arg in a { if let r = out.range(of: "{}") { out.replaceSubrange(r, with: arg.text) } }
                return .string(out)
            default: break
            }
        case .object(let o):
            switch name {
            case "items": return .array(o.keys.map { .array([.string($0), o[$0]!]) })
            case "keys": return .array(o.keys.map { .string($0) })
            case "values": return .array(o.keys.map { o[$0]! })
            case "get": return o[a.first?.text ?? ""] ?? (a.count > 1 ? a[1] : .none)
            default: break
            }
        case .undefined:
            throw .runtime("`\(name)()` called on an undefined value")
        default: break
        }
        throw .unsupported("the method `\(name)()` on a \(v.typeName)")
    }
}
