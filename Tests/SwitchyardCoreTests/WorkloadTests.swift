import Foundation
import Testing
@testable import SwitchyardCore
@testable import SwitchyardModel

@Suite final class WorkloadTests {
    /// Files this test wrote, removed when it ends (a class suite's deinit).
    private var written: [URL] = []
    deinit { for url in written { try? FileManager.default.removeItem(at: url) } }

    func temp(_ text: String, ext: String) throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("wl-\(UUID().uuidString).\(ext)")
        try text.write(to: url, atomically: true, encoding: .utf8)
        written.append(url)
        return url.path
    }

    @Test func syntheticWorkloadIsReproducibleForASeed() throws {
        let a = try Workload.synthetic(numPrompts: 20, inputLen: 100, outputLen: 10, rangeRatio: 0.5, requestRate: 4,
                                       burstiness: 0.5, vocabSize: 300, seed: 9)
        let b = try Workload.synthetic(numPrompts: 20, inputLen: 100, outputLen: 10, rangeRatio: 0.5, requestRate: 4,
                                       burstiness: 0.5, vocabSize: 300, seed: 9)
        let c = try Workload.synthetic(numPrompts: 20, inputLen: 100, outputLen: 10, rangeRatio: 0.5, requestRate: 4,
                                       burstiness: 0.5, vocabSize: 300, seed: 10)
        #expect(a == b)
        #expect(a != c)
        #expect(a.allSatisfy { (50...150).contains($0.promptTokens.count) && (5...15).contains($0.maxTokens) })
        #expect(a.allSatisfy { $0.promptTokens.allSatisfy { $0 >= 0 && $0 < 300 } })
        #expect(zip(a.dropFirst(), a).allSatisfy { $0.arrival >= $1.arrival })
    }

    @Test func infiniteRateSubmitsEverythingAtZero() throws {
        let w = try Workload.synthetic(numPrompts: 5, inputLen: 8, outputLen: 4, rangeRatio: 0, requestRate: .infinity,
                                       burstiness: 1, vocabSize: 50, seed: 1)
        #expect(w.allSatisfy { $0.arrival == 0 && $0.promptTokens.count == 8 && $0.maxTokens == 4 })
    }

    @Test func gammaArrivalsHaveTheRequestedRateAndBurstiness() {
        var rng = Xoshiro256(seed: 3)
        for burstiness in [1.0, 0.25] {
            let t = Workload.arrivals(count: 20001, rate: 10, burstiness: burstiness, rng: &rng)
            let gaps = zip(t.dropFirst(), t).map { $0 - $1 }
            let mean = gaps.reduce(0, +) / Double(gaps.count)
            let cv2 = gaps.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(gaps.count) / (mean * mean)
            #expect(abs(mean - 0.1) < 0.005)
            // Gamma with shape k has squared coefficient of variation 1/k.
            #expect(abs(cv2 - 1 / burstiness) < 0.15 / burstiness)
        }
    }

    @Test func burstGPTSkipsFailedRowsAndScalesTime() throws {
        let csv = """
        Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type
        10,ChatGPT,20,5,25,Conversation log
        12,ChatGPT,30,0,30,Conversation log
        14,GPT-4,7,9,16,API log
        30,ChatGPT,11,3,14,Conversation log
        """
        let w = try Workload.burstGPT(path: try temp(csv, ext: "csv"), scale: 2, limit: nil, vocabSize: 100, maxModelLen: 512, seed: 0)
        #expect(w.map(\.promptTokens.count) == [20, 7, 11])
        #expect(w.map(\.maxTokens) == [5, 9, 3])
        #expect(w.map(\.arrival) == [0, 2, 10])
        let limited = try Workload.burstGPT(path: try temp(csv, ext: "csv"), scale: 1, limit: 2, vocabSize: 100, maxModelLen: 512, seed: 0)
        #expect(limited.count == 2)
    }

    @Test func malformedTraceRowNamesItsLine() throws {
        let csv = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n1,M,5,5,10,x\n2,M,five,5,10,x\n"
        let path = try temp(csv, ext: "csv")
        #expect(throws: WorkloadError.malformedRow(path: path, line: 3, reason: "Timestamp, Request tokens and Response tokens must be numbers")) {
            try Workload.burstGPT(path: path, scale: 1, limit: nil, vocabSize: 100, maxModelLen: 512, seed: 0)
        }
    }

    @Test func jsonlRecordsAreTokenizedAndBadLinesNamed() throws {
        let tok = try TokenizerLoader.load(directory: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("SwitchyardModelTests/Fixtures/tokenizers/bytelevel_gpt2").path)
        let good = try temp("{\"prompt\": \"Hello world\", \"max_tokens\": 7}\n\n{\"prompt\": \"x\"}\n", ext: "jsonl")
        let w = try Workload.jsonl(path: good, tokenizer: tok, requestRate: .infinity, burstiness: 1, defaultMaxTokens: 3, seed: 0)
        #expect(w.count == 2)
        #expect(w[0].promptTokens == tok.encode("Hello world") && w[0].maxTokens == 7 && w[1].maxTokens == 3)
        let bad = try temp("{\"prompt\": \"a\"}\n{\"prompt\": 5}\n", ext: "jsonl")
        #expect(throws: WorkloadError.malformedRow(path: bad, line: 2, reason: "\"prompt\" must be a string")) {
            try Workload.jsonl(path: bad, tokenizer: tok, requestRate: 1, burstiness: 1, defaultMaxTokens: 3, seed: 0)
        }
    }
}

@Suite struct MetricsTests {
    func record(ttft: Double, latency: Double, out: Int, itls: [Double], prompt: Int = 10) -> ClientRecord {
        ClientRecord(promptTokens: prompt, outputTokens: out, success: true, error: "", startTime: 0, ttft: ttft, latency: latency, itls: itls)
    }

    @Test func metricsFollowVLLMDefinitions() {
        let recs = [record(ttft: 0.1, latency: 0.5, out: 5, itls: [0.1, 0.1, 0.1, 0.1]),
                    record(ttft: 0.3, latency: 0.3, out: 1, itls: []),
                    record(ttft: 0.2, latency: 1.2, out: 3, itls: [0.4, 0.6])]
        let m = ServingMetrics(records: recs, duration: 2, slo: GoodputSLO(ttftMs: 250, tpotMs: 200))
        #expect(m.completed == 3 && m.totalOutputTokens == 9 && m.totalInputTokens == 30)
        #expect(m.requestThroughput == 1.5 && m.outputThroughput == 4.5 && m.totalTokenThroughput == 19.5)
        // TPOT only over requests with more than one output token.
        #expect(m.tpotsMs.count == 2 && abs(m.tpotsMs[0] - 100) < 1e-9 && abs(m.tpotsMs[1] - 500) < 1e-9)
        #expect(m.itlsMs.count == 6)
        // Goodput: request 1 meets both SLOs; request 2 misses TTFT; request 3 misses TPOT.
        #expect(m.requestGoodput == 0.5)
        #expect(ServingMetrics.percentile([1, 2, 3, 4], 50) == 2.5)
        #expect(abs(ServingMetrics.percentile([1, 2, 3, 4], 99) - 3.97) < 1e-9)
    }

    @Test func goodputFlagParsing() throws {
        #expect(try GoodputSLO.parse(["ttft:500", "e2el:2000"]) == GoodputSLO(ttftMs: 500, e2elMs: 2000))
        #expect(throws: WorkloadError.self) { try GoodputSLO.parse(["latency:5"]) }
        #expect(throws: WorkloadError.self) { try GoodputSLO.parse(["ttft"]) }
    }
}
