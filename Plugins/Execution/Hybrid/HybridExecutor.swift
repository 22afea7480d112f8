import Foundation
import SwitchyardModel

/// The CPU-GPU hybrid executor: per layer, `HybridPlanner` sends resident
/// experts (and cold ones worth uploading) to the accelerator, which works
/// while the CPU computes the rest through the default executor's kernels;
/// then `ResidentExperts` folds the layer's counts in and swaps a bounded
/// number of experts. If the accelerator fails, its share of the layer is
/// computed on the CPU and the accelerator is not used again: a request
/// never fails because the GPU did (`lastAcceleratorError` says why).
public final class HybridExecutor: ExpertExecutor, @unchecked Sendable {
    public let devices: [ExecutionDevice]
    public var expertDevice: [[Int]]? { nil }
    public let accelerator: any ExpertAccelerator
    public private(set) var planner: HybridPlanner
    public private(set) var resident: ResidentExperts
    public let maxSwapsPerStep: Int
    public private(set) var lastAcceleratorError: String?
    private let cpu: SharedPoolExecutor
    /// `[layer]`: the layer's routed experts (empty for dense layers), for
    /// residency swaps into any layer.
    private let experts: [[ExpertWeights]]
    private let counters: ExpertExecutionCounters
    private let expertBytes: Int
    private let flopsPerToken: Double
    /// The CPU's share of a layer: `tokenCount` with the accelerator's
    /// experts zeroed. Sized once.
    private let cpuCounts: UnsafeMutablePointer<Int32>
    private var sites = HybridSiteCounters()
    /// The plan `selectRowsToGather` made for the layer `run` computes
    /// next, and whether it left the accelerator's rows ungathered (the
    /// device gathers them); `accelerated[j]`: expert j is the
    /// accelerator's this layer. Sized once.
    private var planned: (layer: Int, plan: HybridPlanner.LayerPlan, rowsOnDevice: Bool)?
    private let accelerated: UnsafeMutablePointer<Bool>

    /// `profile`: `[layer][expert]` routed tokens to seed residency with
    /// (nil: empty until live counts arrive). Layers without routed experts
    /// are skipped.
    public init(weights: ModelWeights, accelerator: any ExpertAccelerator, cost: HybridCostModel,
                mode: HybridPlanner.Mode = .measured, profile: [[Double]]? = nil, maxSwapsPerStep: Int = 2,
                uploadSlots: Int = 4, maxUploadBytesPerLayer: Int = .max) throws {
        let c = weights.config
        experts = weights.routedExpertsByLayer
        guard let sample = experts.lazy.compactMap(\.first).first else { throw HybridError.noRoutedExperts }
        self.accelerator = accelerator
        self.maxSwapsPerStep = maxSwapsPerStep
        expertBytes = sample.byteCount
        flopsPerToken = sample.flopsPerToken
        planner = HybridPlanner(cost: cost, mode: mode, uploadSlots: uploadSlots, maxUploadBytesPerLayer: maxUploadBytesPerLayer)
        let heat = profile ?? experts.map { [Double](repeating: 0, count: $0.count) }
        resident = ResidentExperts(heat: heat, expertBytes: expertBytes, budgetBytes: accelerator.expertBudgetBytes)
        if case .allExpertsOnCPU = mode { resident = ResidentExperts(heat: heat, expertBytes: expertBytes, budgetBytes: 0) }
        for e in resident.resident.sorted() {
            try accelerator.load(e, weights: experts[e.layer][e.expert])
        }
        cpu = SharedPoolExecutor(weights: weights)
        counters = ExpertExecutionCounters(numLayers: c.numLayers, numDevices: 2)
        cpuCounts = .allocate(capacity: max(1, c.numExperts))
        accelerated = .allocate(capacity: max(1, c.numExperts))
        let routed = weights.routedExperts
        devices = [
            ExecutionDevice(name: "cpu", kind: .cpuPool, expertWeightBytes: routed.bytes, experts: routed.count,
                            detail: "\(Parallel.threadCount) kernel threads, the experts the planner leaves on the CPU"),
            ExecutionDevice(name: accelerator.name, kind: .accelerator, memoryBytes: accelerator.expertBudgetBytes,
                            expertWeightBytes: resident.resident.count * expertBytes, experts: resident.resident.count,
                            detail: accelerator.detail),
        ]
    }

