import AsyncHTTPClient
import Foundation
import NIOCore
import Synchronization
import ChunkedScheduler
import Testing
@testable import SwitchyardCore
import SwitchyardModel
@testable import SwitchyardServer

/// Bad input gets OpenAI-style 400s naming the field, a full queue gets 503,
/// disconnects free KV blocks at once, and concurrent clients each get their
/// own complete, correct stream.
@Suite(.serialized) struct ErrorAndLoadTests {
    struct InjectedFault: Error, CustomStringConvertible {
        var description: String { "injected fault in the forward" }
    }

    /// A failure inside the engine is the server's fault: 500 with the
    /// message, and the next request is served.
    @Test func aForwardFailureIsA500WithTheMessageAndTheServerKeepsServing() async throws {
        let engine = try makeEngine(try loadModel())
        engine.runner.injectedFault = { $0 == 0 ? InjectedFault() : nil }
        let s = try await TestServer(engine: engine)
        let r = try await s.post("/v1/completions", #"{"prompt": [1, 2, 3], "max_tokens": 3}"#)
        #expect(r.status == 500)
        let error = try #require(r.json["error"] as? [String: Any], "\(r.body)")
        #expect(error["type"] as? String == "internal_error")
        #expect((error["message"] as? String)?.contains("injected fault in the forward") == true, "\(r.body)")
        let ok = try await s.post("/v1/completions", #"{"prompt": [1, 2, 3], "max_tokens": 3}"#)
        #expect(ok.status == 200)
        #expect(engine.stats.forwardErrors == 1)
        await s.stop()
    }

    /// What a priority or SLO scheduler needs reaches it: the request's
    /// priority from the API, its max_tokens and arrival time.
    @Test func schedulersSeePriorityAndMaxTokensFromTheAPI() async throws {
        final class Recording: Scheduler, @unchecked Sendable {
            let inner = ChunkedScheduler()
            let seen = Mutex<[(Int, Int, Double)]>([])
            func schedule(_ context: SchedulingContext) -> IterationPlan {
                seen.withLock { $0 += (context.waiting + context.running).map { ($0.priority, $0.maxTokens, $0.arrivalTime) } }
                return inner.schedule(context)
            }
        }
        let scheduler = Recording()
        let s = try await TestServer(engine: try makeEngine(try loadModel(), scheduler: scheduler))
        let r = try await s.post("/v1/completions", #"{"prompt": [1, 2, 3], "max_tokens": 3, "priority": -4}"#)
        #expect(r.status == 200)
        let seen = scheduler.seen.withLock { $0 }
        #expect(!seen.isEmpty && seen.allSatisfy { $0.0 == -4 && $0.1 == 3 && $0.2 >= 0 })
        await s.stop()
    }

    /// What vLLM's and OpenAI's clients expect around the routes: 404 with
    /// an error body for an unknown model or route, 405 with `Allow`, HEAD
    /// on /health; and what keeps other programs out: the API key (401) and
    /// JSON-only bodies (415).
    @Test func unknownModelsRoutesMethodsKeysAndContentTypesGetErrorBodies() async throws {
        let s = try await TestServer(engine: try makeEngine(try loadModel()), apiKey: "sekret", modelAliases: ["alias"])
        let auth = [("Authorization", "Bearer sekret"), ("Content-Type", "application/json")]
        func error(_ r: TestServer.Reply) -> [String: Any] { r.json["error"] as? [String: Any] ?? [:] }

        let (noKey, _) = try await s.send(.POST, "/v1/completions", body: #"{"prompt": [1, 2], "max_tokens": 2}"#,
                                          headers: [("Content-Type", "application/json")])
        #expect(noKey.status == 401 && error(noKey)["type"] as? String == "authentication_error")
        let (wrongKey, _) = try await s.send(.GET, "/v1/models", headers: [("Authorization", "Bearer nope")])
        #expect(wrongKey.status == 401)
        let (reset, _) = try await s.send(.POST, "/v1/experts/stats/reset")
        #expect(reset.status == 401)
        // Health and metrics stay open for probes and scrapers.
        let (health, _) = try await s.send(.HEAD, "/health")
        #expect(health.status == 200)
        #expect(try await s.get("/metrics").status == 200)

        let (plain, _) = try await s.send(.POST, "/v1/completions", body: #"{"prompt": [1, 2], "max_tokens": 2}"#,
                                          headers: [("Authorization", "Bearer sekret"), ("Content-Type", "text/plain")])
        #expect(plain.status == 415)
        #expect((error(plain)["message"] as? String)?.contains("application/json") == true)
        let (none, _) = try await s.send(.POST, "/v1/completions", body: #"{"prompt": [1, 2]}"#, headers: [("Authorization", "Bearer sekret")])
        #expect(none.status == 415)

        let (model, _) = try await s.send(.POST, "/v1/completions", body: #"{"prompt": [1, 2], "model": "gpt-4"}"#, headers: auth)
        #expect(model.status == 404 && error(model)["param"] as? String == "model")
        #expect((error(model)["message"] as? String)?.contains(testModelName) == true)
        let (alias, _) = try await s.send(.POST, "/v1/completions", body: #"{"prompt": [1, 2], "max_tokens": 2, "model": "alias"}"#, headers: auth)
        #expect(alias.status == 200)

        let (route, _) = try await s.send(.GET, "/v1/nothing", headers: auth)
        #expect(route.status == 404 && error(route)["code"] as? Int == 404)
        let (method, headers) = try await s.send(.GET, "/v1/completions", headers: auth)
        #expect(method.status == 405 && error(method)["code"] as? Int == 405)
        #expect(headers["Allow"] == ["POST"])

        let (ok, _) = try await s.send(.POST, "/v1/completions", body: #"{"prompt": [1, 2], "max_tokens": 2}"#, headers: auth)
        #expect(ok.status == 200)
        await s.stop()
    }

    /// A megabyte word is refused before it is encoded (it cannot fit the
    /// context), a 30,000-character word is encoded in O(n log n), and
    /// 64 stop strings are checked only against new text: a short request
    /// next to them is answered.
    @Test func hostilePromptsAndStopListsAreBoundedWork() async throws {
        let s = try await TestServer(engine: try makeEngine(try loadModel(), maxModelLen: 256))
        let huge = String(repeating: "a", count: 1 << 20)
        let short = #"{"prompt": "def f(x):", "max_tokens": 4, "temperature": 0}"#
        async let refused = s.post("/v1/completions", #"{"prompt": "\#(huge)", "max_tokens": 4}"#)
        async let answered = s.post("/v1/completions", short)
        let (r, ok) = try await (refused, answered)
        #expect(r.status == 400)
        let error = try #require(r.json["error"] as? [String: Any], "\(r.body.prefix(200))")
        #expect(error["param"] as? String == "prompt")
        #expect((error["message"] as? String)?.contains("--max-model-len") == true)
        #expect(ok.status == 200)
        // Long but not surely too long: encoded (quickly), then refused by length.
        let long = String(repeating: "ab", count: 15_000)
        let r2 = try await s.post("/v1/completions", #"{"prompt": "\#(long)", "max_tokens": 4}"#)
        #expect(r2.status == 400 && (r2.json["error"] as? [String: Any])?["param"] as? String == "prompt")
        let stops = (0..<64).map { "\"zz\($0)qq\"" }.joined(separator: ",")
        let r3 = try await s.post("/v1/completions", #"{"prompt": "def f(x):", "max_tokens": 32, "ignore_eos": true, "stop": [\#(stops)]}"#)
        #expect(r3.status == 200)
        await s.stop()
    }

    @Test func badRequestsGet400NamingTheFieldAndTheServerKeepsServing() async throws {
        let s = try await TestServer(engine: try makeEngine(try loadModel(), maxModelLen: 64))
        let longPrompt = "[" + Array(repeating: "5", count: 80).joined(separator: ",") + "]"
        let cases: [(String, String, String?)] = [
            ("/v1/completions", #"{"prompt": "def", "max_tokens": 4"#, nil),                        // malformed JSON
            ("/v1/completions", #"["prompt"]"#, nil),                                               // not an object
            ("/v1/completions", #"{"max_tokens": 4}"#, "prompt"),                                   // missing
            ("/v1/completions", #"{"prompt": 5}"#, "prompt"),                                       // wrong type
            ("/v1/completions", #"{"prompt": [1, -2]}"#, "prompt"),                                 // bad token id
            ("/v1/completions", #"{"prompt": [1, 99999]}"#, "prompt"),                              // outside the vocabulary
            ("/v1/completions", #"{"prompt": "def", "max_tokens": "ten"}"#, "max_tokens"),
            ("/v1/completions", #"{"prompt": "def", "max_tokens": -3}"#, "max_tokens"),
            ("/v1/completions", #"{"prompt": "def", "max_tokens": 0}"#, "max_tokens"),
            ("/v1/completions", #"{"prompt": "def", "max_tokens": 100}"#, "max_tokens"),           // beyond --max-model-len
            ("/v1/completions", #"{"prompt": "def", "temperature": "hot"}"#, "temperature"),
            ("/v1/completions", #"{"prompt": "def", "temperature": -1}"#, "temperature"),
            ("/v1/completions", #"{"prompt": "def", "top_p": 0}"#, "top_p"),
            ("/v1/completions", #"{"prompt": "def", "top_k": 2.5}"#, "top_k"),
            ("/v1/completions", #"{"prompt": "def", "seed": "x"}"#, "seed"),
            ("/v1/completions", #"{"prompt": "def", "priority": "high"}"#, "priority"),
            ("/v1/completions", #"{"prompt": "def", "logprobs": 21}"#, "logprobs"),
            ("/v1/completions", #"{"prompt": "def", "max_tokens": 0}"#, "max_tokens"),                // 0 only with echo
            ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}"#, "top_logprobs"),
            ("/v1/completions", #"{"prompt": "def", "best_of": 2, "n": 3}"#, "best_of"),             // fewer than n
            ("/v1/completions", #"{"prompt": "def", "best_of": 2, "stream": true}"#, "best_of"),
            ("/v1/completions", #"{"prompt": "def", "suffix": "x"}"#, "suffix"),
            ("/v1/completions", #"{"prompt": "def", "temprature": 0}"#, "temprature"),               // unknown field (typo)
            ("/v1/completions", #"{"prompt": "def", "presence_penalty": "x"}"#, "presence_penalty"),
            ("/v1/completions", #"{"prompt": "def", "frequency_penalty": 3}"#, "frequency_penalty"),
            ("/v1/completions", #"{"prompt": "def", "repetition_penalty": 0}"#, "repetition_penalty"),
            ("/v1/completions", #"{"prompt": "def", "logit_bias": {"x": 1}}"#, "logit_bias"),
            ("/v1/completions", #"{"prompt": "def", "logit_bias": {"3": 101}}"#, "logit_bias"),
            ("/v1/completions", #"{"prompt": "def", "logit_bias": {"99999": 1}}"#, "logit_bias"),    // outside the vocabulary
            ("/v1/completions", #"{"prompt": "def", "min_tokens": 9, "max_tokens": 3}"#, "min_tokens"),
            ("/v1/completions", #"{"prompt": "def", "stop": [\#(Array(repeating: "\"s\"", count: 65).joined(separator: ","))]}"#, "stop"),
            ("/v1/completions", #"{"prompt": "def", "stop": "\#(String(repeating: "z", count: 513))"}"#, "stop"),
            ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}"#, "tools"),
            ("/v1/completions", #"{"prompt": "def", "stop": 3}"#, "stop"),
            ("/v1/completions", #"{"prompt": "def", "ignore_eos": "yes"}"#, "ignore_eos"),
            ("/v1/completions", #"{"prompt": "def", "stream": 1}"#, "stream"),
            ("/v1/completions", #"{"prompt": "def", "stream": true, "stream_options": {"include_usage": "no"}}"#, "stream_options.include_usage"),
            ("/v1/completions", #"{"prompt": \#(longPrompt)}"#, "prompt"),                          // longer than --max-model-len
            ("/v1/completions", #"{"prompt": \#(longPrompt), "stream": true}"#, "prompt"),
            ("/v1/chat/completions", #"{"model": "stdlib-moe"}"#, "messages"),
            ("/v1/chat/completions", #"{"messages": "hi"}"#, "messages"),
            ("/v1/chat/completions", #"{"messages": [{"role": "wizard", "content": "hi"}]}"#, "messages[0].role"),
            ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": 7}]}"#, "messages[0].content"),
            ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": -1}"#, "max_completion_tokens"),
        ]
        for (path, body, param) in cases {
            let r = try await s.post(path, body)
            #expect(r.status == 400, "\(body)")
            let error = try #require(r.json["error"] as? [String: Any], "\(body) → \(r.body)")
            #expect(error["type"] as? String == "invalid_request_error")
            #expect(error["code"] as? Int == 400)
            #expect(error["param"] as? String == param, "\(body) → \(r.body)")
            if let param { #expect((error["message"] as? String)?.contains(param) == true, "\(r.body)") }
        }
        #expect(try await s.metric("switchyard:request_rejected_total", ["reason": "invalid_request"]) == Double(cases.count))
        // Nothing reached the engine, and it still serves.
        #expect(s.engine.stats.rejectedRequests == 0)
        // Fields that ask for nothing are accepted.
        let ok = try await s.post("/v1/completions", #"{"prompt": "def", "max_tokens": 3, "temperature": 0, "echo": false, "logprobs": null, "best_of": 1, "user": "u"}"#)
        #expect(ok.status == 200, "\(ok.body)")
        #expect(try await s.metric("switchyard:request_success_total") == 1)
        await s.stop()
    }

    @Test func fullQueueGets503AndDisconnectedQueuedRequestsAreCancelled() async throws {
        let gate = GateScheduler()
        let s = try await TestServer(engine: try makeEngine(try loadModel(), scheduler: gate, numKVBlocks: 64), maxQueuedRequests: 2)
        let body = #"{"prompt": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18], "max_tokens": 5, "stream": true}"#
        let waiting = (0..<2).map { _ in
            Task { try await s.post("/v1/completions", body) }
        }
        #expect(await s.eventually { s.server.queuedRequests == 2 && s.engine.stats.waitingRequests == 2 })
        let rejected = try await s.post("/v1/completions", body)
        #expect(rejected.status == 503)
        let error = try #require(rejected.json["error"] as? [String: Any])
        #expect((error["message"] as? String)?.contains("--max-queued-requests") == true)
        #expect(error["code"] as? Int == 503)
        let (again, headers) = try await s.send(.POST, "/v1/completions", body: body, headers: [("Content-Type", "application/json")])
        #expect(again.status == 503 && headers["Retry-After"] == ["1"])
        #expect(try await s.metric("switchyard:num_requests_waiting") == 2)

        // The two queued clients hang up: their requests are aborted and leave the queue.
        for t in waiting { t.cancel() }
        for t in waiting { _ = await t.result }
        #expect(await s.eventually { s.engine.stats.cancelledRequests == 2 && s.engine.stats.waitingRequests == 0 })
        #expect(await s.eventually { s.server.queuedRequests == 0 })
        #expect(s.engine.freeKVBlocks == 64)
        #expect(try await s.metric("switchyard:request_success_total", ["finished_reason": "abort"]) == 2)
        #expect(try await s.metric("switchyard:request_rejected_total", ["reason": "queue_full"]) == 2)

        gate.open()
        let (text, finish, _, done) = streamedText(try await s.post("/v1/completions", body).events)
        #expect(done && finish == "length" && !text.isEmpty)
        await s.stop()
    }

    @Test func clientDisconnectMidStreamCancelsTheRequestAndFreesItsBlocksAtOnce() async throws {
        let s = try await TestServer(engine: try makeEngine(try loadModel(), scheduler: HoldingScheduler(holdAfter: 5), maxModelLen: 512, numKVBlocks: 64))
        let received = AsyncStream<Int>.makeStream()
        let client = s.client
        let url = s.base + "/v1/completions"
        let reader = Task {
            var req = HTTPClientRequest(url: url)
            req.method = .POST
            req.headers.add(name: "Content-Type", value: "application/json")
            req.body = .bytes(ByteBuffer(string: #"{"prompt": [5, 6, 7], "max_tokens": 400, "ignore_eos": true, "stream": true}"#))
            let response = try await client.execute(req, timeout: .seconds(300))
            var parser = SSE.Parser()
            var events = 0
            for try await buffer in response.body {
                events += parser.feed(buffer.readableBytesView).count
                received.continuation.yield(events)
            }
        }
        // Wait for the 5 tokens the scheduler lets it have, then hang up.
        var it = received.stream.makeAsyncIterator()
        while let n = await it.next(), n < 5 {}
        #expect(s.engine.stats.runningRequests == 1)
        #expect(s.engine.freeKVBlocks < 64)
        reader.cancel()
        _ = await reader.result
        #expect(await s.eventually { s.engine.stats.cancelledRequests == 1 })
        #expect(s.engine.stats.runningRequests == 0)
        #expect(await s.eventually { s.engine.freeKVBlocks == 64 })
        #expect(try await s.metric("switchyard:request_success_total", ["finished_reason": "abort"]) == 1)
        // It was cut off at the 5 tokens it had, not run to its 400.
        #expect(try await s.metric("switchyard:generation_tokens_total") == 5)
        #expect(try await s.metric("switchyard:kv_cache_usage_perc") == 0)
        await s.stop()
    }

    @Test func sixtyFourConcurrentStreamingClientsGetCompleteOfflineTextsAndMetricsMatch() async throws {
        let model = try loadModel()
        let tok = try loadTokenizer()
        let n = 64
        let texts = (0..<n).map { i in "def function_\(i)(value\(i % 7), " + String(repeating: "x", count: i % 5) }
        let prompts = texts.map { tok.encode($0) }
        let maxTokens = (0..<n).map { 4 + $0 % 9 }
        let offline = try await offlineTexts(model, prompts: prompts, maxTokens: maxTokens)
        // The offline run counted its routing in the shared model's counters.
        model.counters.reset()
        let s = try await TestServer(engine: try makeEngine(model))
        let results = try await withThrowingTaskGroup(of: (Int, TestServer.Reply).self) { group in
            for i in 0..<n {
                group.addTask {
                    let body: [String: Any] = ["model": testModelName, "prompt": texts[i], "max_tokens": maxTokens[i], "temperature": 0,
                                               "ignore_eos": true, "stream": true, "stream_options": ["include_usage": true]]
                    return (i, try await s.post("/v1/completions", json: body))
                }
            }
            var out: [Int: TestServer.Reply] = [:]
            for try await (i, r) in group { out[i] = r }
            return out
        }
        #expect(results.count == n)
        for i in 0..<n {
            let r = try #require(results[i])
            #expect(r.status == 200)
            let (text, finish, usage, done) = streamedText(r.events)
            #expect(done, "request \(i) incomplete")
            #expect(finish == "length")
            #expect(text == offline[i].text, "request \(i)")
            #expect(usage?["completion_tokens"] as? Int == maxTokens[i])
            #expect(usage?["prompt_tokens"] as? Int == prompts[i].count)
        }
        // Every block is free and every counter matches what was sent.
        #expect(await s.eventually { s.engine.stats.runningRequests == 0 && s.engine.freeKVBlocks == 512 })
        let metrics = try await s.get("/metrics").body
        let promptTotal = prompts.reduce(0) { $0 + $1.count }, outputTotal = maxTokens.reduce(0, +)
        #expect(parseMetric(metrics, "switchyard:request_success_total", ["finished_reason": "length", "model_name": testModelName]) == Double(n))
        #expect(parseMetric(metrics, "switchyard:request_success_total") == Double(n))
        #expect(parseMetric(metrics, "switchyard:prompt_tokens_total") == Double(promptTotal))
        #expect(parseMetric(metrics, "switchyard:generation_tokens_total") == Double(outputTotal))
        #expect(parseMetric(metrics, "switchyard:e2e_request_latency_seconds_count") == Double(n))
        #expect(parseMetric(metrics, "switchyard:time_to_first_token_seconds_count") == Double(n))
        #expect(parseMetric(metrics, "switchyard:inter_token_latency_seconds_count") == Double(outputTotal - n))
        #expect(parseMetric(metrics, "switchyard:num_requests_running") == 0)
        #expect(parseMetric(metrics, "switchyard:num_requests_waiting") == 0)
        #expect(parseMetric(metrics, "switchyard:kv_cache_usage_perc") == 0)
        #expect(parseMetric(metrics, "switchyard:num_preemptions_total") == Double(s.engine.stats.preemptions))
        // Each forwarded token is routed to top-k experts in every layer; the
        // last sampled token of a request is never forwarded.
        if s.engine.stats.preemptions == 0 {
            let k = model.config.numExpertsPerToken, layers = model.config.numLayers
            let routed = Double(k * layers * (promptTotal + outputTotal - n))
            #expect(parseMetric(metrics, "switchyard:moe_expert_tokens_total") == routed)
            #expect(parseMetric(metrics, "switchyard:moe_device_tokens_total") == routed)
        }
        #expect((parseMetric(metrics, "switchyard:moe_expert_weight_bytes_read_total") ?? 0) > 0)
        await s.stop()
    }
}
