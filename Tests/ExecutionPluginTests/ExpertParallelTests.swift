@testable import ExpertParallelExecution
import Foundation
import SwitchyardModel
import Testing

/// Expert parallelism must change where experts run, never what they compute.
@Suite(.serialized) struct ExpertParallelTests {
    static let defaultModel = PluginFixtures.defaultModel
    /// Whether this machine has two cores to make two pools of.
    static let twoCores = ((try? CPUTopology.load().cores.count) ?? 1) >= 2

    func maxRelativeDifference(_ a: [[Float]], _ b: [[Float]]) -> Float {
        zip(a, b).map { zip($0, $1).map { abs($0 - $1) / (1 + abs($1)) }.max() ?? 0 }.max() ?? 0
    }

    /// Pools over this machine's cores: `devices` of them, or one pool of all cores.
    func pools(_ devices: Int) throws -> [CorePool] {
        try CorePools.split(try CPUTopology.load(), devices: devices)
    }

    /// Expert e of layer l on device (e + l) mod n: every device busy, no two layers alike.
    func map(_ c: ModelConfig, devices n: Int) -> [[Int]] {
        (0..<c.numLayers).map { l in (0..<c.numExperts).map { ($0 + l) % n } }
    }

    // 3 tokens take the 16-bit matrix-vector path, 80 the widened-GEMM one
    // (some experts get ≥ 24 tokens); the fixtures are Float32 (sgemm path).
    // The same cases again in every available precision: each pool runs its
    // experts through the model's GEMM backend on its own threads.
    // The newer families too: gpt-oss (expert biases and clamped SwiGLU
    // carried into the node-local copies; MXFP4 blocks and scales copied
    // apart), DeepSeek-V3 and GLM (shared experts stay with the model).
    @Test(arguments: [("stdlib-moe", 3), ("stdlib-moe", 80), ("qwen2_moe", 40), ("mixtral", 12), ("gpt_oss", 12),
                      ("gpt_oss_mxfp4", 40), ("deepseek_v3_noninterleaved_bf16_sharded", 30), ("glm4_moe", 20)],
          ComputeOptions.available)
    func logitsMatchSingleDeviceExecution(_ c: (name: String, length: Int), _ compute: ComputeOptions) throws {
        let (name, length) = c
        let dir = name == "stdlib-moe" ? Self.defaultModel : PluginFixtures.model(name)
        let model = try Transformer(directory: dir)
        try model.configure(compute: compute)
        let c = model.config
        let prompt = (0..<length).map { Int32(($0 * 37 + 11) % c.vocabSize) }
        let gen = Generator(model: model, blockSize: 16)
        let single = try gen.allLogits(prompt)
        let devices = min(2, try CPUTopology.load().cores.count)
        for (n, pools) in [(devices, try pools(devices)), (1, try pools(1))] {
            let ep = try ExpertParallelExecutor(weights: model.weights, pools: pools, map: map(c, devices: n), weightsOnNode: true, pin: true)
            model.install(experts: ep)
            let parallel = try gen.allLogits(prompt)
            model.install(experts: nil)
            #expect(maxRelativeDifference(parallel, single) < 1e-4, "\(name), \(n) device(s)")
            // Every token-expert assignment was computed by exactly one device.
            let s = ep.stats
            for l in 0..<c.numLayers where c.sparseLayers[l] {
                #expect(s.deviceTokens[l].reduce(0, +) == length * c.numExpertsPerToken)
                #expect(s.deviceTokens[l].count == n)
            }
            #expect((0..<c.numLayers).allSatisfy { s.expertPhaseSeconds[$0] > 0 || !c.sparseLayers[$0] })
        }
    }

    @Test(.enabled(if: twoCores, "two device pools need two cores"))
    func deviceTokenCountsFollowTheExpertMap() throws {
        let model = try Transformer(directory: Self.defaultModel)
        let c = model.config
        // All of layer 0's experts on device 1, all of the others' on device 0.
        let m = (0..<c.numLayers).map { l in Array(repeating: l == 0 ? 1 : 0, count: c.numExperts) }
        let ep = try ExpertParallelExecutor(weights: model.weights, pools: try pools(2), map: m, weightsOnNode: false, pin: false)
        #expect(ep.numDevices == 2)
        #expect(ep.devices.map(\.kind) == [.cpuPool, .cpuPool])
        #expect(ep.devices.map(\.experts) == [(c.numLayers - 1) * c.numExperts, c.numExperts])
        model.install(experts: ep)
        _ = try Generator(model: model, blockSize: 16).allLogits([1, 2, 3, 4, 5])
        let s = ep.stats
        #expect(s.deviceTokens[0] == [0, 5 * c.numExpertsPerToken])
        #expect(s.deviceTokens[1] == [5 * c.numExpertsPerToken, 0])
        #expect(s.deviceBusySeconds[0][1] > 0 && s.deviceBusySeconds[1][1] == 0)
        // One device does all the work in every layer: each forward waits on
        // twice the mean device's share.
        #expect(s.busiestDeviceTokens[0] == 5 * c.numExpertsPerToken)
        #expect(abs(s.perForwardImbalance - 2) < 1e-12)
    }

