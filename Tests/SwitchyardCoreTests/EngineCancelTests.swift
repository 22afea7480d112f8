import Foundation
import Testing
import ChunkedScheduler
@testable import SwitchyardCore
@testable import SwitchyardModel

/// `Engine.cancel` aborts a request wherever it is and frees its blocks
/// before the next iteration; other requests are untouched. `onLoopThread`
/// runs between iterations.
@Suite struct EngineCancelTests {
    /// Chunked scheduling that stops running request "long" once it has two
    /// output tokens, so it is still running (holding blocks) however late
    /// the cancel arrives.
    final class HoldingScheduler: Scheduler {
        let inner = ChunkedScheduler(.init(maxNumBatchedTokens: 64, maxNumSeqs: 8))
        func schedule(_ context: SchedulingContext) -> IterationPlan {
            let held = Set(context.running.filter { $0.requestId == "long" && $0.outputTokens >= 2 }.map(\.handle))
            var plan = inner.schedule(context)
            plan.work.removeAll { held.contains($0.handle) }
            return plan
        }
    }

    func model() throws -> Transformer {
        try Transformer(directory: EngineTests.fixtures.appendingPathComponent("qwen2_moe").path)
    }

    @Test func cancellingARunningRequestAbortsItFreesItsBlocksAndLeavesOthersIntact() async throws {
        let m = try model()
        let engine = Engine(model: m, config: EngineConfig(maxModelLen: 256, blockSize: 4, numKVBlocks: 128),
                            scheduler: HoldingScheduler())
        engine.start()
        let long = engine.submit(GenerationRequest(id: "long", promptTokens: [1, 2, 3, 4, 5], maxTokens: 200, ignoreEOS: true))
        let short = engine.submit(GenerationRequest(id: "short", promptTokens: [7, 8, 9], maxTokens: 6, ignoreEOS: true))
        var tokens = 0
        var output: RequestOutput?
        for await event in long {
            switch event {
            case .token:
                tokens += 1
                if tokens == 2 { engine.cancel(requestId: "long") }
            case .promptScored: break
            case .finished(let o): output = o
            }
        }
        let out = try #require(output)
        #expect(out.finishReason == .abort && out.error == nil)
        #expect(out.outputTokens.count == 2)
        var shortOut: RequestOutput?
        for await event in short { if case .finished(let o) = event { shortOut = o } }
        #expect(shortOut?.outputTokens == (try Generator(model: m).generate(prompt: [7, 8, 9], maxTokens: 6).tokens))
        #expect(shortOut?.finishReason == .length)
        #expect(engine.stats.cancelledRequests == 1)
        #expect(engine.freeKVBlocks == 128)
        // Unknown and finished ids are ignored.
        engine.cancel(requestId: "long")
        engine.cancel(requestId: "nobody")
        let layers = await engine.onLoopThread { m.counters.numLayers }
        #expect(layers == m.config.numLayers)
        #expect(engine.stats.cancelledRequests == 1 && engine.stats.runningRequests == 0 && engine.stats.usedKVBlocks == 0)
        engine.shutdown()
        // After shutdown it runs on the caller.
        #expect(await engine.onLoopThread { 7 } == 7)
    }
}
