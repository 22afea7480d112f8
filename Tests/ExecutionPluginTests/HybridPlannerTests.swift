import Foundation
import Testing
@testable import HybridExecution

/// The hybrid executor's decisions, from hand-made measured figures: a
/// Mixtral-sized expert (3 x 4096 x 14336 BF16, 352 MB), a CPU that reads
/// 30 GB/s and computes up to 250 GFLOP/s, PCIe 4 at 25 GB/s, a GPU at 400
/// TFLOP/s. No GPU is needed: these are the rules the GPU side will follow.
@Suite struct HybridPlannerTests {
    typealias Site = HybridPlanner.Site
    static let bytes = 3 * 4096 * 14336 * 2
    /// Two FLOPs per weight per token.
    static let flops = Double(3 * 4096 * 14336 * 2)
    /// Bandwidth-bound up to 8 tokens (n x 30 GFLOP/s), then the GEMM plateau.
    static let cost = HybridCostModel(
        cpuFlopsPerSecond: [.init(tokens: 64, flopsPerSecond: 250e9), .init(tokens: 1, flopsPerSecond: 30e9),
                            .init(tokens: 2, flopsPerSecond: 60e9), .init(tokens: 4, flopsPerSecond: 120e9),
                            .init(tokens: 8, flopsPerSecond: 200e9)],
        cpuReadBytesPerSecond: 30e9, hostToDeviceBytesPerSecond: 25e9, gpuFlopsPerSecond: 400e12, gpuLaunchSeconds: 50e-6)

    @Test func cpuThroughputInterpolatesBetweenMeasuredPoints() {
        #expect(Self.cost.cpuFlopsPerSecond.map(\.tokens) == [1, 2, 4, 8, 64])
        #expect(Self.cost.cpuThroughput(tokens: 3) == 90e9)
        #expect(Self.cost.cpuThroughput(tokens: 36) == 225e9)
        #expect(Self.cost.cpuThroughput(tokens: 1000) == 250e9)
    }

    /// Uploading 352 MB takes 14.1 ms; the CPU needs 11.7 ms (its read) up to
    /// 8 tokens, 14.09 ms at 8 and 15.8 ms at 9: the GPU wins from 9.
    @Test func crossoverIsTheFewestTokensAtWhichUploadingWins() {
        #expect(Self.cost.crossoverTokens(bytes: Self.bytes, flopsPerToken: Self.flops) == 9)
        var fastLink = Self.cost
        fastLink.hostToDeviceBytesPerSecond = 64e9
        #expect(fastLink.crossoverTokens(bytes: Self.bytes, flopsPerToken: Self.flops) == 1)
        var noGPU = Self.cost
        noGPU.gpuFlopsPerSecond = 1e9
        #expect(noGPU.crossoverTokens(bytes: Self.bytes, flopsPerToken: Self.flops) == nil)
    }

    let tokens = [40, 9, 3, 1, 0, 0, 12, 2]
    let resident = [false, false, true, false, false, false, false, false]

    /// Expert 2 is resident. Of the others, 40 and 12 tokens move to the GPU
    /// (each move shortens the layer); expert 1 has 9 tokens, past the
    /// crossover, but by then the GPU is the slower side, so it stays on the
    /// CPU, as do the 1- and 2-token experts.
    @Test func nonResidentExpertsMoveToTheGPUOnlyWhileThatShortensTheLayer() {
        let plan = HybridPlanner(cost: Self.cost).plan(layer: 0, tokenCount: tokens, resident: resident,
                                                       expertBytes: Self.bytes, flopsPerToken: Self.flops)
        #expect(plan.sites == [.uploaded, .cpu, .resident, .cpu, nil, nil, .uploaded, .cpu])
        #expect(plan.uploadedBytes == 2 * Self.bytes)
        #expect(plan.tokens(at: .uploaded, tokens) == 52 && plan.tokens(at: .cpu, tokens) == 12 && plan.tokens(at: .resident, tokens) == 3)
        // Both sides near 28-39 ms instead of 122 ms on the CPU alone.
        #expect(abs(plan.gpuSeconds - 0.02838) < 1e-4)
        #expect(abs(plan.cpuSeconds - 0.03926) < 1e-4)
    }

