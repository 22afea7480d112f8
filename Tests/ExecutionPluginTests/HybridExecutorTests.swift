import Foundation
import HybridExecution
import SwitchyardCore
import SwitchyardModel
import Testing

/// An accelerator in host memory: it computes its share with the CPU
/// kernels, synchronously, so the hybrid executor's orchestration (what goes
/// where, residency, counters, falling back) is checked without a GPU.
final class HostAccelerator: ExpertAccelerator, @unchecked Sendable {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    let name = "host-accelerator"
    let detail = "test double in host memory"
    let expertBudgetBytes: Int
    private(set) var loaded: Set<ResidentExperts.Expert> = []
    private(set) var layersBegun = 0
    /// Experts whose rows the host gathered though this device said it
    /// holds them (with `gathers`).
    private(set) var gatheredByHost: [Int] = []
    /// Experts asked for from device memory that were never loaded.
    private(set) var missingResident: [ResidentExperts.Expert] = []
    var failOnBegin = false
    /// Writes NaN into its rows, then fails in `finish`.
    var failOnFinish = false
    /// Says it holds the layer's rows, as a GPU does after the layer's
    /// front: the host leaves its experts' rows ungathered (NaN here), and
    /// it gathers them itself.
    var gathers = false
    private var flags: UnsafeMutablePointer<Bool>
    private let kernels: SharedPoolExecutor
    private let counts: UnsafeMutablePointer<Int32>
    private var pending: (work: ExpertWork, experts: [Int])?

    init(weights: ModelWeights, budgetBytes: Int) {
        expertBudgetBytes = budgetBytes
        kernels = SharedPoolExecutor(weights: weights)
        counts = .allocate(capacity: max(1, weights.config.numExperts))
        flags = .allocate(capacity: max(1, weights.config.numExperts))
    }

    deinit {
        counts.deallocate()
        flags.deallocate()
    }

    /// Asked before the host gathers: every row NaN first, so rows the host
    /// leaves alone stay NaN.
    func gathersRows(_ work: ExpertWork) -> Bool {
        if gathers {
            UnsafeMutablePointer(mutating: work.input).update(repeating: .nan, count: work.assignments * work.hiddenSize)
        }
        return gathers
    }

    func load(_ expert: ResidentExperts.Expert, weights: ExpertWeights) throws {
        loaded.insert(expert)
        if loaded.count * weights.byteCount > expertBudgetBytes { throw Failure(description: "over budget") }
    }

    func evict(_ expert: ResidentExperts.Expert) { loaded.remove(expert) }

    func begin(_ work: ExpertWork, experts: [Int], uploads: [Int]) throws {
        if failOnBegin { throw Failure(description: "begin failed") }
        layersBegun += 1
        for j in experts where !uploads.contains(j) && !loaded.contains(.init(layer: work.layer, expert: j)) {
            missingResident.append(.init(layer: work.layer, expert: j))
        }
        pending = (work, experts)
        for j in 0..<work.numExperts { counts[j] = experts.contains(j) ? work.tokenCount[j] : 0 }
        if gathers {
            // What the host left ungathered must be exactly these rows.
            for j in experts {
                let rows = UnsafeBufferPointer(start: work.input + Int(work.rowOffset[j]) * work.hiddenSize,
                                               count: Int(work.tokenCount[j]) * work.hiddenSize)
                if rows.contains(where: { !$0.isNaN }) { gatheredByHost.append(j) }
            }
            for j in 0..<work.numExperts { flags[j] = experts.contains(j) }
            work.gatherRows(only: flags)
        }
        if failOnFinish {
            for j in experts {
                (work.output + Int(work.rowOffset[j]) * work.hiddenSize).initialize(repeating: .nan, count: Int(work.tokenCount[j]) * work.hiddenSize)
            }
            forgetRows(work, experts: experts)
            return
        }
        kernels.run(work.with(tokenCount: counts))
        forgetRows(work, experts: experts)
    }

    /// A device's rows never reach the host: with `gathers`, its experts'
    /// rows go back to NaN once it has read them.
    private func forgetRows(_ work: ExpertWork, experts: [Int]) {
        guard gathers else { return }
        for j in experts {
            UnsafeMutablePointer(mutating: work.input + Int(work.rowOffset[j]) * work.hiddenSize)
                .update(repeating: .nan, count: Int(work.tokenCount[j]) * work.hiddenSize)
        }
    }

