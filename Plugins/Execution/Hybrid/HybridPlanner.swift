import Foundation

/// Where each expert of one MoE layer is computed in one iteration of the
/// hybrid executor. The GPU and the CPU work at the same time (separate
/// streams), so the layer takes as long as the slower of the two; the plan
/// puts every resident expert on the GPU and spreads the others so that
/// neither side waits long for the other:
///
/// 1. every expert with tokens starts on the CPU, except resident ones;
/// 2. non-resident experts, most tokens first, move to the GPU (upload and
///    compute) while that shortens the layer, i.e. while the GPU's time
///    with it stays below the CPU's time without it.
///
/// With a single expert on an idle GPU this is the crossover rule
/// (`HybridCostModel.crossoverTokens`); with many it also uses the GPU's
/// idle time at small batches, and never uploads when the GPU is the
/// bottleneck already. `mode` gives llama.cpp's static forms too.
public struct HybridPlanner: Sendable {
    public enum Site: String, Sendable, Equatable, Codable {
        /// Resident in GPU memory: computed there, nothing copied.
        case resident
        /// Computed on the CPU from host memory; only its rows move.
        case cpu
        /// Copied to the GPU this iteration and computed there.
        case uploaded
    }

    public enum Mode: Sendable, Equatable {
        /// Measured: resident on the GPU, the rest where it is cheaper.
        case measured
        /// llama.cpp `--cpu-moe`: every routed expert on the CPU.
        case allExpertsOnCPU
        /// llama.cpp `--n-cpu-moe N`: the experts of layers below N on the
        /// CPU, the others as `measured`.
        case firstLayersOnCPU(Int)
        /// Every expert with tokens on the GPU, the non-resident ones
        /// uploaded (as far as the staging allows; the rest on the CPU):
        /// llama.cpp's op offload of host weights at large batches, and the
        /// baseline the measured plan is compared with.
        case uploadEveryExpert
    }

    public var cost: HybridCostModel
    public var mode: Mode
    /// Bytes the staging buffers can carry in one layer: uploads beyond it
    /// wait for the next layer, so pinned memory stays bounded.
    public var maxUploadBytesPerLayer: Int

    public init(cost: HybridCostModel, mode: Mode = .measured, maxUploadBytesPerLayer: Int = 1 << 30) {
        self.cost = cost
        self.mode = mode
        self.maxUploadBytesPerLayer = maxUploadBytesPerLayer
    }

    /// One layer's plan and what it is expected to cost.
    public struct LayerPlan: Sendable, Equatable {
        /// Per expert (nil: no tokens this iteration).
        public var sites: [Site?]
        public var gpuSeconds: Double
        public var cpuSeconds: Double
        public var uploadedBytes: Int
        public var seconds: Double { max(gpuSeconds, cpuSeconds) }

        /// Token-expert assignments computed at each site.
        public func tokens(at site: Site, _ tokenCount: [Int]) -> Int {
            zip(sites, tokenCount).reduce(0) { $0 + ($1.0 == site ? $1.1 : 0) }
        }
    }

    /// `tokenCount[e]` tokens for expert `e` of `layer`, `resident[e]` its
    /// residency; every expert has `expertBytes` of weights and costs
    /// `flopsPerToken` per token (gate, up and down).
    public func plan(layer: Int, tokenCount: [Int], resident: [Bool], expertBytes: Int, flopsPerToken: Double) -> LayerPlan {
        precondition(tokenCount.count == resident.count, "one residency flag per expert")
        var sites = [Site?](repeating: nil, count: tokenCount.count)
        var gpu = 0.0, cpu = 0.0
        let cpuOnly: Bool
        switch mode {
        case .measured, .uploadEveryExpert: cpuOnly = false
        case .allExpertsOnCPU: cpuOnly = true
        case .firstLayersOnCPU(let n): cpuOnly = layer < n
        }
        var candidates: [Int] = []
        for (e, n) in tokenCount.enumerated() where n > 0 {
            if resident[e] && !cpuOnly {
                sites[e] = .resident
                gpu += cost.gpuSeconds(tokens: n, flopsPerToken: flopsPerToken)
            } else {
                sites[e] = .cpu
                cpu += cost.cpuSeconds(tokens: n, bytes: expertBytes, flopsPerToken: flopsPerToken)
                candidates.append(e)
            }
        }
        var uploaded = 0
        if !cpuOnly {
            // Most tokens first (ties: lower expert id), so the experts that
            // gain most from the GPU's arithmetic move first.
            candidates.sort { tokenCount[$0] != tokenCount[$1] ? tokenCount[$0] > tokenCount[$1] : $0 < $1 }
            for e in candidates where uploaded + expertBytes <= maxUploadBytesPerLayer {
                let n = tokenCount[e]
                let onCPU = cost.cpuSeconds(tokens: n, bytes: expertBytes, flopsPerToken: flopsPerToken)
                let onGPU = cost.uploadSeconds(bytes: expertBytes) + cost.gpuSeconds(tokens: n, flopsPerToken: flopsPerToken)
                guard mode == .uploadEveryExpert || max(gpu + onGPU, cpu - onCPU) < max(gpu, cpu) else { continue }
                sites[e] = .uploaded
                gpu += onGPU
                cpu -= onCPU
                uploaded += expertBytes
            }
        }
        return LayerPlan(sites: sites, gpuSeconds: gpu, cpuSeconds: max(0, cpu), uploadedBytes: uploaded)
    }
}
