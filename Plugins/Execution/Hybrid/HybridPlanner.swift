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
/// The upload ring has `uploadSlots` slots: the first uploads of a layer
/// are staged at once, each later one only when an earlier copy has left
/// its slot, and the host stages them all before the CPU's share starts,
/// so every upload past the ring's size delays the CPU by one upload's
/// time. The plan counts that, so a layer takes more uploads than slots
/// only where the CPU's share left is worth the wait (a long prompt, whose
/// experts all have many tokens), not a fixed number per layer.
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
        /// uploaded through the ring, however long the host waits for it:
        /// llama.cpp's op offload of host weights at large batches, and the
        /// baseline the measured plan is compared with.
        case uploadEveryExpert
    }

    public var cost: HybridCostModel
    public var mode: Mode
    /// Slots of the upload ring (pinned staging, one expert each).
    public var uploadSlots: Int
    /// A cap on a layer's uploads (the experts past it stay on the CPU);
    /// none by default, the costs decide.
    public var maxUploadBytesPerLayer: Int

    public init(cost: HybridCostModel, mode: Mode = .measured, uploadSlots: Int = 4, maxUploadBytesPerLayer: Int = .max) {
        self.cost = cost
        self.mode = mode
        self.uploadSlots = uploadSlots
        self.maxUploadBytesPerLayer = maxUploadBytesPerLayer
    }

    /// One layer's plan and what it is expected to cost.
    public struct LayerPlan: Sendable, Equatable {
        /// Per expert (nil: no tokens this iteration).
        public var sites: [Site?]
        public var gpuSeconds: Double
        public var cpuSeconds: Double
        /// The host staging uploads past the ring's size before the CPU's
        /// share starts.
        public var stagingSeconds: Double
        public var uploadedBytes: Int
        public var seconds: Double { max(gpuSeconds, stagingSeconds + cpuSeconds) }

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
        var uploaded = 0, staging = 0.0
        let uploadTime = cost.uploadSeconds(bytes: expertBytes)
        if !cpuOnly {
            // Most tokens first (ties: lower expert id), so the experts that
            // gain most from the GPU's arithmetic move first.
            candidates.sort { tokenCount[$0] != tokenCount[$1] ? tokenCount[$0] > tokenCount[$1] : $0 < $1 }
            for e in candidates where uploaded + expertBytes <= maxUploadBytesPerLayer {
                let n = tokenCount[e]
                let onCPU = cost.cpuSeconds(tokens: n, bytes: expertBytes, flopsPerToken: flopsPerToken)
                let onGPU = uploadTime + cost.gpuSeconds(tokens: n, flopsPerToken: flopsPerToken)
                // Past the ring's size the host waits for a slot.
                let waits = uploaded / expertBytes + 1 > uploadSlots ? uploadTime : 0
                guard mode == .uploadEveryExpert || max(gpu + onGPU, staging + waits + cpu - onCPU) < max(gpu, staging + cpu) else { continue }
                sites[e] = .uploaded
                gpu += onGPU
                cpu -= onCPU
                staging += waits
                uploaded += expertBytes
            }
        }
        return LayerPlan(sites: sites, gpuSeconds: gpu, cpuSeconds: max(0, cpu), stagingSeconds: staging, uploadedBytes: uploaded)
    }
}