    deinit {
        cpuCounts.deallocate()
        accelerated.deallocate()
    }

    public var stats: ExpertExecutionStats {
        var s = counters.stats
        s.counters = sites.named.merging(accelerator.counters) { a, _ in a }
        return s
    }
    public var siteCounters: HybridSiteCounters { sites }
    public func resetStats() {
        counters.reset()
        sites = HybridSiteCounters()
        accelerator.resetCounters()
    }

    /// Plans the layer now, so the rows of the experts the accelerator
    /// computes are not gathered on the host when it gathers them itself.
    public func selectRowsToGather(_ work: ExpertWork, gather: UnsafeMutablePointer<Bool>) {
        let plan = plan(work)
        let onDevice = lastAcceleratorError == nil && accelerator.gathersRows(work)
        planned = (work.layer, plan, onDevice)
        guard onDevice else { return }
        for j in 0..<work.numExperts where plan.sites[j].map({ $0 != .cpu }) ?? false { gather[j] = false }
    }

    private func plan(_ work: ExpertWork) -> HybridPlanner.LayerPlan {
        planner.plan(layer: work.layer, tokenCount: (0..<work.numExperts).map { Int(work.tokenCount[$0]) },
                     resident: resident.flags(layer: work.layer), expertBytes: expertBytes, flopsPerToken: flopsPerToken)
    }

    public func run(_ work: ExpertWork) {
        let t0 = monotonicSeconds()
        let n = work.numExperts
        let tokens = (0..<n).map { Int(work.tokenCount[$0]) }
        let ahead = planned.flatMap { $0.layer == work.layer ? $0 : nil }
        planned = nil
        let plan = ahead?.plan ?? self.plan(work)
        let rowsOnDevice = ahead?.rowsOnDevice ?? false
        var onAccelerator: [Int] = [], uploads: [Int] = []
        for j in 0..<n {
            cpuCounts[j] = work.tokenCount[j]
            accelerated[j] = false
            guard let site = plan.sites[j], site != .cpu, lastAcceleratorError == nil else { continue }
            accelerated[j] = true
            onAccelerator.append(j)
            if site == .uploaded { uploads.append(j) }
            cpuCounts[j] = 0
        }
        // The accelerator's experts back on the host: their rows first,
        // where the host did not gather them.
        func takeBack() {
            for j in 0..<n { cpuCounts[j] = accelerated[j] ? work.tokenCount[j] : 0 }
            if rowsOnDevice { work.gatherRows(only: accelerated) }
        }
        var acceleratorTokens = onAccelerator.reduce(0) { $0 + tokens[$1] }
        var started = false
        if !onAccelerator.isEmpty {
            do {
                try accelerator.begin(work, experts: onAccelerator, uploads: uploads)
                started = true
            } catch {
                // Nothing ran there: the CPU takes the whole layer.
                record(error)
                takeBack()
                for j in 0..<n { cpuCounts[j] = work.tokenCount[j] }
                acceleratorTokens = 0
            }
        }
        let cpuStart = monotonicSeconds()
        cpu.run(subset(work))
        var cpuSeconds = monotonicSeconds() - cpuStart
        if started {
            do { try accelerator.finish() } catch {
                // The accelerator's rows may be unwritten: compute them here.
                record(error)
                takeBack()
                acceleratorTokens = 0
                let again = monotonicSeconds()
                cpu.run(subset(work))
                cpuSeconds += monotonicSeconds() - again
            }
        }
        let seconds = monotonicSeconds() - t0
        if acceleratorTokens > 0 {
            sites.residentTokens += plan.tokens(at: .resident, tokens)
            sites.uploadedTokens += plan.tokens(at: .uploaded, tokens)
            sites.hostToDeviceBytes += uploads.count * expertBytes
        }
        sites.cpuTokens += work.assignments - acceleratorTokens
        if rowsOnDevice && acceleratorTokens > 0 { sites.rowsGatheredOnDevice += acceleratorTokens }
        sites.cpuSeconds += cpuSeconds
        sites.expertPhaseSeconds += seconds
        sites.plannedSeconds += plan.seconds
        counters.recordAssignments(layer: work.layer, device: 0, tokens: work.assignments - acceleratorTokens)
        counters.recordAssignments(layer: work.layer, device: 1, tokens: acceleratorTokens)
        counters.recordBalance(layer: work.layer, busiest: max(work.assignments - acceleratorTokens, acceleratorTokens),
                               mean: Double(work.assignments) / 2)
        counters.recordBusy(layer: work.layer, device: 0, seconds: cpuSeconds)
        counters.recordBusy(layer: work.layer, device: 1, seconds: acceleratorTokens > 0 ? seconds : 0)
        counters.recordPhase(layer: work.layer, seconds: seconds)
        updateResidency(work, tokens: tokens)
    }

