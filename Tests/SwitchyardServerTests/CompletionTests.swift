import Foundation
import Testing
@testable import SwitchyardCore
import SwitchyardModel
@testable import SwitchyardServer

/// Completions and chat over real HTTP return what the offline engine
/// generates for the same prompt, streamed or not.
@Suite(.serialized) struct CompletionTests {
    @Test func nonStreamingCompletionReturnsTheOfflineGreedyTextAndUsage() async throws {
        let model = try loadModel()
        let tok = try loadTokenizer()
        let prompt = "import os\nimport sys\n\ndef main("
        let ids = tok.encode(prompt)
        let offline = try await offlineTexts(model, prompts: [ids], maxTokens: [12])[0]
        let s = try await TestServer(engine: try makeEngine(model))
        let r = try await s.post("/v1/completions", json: ["model": testModelName, "prompt": prompt, "max_tokens": 12,
                                                         "temperature": 0, "ignore_eos": true])
        #expect(r.status == 200)
        let j = r.json
        #expect(j["object"] as? String == "text_completion")
        #expect(j["model"] as? String == testModelName)
        let choice = try #require((j["choices"] as? [[String: Any]])?.first)
        #expect(choice["text"] as? String == offline.text)
        #expect(choice["finish_reason"] as? String == "length")
        let usage = try #require(j["usage"] as? [String: Any])
        #expect(usage["prompt_tokens"] as? Int == ids.count)
        #expect(usage["completion_tokens"] as? Int == 12)
        #expect(usage["total_tokens"] as? Int == ids.count + 12)
        await s.stop()
    }

    @Test func streamingCompletionChunksConcatenateToTheOfflineTextAndEndWithUsageAndDone() async throws {
        let model = try loadModel()
        let prompt: [Int32] = [17, 400, 923, 55, 1200, 7, 3000]
        let offline = try await offlineTexts(model, prompts: [prompt], maxTokens: [10])[0]
        let s = try await TestServer(engine: try makeEngine(model))
        let r = try await s.post("/v1/completions", json: ["prompt": prompt.map(Int.init), "max_tokens": 10, "temperature": 0,
                                                         "ignore_eos": true, "stream": true,
                                                         "stream_options": ["include_usage": true]])
        #expect(r.status == 200)
        let events = r.events
        let (text, finish, usage, done) = streamedText(events)
        #expect(done)
        #expect(text == offline.text)
        #expect(finish == "length")
        #expect(usage?["completion_tokens"] as? Int == 10)
        #expect(usage?["prompt_tokens"] as? Int == prompt.count)
        // One chunk per token, then the finish chunk, the usage chunk and [DONE].
        #expect(events.count == 10 + 3)
        let usageChunk = try #require((try JSONSerialization.jsonObject(with: Data(events[events.count - 2].utf8))) as? [String: Any])
        #expect((usageChunk["choices"] as? [Any])?.isEmpty == true)
        await s.stop()
    }

    @Test func chatUsesTheDefaultTemplateStreamedOrNot() async throws {
        let model = try loadModel()
        let tok = try loadTokenizer()
        let messages = [ChatMessage(role: "system", content: "You write Python."), ChatMessage(role: "user", content: "def parse(")]
        let rendered = try ChatTemplate.default.render(messages)
        #expect(rendered == "system: You write Python.\nuser: def parse(\nassistant:")
        let offline = try await offlineTexts(model, prompts: [tok.encode(rendered)], maxTokens: [9])[0]
        let s = try await TestServer(engine: try makeEngine(model))
        let body: [String: Any] = ["model": testModelName, "max_tokens": 9, "temperature": 0, "ignore_eos": true,
                                   "messages": messages.map { ["role": $0.role, "content": $0.content] }]
        let r = try await s.post("/v1/chat/completions", json: body)
        #expect(r.status == 200)
        #expect(r.json["object"] as? String == "chat.completion")
        let message = try #require(((r.json["choices"] as? [[String: Any]])?.first)?["message"] as? [String: Any])
        #expect(message["role"] as? String == "assistant")
        #expect(message["content"] as? String == offline.text)

        var streamBody = body
        streamBody["stream"] = true
        let sr = try await s.post("/v1/chat/completions", json: streamBody)
        let events = sr.events
        let (text, finish, usage, done) = streamedText(events)
        #expect(done && text == offline.text && finish == "length")
        #expect(usage == nil)
        let first = try #require((try JSONSerialization.jsonObject(with: Data(events[0].utf8))) as? [String: Any])
        #expect(first["object"] as? String == "chat.completion.chunk")
        let delta = ((first["choices"] as? [[String: Any]])?.first)?["delta"] as? [String: Any]
        #expect(delta?["role"] as? String == "assistant")
        await s.stop()
    }

