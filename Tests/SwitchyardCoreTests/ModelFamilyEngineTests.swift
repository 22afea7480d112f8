import ChunkedScheduler
import FCFSScheduler
import LayeredScheduler
import Foundation
import Testing
@testable import SwitchyardCore
@testable import SwitchyardModel

/// Every model family serves through the same engine: batched greedy
/// outputs equal each prompt run alone, under every scheduler, with a KV
/// cache small enough to force preemption by recompute, and every block is
/// freed at the end. (The Mixtral/Qwen/OLMoE families are covered by
/// EngineTests and StrategyTests on their fixtures.)
@Suite struct ModelFamilyEngineTests {
    static let families = ["deepseek_v2", "deepseek_v2_group", "deepseek_v3", "deepseek_v3_noninterleaved_bf16_sharded",
                           "glm4_moe", "glm4_moe_bf16_sharded", "gpt_oss", "gpt_oss_mxfp4"]

    func scheduler(_ name: String, layers: Int) -> any Scheduler {
        switch name {
        case "fcfs": return FCFSScheduler(.init(maxNumBatchedTokens: 64))
        case "chunked": return ChunkedScheduler(.init(maxNumBatchedTokens: 48, maxNumSeqs: 10))
        default: return LayeredScheduler(.init(maxCohortTokens: 96, tokensPerGroup: 16), numLayers: layers)
        }
    }

    @Test(arguments: families, ["fcfs", "chunked", "layered"])
    func batchedGreedyEqualsAloneUnderPreemption(_ family: String, _ schedulerName: String) async throws {
        let model = try Transformer(directory: EngineTests.fixtures.appendingPathComponent(family).path)
        var rng = Xoshiro256(seed: 21)
        let prompts = (0..<10).map { i in
            (0..<[3, 17, 40, 9, 64, 1, 25, 33, 12, 48][i]).map { _ in Int32(rng.next() % UInt64(model.config.vocabSize)) }
        }
        // 36 blocks of 4 tokens hold about a third of what the requests need at once.
        let engine = Engine(model: model, config: EngineConfig(maxModelLen: 128, blockSize: 4, numKVBlocks: 36),
                            scheduler: scheduler(schedulerName, layers: model.config.numLayers))
        let requests = prompts.enumerated().map {
            GenerationRequest(id: "\(family)-\($0)", promptTokens: $1, maxTokens: 14, ignoreEOS: true)
        }
        let outputs = await engine.generate(requests)
        for (i, out) in outputs.enumerated() {
            let alone = try Generator(model: model).generate(prompt: prompts[i], maxTokens: 14).tokens
            #expect(out.outputTokens == alone, "request \(i)")
        }
        #expect(engine.stats.preemptions > 0)
        #expect(engine.freeKVBlocks == 36)
        engine.shutdown()
    }
}