    @Test func expertWeightsAreCopiedOntoTheirPoolsNode() throws {
        let model = try Transformer(directory: Self.defaultModel)
        let c = model.config
        let pools = try pools(1)
        let ep = try ExpertParallelExecutor(weights: model.weights, pools: pools, map: map(c, devices: 1), weightsOnNode: true, pin: false)
        let pages = ep.expertPages()
        // The copies were written, so every page is resident; with NUMA
        // support all of them are on the pool's node.
        #expect(pages.notResident == 0)
        if ep.weightsOnNode {
            #expect(pages.byNode.keys.sorted() == [pools[0].numaNode])
            #expect(pages.failed == 0)
        }
        // The copies hold the checkpoint's bytes.
        guard case .moe(let original) = model.weights.layers[0].feedForward, let copy = ep.experts[0]?[3] else {
            Issue.record("layer 0 is not an MoE layer"); return
        }
        #expect(memcmp(original.experts[3].down.data, copy.down.data, copy.down.byteCount) == 0)
        #expect(original.experts[3].down.data != copy.down.data)
    }

    @Test func threadsAreSharedOutByCoresWithAtLeastOnePerPool() {
        #expect(ExpertParallelExecutor.shareThreads(4, cores: [2, 2]).map(\.count) == [2, 2])
        #expect(ExpertParallelExecutor.shareThreads(8, cores: [6, 2]).map(\.count) == [6, 2])
        #expect(ExpertParallelExecutor.shareThreads(3, cores: [1, 1, 1]).map(\.first) == [0, 1, 2])
        #expect(ExpertParallelExecutor.shareThreads(2, cores: [7, 1]).map(\.count) == [1, 1])
        #expect(ExpertParallelExecutor.shareThreads(5, cores: [1, 1]).map(\.count).reduce(0, +) == 5)
    }

    @Test func badMapsAndTooManyDevicesAreRejected() throws {
        let model = try Transformer(directory: Self.defaultModel)
        let c = model.config
        let pools = try pools(1)
        #expect(throws: ExpertParallelExecutor.SetupError.self) {
            try ExpertParallelExecutor(weights: model.weights, pools: pools, map: [[0]], weightsOnNode: false, pin: false)
        }
        #expect(throws: ExpertParallelExecutor.SetupError.self) {
            try ExpertParallelExecutor(weights: model.weights, pools: pools, map: map(c, devices: 2), weightsOnNode: false, pin: false)
        }
        let many = Array(repeating: pools[0], count: Parallel.threadCount + 1)
        #expect(throws: ExpertParallelExecutor.SetupError.tooFewThreads(devices: many.count, threads: Parallel.threadCount)) {
            try ExpertParallelExecutor(weights: model.weights, pools: many, map: map(c, devices: many.count), weightsOnNode: false, pin: false)
        }
    }

    /// Whether this process may bind threads at all (containers may refuse).
    static let pinningAllowed: Bool = {
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var ok = false
        let t = Thread {
            ok = ThreadPinning.pinCurrentThread(to: ThreadPinning.currentBinding())
            done.signal()
        }
        t.start()
        done.wait()
        return ok
    }()

    @Test(.enabled(if: pinningAllowed, "this system refuses thread binding (hwloc_set_cpubind failed)"))
    func pinningBindsTheCallingThread() throws {
        let topo = try CPUTopology.load()
        let target = topo.cores.last!.processingUnits
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var bound: [Int] = []
        nonisolated(unsafe) var ok = false
        let t = Thread {
            ok = ThreadPinning.pinCurrentThread(to: target)
            bound = ThreadPinning.currentBinding()
            done.signal()
        }
        t.start()
        done.wait()
        #expect(ok)
        #expect(bound == target)
    }
}
