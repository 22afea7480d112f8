import Foundation

/// Service-level objectives for goodput, in milliseconds (vLLM's `--goodput`).
public struct GoodputSLO: Sendable, Equatable {
    public var ttftMs: Double?
    public var tpotMs: Double?
    public var e2elMs: Double?

    public init(ttftMs: Double? = nil, tpotMs: Double? = nil, e2elMs: Double? = nil) {
        self.ttftMs = ttftMs
        self.tpotMs = tpotMs
        self.e2elMs = e2elMs
    }

    /// Parses `["ttft:500", "tpot:50"]`.
    public static func parse(_ items: [String]) throws -> GoodputSLO {
        var slo = GoodputSLO()
        for item in items {
            let parts = item.split(separator: ":")
            guard parts.count == 2, let v = Double(parts[1]), v > 0 else {
                throw WorkloadError.invalid("--goodput expects KEY:MILLISECONDS with KEY in ttft, tpot, e2el; got \"\(item)\"")
            }
            switch parts[0] {
            case "ttft": slo.ttftMs = v
            case "tpot": slo.tpotMs = v
            case "e2el": slo.e2elMs = v
            default: throw WorkloadError.invalid("--goodput key \"\(parts[0])\" is not one of ttft, tpot, e2el")
            }
        }
        return slo
    }

    public var isEmpty: Bool { ttftMs == nil && tpotMs == nil && e2elMs == nil }
}

/// One request as the benchmark client saw it (client-side times, seconds).
public struct ClientRecord: Sendable {
    public var promptTokens: Int
    public var outputTokens: Int
    public var success: Bool
    public var error: String
    public var startTime: Double
    public var ttft: Double
    public var latency: Double
    /// Gaps between consecutive streamed tokens.
    public var itls: [Double]

    public init(promptTokens: Int, outputTokens: Int, success: Bool, error: String, startTime: Double, ttft: Double,
                latency: Double, itls: [Double]) {
        self.promptTokens = promptTokens
        self.outputTokens = outputTokens
        self.success = success
        self.error = error
        self.startTime = startTime
        self.ttft = ttft
        self.latency = latency
        self.itls = itls
    }
}

/// vLLM's serving metrics, computed as `vllm/benchmarks/serve.py` does:
/// TPOT per request = (E2E − TTFT) / (output − 1), averaged over requests with
/// more than one output token; ITL pooled over every gap; goodput = requests
/// meeting every SLO per second of benchmark duration.
public struct ServingMetrics: Sendable {
    public var duration: Double
    public var completed: Int
    public var failed: Int
    public var totalInputTokens: Int
    public var totalOutputTokens: Int
    public var requestThroughput: Double
    public var requestGoodput: Double?
    public var outputThroughput: Double
    public var totalTokenThroughput: Double
    public var ttftsMs: [Double]
    public var tpotsMs: [Double]
    public var itlsMs: [Double]
    public var e2elsMs: [Double]

    public init(records: [ClientRecord], duration: Double, slo: GoodputSLO) {
        let ok = records.filter(\.success)
        self.duration = duration
        completed = ok.count
        failed = records.count - ok.count
        totalInputTokens = ok.reduce(0) { $0 + $1.promptTokens }
        totalOutputTokens = ok.reduce(0) { $0 + $1.outputTokens }
        requestThroughput = Double(completed) / duration
        outputThroughput = Double(totalOutputTokens) / duration
        totalTokenThroughput = Double(totalInputTokens + totalOutputTokens) / duration
        ttftsMs = ok.map { $0.ttft * 1000 }
        tpotsMs = ok.filter { $0.outputTokens > 1 }.map { ($0.latency - $0.ttft) / Double($0.outputTokens - 1) * 1000 }
        itlsMs = ok.flatMap { $0.itls.map { $0 * 1000 } }
        e2elsMs = ok.map { $0.latency * 1000 }
        if slo.isEmpty {
            requestGoodput = nil
        } else {
            let good = ok.filter { r in
                let tpot = r.outputTokens > 1 ? (r.latency - r.ttft) / Double(r.outputTokens - 1) * 1000 : 0
                return (slo.ttftMs.map { r.ttft * 1000 <= $0 } ?? true) && (slo.tpotMs.map { tpot <= $0 } ?? true)
                    && (slo.e2elMs.map { r.latency * 1000 <= $0 } ?? true)
            }.count
            requestGoodput = Double(good) / duration
        }
    }

    public static func mean(_ v: [Double]) -> Double { v.isEmpty ? 0 : v.reduce(0, +) / Double(v.count) }

    public static func std(_ v: [Double]) -> Double {
        guard !v.isEmpty else { return 0 }
        let m = mean(v)
        return (v.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(v.count)).squareRoot()
    }

    /// numpy's default (linear interpolation) percentile.
    public static func percentile(_ v: [Double], _ p: Double) -> Double {
        guard !v.isEmpty else { return 0 }
        let s = v.sorted()
        let rank = p / 100 * Double(s.count - 1)
        let lo = Int(rank.rounded(.down)), hi = min(lo + 1, s.count - 1)
        return s[lo] + (s[hi] - s[lo]) * (rank - Double(lo))
    }
}
