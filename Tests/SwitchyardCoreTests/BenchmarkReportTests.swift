import ChunkedScheduler
import Foundation
import Testing
@testable import SwitchyardCore
@testable import SwitchyardModel

/// `switchyard bench` end to end on the tiny preset: 64 requests all
/// complete, and the result JSON has vLLM's keys with consistent values.
@Suite struct BenchmarkReportTests {
    static let preset = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("models/presets/tiny.json").path

    @Test func tinyBenchmarkCompletesAndItsJSONIsConsistent() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bench-tiny-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        try RandomCheckpoint.create(.init(architecture: .qwen3Moe, preset: ModelPreset.load(Self.preset), seed: 1), at: dir)
        let model = try Transformer(directory: dir.path)
        let engine = Engine(model: model, config: EngineConfig(maxModelLen: 256, blockSize: 16, numKVBlocks: 256),
                            scheduler: ChunkedScheduler(.init(maxNumBatchedTokens: 256, maxNumSeqs: 64)))
        let workload = try Workload.synthetic(numPrompts: 64, inputLen: 32, outputLen: 8, rangeRatio: 0.5,
                                              requestRate: .infinity, burstiness: 1, vocabSize: model.config.vocabSize, seed: 4)
        model.counters.reset()
        let (records, duration) = await BenchmarkRunner(engine: engine, workload: workload).run()
        let metrics = ServingMetrics(records: records, duration: duration, slo: GoodputSLO(e2elMs: 1e9))
        let report = BenchmarkReport(metrics: metrics, records: records, engine: engine.stats,
                                     moe: .init(counters: model.counters, promptTokens: metrics.totalInputTokens,
                                                outputTokens: metrics.totalOutputTokens),
                                     label: "tiny", requestRate: .infinity, burstiness: 1, model: dir.path)
        engine.shutdown()
        let j = report.json()
        let statKeys = ["ttft", "tpot", "itl", "e2el"].flatMap { ["mean_\($0)_ms", "median_\($0)_ms", "p99_\($0)_ms"] }
        for key in ["duration", "completed", "total_input_tokens", "total_output_tokens", "request_throughput",
                    "request_goodput", "output_throughput", "total_token_throughput", "input_lens", "output_lens",
                    "ttfts", "itls", "engine", "moe"] + statKeys {
            #expect(j[key] != nil, "missing \(key)")
        }
        #expect(j["completed"] as? Int == 64)
        let outputLens = j["output_lens"] as! [Int]
        let inputLens = j["input_lens"] as! [Int]
        #expect(outputLens.reduce(0, +) == j["total_output_tokens"] as? Int)
        #expect(inputLens.reduce(0, +) == j["total_input_tokens"] as? Int)
        #expect(outputLens == workload.map(\.maxTokens))
        #expect((j["itls"] as! [[Double]]).map(\.count) == outputLens.map { $0 - 1 })
        #expect(j["request_goodput"] as? Double == j["request_throughput"] as? Double)
        let engineJSON = j["engine"] as! [String: Any]
        let histogram = engineJSON["batch_size_histogram"] as! [String: Int]
        #expect(histogram.values.reduce(0, +) == engineJSON["iterations"] as? Int)
        let moe = j["moe"] as! [String: Any]
        let perExpert = moe["tokens_per_layer_expert"] as! [[Int]]
        let routed = (inputLens.reduce(0, +) + outputLens.reduce(0, +) - 64) * model.config.numExpertsPerToken
        // Every computed token is routed to k experts in every layer.
        #expect(perExpert.allSatisfy { $0.reduce(0, +) == routed })
        #expect((moe["expert_weight_bytes_read"] as! Int) > 0)
        #expect(report.formatted().contains("Successful requests:                     64"))
        #expect(engine.freeKVBlocks == 256)
    }
}
