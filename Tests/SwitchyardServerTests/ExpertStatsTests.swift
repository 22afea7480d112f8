import Foundation
import Testing
@testable import SwitchyardCore
import SwitchyardModel
import ExpertParallelExecution
@testable import SwitchyardServer

/// `/v1/experts/stats` counts what the forward pass routed, split by the
/// placement's devices, and its reset starts a new window without touching
/// the Prometheus counters.
@Suite(.serialized) struct ExpertStatsTests {
    @Test func expertStatsCountRoutedTokensPerLayerAndDeviceAndResetStartsOver() async throws {
        let model = try loadModel()
        let layers = model.config.numLayers, experts = model.config.numExperts, k = model.config.numExpertsPerToken
        // Two devices: the first half of each layer's experts on device 0.
        let map = ExpertMap(numDevices: 2, device: Array(repeating: (0..<experts).map { $0 < experts / 2 ? 0 : 1 }, count: layers))
        let s = try await TestServer(engine: try makeEngine(model), expertMap: map)
        let empty = try await s.get("/v1/experts/stats").json
        #expect(empty["total_tokens"] as? Int == 0)
        #expect((empty["imbalance"] as? [String: Any])?["device_max_over_mean"] as? Double == 1)

        let prompt = Array<Int32>(1...20)
        let r = try await s.post("/v1/completions", json: ["prompt": prompt.map(Int.init), "max_tokens": 6, "temperature": 0, "ignore_eos": true])
        #expect(r.status == 200)
        let j = try await s.get("/v1/experts/stats").json
        #expect(j["num_layers"] as? Int == layers && j["num_experts"] as? Int == experts && j["num_devices"] as? Int == 2)
        let perLayer = try #require(j["tokens_per_layer_expert"] as? [[Int]])
        #expect(perLayer.count == layers)
        // 20 prompt tokens and 5 decoded tokens were forwarded, each to k experts per layer.
        let forwarded = 20 + 6 - 1
        for row in perLayer { #expect(row.count == experts && row.reduce(0, +) == forwarded * k) }
        let devicePerLayer = try #require(j["device_load_per_layer"] as? [[Int]])
        for (l, row) in devicePerLayer.enumerated() {
            #expect(row == [perLayer[l][..<(experts / 2)].reduce(0, +), perLayer[l][(experts / 2)...].reduce(0, +)])
        }
        #expect(j["device_load"] as? [Int] == [devicePerLayer.reduce(0) { $0 + $1[0] }, devicePerLayer.reduce(0) { $0 + $1[1] }])
        #expect(j["total_tokens"] as? Int == forwarded * k * layers)
        #expect((j["expert_weight_bytes_read"] as? Int ?? 0) > 0)
        // The default executor is one CPU device that computed every assignment.
        let execution = try #require(j["execution"] as? [String: Any])
        let described = try #require(execution["devices"] as? [[String: Any]])
        #expect(described.count == 1 && described[0]["kind"] as? String == "cpu-pool")
        #expect(described[0]["experts"] as? Int == layers * experts)
        #expect(execution["per_forward_device_imbalance"] as? Double == 1)
        #expect((try await s.metric("switchyard:moe_device_busy_seconds_total", ["device": "0", "kind": "cpu-pool"]) ?? 0) > 0)
        #expect(try await s.metric("switchyard:moe_busiest_device_tokens_total") == Double(forwarded * k * layers))
        let imbalance = try #require(j["imbalance"] as? [String: Any])
        let worst = try #require(imbalance["expert_max_over_mean"] as? Double)
        let expectedWorst = perLayer.map { row in Double(row.max()!) / (Double(row.reduce(0, +)) / Double(experts)) }.max()!
        #expect(abs(worst - expectedWorst) < 1e-9)
        #expect(worst >= 1)

        let reset = try await s.post("/v1/experts/stats/reset", "")
        #expect(reset.status == 200)
        let after = try await s.get("/v1/experts/stats").json
        #expect(after["total_tokens"] as? Int == 0)
        #expect((after["tokens_per_layer_expert"] as? [[Int]])?.allSatisfy { $0.allSatisfy { $0 == 0 } } == true)
        // Prometheus counters are monotonic: the reset does not touch them.
        #expect(try await s.metric("switchyard:moe_expert_tokens_total") == Double(forwarded * k * layers))
        #expect(try await s.metric("switchyard:moe_device_tokens_total", ["device": "0"]).map(Int.init) == (j["device_load"] as? [Int])?[0])
        #expect(try await s.metric("switchyard:moe_expert_tokens_total", ["layer": "0", "expert": "0"]).map(Int.init) == perLayer[0][0])
        await s.stop()
    }

    @Test(.enabled(if: ((try? CPUTopology.load().cores.count) ?? 1) >= 2, "two device pools need two cores"))
    func expertParallelServingExportsMeasuredDeviceWork() async throws {
        let model = try loadModel()
        let layers = model.config.numLayers, experts = model.config.numExperts, k = model.config.numExpertsPerToken
        let pools = try CorePools.split(try CPUTopology.load(), devices: 2)
        // All of layer 0's experts on device 1, every other layer's on device
        // 0: in every layer of every forward one device does all the work.
        let device = (0..<layers).map { l in Array(repeating: l == 0 ? 1 : 0, count: experts) }
        let ep = try ExpertParallelExecutor(weights: model.weights, pools: pools, map: device, weightsOnNode: false, pin: false)
        model.install(experts: ep)
        let s = try await TestServer(engine: try makeEngine(model), expertMap: ExpertMap(numDevices: 2, device: device))
        let r = try await s.post("/v1/completions", json: ["prompt": Array(1...20), "max_tokens": 6, "temperature": 0, "ignore_eos": true])
        #expect(r.status == 200)
        let j = try await s.get("/v1/experts/stats").json
        let execution = try #require(j["execution"] as? [String: Any])
        let described = try #require(execution["devices"] as? [[String: Any]])
        #expect(described.map { $0["kind"] as? String } == ["cpu-pool", "cpu-pool"])
        #expect(described.map { $0["experts"] as? Int } == [(layers - 1) * experts, experts])
        let busy = try #require(execution["device_busy_seconds"] as? [Double])
        #expect(busy.count == 2 && busy.allSatisfy { $0 > 0 })
        #expect((execution["expert_phase_seconds"] as? Double ?? 0) > 0)
        #expect(execution["per_forward_device_imbalance"] as? Double == 2)

        let assignments = Double((20 + 6 - 1) * k * layers)
        #expect(try await s.metric("switchyard:moe_busiest_device_tokens_total") == assignments)
        #expect(try await s.metric("switchyard:moe_mean_device_tokens_total") == assignments / 2)
        for d in 0..<2 {
            let exported = try #require(try await s.metric("switchyard:moe_device_busy_seconds_total", ["device": "\(d)"]))
            // The counter sums per-scrape differences of the same seconds:
            // equal up to rounding, never less.
            #expect(exported >= busy[d] * (1 - 1e-12))
        }
        // The reset starts a new window for the JSON, not for the counters.
        _ = try await s.post("/v1/experts/stats/reset", "")
        let after = try #require(try await s.get("/v1/experts/stats").json["execution"] as? [String: Any])
        #expect(after["device_busy_seconds"] as? [Double] == [0, 0])
        #expect(after["per_forward_device_imbalance"] as? Double == 1)
        #expect(try await s.metric("switchyard:moe_busiest_device_tokens_total") == assignments)
        await s.stop()
        model.install(experts: nil)
    }
}

/// An executor with counters of its own, as the hybrid executor reports
/// its tokens per site: the default kernels, plus a count of layer calls.
final class CountingExecutor: ExpertExecutor, @unchecked Sendable {
    let inner: SharedPoolExecutor
    private(set) var layerCalls = 0
    init(_ inner: SharedPoolExecutor) { self.inner = inner }
    var devices: [ExecutionDevice] { inner.devices }
    var expertDevice: [[Int]]? { nil }
    func run(_ work: ExpertWork) {
        layerCalls += 1
        inner.run(work)
    }
    var stats: ExpertExecutionStats {
        var s = inner.stats
        s.counters = ["test_layer_calls": Double(layerCalls)]
        return s
    }
    func resetStats() { inner.resetStats() }
}

extension ExpertStatsTests {
    @Test func anExecutorsOwnCountersAreExportedAsGauges() async throws {
        let model = try loadModel()
        let counting = CountingExecutor(SharedPoolExecutor(weights: model.weights))
        model.install(experts: counting)
        defer { model.install(experts: nil) }
        let s = try await TestServer(engine: try makeEngine(model))
        let r = try await s.post("/v1/completions", json: ["prompt": Array(1...8), "max_tokens": 3, "temperature": 0, "ignore_eos": true])
        #expect(r.status == 200)
        let calls = try await s.metric("switchyard:executor_counter", ["counter": "test_layer_calls"])
        #expect(calls != nil && calls == Double(counting.layerCalls) && counting.layerCalls > 0)
        await s.stop()
    }
}

/// The pieces the routes are made of.
@Suite struct ServerPartsTests {
    @Test func sseParserReassemblesEventsSplitAcrossReads() {
        var p = SSE.Parser()
        let stream = SSE.event(#"{"a":1}"#) + SSE.event(#"{"b":"x\ny"}"#) + SSE.done
        var got: [String] = []
        for chunk in stride(from: 0, to: stream.utf8.count, by: 5) {
            got += p.feed(Array(stream.utf8).dropFirst(chunk).prefix(5))
        }
        #expect(got == [#"{"a":1}"#, #"{"b":"x\ny"}"#, "[DONE]"])
    }

    @Test func jsonOutEscapesLikeJSONSerializationReads() throws {
        let s = "quote \" backslash \\ newline \n tab \t bell \u{7} é 🚀"
        let text = JSONOut.object([("s", .string(s)), ("n", nil), ("i", 3), ("a", .array([.bool(true), .double(0.5)]))]).serialized
        let back = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(back["s"] as? String == s)
        #expect(back["n"] is NSNull)
        #expect(back["i"] as? Int == 3)
    }

    @Test func chatTemplateFamiliesAreRecognisedFromTheirMarkers() {
        let chatml = "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
        #expect(ChatTemplate.detect(chatml) == .chatml)
        #expect(ChatTemplate.detect("{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}") == .inst)
        #expect(ChatTemplate.detect("<|user|>\n{{ m }}<|assistant|>\n") == .tulu)
        #expect(ChatTemplate.detect("{{ messages }}") == .plain)
        let msgs = [ChatMessage(role: "system", content: "S"), ChatMessage(role: "user", content: "U")]
        #expect(ChatTemplate(family: .chatml).renderNatively(msgs) == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n")
        #expect(ChatTemplate(family: .inst, bosToken: "<s>", eosToken: "</s>").renderNatively(msgs) == "<s>[INST] S\n\nU [/INST]")
        #expect(ChatTemplate.load(directory: modelDirectory) == ChatTemplate(family: .plain, bosToken: "<|endoftext|>", eosToken: "<|endoftext|>"))
    }

    @Test func requestParsingKeepsOpenAIDefaultsAndNamesBadFields() throws {
        let r = try CompletionRequest.parse(Data(#"{"prompt": [[1, 2, 3]], "stop": "\n", "top_k": -1, "seed": 7}"#.utf8))
        #expect(r.prompt == .tokens([1, 2, 3]))
        #expect(r.options.temperature == 1 && r.options.topK == 0 && r.options.seed == 7 && r.options.stop == ["\n"])
        #expect(r.options.maxTokens == nil && !r.options.stream)
        #expect(try CompletionRequest.parse(Data(#"{"prompt": ["a", "b"]}"#.utf8)).prompts == [.text("a"), .text("b")])
        #expect(try CompletionRequest.parse(Data(#"{"prompt": [[1], [2, 3]], "n": 2}"#.utf8)).prompts == [.tokens([1]), .tokens([2, 3])])
        #expect(throws: APIError.invalid("prompt", "prompt[1] is empty")) {
            try CompletionRequest.parse(Data(#"{"prompt": ["a", ""]}"#.utf8))
        }
        #expect(throws: APIError.invalid("n", "n must be between 1 and 64, got 0")) {
            try CompletionRequest.parse(Data(#"{"prompt": "a", "n": 0}"#.utf8))
        }
        #expect(throws: APIError.invalid("n", "2 prompts × n = 40 asks for 80 choices; this server answers at most 64 per request")) {
            try CompletionRequest.parse(Data(#"{"prompt": ["a", "b"], "n": 40}"#.utf8))
        }
        let c = try ChatCompletionRequest.parse(Data(#"{"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}], "max_completion_tokens": 5}"#.utf8))
        #expect(c.messages == [ChatMessage(role: "user", content: "ab")])
        #expect(c.options.maxTokens == 5)
    }
}
