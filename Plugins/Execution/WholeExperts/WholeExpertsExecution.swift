import Foundation
import SwitchyardCore
import SwitchyardModel

/// The worked example of docs/writing-a-strategy.md, written only against
/// public protocols: expert-level parallelism inside one pool. Each kernel
/// thread computes whole experts (gate, up, SwiGLU, down), experts dealt out
/// by token count (longest first, to the least-loaded thread), with no
/// barrier inside the layer. The default `cpu` executor instead splits each
/// small expert's rows over all threads, which reads every weight once with
/// every core streaming; this one trades that for fewer synchronisations.
/// A/B them with `switchyard ab --a "--execution cpu" --b "--execution cpu-whole-experts"`.
public final class WholeExpertsExecutor: ExpertExecutor, @unchecked Sendable {
    public let devices: [ExecutionDevice]
    public var expertDevice: [[Int]]? { nil }
    private let counters: ExpertExecutionCounters
    /// Per layer call: each expert's thread (-1: no tokens). Sized once.
    private let owner: UnsafeMutablePointer<Int32>
    private let numExperts: Int

    public init(weights: ModelWeights) {
        let c = weights.config, routed = weights.routedExperts
        numExperts = c.numExperts
        devices = [ExecutionDevice(name: "cpu", kind: .cpuPool, expertWeightBytes: routed.bytes, experts: routed.count,
                                   detail: "\(Parallel.threadCount) kernel threads, whole experts per thread")]
        counters = ExpertExecutionCounters(numLayers: c.numLayers, numDevices: 1)
        owner = .allocate(capacity: max(1, c.numExperts))
    }

    deinit { owner.deallocate() }

    public var stats: ExpertExecutionStats { counters.stats }
    public func resetStats() { counters.reset() }

    public func run(_ work: ExpertWork) {
        let t0 = monotonicSeconds()
        let threads = Parallel.threadCount
        dealExperts(work, threads: threads)
        let h = work.hiddenSize, inter = work.intermediateSize, options = work.options
        let scratch = work.compute.reserveThreadScratch(threads: threads, tokens: work.assignments, cols: max(h, inter))
        nonisolated(unsafe) let owners = owner
        let body = { (part: Int) in
            let mine = scratch.thread(part)
            for j in 0..<work.numExperts where Int(owners[j]) == part {
                let e = work.experts[j], n = Int(work.tokenCount[j]), s = Int(work.rowOffset[j])
                let x = work.input(expert: j)
                Linear.product(e.gate, rows: 0..<inter, input: x, tokens: n, y: work.gate + s * inter, ldy: inter,
                               options: options, scratch: mine)
                Linear.product(e.up, rows: 0..<inter, input: x, tokens: n, y: work.up + s * inter, ldy: inter,
                               options: options, scratch: mine)
                work.activate(expert: j)
                Linear.product(e.down, rows: 0..<h, input: work.activated(expert: j), tokens: n, y: work.output + s * h,
                               ldy: h, options: options, scratch: mine)
            }
        }
        if !Parallel.onEveryThread(body) {
            // The kernel threads are busy elsewhere (or there is one): run every share here.
            for part in 0..<threads { body(part) }
        }
        counters.recordSingleDevice(layer: work.layer, assignments: work.assignments, seconds: monotonicSeconds() - t0)
    }

    /// Longest-processing-time: each expert with tokens, most tokens first
    /// (ties: lower id), to the thread with the least work so far.
    private func dealExperts(_ work: ExpertWork, threads: Int) {
        let e = work.numExperts
        withUnsafeTemporaryAllocation(of: Int.self, capacity: threads) { load in
            load.initialize(repeating: 0)
            for j in 0..<e { owner[j] = -1 }
            while true {
                var pick = -1
                for j in 0..<e where owner[j] == -1 && work.tokenCount[j] > 0 {
                    if pick < 0 || work.tokenCount[j] > work.tokenCount[pick] { pick = j }
                }
                guard pick >= 0 else { break }
                var best = 0
                for p in 1..<threads where load[p] < load[best] { best = p }
                load[best] += Int(work.tokenCount[pick])
                owner[pick] = Int32(best)
            }
        }
    }
}

/// Registers the executor as `--execution cpu-whole-experts`.
public struct WholeExpertsExecution: ExecutionStrategy {
    public init() {}

    public func prepare(_ context: ExecutionContext) throws -> ExecutionSummary {
        let executor = WholeExpertsExecutor(weights: context.model.weights)
        context.model.install(experts: executor)
        return ExecutionSummary(strategy: "cpu-whole-experts", devices: executor.devices, map: nil)
    }

    public static func register(in registry: StrategyRegistry) {
        registry.registerExecution("cpu-whole-experts",
                                   summary: "one pool; each kernel thread computes whole experts, dealt out by token count") { _ in
            WholeExpertsExecution()
        }
    }
}