    /// `work` with only the experts `cpuCounts` keeps.
    private func subset(_ w: ExpertWork) -> ExpertWork { w.with(tokenCount: cpuCounts) }

    private func record(_ error: Error) {
        lastAcceleratorError = "\(accelerator.name): \(error)"
        sites.fallbacks += 1
    }

    private func updateResidency(_ work: ExpertWork, tokens: [Int]) {
        guard lastAcceleratorError == nil, case .measured = planner.mode else { return }
        resident.observe(layer: work.layer, tokenCount: tokens)
        for swap in resident.rebalance(layer: work.layer, maxSwaps: maxSwapsPerStep) {
            accelerator.evict(swap.evicted)
            do {
                try accelerator.load(swap.admitted, weights: experts[swap.admitted.layer][swap.admitted.expert])
                sites.hostToDeviceBytes += expertBytes
                sites.swaps += 1
            } catch {
                lastAcceleratorError = "\(accelerator.name): \(error)"
                return
            }
        }
    }

}

/// Where the hybrid executor's token-expert assignments were computed, and
/// what crossed to the device.
public struct HybridSiteCounters: Sendable, Equatable, Codable {
    public var residentTokens = 0
    public var uploadedTokens = 0
    public var cpuTokens = 0
    /// Expert weights copied host-to-device: uploads and residency swaps.
    public var hostToDeviceBytes = 0
    public var swaps = 0
    /// Assignments whose input rows the host never gathered: the device
    /// took them from the layer's rows it already held.
    public var rowsGatheredOnDevice = 0
    /// Layers whose accelerator share fell back to the CPU.
    public var fallbacks = 0
    public var cpuSeconds = 0.0
    public var expertPhaseSeconds = 0.0
    /// What the plans expected the expert phases to take, from the measured
    /// figures: against `expertPhaseSeconds`, how well the cost model
    /// predicts this machine.
    public var plannedSeconds = 0.0

    public init() {}

    /// Share of routed assignments whose expert was resident.
    public var residentHitRate: Double {
        let all = residentTokens + uploadedTokens + cpuTokens
        return all > 0 ? Double(residentTokens) / Double(all) : 0
    }

    /// Share of the expert phase the CPU spent computing.
    public var cpuTimeShare: Double { expertPhaseSeconds > 0 ? cpuSeconds / expertPhaseSeconds : 0 }

    /// For `ExpertExecutionStats.counters` (benchmark results).
    public var named: [String: Double] {
        ["hybrid_resident_tokens": Double(residentTokens), "hybrid_uploaded_tokens": Double(uploadedTokens),
         "hybrid_cpu_tokens": Double(cpuTokens), "hybrid_host_to_device_bytes": Double(hostToDeviceBytes),
         "hybrid_swaps": Double(swaps), "hybrid_rows_gathered_on_device": Double(rowsGatheredOnDevice), "hybrid_fallbacks": Double(fallbacks), "hybrid_resident_hit_rate": residentHitRate,
         "hybrid_cpu_time_share": cpuTimeShare,
         "hybrid_expert_phase_seconds": expertPhaseSeconds, "hybrid_planned_expert_phase_seconds": plannedSeconds]
    }
}

public enum HybridError: Error, Sendable, CustomStringConvertible {
    case noRoutedExperts

    public var description: String {
        switch self {
        case .noRoutedExperts: "the model has no routed experts: run it with --execution cpu"
        }
    }
}
