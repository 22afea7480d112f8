import Foundation
import Testing
@testable import SwitchyardModel

/// The benchmarks measure something real: tiny configurations run end to end
/// and report positive, finite rates and the byte counts the model implies.
/// (No timing thresholds: those belong in docs/performance.md, not in tests.)
@Suite struct BenchmarkSmokeTests {
    @Test func kernelBenchmarkReportsEveryRow() {
        var o = KernelBenchmark.Options()
        o.expertRows = 64; o.expertCols = 64; o.expertPoolBytes = 1 << 20
        o.tokenCounts = [1, 4, 32]; o.matVecBytes = 1 << 20; o.peakGemmSize = 64; o.minSeconds = 0.01
        let r = KernelBenchmark.run(o)
        #expect(r.peakSgemmGflops > 0 && r.streamingReadGBs > 0 && r.bf16MatVecGBs > 0)
        #expect(r.expertProjection.map(\.tokens) == [1, 4, 32])
        #expect(r.expertProjection.allSatisfy { $0.directGflops > 0 && $0.sgemmGflops > 0 && $0.directGflops.isFinite })
    }

    @Test func forwardBenchmarkCountsActiveBytes() throws {
        let model = try Transformer(directory: Fixtures.model("qwen3_moe_bf16_sharded"))
        var o = ForwardBenchmark.Options()
        o.batchSizes = [1, 3]; o.context = 5; o.decodeSteps = 2; o.prefillLength = 9; o.bandwidthBytes = 1 << 20
        let r = try ForwardBenchmark.run(model: model, o)
        let c = model.config
        // Per layer: q, k, v, o, router and top-k experts, all BF16; plus the LM head and one embedding row.
        let perLayer = 2 * (2 * c.qSize * c.hiddenSize + 2 * c.kvSize * c.hiddenSize + c.numExperts * c.hiddenSize
            + c.numExpertsPerToken * 3 * c.hiddenSize * c.moeIntermediateSize)
        #expect(r.activeWeightBytesPerToken == c.numLayers * perLayer + 2 * c.vocabSize * c.hiddenSize + 2 * c.hiddenSize)
        #expect(r.decode.map(\.batch) == [1, 3])
        #expect(r.decode.allSatisfy { $0.tokensPerSecond > 0 })
        #expect(r.decode[0].fractionOfRoofline != nil && r.decode[1].fractionOfRoofline == nil)
        // Batch 1: every token reads exactly k experts per layer.
        #expect(r.decode[0].expertWeightBytesPerToken == Double(c.numLayers * c.numExpertsPerToken * 3 * 2 * c.hiddenSize * c.moeIntermediateSize))
        #expect(r.prefillTokensPerSecond > 0)
    }
}
