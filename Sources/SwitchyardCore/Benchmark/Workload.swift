import Foundation
import SwitchyardModel

/// One request of a benchmark workload: what to send and when.
public struct WorkloadRequest: Sendable, Equatable {
    public var promptTokens: [Int32]
    public var maxTokens: Int
    /// Seconds after the benchmark starts.
    public var arrival: Double
}

public enum WorkloadError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String, reason: String)
    case malformedRow(path: String, line: Int, reason: String)
    case invalid(String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason): return "cannot read \(path): \(reason)"
        case let .malformedRow(path, line, reason): return "\(path):\(line): \(reason)"
        case let .invalid(m): return m
        }
    }
}

/// Reproducible workloads: for a seed, the same prompts and arrival times.
public enum Workload {
    /// Arrival times for `count` requests: all at 0 for an infinite rate;
    /// otherwise gaps drawn from a Gamma distribution with mean 1/rate and
    /// shape `burstiness` (1 = Poisson; below 1 burstier), as vLLM does.
    public static func arrivals(count: Int, rate: Double, burstiness: Double, rng: inout Xoshiro256) -> [Double] {
        guard rate.isFinite, rate > 0 else { return Array(repeating: 0, count: count) }
        var t = 0.0
        var out: [Double] = []
        for _ in 0..<count {
            out.append(t)
            t += gamma(shape: burstiness, scale: 1 / (rate * burstiness), rng: &rng)
        }
        return out
    }

    /// vLLM's random dataset: lengths uniform in `[len·(1−r), len·(1+r)]`,
    /// prompt tokens uniform over the vocabulary.
    public static func synthetic(numPrompts: Int, inputLen: Int, outputLen: Int, rangeRatio: Double,
                                 requestRate: Double, burstiness: Double, vocabSize: Int, seed: UInt64) throws -> [WorkloadRequest] {
        guard numPrompts > 0 else { throw WorkloadError.invalid("--num-prompts must be positive") }
        guard inputLen > 0, outputLen > 0 else { throw WorkloadError.invalid("--input-len and --output-len must be positive") }
        guard rangeRatio >= 0, rangeRatio < 1 else { throw WorkloadError.invalid("--range-ratio must be in [0, 1)") }
        guard burstiness > 0 else { throw WorkloadError.invalid("--burstiness must be positive") }
        var rng = Xoshiro256(seed: seed)
        func length(_ mean: Int) -> Int {
            let lo = max(1, Int((Double(mean) * (1 - rangeRatio)).rounded(.down)))
            let hi = max(lo, Int((Double(mean) * (1 + rangeRatio)).rounded(.down)))
            return lo + Int(rng.next() % UInt64(hi - lo + 1))
        }
        var reqs: [WorkloadRequest] = []
        for _ in 0..<numPrompts {
            let n = length(inputLen)
            let prompt = (0..<n).map { _ in Int32(rng.next() % UInt64(vocabSize)) }
            reqs.append(WorkloadRequest(promptTokens: prompt, maxTokens: length(outputLen), arrival: 0))
        }
        let times = arrivals(count: numPrompts, rate: requestRate, burstiness: burstiness, rng: &rng)
        for i in reqs.indices { reqs[i].arrival = times[i] }
        return reqs
    }