    @Test func aCapBoundsUploadsPerLayer() {
        let plan = HybridPlanner(cost: Self.cost, maxUploadBytesPerLayer: Self.bytes)
            .plan(layer: 0, tokenCount: tokens, resident: resident, expertBytes: Self.bytes, flopsPerToken: Self.flops)
        #expect(plan.sites == [.uploaded, .cpu, .resident, .cpu, nil, nil, .cpu, .cpu])
        #expect(plan.uploadedBytes == Self.bytes)
    }

    /// A ring of 2 slots. Eight experts of 200 tokens (a long prompt): the
    /// CPU would need 282 ms each, an upload 14.1 ms, so all eight go up
    /// though six of them wait for a slot (the host stages those before the
    /// CPU's share starts). Eight of 10 tokens (17.5 ms each on the CPU):
    /// six go up, 91.3 ms for the layer; the next would make the GPU the
    /// slower side. Counting the staging waits is what takes the sixth: the
    /// CPU side is the slower one while it waits. Uploads capped at the
    /// ring's size, as before, gave 1691 and 105 ms.
    @Test func uploadsPastTheRingsSizeCountTheHostsWaitsForASlot() {
        let planner = HybridPlanner(cost: Self.cost, uploadSlots: 2)
        let none = [Bool](repeating: false, count: 8), upload = Self.cost.uploadSeconds(bytes: Self.bytes)
        let long = planner.plan(layer: 0, tokenCount: [Int](repeating: 200, count: 8), resident: none, expertBytes: Self.bytes,
                                flopsPerToken: Self.flops)
        #expect(long.sites == [Site?](repeating: .uploaded, count: 8))
        #expect(abs(long.stagingSeconds - 6 * upload) < 1e-9 && long.cpuSeconds == 0)
        #expect(abs(long.seconds - 0.11455) < 1e-4)
        let short = planner.plan(layer: 0, tokenCount: [Int](repeating: 10, count: 8), resident: none, expertBytes: Self.bytes,
                                 flopsPerToken: Self.flops)
        #expect(short.sites == [Site?](repeating: .uploaded, count: 6) + [.cpu, .cpu])
        #expect(abs(short.stagingSeconds - 4 * upload) < 1e-9)
        #expect(abs(short.seconds - 0.09129) < 1e-4)
        let capped = HybridPlanner(cost: Self.cost, uploadSlots: 2, maxUploadBytesPerLayer: 2 * Self.bytes)
        #expect(abs(capped.plan(layer: 0, tokenCount: [Int](repeating: 200, count: 8), resident: none, expertBytes: Self.bytes,
                                flopsPerToken: Self.flops).seconds - 1.69114) < 1e-4)
        #expect(abs(capped.plan(layer: 0, tokenCount: [Int](repeating: 10, count: 8), resident: none, expertBytes: Self.bytes,
                                flopsPerToken: Self.flops).seconds - 0.10476) < 1e-4)
    }

    @Test func llamaCppStaticFormsKeepExpertsOnTheCPU() {
        let all = HybridPlanner(cost: Self.cost, mode: .allExpertsOnCPU)
            .plan(layer: 5, tokenCount: tokens, resident: resident, expertBytes: Self.bytes, flopsPerToken: Self.flops)
        #expect(all.sites == [.cpu, .cpu, .cpu, .cpu, nil, nil, .cpu, .cpu])
        #expect(all.gpuSeconds == 0 && all.uploadedBytes == 0)
        let firstTwo = HybridPlanner(cost: Self.cost, mode: .firstLayersOnCPU(2))
        #expect(firstTwo.plan(layer: 1, tokenCount: tokens, resident: resident, expertBytes: Self.bytes, flopsPerToken: Self.flops).sites
                == all.sites)
        #expect(firstTwo.plan(layer: 2, tokenCount: tokens, resident: resident, expertBytes: Self.bytes, flopsPerToken: Self.flops).sites
                == [.uploaded, .cpu, .resident, .cpu, nil, nil, .uploaded, .cpu])
    }

    /// The comparison arm: every cold expert with tokens is uploaded, even
    /// the 1-token one the CPU would finish first, past the ring's size
    /// (the host waits for slots), up to a cap where one is set.
    @Test func uploadEveryExpertModeUploadsEveryColdExpertUpToACap() {
        let all = HybridPlanner(cost: Self.cost, mode: .uploadEveryExpert, uploadSlots: 1)
            .plan(layer: 0, tokenCount: tokens, resident: resident, expertBytes: Self.bytes, flopsPerToken: Self.flops)
        #expect(all.sites == [.uploaded, .uploaded, .resident, .uploaded, nil, nil, .uploaded, .uploaded])
        #expect(all.cpuSeconds == 0 && all.uploadedBytes == 5 * Self.bytes)
        #expect(abs(all.stagingSeconds - 4 * Self.cost.uploadSeconds(bytes: Self.bytes)) < 1e-9)
        let bounded = HybridPlanner(cost: Self.cost, mode: .uploadEveryExpert, maxUploadBytesPerLayer: 2 * Self.bytes)
            .plan(layer: 0, tokenCount: tokens, resident: resident, expertBytes: Self.bytes, flopsPerToken: Self.flops)
        #expect(bounded.sites == [.uploaded, .cpu, .resident, .cpu, nil, nil, .uploaded, .cpu])
    }

    @Test func measuredFiguresRoundTripThroughTheirJSONCache() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("hybrid-cost-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = HybridCostModel.cachePath(model: dir)
        try Self.cost.save(to: path)
        #expect(try HybridCostModel.load(from: path) == Self.cost)
    }
}