    func finish() throws {
        pending = nil
        if failOnFinish { throw Failure(description: "finish failed") }
    }
}

@Suite(.serialized) struct HybridExecutorTests {
    /// CPU ~10 GFLOP/s at 64 tokens, 10 GB/s read; a link and a GPU fast
    /// enough that the planner uploads the experts with most tokens.
    static let cost = HybridCostModel(cpuFlopsPerSecond: [.init(tokens: 1, flopsPerSecond: 1e9), .init(tokens: 64, flopsPerSecond: 1e10)],
                                      cpuReadBytesPerSecond: 1e10, hostToDeviceBytesPerSecond: 2e10, gpuFlopsPerSecond: 1e12,
                                      gpuLaunchSeconds: 1e-5)

    func maxRelativeDifference(_ a: [[Float]], _ b: [[Float]]) -> Float {
        zip(a, b).map { zip($0, $1).map { abs($0 - $1) / (1 + abs($1)) }.max() ?? 0 }.max() ?? Float.infinity
    }

    func setUp() throws -> (model: Transformer, prompt: [Int32], reference: [[Float]], expertBytes: Int) {
        let model = try Transformer(directory: PluginFixtures.defaultModel)
        let prompt = (0..<40).map { Int32(($0 * 53 + 7) % model.config.vocabSize) }
        let reference = try Generator(model: model, blockSize: 16).allLogits(prompt)
        let sample = model.weights.routedExpertsByLayer.lazy.compactMap(\.first).first!
        return (model, prompt, reference, sample.byteCount)
    }

    /// The plans' expected time, summed over the layers a forward ran:
    /// with every expert on the CPU (llama.cpp's `--cpu-moe`), each layer's
    /// is the CPU's time for its experts' token counts, which one forward's
    /// counters hold. It stands beside the measured expert phase in the
    /// results, so a run shows how well the measured figures predict.
    @Test func plannedExpertTimeIsTheCostModelsForTheLayersRun() throws {
        let (model, prompt, _, bytes) = try setUp()
        let device = HostAccelerator(weights: model.weights, budgetBytes: 4 * bytes)
        let hybrid = try HybridExecutor(weights: model.weights, accelerator: device, cost: Self.cost, mode: .allExpertsOnCPU)
        model.install(experts: hybrid)
        defer { model.install(experts: nil) }
        model.counters.reset()
        _ = try Generator(model: model, blockSize: 16).allLogits(prompt)
        let c = model.config, flops = model.weights.routedExpertsByLayer.lazy.compactMap(\.first).first!.flopsPerToken
        let expected = model.counters.tokens.reduce(0.0) { $0 + Self.cost.cpuSeconds(tokens: $1, bytes: bytes, flopsPerToken: flops) }
        #expect(c.sparseLayers.contains(true) && expected > 0)
        #expect(abs(hybrid.siteCounters.plannedSeconds - expected) <= 1e-12 * expected)
        #expect(hybrid.stats.counters["hybrid_planned_expert_phase_seconds"] == hybrid.siteCounters.plannedSeconds)
        #expect(hybrid.stats.counters["hybrid_expert_phase_seconds"]! > 0)
    }

