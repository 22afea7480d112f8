import Foundation
import SwitchyardModel

/// Start-up measurement of `HybridCostModel`'s figures, so the crossover
/// is this machine's and never a constant.
public enum HybridCostMeasurement {
    /// CPU expert throughput at each token count: one expert's three
    /// products through the model's own backend and precision, on weights
    /// cycled through enough experts that they come from memory.
    public static func cpu(weights: ModelWeights, compute: ComputeOptions, tokenCounts: [Int] = [1, 4, 16, 64, 256],
                           minSeconds: Double = 0.2) -> (points: [HybridCostModel.Point], readBytesPerSecond: Double) {
        let experts = Array(weights.routedExpertsByLayer.joined())
        guard let sample = experts.first else { return ([], MemoryBandwidth.streamingRead(bytes: 64 << 20, minSeconds: minSeconds)) }
        let h = sample.gate.cols, inter = sample.gate.rows
        let maxTokens = tokenCounts.max() ?? 1
        let x = UnsafeMutablePointer<Float>.allocate(capacity: maxTokens * max(h, inter))
        let y = UnsafeMutablePointer<Float>.allocate(capacity: maxTokens * max(h, inter))
        defer { x.deallocate(); y.deallocate() }
        x.initialize(repeating: 0.01, count: maxTokens * max(h, inter))
        let ctx = GemmContext(options: compute)
        var next = 0
        let points = tokenCounts.map { n -> HybridCostModel.Point in
            let seconds = measure(minSeconds: minSeconds) {
                let e = experts[next % experts.count]
                next += 1
                Linear.apply(e.gate, x: x, tokens: n, y: y, ctx: ctx)
                Linear.apply(e.up, x: x, tokens: n, y: y, ctx: ctx)
                Linear.apply(e.down, x: x, tokens: n, y: y, ctx: ctx)
            }
            return .init(tokens: n, flopsPerSecond: Double(n) * sample.flopsPerToken / seconds)
        }
        return (points, MemoryBandwidth.streamingRead(bytes: 256 << 20, minSeconds: minSeconds))
    }
}