    @Test func chatRunsTheCheckpointsJinjaTemplateAndItsRejectionsAre400() async throws {
        let model = try loadModel()
        let tok = try loadTokenizer()
        // A Mixtral-style template: it prints the BOS itself and rejects
        // conversations whose roles do not alternate.
        let source = """
            {{- bos_token }}{%- for message in messages %}
                {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
                    {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
                {%- endif %}
                {%- if message['role'] == 'user' %}{{- ' [INST] ' + message['content'] | trim + ' [/INST]' }}
                {%- else %}{{- ' ' + message['content'] + eos_token }}{%- endif %}
            {%- endfor %}
            """
        let template = ChatTemplate(family: .inst, bosToken: "<|endoftext|>", eosToken: "<|endoftext|>", jinja: try JinjaTemplate(source))
        let messages = [["role": "user", "content": " def parse( "], ["role": "assistant", "content": "pass"],
                        ["role": "user", "content": "again"]]
        let rendered = "<|endoftext|> [INST] def parse( [/INST] pass<|endoftext|> [INST] again [/INST]"
        #expect(try template.render(messages.map { ChatMessage(role: $0["role"]!, content: $0["content"]!) }) == rendered)
        // Encoded without adding special tokens: the template printed them.
        let offline = try await offlineTexts(model, prompts: [tok.encode(rendered, addSpecialTokens: false)], maxTokens: [7])[0]
        let s = try await TestServer(engine: try makeEngine(model), chatTemplate: template)
        let r = try await s.post("/v1/chat/completions", json: ["messages": messages, "max_tokens": 7, "temperature": 0, "ignore_eos": true])
        #expect(r.status == 200)
        let message = try #require(((r.json["choices"] as? [[String: Any]])?.first)?["message"] as? [String: Any])
        #expect(message["content"] as? String == offline.text)
        #expect((r.json["usage"] as? [String: Any])?["prompt_tokens"] as? Int == tok.encode(rendered, addSpecialTokens: false).count)

        let bad = try await s.post("/v1/chat/completions", json: ["messages": [messages[0], messages[0]], "max_tokens": 3])
        #expect(bad.status == 400)
        let error = try #require(bad.json["error"] as? [String: Any])
        #expect(error["param"] as? String == "messages")
        #expect((error["message"] as? String)?.contains("Conversation roles must alternate") == true)
        #expect(s.engine.stats.runningRequests == 0 && s.engine.stats.waitingRequests == 0)
        await s.stop()
    }

    @Test func checkpointTemplatesLoadAndUnsupportedOnesFallBackToTheirFamily() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("chat-template-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        func write(_ template: String) throws {
            let config: [String: Any] = ["bos_token": "<s>", "eos_token": ["content": "</s>"], "chat_template": template]
            try JSONSerialization.data(withJSONObject: config).write(to: dir.appendingPathComponent("tokenizer_config.json"))
        }
        try write("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n")
        let chatml = ChatTemplate.load(directory: dir.path)
        #expect(chatml.jinja != nil && chatml.fallbackReason == nil && chatml.family == .chatml)
        #expect(chatml.eosToken == "</s>" && chatml.endMarkers == ["<|im_end|>"])
        // Jinja drops the template's own final newline, as transformers does.
        #expect(try chatml.render([ChatMessage(role: "user", content: "hi")]) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant")