    /// Also with a device that holds the layer's rows (`gathers`): the host
    /// gathers only its own experts' rows.
    @Test(arguments: [false, true])
    func logitsMatchTheCPUWithExpertsSplitBetweenDevices(deviceGathers: Bool) throws {
        let (model, prompt, reference, bytes) = try setUp()
        let routed = model.weights.routedExperts.count
        let device = HostAccelerator(weights: model.weights, budgetBytes: routed / 4 * bytes)
        device.gathers = deviceGathers
        let hybrid = try HybridExecutor(weights: model.weights, accelerator: device, cost: Self.cost)
        model.install(experts: hybrid)
        defer { model.install(experts: nil) }
        #expect(device.loaded.count == routed / 4)
        #expect(hybrid.devices.map(\.kind) == [.cpuPool, .accelerator])
        let logits = try Generator(model: model, blockSize: 16).allLogits(prompt)
        #expect(maxRelativeDifference(logits, reference) < 1e-5)
        #expect(device.missingResident.isEmpty && hybrid.lastAcceleratorError == nil)
        let s = hybrid.siteCounters
        let assignments = model.config.sparseLayers.filter { $0 }.count * prompt.count * model.config.numExpertsPerToken
        #expect(s.residentTokens + s.uploadedTokens + s.cpuTokens == assignments)
        #expect(s.cpuTokens > 0 && s.uploadedTokens > 0 && s.residentTokens > 0, "\(s)")
        // Every byte that crossed was a whole expert: an upload or a swap.
        #expect(s.hostToDeviceBytes > 0 && s.hostToDeviceBytes % bytes == 0)
        #expect(s.residentHitRate > 0 && s.residentHitRate < 1)
        #expect(device.gatheredByHost.isEmpty, "\(device.gatheredByHost)")
        #expect(s.rowsGatheredOnDevice == (deviceGathers ? s.residentTokens + s.uploadedTokens : 0))
        // The same figures reach benchmark results and /metrics by name.
        let report = BenchmarkReport.MoEReport(counters: model.counters, promptTokens: prompt.count, outputTokens: 0, executor: hybrid)
        #expect(report.devices?.stats.counters["hybrid_cpu_tokens"] == Double(s.cpuTokens))
        #expect(report.devices?.numDevices == 2 && report.devices?.crossDevicePairs == nil)
        #expect(hybrid.stats.counters["hybrid_cpu_tokens"] == Double(s.cpuTokens))
        #expect(hybrid.stats.counters["hybrid_host_to_device_bytes"] == Double(s.hostToDeviceBytes))
        #expect(hybrid.stats.counters["hybrid_resident_hit_rate"] == s.residentHitRate)
        let st = hybrid.stats
        for l in 0..<model.config.numLayers where model.config.sparseLayers[l] {
            #expect(st.deviceTokens[l].reduce(0, +) == prompt.count * model.config.numExpertsPerToken)
        }
    }

    /// Also where the host left the failed device's rows ungathered: it
    /// gathers them before computing them itself.
    @Test(arguments: [false, true], [false, true])
    func aFailingAcceleratorFallsBackToTheCPUWithoutChangingLogits(failInFinish: Bool, deviceGathers: Bool) throws {
        let (model, prompt, reference, bytes) = try setUp()
        let device = HostAccelerator(weights: model.weights, budgetBytes: 8 * bytes)
        if failInFinish { device.failOnFinish = true } else { device.failOnBegin = true }
        device.gathers = deviceGathers
        let hybrid = try HybridExecutor(weights: model.weights, accelerator: device, cost: Self.cost)
        model.install(experts: hybrid)
        defer { model.install(experts: nil) }
        let logits = try Generator(model: model, blockSize: 16).allLogits(prompt)
        #expect(maxRelativeDifference(logits, reference) < 1e-5)
        #expect(hybrid.siteCounters.fallbacks == 1)
        #expect(hybrid.lastAcceleratorError == "host-accelerator: \(failInFinish ? "finish" : "begin") failed")
        // Once failed, the accelerator is not asked again.
        #expect(device.layersBegun == (failInFinish ? 1 : 0))
    }

    @Test func llamaCppAllExpertsOnCPUNeverUsesTheAccelerator() throws {
        let (model, prompt, reference, bytes) = try setUp()
        let device = HostAccelerator(weights: model.weights, budgetBytes: 8 * bytes)
        let hybrid = try HybridExecutor(weights: model.weights, accelerator: device, cost: Self.cost, mode: .allExpertsOnCPU)
        model.install(experts: hybrid)
        defer { model.install(experts: nil) }
        let logits = try Generator(model: model, blockSize: 16).allLogits(prompt)
        #expect(maxRelativeDifference(logits, reference) < 1e-5)
        #expect(device.loaded.isEmpty && device.layersBegun == 0)
        #expect(hybrid.siteCounters.cpuTokens > 0 && hybrid.siteCounters.hostToDeviceBytes == 0)
    }
}

