import Foundation

/// The measured figures the hybrid planner decides from: how fast this CPU
/// computes an expert at a given token count, how fast weights cross to the
/// GPU, and how fast the GPU computes. Measured at start-up and cached as
/// JSON next to the model (never constants: a PCIe 3 laptop and an H200
/// host differ by 10x in the crossover).
public struct HybridCostModel: Sendable, Equatable, Codable {
    /// CPU expert throughput (all kernel threads): FLOP/s at each measured
    /// token count, ascending by tokens. Between points it is interpolated;
    /// outside them the nearest point holds.
    public var cpuFlopsPerSecond: [Point]
    /// The CPU's streaming read of expert weights, bytes/s: a small-batch
    /// expert costs at least its bytes at this rate.
    public var cpuReadBytesPerSecond: Double
    /// Pinned host-to-device copies, bytes/s.
    public var hostToDeviceBytesPerSecond: Double
    /// GPU expert throughput, FLOP/s, and the fixed cost of one expert's
    /// launches (gate/up, activation, down), seconds.
    public var gpuFlopsPerSecond: Double
    public var gpuLaunchSeconds: Double
    /// What the figures were measured on (GPU, CPU compute, threads): a
    /// cached file from another machine, GPU or setting is measured again.
    public var measuredOn: String?

    public struct Point: Sendable, Equatable, Codable {
        public var tokens: Int
        public var flopsPerSecond: Double
        public init(tokens: Int, flopsPerSecond: Double) {
            self.tokens = tokens
            self.flopsPerSecond = flopsPerSecond
        }
    }

    public init(cpuFlopsPerSecond: [Point], cpuReadBytesPerSecond: Double, hostToDeviceBytesPerSecond: Double,
                gpuFlopsPerSecond: Double, gpuLaunchSeconds: Double, measuredOn: String? = nil) {
        self.cpuFlopsPerSecond = cpuFlopsPerSecond.sorted { $0.tokens < $1.tokens }
        self.cpuReadBytesPerSecond = cpuReadBytesPerSecond
        self.hostToDeviceBytesPerSecond = hostToDeviceBytesPerSecond
        self.gpuFlopsPerSecond = gpuFlopsPerSecond
        self.gpuLaunchSeconds = gpuLaunchSeconds
        self.measuredOn = measuredOn
    }

    /// CPU FLOP/s at `tokens`, linear between measured points.
    public func cpuThroughput(tokens: Int) -> Double {
        guard let first = cpuFlopsPerSecond.first, let last = cpuFlopsPerSecond.last else { return 0 }
        if tokens <= first.tokens { return first.flopsPerSecond }
        if tokens >= last.tokens { return last.flopsPerSecond }
        let hi = cpuFlopsPerSecond.firstIndex { $0.tokens >= tokens }!
        let a = cpuFlopsPerSecond[hi - 1], b = cpuFlopsPerSecond[hi]
        let f = Double(tokens - a.tokens) / Double(b.tokens - a.tokens)
        return a.flopsPerSecond + f * (b.flopsPerSecond - a.flopsPerSecond)
    }

    /// Seconds for the CPU to compute one expert of `bytes` for `tokens`
    /// tokens at `flopsPerToken`: bound by reading the weights or by the
    /// arithmetic, whichever is slower.
    public func cpuSeconds(tokens: Int, bytes: Int, flopsPerToken: Double) -> Double {
        guard tokens > 0 else { return 0 }
        return max(Double(bytes) / cpuReadBytesPerSecond, Double(tokens) * flopsPerToken / cpuThroughput(tokens: tokens))
    }

    /// Seconds the GPU spends on one expert already in its memory.
    public func gpuSeconds(tokens: Int, flopsPerToken: Double) -> Double {
        guard tokens > 0 else { return 0 }
        return gpuLaunchSeconds + Double(tokens) * flopsPerToken / gpuFlopsPerSecond
    }

    /// Seconds to copy one expert of `bytes` to the GPU.
    public func uploadSeconds(bytes: Int) -> Double { Double(bytes) / hostToDeviceBytesPerSecond }

    /// The fewest tokens at which uploading a non-resident expert and
    /// computing it on an otherwise idle GPU beats computing it on the CPU
    /// (nil: never, up to `limit`). Fiddler's and llama.cpp's rule, with the
    /// threshold measured instead of fixed.
    public func crossoverTokens(bytes: Int, flopsPerToken: Double, limit: Int = 1 << 16) -> Int? {
        let upload = uploadSeconds(bytes: bytes)
        var lo = 1, hi = limit
        func gpuWins(_ n: Int) -> Bool { upload + gpuSeconds(tokens: n, flopsPerToken: flopsPerToken) < cpuSeconds(tokens: n, bytes: bytes, flopsPerToken: flopsPerToken) }
        guard gpuWins(hi) else { return nil }
        // CPU time per token only falls with more tokens up to the GEMM
        // plateau, so the GPU's advantage grows with n: bisect.
        while lo < hi {
            let mid = (lo + hi) / 2
            if gpuWins(mid) { hi = mid } else { lo = mid + 1 }
        }
        return lo
    }

    /// The cache file beside a model: `<model>/.switchyard/hybrid-cost.json`.
    public static func cachePath(model: String) -> String { model + "/.switchyard/hybrid-cost.json" }

    public func save(to path: String) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: URL(fileURLWithPath: path))
    }

    public static func load(from path: String) throws -> HybridCostModel {
        try JSONDecoder().decode(HybridCostModel.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    }
}