        try write("{% for m in messages %}{% call turn(m) %}[INST] {{ m.content }} [/INST]{% endcall %}{% endfor %}")
        let fallback = ChatTemplate.load(directory: dir.path)
        #expect(fallback.jinja == nil && fallback.family == .inst)
        #expect(fallback.fallbackReason?.contains("call") == true)
        #expect(try fallback.render([ChatMessage(role: "user", content: "hi")]) == "<s>[INST] hi [/INST]")
    }

    @Test func stopStringEndsTheTextBeforeItStreamedOrNot() async throws {
        let model = try loadModel()
        let tok = try loadTokenizer()
        let prompt = "class Parser:\n    def __init__(self"
        let offline = try await offlineTexts(model, prompts: [tok.encode(prompt)], maxTokens: [24])[0]
        let full = try #require(offline.text)
        // A stop string taken from the middle of the greedy continuation.
        let chars = Array(full)
        try #require(chars.count >= 10)
        let stop = String(chars[5..<8])
        let expected = String(full[..<full.range(of: stop)!.lowerBound])
        let s = try await TestServer(engine: try makeEngine(model))
        let body: [String: Any] = ["prompt": prompt, "max_tokens": 24, "temperature": 0, "ignore_eos": true, "stop": [stop]]
        let r = try await s.post("/v1/completions", json: body)
        let choice = try #require((r.json["choices"] as? [[String: Any]])?.first)
        #expect(choice["text"] as? String == expected)
        #expect(choice["finish_reason"] as? String == "stop")
        var streamBody = body
        streamBody["stream"] = true
        let (text, finish, _, done) = streamedText(try await s.post("/v1/completions", json: streamBody).events)
        #expect(done && text == expected && finish == "stop")
        await s.stop()
    }

    @Test func modelsHealthAndVersionAnswer() async throws {
        let s = try await TestServer(engine: try makeEngine(try loadModel(), maxModelLen: 200))
        let models = try await s.get("/v1/models")
        #expect(models.status == 200)
        let entry = try #require((models.json["data"] as? [[String: Any]])?.first)
        #expect(entry["id"] as? String == testModelName)
        #expect(entry["max_model_len"] as? Int == 200)
        #expect(try await s.get("/health").status == 200)
        #expect(try await s.get("/version").json["version"] as? String == OpenAIServer.version)
        #expect(try await s.get("/v1/nothing").status == 404)
        await s.stop()
    }

    @Test func httpBenchClientMeasuresEveryStreamedRequest() async throws {
        let model = try loadModel()
        let s = try await TestServer(engine: try makeEngine(model))
        let workload = try Workload.synthetic(numPrompts: 8, inputLen: 16, outputLen: 6, rangeRatio: 0, requestRate: .infinity,
                                              burstiness: 1, vocabSize: model.config.vocabSize, seed: 3)
        let client = HTTPBenchmarkClient(baseURL: s.base + "/", endpoint: "/v1/completions", workload: workload)
        let run = try await client.run(seed: 3)
        let (records, duration) = (run.records, run.duration)
        #expect(records.count == 8)
        for r in records {
            #expect(r.success, "\(r.error)")
            #expect(r.promptTokens == 16 && r.outputTokens == 6)
            #expect(r.itls.count <= 5)
            #expect(r.ttft > 0 && r.latency >= r.ttft)
        }
        let metrics = ServingMetrics(records: records, duration: duration, slo: GoodputSLO())
        #expect(metrics.completed == 8 && metrics.totalOutputTokens == 48 && metrics.totalInputTokens == 128)
        #expect(try await s.metric("switchyard:generation_tokens_total") == 48)
        // The server's expert counters over the run: every forwarded token
        // (prompt and output, less the last token of each request, which is
        // never forwarded) routed to top-k experts in every layer.
        let experts = try #require(run.experts)
        let forwarded = 8 * (16 + 6 - 1)
        let c = model.config
        #expect(experts.tokensPerLayerExpert.count == c.numLayers)
        for row in experts.tokensPerLayerExpert { #expect(row.reduce(0, +) == forwarded * c.numExpertsPerToken) }
        #expect(experts.expertActivations > 0 && experts.expertWeightBytesRead > 0)

        let chat = HTTPBenchmarkClient(baseURL: s.base, endpoint: "/v1/chat/completions", workload: Array(workload.prefix(2)),
                                       tokenizer: try loadTokenizer())
        let chatRecords = try await chat.run(seed: 3).records
        #expect(chatRecords.allSatisfy { $0.success && $0.outputTokens == 6 })
        await s.stop()
    }
}

