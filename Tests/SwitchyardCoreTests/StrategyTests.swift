import ChunkedScheduler
import FCFSScheduler
import LayeredScheduler
import Foundation
import Testing
@testable import SwitchyardCore
@testable import SwitchyardModel

@Suite struct StrategyRegistryTests {
    func registry() -> StrategyRegistry {
        let r = StrategyRegistry()
        ChunkedScheduler.register(in: r)
        FCFSScheduler.register(in: r)
        return r
    }
    let env = SchedulerEnvironment(numLayers: 4, maxModelLen: 128)

    @Test func schedulersAreBuiltByNameWithTheirOptions() throws {
        let s = try registry().makeScheduler("chunked", config: #"{"max_num_batched_tokens": 1024, "max_num_seqs": 8}"#, environment: env)
        let chunked = try #require(s as? ChunkedScheduler)
        #expect(chunked.config == ChunkedScheduler.Config(maxNumBatchedTokens: 1024, maxNumSeqs: 8))
        let f = try #require(try registry().makeScheduler("fcfs", environment: env) as? FCFSScheduler)
        #expect(f.config == FCFSScheduler.Config())
        #expect(registry().names(.scheduler) == ["chunked", "fcfs"])
    }

    @Test func unknownNameListsTheValidOnes() {
        #expect(throws: StrategyError.unknown(kind: .scheduler, name: "lifo", valid: ["chunked", "fcfs"])) {
            try registry().makeScheduler("lifo", environment: env)
        }
    }

    @Test func badOptionsAreRejectedWithTheKeyNamed() {
        #expect(throws: StrategyError.invalidConfig(strategy: "chunked", reason: "unknown option \"max_num_seq\"; valid options: max_num_batched_tokens, max_num_seqs")) {
            try registry().makeScheduler("chunked", config: #"{"max_num_seq": 4}"#, environment: env)
        }
        #expect(throws: StrategyError.invalidConfig(strategy: "fcfs", reason: "\"max_num_seqs\" must be an integer, got true")) {
            try registry().makeScheduler("fcfs", config: #"{"max_num_seqs": true}"#, environment: env)
        }
        #expect(throws: StrategyError.invalidConfig(strategy: "chunked", reason: "\"max_num_batched_tokens\" must be in 1..., got 0")) {
            try registry().makeScheduler("chunked", config: #"{"max_num_batched_tokens": 0}"#, environment: env)
        }
        #expect(throws: StrategyError.self) { try registry().makeScheduler("chunked", config: "[1, 2]", environment: env) }
    }

    /// `--gpu-memory 8GiB --n-cpu-moe 4` and the like join the options JSON
    /// as its keys; a flag left out adds nothing, and a key given both ways
    /// is refused, naming the flag.
    @Test func shorthandFlagsMergeIntoTheOptionsAndMayNotRepeatAKey() throws {
        let merged = try StrategyConfig.merging(json: #"{"max_swaps": 1}"#, shorthands: [
            ("--gpu-memory", "gpu_memory", "8GiB"), ("--cpu-moe", "cpu_moe", nil), ("--n-cpu-moe", "n_cpu_moe", 4),
        ], strategy: "hybrid")
        #expect(merged == #"{"gpu_memory":"8GiB","max_swaps":1,"n_cpu_moe":4}"#)
        #expect(try StrategyConfig.merging(json: nil, shorthands: [("--numa", "numa", true)], strategy: "cpu-ep") == #"{"numa":true}"#)
        #expect(try StrategyConfig.merging(json: " ", shorthands: [], strategy: "cpu") == "{}")
        #expect(throws: StrategyError.invalidConfig(strategy: "hybrid",
                                                    reason: "gpu_memory is given both in the options JSON and as --gpu-memory; give it once")) {
            try StrategyConfig.merging(json: #"{"gpu_memory": "0.5"}"#, shorthands: [("--gpu-memory", "gpu_memory", "8GiB")], strategy: "hybrid")
        }
        #expect(throws: StrategyError.self) { try StrategyConfig.merging(json: "[1]", shorthands: [], strategy: "hybrid") }
    }
}