@Suite struct HybridExecutionTests {
    @Test func gpuMemoryIsASizeOrAFractionOfFreeMemory() throws {
        #expect(try HybridExecution.budget("8GiB", freeBytes: 0) == 8 << 30)
        #expect(try HybridExecution.budget("512MiB", freeBytes: 0) == 512 << 20)
        #expect(try HybridExecution.budget("1.5GB", freeBytes: 0) == 1_500_000_000)
        #expect(try HybridExecution.budget("0.25", freeBytes: 1000) == 250)
        #expect(throws: ExecutionError.self) { try HybridExecution.budget("lots", freeBytes: 1000) }
        #expect(throws: ExecutionError.self) { try HybridExecution.budget("0", freeBytes: 1000) }
    }

    /// `switchyard topology --model`: what hybrid would hold, from the
    /// model's sizes (dense weights first, the ring, then experts).
    @Test func sizingSaysWhatABudgetHoldsDenseWeightsFirst() throws {
        let weights = try Transformer(directory: PluginFixtures.defaultModel).weights
        // 4,506,624 bytes of BF16 dense weights (the final norm's Float32
        // with the LM head); 96 experts of 96 KiB.
        let noGPU = HybridExecution.sizing(weights, freeBytes: nil)
        #expect(noGPU == ["hybrid sizing: dense weights on the GPU 4.3 MiB; 96 routed experts of 96 KiB (9.0 MiB); upload ring 4 x 96 KiB pinned on the host and on the GPU"])
        // 5 MiB free: 4.625 MiB after the ring, 0.8 of it 3.7 MiB, under the dense weights.
        #expect(HybridExecution.sizing(weights, freeBytes: 5 << 20)[1].hasSuffix("= 3.7 MiB: the dense weights alone exceed it"))
        var o = HybridExecution.Options()
        o.gpuMemory = "6MiB"
        // (6 MiB - 4,506,624) / 98,304 = 18 experts.
        #expect(HybridExecution.sizing(weights, freeBytes: 8 << 20, options: o)[1]
            == "  gpu_memory 6MiB of 7.6 MiB (free less the ring) = 6.0 MiB: 18 experts resident (18.8% of routed)")
        // A size says what it holds with no GPU to check it against; a fraction cannot.
        #expect(HybridExecution.sizing(weights, freeBytes: nil, options: o)[1]
            == "  gpu_memory 6MiB = 6.0 MiB (no GPU here to check it against): 18 experts resident (18.8% of routed)")
        o.gpuMemory = "0.5"
        #expect(HybridExecution.sizing(weights, freeBytes: nil, options: o).count == 1)
        o.gpuMemory = "6MiB"
        o.dense = false
        #expect(HybridExecution.sizing(weights, freeBytes: 8 << 20, options: o)[1].hasSuffix("64 experts resident (66.7% of routed)"))
    }

    /// CI has no GPU: choosing hybrid there is a start-up error that names
    /// what was looked for, where, and the fix; and float32 is refused first.
    @Test(.enabled(if: (try? CUDADriver.load(searchPath: CUDALibraries.defaultSearchPath(), systemSearch: true).get()) == nil,
                   "this machine has a CUDA driver"))
    func withoutAGPUHybridFailsAtStartUpNamingWhatItLookedFor() throws {
        let model = try Transformer(directory: PluginFixtures.defaultModel)
        let registry = StrategyRegistry()
        HybridExecution.register(in: registry)
        let context = ExecutionContext(model: model, topology: try CPUTopology.load()) { _ in ExpertMap(numDevices: 1, device: []) }
        #expect { try registry.makeExecution("hybrid").prepare(context) } throws: { error in
            "\(error)".contains("pass --dtype bfloat16")
        }
        guard let bf16 = ComputeOptions.available.first(where: { $0.dtype == .bfloat16 }) else { return }
        try model.configure(compute: bf16)
        #expect { try registry.makeExecution("hybrid").prepare(context) } throws: { error in
            let text = "\(error)"
            return text.contains("hybrid needs a CUDA GPU: libcuda.so.1 / libcuda.so not found") && text.contains("SWITCHYARD_CUDA_LIBRARY_PATH")
        }
        #expect(model.experts is SharedPoolExecutor)
    }
}
