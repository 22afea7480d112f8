import Foundation
import ShortestPromptFirstScheduler
import Testing
@testable import SwitchyardCore
@testable import SwitchyardModel

/// The example plug-in of docs/writing-a-strategy.md, tested like the others.
@Suite struct ShortestPromptFirstTests {
    func waiting(_ handle: Int, prompt: Int, arrival: Double) -> SequenceSnapshot {
        SequenceSnapshot(handle: handle, requestId: "w\(handle)", arrivalTime: arrival, promptLength: prompt, totalTokens: prompt,
                         computedTokens: 0, outputTokens: 0, allocatedBlocks: 0, admissionOrder: -1)
    }

    func context(_ waiting: [SequenceSnapshot], now: Double) -> SchedulingContext {
        SchedulingContext(waiting: waiting, running: [], freeBlocks: 100, totalBlocks: 100, blockSize: 16, numLayers: 2, now: now)
    }

    @Test func shortPromptsGoFirstUnlessARequestIsOverdue() {
        var c = ShortestPromptFirstScheduler.Config()
        c.maxNumBatchedTokens = 100
        c.maxWaitMs = 1000
        let spf = ShortestPromptFirstScheduler(c)
        let queue = [waiting(1, prompt: 300, arrival: 0.0), waiting(2, prompt: 40, arrival: 0.5), waiting(3, prompt: 20, arrival: 0.6)]
        #expect(spf.schedule(context(queue, now: 0.7)).work == [ScheduledWork(handle: 3, tokens: 20), ScheduledWork(handle: 2, tokens: 40),
                                                               ScheduledWork(handle: 1, tokens: 40)])
        // Request 1 has now waited over a second: it goes first.
        #expect(spf.schedule(context(queue, now: 1.2)).work == [ScheduledWork(handle: 1, tokens: 100)])
    }

    @Test func registersWithItsOptionsAndKeepsGreedyOutputs() async throws {
        let registry = StrategyRegistry()
        ShortestPromptFirstScheduler.register(in: registry)
        let scheduler = try registry.makeScheduler("spf", config: #"{"max_num_batched_tokens": 24}"#,
                                                   environment: SchedulerEnvironment(numLayers: 3, maxModelLen: 128))
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("SwitchyardModelTests/Fixtures/models/olmoe").path
        let model = try Transformer(directory: dir)
        let prompts: [[Int32]] = [Array(1...50), [7, 8], Array(100...130)]
        let engine = Engine(model: model, config: EngineConfig(maxModelLen: 128, blockSize: 8, numKVBlocks: 64), scheduler: scheduler)
        let outs = await engine.generate(prompts.enumerated().map { GenerationRequest(id: "s\($0)", promptTokens: $1, maxTokens: 5, ignoreEOS: true) })
        for (i, p) in prompts.enumerated() {
            #expect(outs[i].outputTokens == (try Generator(model: model).generate(prompt: p, maxTokens: 5).tokens))
        }
        engine.shutdown()
    }
}