    /// BurstGPT trace replay. Columns: `Timestamp,Model,Request tokens,Response
    /// tokens,Total tokens,Log Type`; rows with 0 response tokens are failed
    /// requests and are skipped. `scale` speeds time up (10 = ten times faster).
    public static func burstGPT(path: String, scale: Double, limit: Int?, vocabSize: Int, maxModelLen: Int,
                                seed: UInt64) throws -> [WorkloadRequest] {
        guard scale > 0 else { throw WorkloadError.invalid("--trace-scale must be positive") }
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw WorkloadError.unreadable(path: path, reason: error.localizedDescription)
        }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        guard let header = lines.first?.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) else {
            throw WorkloadError.malformedRow(path: path, line: 1, reason: "empty file")
        }
        func column(_ name: String) throws -> Int {
            guard let i = header.firstIndex(of: name) else {
                throw WorkloadError.malformedRow(path: path, line: 1, reason: "header lacks column \"\(name)\" (expected Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type)")
            }
            return i
        }
        let ts = try column("Timestamp"), req = try column("Request tokens"), resp = try column("Response tokens")
        lines.removeFirst()
        var rng = Xoshiro256(seed: seed)
        var out: [WorkloadRequest] = []
        var t0: Double?
        for (i, line) in lines.enumerated() where !line.isEmpty {
            let lineNumber = i + 2
            let f = line.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard f.count >= header.count else {
                throw WorkloadError.malformedRow(path: path, line: lineNumber, reason: "expected \(header.count) fields, found \(f.count)")
            }
            guard let time = Double(f[ts]), let input = Int(f[req]), let output = Int(f[resp]), input >= 0, output >= 0 else {
                throw WorkloadError.malformedRow(path: path, line: lineNumber, reason: "Timestamp, Request tokens and Response tokens must be numbers")
            }
            if output == 0 { continue }
            if t0 == nil { t0 = time }
            let outLen = min(output, maxModelLen / 2)
            let inLen = max(1, min(input, maxModelLen - outLen - 1))
            out.append(WorkloadRequest(promptTokens: (0..<inLen).map { _ in Int32(rng.next() % UInt64(vocabSize)) },
                                       maxTokens: outLen, arrival: (time - t0!) / scale))
            if let limit, out.count >= limit { break }
        }
        guard !out.isEmpty else { throw WorkloadError.invalid("\(path): no successful requests (all rows have 0 response tokens)") }
        return out
    }

    /// A JSONL file of `{"prompt": "...", "max_tokens": N}` records, prompts
    /// encoded with the model's tokenizer; arrivals as for synthetic workloads.
    public static func jsonl(path: String, tokenizer: any Tokenizer, requestRate: Double, burstiness: Double,
                             defaultMaxTokens: Int, seed: UInt64) throws -> [WorkloadRequest] {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw WorkloadError.unreadable(path: path, reason: error.localizedDescription)
        }
        var reqs: [WorkloadRequest] = []
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            guard let obj = (try? JSONSerialization.jsonObject(with: Data(trimmed.utf8))) as? [String: Any] else {
                throw WorkloadError.malformedRow(path: path, line: i + 1, reason: "not a JSON object")
            }
            guard let prompt = obj["prompt"] as? String else {
                throw WorkloadError.malformedRow(path: path, line: i + 1, reason: "\"prompt\" must be a string")
            }
            var maxTokens = defaultMaxTokens
            if let m = obj["max_tokens"] {
                guard let v = (m as? NSNumber)?.intValue, v > 0 else {
                    throw WorkloadError.malformedRow(path: path, line: i + 1, reason: "\"max_tokens\" must be a positive integer")
                }
                maxTokens = v
            }
            reqs.append(WorkloadRequest(promptTokens: tokenizer.encode(prompt), maxTokens: maxTokens, arrival: 0))
        }
        var rng = Xoshiro256(seed: seed)
        let times = arrivals(count: reqs.count, rate: requestRate, burstiness: burstiness, rng: &rng)
        for i in reqs.indices { reqs[i].arrival = times[i] }
        return reqs
    }

    /// Marsaglia and Tsang's method (with the shape < 1 boost).
    static func gamma(shape: Double, scale: Double, rng: inout Xoshiro256) -> Double {
        func uniform() -> Double { (Double(rng.next() >> 11) + 0.5) / Double(1 << 53) }
        func normal() -> Double { (-2 * log(uniform())).squareRoot() * cos(2 * .pi * uniform()) }
        if shape < 1 {
            return gamma(shape: shape + 1, scale: scale, rng: &rng) * pow(uniform(), 1 / shape)
        }
        let d = shape - 1.0 / 3, c = 1 / (9 * d).squareRoot()
        while true {
            var x: Double, v: Double
            repeat { x = normal(); v = 1 + c * x } while v <= 0
            v = v * v * v
            let u = uniform()
            if log(u) < 0.5 * x * x + d - d * v + d * log(v) { return d * v * scale }
        }
    }
}