/// `n` choices and a batch of prompts in one request, as the OpenAI SDK
/// (`n=2`) and lm-evaluation-harness (`--batch_size`) send them.
@Suite(.serialized) struct ChoicesTests {
    @Test func aBatchOfPromptsWithNChoicesAnswersEveryChoiceInOrder() async throws {
        let s = try await TestServer(engine: try makeEngine(try loadModel()))
        let body = #"{"prompt": [[5, 6, 7], [40, 41, 42, 43]], "n": 2, "max_tokens": 4, "temperature": 0, "ignore_eos": true}"#
        let r = try await s.post("/v1/completions", body)
        #expect(r.status == 200, "\(r.body)")
        let choices = try #require(r.json["choices"] as? [[String: Any]])
        #expect(choices.map { $0["index"] as? Int } == [0, 1, 2, 3])
        let texts = choices.map { $0["text"] as? String ?? "?" }
        // Greedy: both choices of a prompt agree, and equal that prompt alone.
        for (i, prompt) in ["[5, 6, 7]", "[40, 41, 42, 43]"].enumerated() {
            let alone = try await s.post("/v1/completions", #"{"prompt": \#(prompt), "max_tokens": 4, "temperature": 0, "ignore_eos": true}"#)
            let aloneText = try #require((alone.json["choices"] as? [[String: Any]])?.first?["text"] as? String)
            #expect(texts[2 * i] == aloneText && texts[2 * i + 1] == aloneText)
        }
        let usage = try #require(r.json["usage"] as? [String: Int])
        #expect(usage["prompt_tokens"] == 7 && usage["completion_tokens"] == 16)

        // Streamed: each choice's chunks carry its index and add up to the same text.
        let streamed = try await s.post("/v1/completions", #"{"prompt": [[5, 6, 7], [40, 41, 42, 43]], "n": 2, "max_tokens": 4, "temperature": 0, "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}}"#)
        var byIndex = [Int: String](), finished = Set<Int>()
        var total: [String: Int]?
        for event in streamed.events where event != "[DONE]" {
            let json = try #require(try JSONSerialization.jsonObject(with: Data(event.utf8)) as? [String: Any])
            if let u = json["usage"] as? [String: Int] { total = u }
            for c in json["choices"] as? [[String: Any]] ?? [] {
                let i = try #require(c["index"] as? Int)
                byIndex[i, default: ""] += c["text"] as? String ?? ""
                if c["finish_reason"] as? String == "length" { finished.insert(i) }
            }
        }
        #expect(streamed.events.last == "[DONE]")
        #expect((0..<4).map { byIndex[$0] } == texts.map { Optional($0) })
        #expect(finished == [0, 1, 2, 3])
        #expect(total?["completion_tokens"] == 16)
        #expect(await s.eventually { s.engine.freeKVBlocks == 512 })
        await s.stop()
    }

    /// best_of: the n candidates with the highest total log-probability,
    /// checked against the same candidates requested as n choices.
    @Test func bestOfReturnsTheMostLikelyCandidates() async throws {
        let s = try await TestServer(engine: try makeEngine(try loadModel()))
        let common = #""prompt": "def f(x):", "max_tokens": 8, "temperature": 1.0, "seed": 5, "ignore_eos": true"#
        let all = try await s.post("/v1/completions", "{\(common), \"n\": 4, \"logprobs\": 0}")
        let candidates = (all.json["choices"] as? [[String: Any]] ?? []).map { c -> (String, Double) in
            let lp = (c["logprobs"] as? [String: Any])?["token_logprobs"] as? [Double] ?? []
            return (c["text"] as? String ?? "", lp.reduce(0, +))
        }
        #expect(candidates.count == 4)
        let best = try await s.post("/v1/completions", "{\(common), \"n\": 2, \"best_of\": 4}")
        let chosen = try #require(best.json["choices"] as? [[String: Any]], "\(best.body)")
        #expect(chosen.map { $0["index"] as? Int } == [0, 1])
        #expect(chosen.allSatisfy { $0["logprobs"] is NSNull })
        let expected = candidates.enumerated().sorted { ($0.element.1, -$0.offset) > ($1.element.1, -$1.offset) }.prefix(2).map(\.element.0)
        #expect(chosen.map { $0["text"] as? String ?? "" } == Array(expected))
        // Usage counts every candidate's tokens.
        #expect((best.json["usage"] as? [String: Int])?["completion_tokens"] == 32)
        await s.stop()
    }

    @Test func seededChoicesSampleIndependentlyAndRepeat() async throws {
        let s = try await TestServer(engine: try makeEngine(try loadModel()))
        let body = #"{"prompt": "def f(x):", "n": 3, "max_tokens": 12, "temperature": 1.0, "seed": 11, "ignore_eos": true}"#
        func texts() async throws -> [String] {
            let r = try await s.post("/v1/completions", body)
            return (r.json["choices"] as? [[String: Any]] ?? []).map { $0["text"] as? String ?? "" }
        }
        let first = try await texts(), second = try await texts()
        #expect(first.count == 3 && first == second)
        #expect(Set(first).count > 1, "choices with seeds 11, 12, 13 all sampled \(first)")
        await s.stop()
    }
}

/// `logprobs` and `echo` as lm-evaluation-harness uses them: the server's
/// log-probabilities are the model's own (log-softmax of `Generator`'s logits).
@Suite(.serialized) struct LogprobsAPITests {
    func logSoftmax(_ row: [Float], _ token: Int32) -> Double {
        let m = row.max()!
        let z = row.reduce(0.0) { $0 + Double(expf($1 - m)) }
        return Double(row[Int(token)] - m) - log(z)
    }

    @Test func echoWithMaxTokensZeroScoresThePromptWithTheModelsLogprobs() async throws {
        let model = try loadModel()
        let tok = try loadTokenizer()
        let s = try await TestServer(engine: try makeEngine(model))
        let prompt: [Int32] = tok.encode("def add(a, b):\n    return a + b")
        let ids = prompt.map(String.init).joined(separator: ", ")
        let r = try await s.post("/v1/completions", #"{"prompt": [\#(ids)], "max_tokens": 0, "echo": true, "logprobs": 1, "temperature": 0}"#)
        #expect(r.status == 200, "\(r.body)")
        let choice = try #require((r.json["choices"] as? [[String: Any]])?.first)
        #expect(choice["text"] as? String == tok.decode(prompt, skipSpecialTokens: false))
        let lp = try #require(choice["logprobs"] as? [String: Any])
        let values = try #require(lp["token_logprobs"] as? [Any])
        #expect(values.count == prompt.count && values[0] is NSNull)
        let logits = try Generator(model: model).allLogits(prompt)
        for i in 1..<prompt.count {
            let v = try #require(values[i] as? Double)
            #expect(abs(v - logSoftmax(logits[i - 1], prompt[i])) < 1e-4, "token \(i)")
        }
        let tokens = try #require(lp["tokens"] as? [String])
        #expect(tokens.joined() == choice["text"] as? String)
        #expect((lp["text_offset"] as? [Int])?.first == 0)
        let tops = try #require(lp["top_logprobs"] as? [Any])
        #expect(tops[0] is NSNull && (tops[1] as? [String: Double])?.isEmpty == false)
        let usage = try #require(r.json["usage"] as? [String: Int])
        #expect(usage["completion_tokens"] == 0 && usage["prompt_tokens"] == prompt.count)
        await s.stop()
    }

    /// Streamed, `echo` with `logprobs` sends the prompt and its scores in the
    /// first chunk; the chunks add up to the non-streamed answer.
    @Test func streamedEchoWithLogprobsSendsTheScoredPromptFirst() async throws {
        let model = try loadModel()
        let s = try await TestServer(engine: try makeEngine(model))
        let body = #"{"prompt": "def f(x):\n    return", "max_tokens": 4, "echo": true, "logprobs": 2, "temperature": 0, "ignore_eos": true"#
        let plain = try await s.post("/v1/completions", body + "}")
        #expect(plain.status == 200, "\(plain.body)")
        let choice = try #require((plain.json["choices"] as? [[String: Any]])?.first)
        let whole = try #require(choice["logprobs"] as? [String: Any])
        let streamed = try await s.post("/v1/completions", body + #", "stream": true}"#)
        var chunks: [[String: Any]] = []
        for event in streamed.events where event != "[DONE]" {
            let json = try #require(try JSONSerialization.jsonObject(with: Data(event.utf8)) as? [String: Any])
            chunks += (json["choices"] as? [[String: Any]]) ?? []
        }
        let first = try #require(chunks.first)
        #expect(first["text"] as? String == "def f(x):\n    return")
        let firstLogprobs = try #require(first["logprobs"] as? [String: Any])
        let promptValues = try #require(firstLogprobs["token_logprobs"] as? [Any])
        #expect(promptValues.first is NSNull && promptValues.count > 3)
        // Text, tokens and values, concatenated over the chunks, equal the non-streamed answer.
        var text = "", tokens: [String] = [], values: [Double?] = [], offsets: [Int] = []
        for c in chunks {
            text += c["text"] as? String ?? ""
            guard let lp = c["logprobs"] as? [String: Any] else { continue }
            tokens += lp["tokens"] as? [String] ?? []
            values += (lp["token_logprobs"] as? [Any] ?? []).map { $0 as? Double }
            offsets += lp["text_offset"] as? [Int] ?? []
        }
        #expect(text == choice["text"] as? String)
        #expect(tokens == whole["tokens"] as? [String])
        let expected = (whole["token_logprobs"] as? [Any] ?? []).map { $0 as? Double }
        #expect(values.count == expected.count)
        for (a, b) in zip(values, expected) { #expect(a == b || abs((a ?? .nan) - (b ?? .nan)) < 1e-9) }
        #expect(offsets == whole["text_offset"] as? [Int])
        await s.stop()
    }

    @Test func generatedTokensCarryTheirLogprobsInCompletionsAndChat() async throws {
        let model = try loadModel()
        let s = try await TestServer(engine: try makeEngine(model))
        let r = try await s.post("/v1/completions", #"{"prompt": [5, 6, 7], "max_tokens": 3, "logprobs": 2, "temperature": 0, "ignore_eos": true}"#)
        let choice = try #require((r.json["choices"] as? [[String: Any]])?.first, "\(r.body)")
        let lp = try #require(choice["logprobs"] as? [String: Any])
        let values = try #require(lp["token_logprobs"] as? [Double])
        #expect(values.count == 3 && values.allSatisfy { $0 <= 0 })
        #expect((lp["tokens"] as? [String])?.joined() == choice["text"] as? String)
        // Greedy: each chosen token is the best of its top two.
        for (i, top) in (lp["top_logprobs"] as? [[String: Double]] ?? []).enumerated() {
            #expect(top.count >= 2 && abs((top.values.max() ?? 1) - values[i]) < 1e-6)
        }
        // Streamed with echo: the prompt's text comes first.
        let echoed = try await s.post("/v1/completions", #"{"prompt": "def f(x):", "max_tokens": 3, "echo": true, "temperature": 0, "ignore_eos": true, "stream": true}"#)
        var echoedText = ""
        for event in echoed.events where event != "[DONE]" {
            let json = try #require(try JSONSerialization.jsonObject(with: Data(event.utf8)) as? [String: Any])
            for c in json["choices"] as? [[String: Any]] ?? [] { echoedText += c["text"] as? String ?? "" }
        }
        let plain = try await s.post("/v1/completions", #"{"prompt": "def f(x):", "max_tokens": 3, "echo": true, "temperature": 0, "ignore_eos": true}"#)
        #expect(echoedText.hasPrefix("def f(x):") && echoedText == (plain.json["choices"] as? [[String: Any]])?.first?["text"] as? String)
        // Streamed, each token's chunk carries the same log-probabilities.
        let streamed = try await s.post("/v1/completions", #"{"prompt": [5, 6, 7], "max_tokens": 3, "logprobs": 2, "temperature": 0, "ignore_eos": true, "stream": true}"#)
        var streamedValues: [Double] = []
        for event in streamed.events where event != "[DONE]" {
            let json = try #require(try JSONSerialization.jsonObject(with: Data(event.utf8)) as? [String: Any])
            for c in json["choices"] as? [[String: Any]] ?? [] {
                if let v = (c["logprobs"] as? [String: Any])?["token_logprobs"] as? [Double] { streamedValues += v }
            }
        }
        #expect(streamedValues.count == 3 && zip(streamedValues, values).allSatisfy { abs($0 - $1) < 1e-9 })
        let c = try await s.post("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "logprobs": true, "top_logprobs": 2, "temperature": 0, "ignore_eos": true}"#)
        let cc = try #require((c.json["choices"] as? [[String: Any]])?.first, "\(c.body)")
        let content = try #require((cc["logprobs"] as? [String: Any])?["content"] as? [[String: Any]])
        #expect(content.count == 4)
        #expect(content.allSatisfy { ($0["top_logprobs"] as? [Any])?.count == 2 && $0["logprob"] is Double })
        await s.stop()
    }
}
