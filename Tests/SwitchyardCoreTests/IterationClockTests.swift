import ChunkedScheduler
import Foundation
import Testing
@testable import SwitchyardCore
@testable import SwitchyardModel

/// Arrivals replayed on the engine's iteration clock make a finite-rate
/// benchmark's schedule, and so every engine counter, repeat exactly.
@Suite struct IterationClockTests {
    func engine() throws -> Engine {
        let m = try Transformer(directory: EngineTests.fixtures.appendingPathComponent("qwen2_moe").path)
        return Engine(model: m, config: EngineConfig(maxModelLen: 256, blockSize: 4, numKVBlocks: 512),
                      scheduler: ChunkedScheduler(.init(maxNumBatchedTokens: 32, maxNumSeqs: 8)))
    }

    @Test func everyCounterRepeatsAtAFiniteBurstyRate() async throws {
        let workload = try Workload.synthetic(numPrompts: 12, inputLen: 30, outputLen: 6, rangeRatio: 0.5, requestRate: 40,
                                              burstiness: 0.5, vocabSize: 317, seed: 3)
        #expect(Set(workload.map(\.arrival)).count > 6)
        var runs: [(EngineStats, Int, [ClientRecord])] = []
        for _ in 0..<2 {
            let e = try engine()
            let (records, _) = await BenchmarkRunner(engine: e, workload: workload).run(seed: 0, clock: .iterations(secondsPerIteration: 0.005))
            let stats = e.stats
            e.shutdown()
            runs.append((stats, e.model.counters.expertWeightBytesRead, records))
        }
        #expect(runs[0].0.iterations == runs[1].0.iterations)
        #expect(runs[0].0.scheduledTokens == runs[1].0.scheduledTokens)
        #expect(runs[0].0.batchSizeHistogram == runs[1].0.batchSizeHistogram)
        #expect(runs[0].0.decodeStalls == runs[1].0.decodeStalls)
        #expect(runs[0].1 == runs[1].1)
        #expect(runs[0].2.allSatisfy { $0.success && $0.outputTokens == $0.itls.count + 1 && $0.ttft > 0 })
        // Arrivals spread the requests out: not every request was in the first iteration's batch.
        #expect(runs[0].0.batchSizeHistogram.keys.max()! < 12)
    }

    @Test func aRequestWaitsForItsArrivalIterationAndIdleStretchesAreSkipped() async throws {
        let e = try engine()
        let replay = IterationClockReplay(requests: [
            GenerationRequest(id: "a", promptTokens: Array(1...8), maxTokens: 3, ignoreEOS: true),
            GenerationRequest(id: "b", promptTokens: Array(20...27), maxTokens: 3, ignoreEOS: true),
        ], arrivalIteration: [0, 1000])
        replay.attach(to: e)
        e.start()
        var outs: [RequestOutput] = []
        for s in replay.streams { for await ev in s { if case .finished(let o) = ev { outs.append(o) } } }
        e.shutdown()
        #expect(outs.map(\.outputTokens.count) == [3, 3])
        // b arrived after a finished (a needed 3 iterations), and the 997
        // idle iterations in between were skipped, not run.
        #expect(outs[1].arrivalTime >= outs[0].finishTime)
        #expect(e.stats.iterations == 6)
    }

    @Test func requestsDueTogetherArriveTogetherInWorkloadOrder() async throws {
        let e = try engine()
        let replay = IterationClockReplay(requests: (0..<3).map {
            GenerationRequest(id: "r\($0)", promptTokens: Array(1...4), maxTokens: 2, ignoreEOS: true)
        }, arrivalIteration: [5, 0, 5])
        replay.attach(to: e)
        e.start()
        var outs: [RequestOutput] = []
        for s in replay.streams { for await ev in s { if case .finished(let o) = ev { outs.append(o) } } }
        e.shutdown()
        // r1 ran alone (2 iterations), then r0 and r2 were admitted in the
        // same pass and batched together.
        #expect(outs[0].arrivalTime >= outs[1].finishTime && outs[2].arrivalTime >= outs[1].finishTime)
        #expect(e.stats.batchSizeHistogram == [1: 2, 2: 2])
    }
}