/// Scheduling policy, checked on plans and on whole runs.
@Suite struct SchedulerBehaviourTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("SwitchyardModelTests/Fixtures/models")

    func snapshot(_ handle: Int, prompt: Int, computed: Int, output: Int = 0) -> SequenceSnapshot {
        SequenceSnapshot(handle: handle, requestId: "r\(handle)", arrivalTime: 0, promptLength: prompt,
                         totalTokens: prompt + output, computedTokens: computed, outputTokens: output,
                         allocatedBlocks: (computed + 15) / 16, admissionOrder: handle)
    }

    func context(waiting: [SequenceSnapshot], running: [SequenceSnapshot]) -> SchedulingContext {
        SchedulingContext(waiting: waiting, running: running, freeBlocks: 1000, totalBlocks: 1000, blockSize: 16, numLayers: 4, now: 0)
    }

    @Test func chunkedPutsDecodesFirstThenChunksPromptsIntoTheBudget() {
        let running = [snapshot(1, prompt: 10, computed: 10, output: 1), snapshot(2, prompt: 300, computed: 100)]
        let waiting = [snapshot(3, prompt: 500, computed: 0)]
        let plan = ChunkedScheduler(.init(maxNumBatchedTokens: 256)).schedule(context(waiting: waiting, running: running))
        #expect(plan.work == [ScheduledWork(handle: 1, tokens: 1), ScheduledWork(handle: 2, tokens: 200), ScheduledWork(handle: 3, tokens: 55)])
        #expect(plan.tokenCount == 256)
    }

    @Test func fcfsRunsWholePromptsAloneThenDecodes() {
        let running = [snapshot(1, prompt: 10, computed: 10, output: 1)]
        let waiting = [snapshot(3, prompt: 500, computed: 0), snapshot(4, prompt: 700, computed: 0)]
        let fcfs = FCFSScheduler(.init(maxNumBatchedTokens: 1024))
        #expect(fcfs.schedule(context(waiting: waiting, running: running)).work == [ScheduledWork(handle: 3, tokens: 500)])
        #expect(fcfs.schedule(context(waiting: [], running: running)).work == [ScheduledWork(handle: 1, tokens: 1)])
        // A prompt over the budget still runs, alone.
        let long = [snapshot(5, prompt: 3000, computed: 0)]
        #expect(fcfs.schedule(context(waiting: long, running: running)).work == [ScheduledWork(handle: 5, tokens: 3000)])
    }

    @Test func layeredGroupsFollowTheReferenceRule() {
        let l = LayeredScheduler(.init(tokensPerGroup: 512, maxGroups: 16), numLayers: 10)
        #expect([100, 512, 513, 1024, 1500, 4096, 5000, 100_000].map { l.groupCount(tokens: $0) } == [1, 1, 2, 2, 4, 8, 10, 10])
        #expect(l.groups(4) == [0..<3, 3..<6, 6..<8, 8..<10])
        #expect(l.groups(1) == [0..<10])
    }

    @Test func layeredAdvancesACohortOneGroupPerIterationWhileDecodesRunAllLayers() {
        let l = LayeredScheduler(.init(tokensPerGroup: 16), numLayers: 4)
        let decode = snapshot(1, prompt: 10, computed: 10, output: 1)
        let waiting = [snapshot(2, prompt: 20, computed: 0), snapshot(3, prompt: 30, computed: 0)]
        // 50 tokens / 16 → 4 groups of one layer each.
        let first = l.schedule(context(waiting: waiting, running: [decode]))
        #expect(first.work == [ScheduledWork(handle: 1, tokens: 1), ScheduledWork(handle: 2, tokens: 20, layers: 0..<1),
                               ScheduledWork(handle: 3, tokens: 30, layers: 0..<1)])
        let inFlight = [SequenceSnapshot(handle: 2, requestId: "r2", arrivalTime: 0, promptLength: 20, totalTokens: 20, computedTokens: 0,
                                         outputTokens: 0, allocatedBlocks: 2, admissionOrder: 2, nextLayer: 2, inFlightTokens: 20),
                        SequenceSnapshot(handle: 3, requestId: "r3", arrivalTime: 0, promptLength: 30, totalTokens: 30, computedTokens: 0,
                                         outputTokens: 0, allocatedBlocks: 2, admissionOrder: 3, nextLayer: 2, inFlightTokens: 30)]
        let third = l.schedule(context(waiting: [snapshot(4, prompt: 5, computed: 0)], running: [decode] + inFlight))
        // No new cohort while one is in flight.
        #expect(third.work == [ScheduledWork(handle: 1, tokens: 1), ScheduledWork(handle: 2, tokens: 20, layers: 2..<3),
                               ScheduledWork(handle: 3, tokens: 30, layers: 2..<3)])
    }

    @Test func layeredReadsEachExpertOncePerCohortNotOncePerChunk() async throws {
        var bytes: [Int] = []
        var outputs: [[[Int32]]] = []
        var rng = Xoshiro256(seed: 21)
        let prompts = (0..<6).map { _ in (0..<40).map { _ in Int32(rng.next() % 199) } }
        for make in [{ (l: Int) in ChunkedScheduler(.init(maxNumBatchedTokens: 32)) as any Scheduler },
                     { (l: Int) in LayeredScheduler(.init(tokensPerGroup: 96), numLayers: l) as any Scheduler }] {
            let model = try Transformer(directory: Self.fixtures.appendingPathComponent("qwen3_moe").path)
            let engine = Engine(model: model, config: EngineConfig(maxModelLen: 128, blockSize: 8, numKVBlocks: 128),
                                scheduler: make(model.config.numLayers))
            model.counters.reset()
            let outs = await engine.generate(prompts.enumerated().map { GenerationRequest(id: "c\($0)", promptTokens: $1, maxTokens: 1) })
            outputs.append(outs.map(\.outputTokens))
            bytes.append(model.counters.expertWeightBytesRead)
            engine.shutdown()
        }
        #expect(outputs[0] == outputs[1])
        // 240 prompt tokens: chunked runs 8 chunks of 32 through every layer,
        // layered one cohort; every chunk routes to most of the 6 experts.
        #expect(Double(bytes[1]) < 0.5 * Double(bytes[0]))
    }

    @Test(arguments: ComputeOptions.available)
    func greedyOutputsAreIdenticalUnderBothSchedulersAndFCFSStallsDecodes(_ compute: ComputeOptions) async throws {
        let model = try Transformer(directory: Self.fixtures.appendingPathComponent("qwen3_moe").path)
        try model.configure(compute: compute)
        var rng = Xoshiro256(seed: 12)
        let prompts = (0..<8).map { i in (0..<(5 + 11 * i)).map { _ in Int32(rng.next() % 199) } }
        var outputs: [[[Int32]]] = []
        var stalls: [Int] = []
        for scheduler in [FCFSScheduler(.init(maxNumBatchedTokens: 64)) as any Scheduler,
                          ChunkedScheduler(.init(maxNumBatchedTokens: 32)) as any Scheduler,
                          LayeredScheduler(.init(maxCohortTokens: 128, tokensPerGroup: 16), numLayers: model.config.numLayers) as any Scheduler] {
            let engine = Engine(model: model, config: EngineConfig(maxModelLen: 256, blockSize: 8, numKVBlocks: 256), scheduler: scheduler)
            // Arrivals staggered on the iteration clock, every third
            // iteration: prompts arrive while others decode, the same way
            // under every scheduler.
            let replay = IterationClockReplay(
                requests: prompts.enumerated().map { GenerationRequest(id: "q\($0)", promptTokens: $1, maxTokens: 10, ignoreEOS: true) },
                arrivalIteration: prompts.indices.map { 3 * $0 })
            replay.attach(to: engine)
            engine.start()
            var outs: [[Int32]] = []
            for s in replay.streams { for await e in s { if case .finished(let o) = e { outs.append(o.outputTokens) } } }
            outputs.append(outs)
            stalls.append(engine.stats.decodeStalls)
            engine.shutdown()
        }
        #expect(outputs[0] == outputs[1])
        #expect(outputs[2] == outputs[1])
        for (i, p) in prompts.enumerated() {
            #expect(outputs[1][i] == (try Generator(model: model).generate(prompt: p, maxTokens: 10).tokens))
        }
        // FCFS gives each arriving prompt an iteration of its own, so the
        // running decodes stall; chunked and layered never leave a running
        // decode without a token.
        #expect(stalls[0] >= prompts.count - 1)
        #expect(stalls[1] == 0)
        #expect(stalls[2] == 0)
    }
}