@Suite struct ResidentExpertsTests {
    typealias E = ResidentExperts.Expert

    /// Three 10-byte experts fit 30 bytes: the hottest three of both layers.
    @Test func budgetHoldsTheHottestExperts() {
        let r = ResidentExperts(heat: [[5, 1, 0, 9], [2, 7, 0, 0]], expertBytes: 10, budgetBytes: 35)
        #expect(r.capacity == 3)
        #expect(r.resident == [E(layer: 0, expert: 3), E(layer: 1, expert: 1), E(layer: 0, expert: 0)])
        #expect(r.flags(layer: 0) == [true, false, false, true])
    }

    @Test func liveCountsSwapABoundedNumberOfExpertsPastTheHysteresis() {
        var r = ResidentExperts(heat: [[5, 1, 0, 9], [2, 7, 0, 0]], expertBytes: 10, budgetBytes: 30, decay: 0.5, hysteresis: 0.25)
        // Layer 0's expert 1 turns hot: heat [2.5, 10.5, 0, 4.5].
        r.observe(layer: 0, tokenCount: [0, 20, 0, 0])
        #expect(r.heat[0] == [2.5, 10.5, 0, 4.5])
        let swaps = r.rebalance(layer: 0, maxSwaps: 1)
        #expect(swaps.map(\.evicted) == [E(layer: 0, expert: 0)] && swaps.map(\.admitted) == [E(layer: 0, expert: 1)])
        // Layer 0's expert 0 (2.5) is not 25% hotter than the coldest resident (4.5): no churn.
        #expect(r.rebalance(layer: 0, maxSwaps: 2).isEmpty)
        #expect(r.resident == [E(layer: 0, expert: 1), E(layer: 0, expert: 3), E(layer: 1, expert: 1)])
    }

    /// The challenger comes from the layer just observed; the expert it
    /// replaces is the coldest resident of any layer.
    @Test func aHotExpertEvictsTheColdestResidentOfAnyLayer() {
        var r = ResidentExperts(heat: [[5, 0], [1, 0]], expertBytes: 1, budgetBytes: 2, decay: 0.5)
        r.observe(layer: 0, tokenCount: [0, 10])
        #expect(r.heat[0] == [2.5, 5])
        let swaps = r.rebalance(layer: 0, maxSwaps: 2)
        #expect(swaps.map(\.evicted) == [E(layer: 1, expert: 0)] && swaps.map(\.admitted) == [E(layer: 0, expert: 1)])
        #expect(r.resident == [E(layer: 0, expert: 0), E(layer: 0, expert: 1)])
    }

    @Test func swapsStopAtTheLimitEvenWhenMoreExpertsAreHotter() {
        var r = ResidentExperts(heat: [[1, 1, 0, 0]], expertBytes: 1, budgetBytes: 2, decay: 1)
        r.observe(layer: 0, tokenCount: [0, 0, 5, 6])
        let swaps = r.rebalance(layer: 0, maxSwaps: 1)
        #expect(swaps.count == 1 && swaps[0].admitted == E(layer: 0, expert: 3))
        #expect(r.rebalance(layer: 0, maxSwaps: 1).map(\.admitted) == [E(layer: 0, expert: 2)])
    }
}
