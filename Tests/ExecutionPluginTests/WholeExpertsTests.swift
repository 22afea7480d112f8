import CPUExecution
import Foundation
import SwitchyardCore
import SwitchyardModel
import Testing
import WholeExpertsExecution

/// The worked example of docs/writing-a-strategy.md: an execution strategy
/// built only on public protocols must compute what the default executor
/// computes, through the registry like any built-in.
@Suite(.serialized) struct WholeExpertsTests {
    func maxRelativeDifference(_ a: [[Float]], _ b: [[Float]]) -> Float {
        zip(a, b).map { zip($0, $1).map { abs($0 - $1) / (1 + abs($1)) }.max() ?? 0 }.max() ?? 0
    }

    // 5 tokens: every expert small (direct kernel); 90: many large experts.
    @Test(arguments: [("stdlib-moe", 5), ("stdlib-moe", 90), ("qwen3_moe_bf16_sharded", 40)], ComputeOptions.available)
    func logitsMatchTheDefaultExecutor(_ c: (name: String, length: Int), _ compute: ComputeOptions) throws {
        let dir = c.name == "stdlib-moe" ? PluginFixtures.defaultModel : PluginFixtures.model(c.name)
        let model = try Transformer(directory: dir)
        try model.configure(compute: compute)
        let cfg = model.config
        let prompt = (0..<c.length).map { Int32(($0 * 53 + 7) % cfg.vocabSize) }
        let gen = Generator(model: model, blockSize: 16)
        let reference = try gen.allLogits(prompt)

        let registry = StrategyRegistry()
        WholeExpertsExecution.register(in: registry)
        let summary = try registry.makeExecution("cpu-whole-experts").prepare(
            ExecutionContext(model: model, topology: try CPUTopology.load()) { _ in ExpertMap(numDevices: 1, device: []) })
        #expect(model.experts is WholeExpertsExecutor)
        #expect(summary.devices.count == 1 && summary.devices[0].kind == .cpuPool)
        let whole = try gen.allLogits(prompt)
        #expect(maxRelativeDifference(whole, reference) < 1e-4, "\(c.name), \(c.length) tokens")
        // Every assignment of every MoE layer was computed, once.
        let s = model.experts.stats
        for l in 0..<cfg.numLayers where cfg.sparseLayers[l] {
            #expect(s.deviceTokens[l] == [c.length * cfg.numExpertsPerToken])
        }
        try CPUExecution().prepare(ExecutionContext(model: model, topology: try CPUTopology.load()) { _ in
            ExpertMap(numDevices: 1, device: [])
        }).devices.forEach { #expect($0.name == "cpu") }
        #expect(model.experts is SharedPoolExecutor)
    }
}
