import Foundation
import Hummingbird
import Logging
import SwitchyardModel
import NIOCore
import SwitchyardCore

extension OpenAIServer {
    func addRoutes(to router: Router<ServerRequestContext>) {
        router.post("/v1/completions") { request, context in await self.generate(request, on: context.channel, chat: false) }
        router.post("/v1/chat/completions") { request, context in await self.generate(request, on: context.channel, chat: true) }
        router.get("/v1/models") { _, _ in self.models() }
        router.get("/health") { _, _ in Response(status: .ok) }
        router.head("/health") { _, _ in Response(status: .ok) }
        router.get("/version") { _, _ in Self.json(.object([("version", .string(Self.version))])) }
        router.get("/metrics") { _, _ in
            let text = await self.metrics.render(engine: self.engine)
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(string: text)))
        }
        router.get("/v1/experts/stats") { _, _ in Self.json(await self.experts.json()) }
        router.post("/v1/experts/stats/reset") { _, _ in
            await self.experts.reset()
            return Self.json(.object([("object", "expert_stats.reset"), ("reset", .bool(true))]))
        }
    }

    static func json(_ value: JSONOut, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"],
                 body: .init(byteBuffer: ByteBuffer(string: value.serialized)))
    }

    /// Errors are logged with their message: server faults (5xx) at error
    /// level, client errors at notice (shown with `--log-level notice`).
    static let errorLog = Logger(label: "switchyard.server")

    static func error(_ e: APIError) -> Response {
        if e.status >= 500 {
            errorLog.error("\(e.status) \(e.type): \(e.message)")
        } else {
            errorLog.notice("\(e.status) \(e.type)\(e.param.map { " (\($0))" } ?? ""): \(e.message)")
        }
        var headers: HTTPFields = [.contentType: "application/json"]
        // A full queue clears as requests get their first token: retry soon.
        if e.status == 503 { headers[.retryAfter] = "1" }
        return Response(status: .init(code: e.status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: e.json)))
    }

    func models() -> Response {
        Self.json(.object([("object", "list"), ("data", .array([.object([
            ("id", .string(config.modelName)), ("object", "model"), ("created", .int(started)),
            ("owned_by", "switchyard"), ("root", .string(config.modelName)),
            ("max_model_len", .int(engine.config.maxModelLen)),
        ])]))]))
    }

    /// `/v1/completions` and `/v1/chat/completions`. A client that closes
    /// its connection cancels the request at once (the engine frees its KV
    /// blocks before its next iteration); other connections stay open for the
    /// next request.
    func generate(_ request: Request, on channel: any Channel, chat: Bool) async -> Response {
        let body: ByteBuffer
        do {
            guard let b = try await collectBody(request, on: channel) else {
                // Too slow (or never finished): the connection is closed, nobody reads this.
                return Self.error(APIError(status: 408, message: "the request body did not arrive within \(config.bodyTimeout)",
                                           type: "invalid_request_error", param: nil))
            }
            body = b
        } catch {
            if Task.isCancelled {
                return Self.error(APIError(status: 503, message: "the server is shutting down", type: "service_unavailable_error", param: nil))
            }
            let e = APIError(status: 413, message: "the request body is larger than \(config.maxBodyBytes) bytes",
                             type: "invalid_request_error", param: nil)
            metrics.recordRejected(e)
            return Self.error(e)
        }
        var runs: [GenerationRun] = []
        do throws(APIError) {
            // The queue slot is taken before the prompt is tokenized, so the
            // tokenizing counts against --max-queued-requests too. A run left
            // behind when a later one is refused (503) cancels itself when dropped.
            guard let slot = admission.take() else { throw queueFull() }
            var first: QueueSlot? = slot
            // Tokenizing runs in a task the client's hang-up cancels.
            let preparing = Task { () -> Result<[PreparedRequest], APIError> in
                do throws(APIError) { return .success(try self.prepare(Data(buffer: body), chat: chat)) } catch { return .failure(error) }
            }
            let outcome = await connections.during(cancelling: [{ preparing.cancel() }], on: channel) { await preparing.value }
            for prepared in try outcome.get() {
                runs.append(try GenerationRun(server: self, prepared: prepared, slot: first))
                first = nil
            }
        } catch {
            if error.status != 503 && error.status != 499 { metrics.recordRejected(error) }
            return Self.error(error)
        }
        if runs[0].prepared.options.stream { return stream(runs, on: channel) }

        let results = await connections.during(runs, on: channel) { await Self.collect(runs) }
        var complete: [(text: String, output: RequestOutput)] = []
        for r in results {
            guard let output = r.output else {
                return Self.error(APIError(status: 499, message: "client closed the request", type: "client_closed", param: nil))
            }
            if let e = output.error { return Self.error(APIError(e)) }
            complete.append((r.text, output))
        }
        var prepared = runs.map(\.prepared)
        let options = prepared[0].options
        let generated = complete.reduce(0) { $0 + $1.output.outputTokens.count }
        if options.bestOf > options.n {
            (prepared, complete) = Self.best(prepared, complete, of: options.bestOf, keep: options.n)
        }
        return Self.json(OpenAIResponse.full(prepared, model: config.modelName, results: complete, generatedTokens: generated,
                                             tokenText: tokenText))
    }

    /// The body, or nil when it has not arrived within `bodyTimeout`: the
    /// connection is then closed, which also ends the read (a client that
    /// sends half a body holds nothing, not even a shutdown).
    func collectBody(_ request: Request, on channel: any Channel) async throws -> ByteBuffer? {
        let limit = config.maxBodyBytes, timeout = config.bodyTimeout
        return try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
            group.addTask {
                var r = request
                return try await r.collectBody(upTo: limit)
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                if !Task.isCancelled { channel.close(promise: nil) }
                return nil
            }
            defer { group.cancelAll() }
            let first = try await group.next()!
            return first
        }
    }

    /// `best_of`: of each prompt's `of` candidates, the `keep` with the
    /// highest total log-probability (ties: the earlier), renumbered as the
    /// prompt's choices; log-probabilities only computed for the ranking are
    /// dropped again.
    static func best(_ ps: [PreparedRequest], _ rs: [(text: String, output: RequestOutput)], of: Int, keep: Int)
        -> ([PreparedRequest], [(text: String, output: RequestOutput)]) {
        var outP: [PreparedRequest] = [], outR: [(text: String, output: RequestOutput)] = []
        for (prompt, start) in stride(from: 0, to: ps.count, by: of).enumerated() {
            let score = { (i: Int) -> Double in (rs[i].output.logprobs ?? []).reduce(0) { $0 + Double($1.logprob) } }
            let ranked = (start..<(start + of)).sorted { (score($0), -$0) > (score($1), -$1) }
            for (rank, i) in ranked.prefix(keep).enumerated() {
                var p = ps[i]
                p.choice = prompt * keep + rank
                var r = rs[i]
                if p.options.logprobs == nil { r.output.logprobs = nil }
                outP.append(p)
                outR.append(r)
            }
        }
        return (outP, outR)
    }

    /// Runs every choice at once; their texts and outputs in choice order.
    static func collect(_ runs: [GenerationRun]) async -> [(text: String, output: RequestOutput?)] {
        await withTaskGroup(of: (Int, String, RequestOutput?).self) { group in
            for (i, run) in runs.enumerated() {
                group.addTask {
                    var text = ""
                    let output = await run.run { piece, _ in text += piece }
                    return (i, text, output)
                }
            }
            var out = [(text: String, output: RequestOutput?)](repeating: ("", nil), count: runs.count)
            for await (i, text, output) in group { out[i] = (text, output) }
            return out
        }
    }

    /// Server-Sent Events for every choice: each choice's chunks carry its
    /// index, interleaved as they are produced; one writer sends them.
    func stream(_ runs: [GenerationRun], on channel: any Channel) -> Response {
        let model = config.modelName
        let p = runs[0].prepared
        let connections = connections
        let tokenText = tokenText
        let headers: HTTPFields = [.contentType: "text/event-stream", .cacheControl: "no-cache"]
        return Response(status: .ok, headers: headers, body: .init { writer in
            func send(_ chunk: JSONOut) async throws {
                var s = "data: "
                chunk.write(into: &s)
                s += "\n\n"
                try await writer.write(ByteBuffer(string: s))
            }
            let (chunks, sink) = AsyncStream<JSONOut>.makeStream(bufferingPolicy: .unbounded)
            let producer = Task { () -> [RequestOutput?] in
                await connections.during(runs, on: channel) {
                    await withTaskGroup(of: (Int, RequestOutput?).self) { group in
                        for (i, run) in runs.enumerated() {
                            let q = run.prepared
                            group.addTask {
                                if q.chat { sink.yield(OpenAIResponse.chunk(q, model: model, text: "", role: true)) }
                                var offset = 0
                                var onPromptScored: (([TokenLogprob]) async throws -> Void)?
                                if q.options.echo && q.options.logprobs != nil {
                                    // The prompt goes first, with its log-probabilities, once scored.
                                    onPromptScored = { scored in
                                        let prompt = q.promptText ?? ""
                                        sink.yield(OpenAIResponse.chunk(q, model: model, text: prompt,
                                                                        logprobs: OpenAIResponse.completionLogprobs(
                                                                            [], prompt: scored, echoed: q.request.promptTokens, tokenText: tokenText)))
                                        offset = prompt.count
                                    }
                                } else if q.options.echo {
                                    sink.yield(OpenAIResponse.chunk(q, model: model, text: q.promptText ?? ""))
                                    offset = (q.promptText ?? "").count
                                }
                                let output = await run.run(onPromptScored: onPromptScored) { text, logprob in
                                    sink.yield(OpenAIResponse.chunk(q, model: model, text: text, logprob: logprob, textOffset: offset,
                                                                    tokenText: tokenText))
                                    offset += text.count
                                }
                                if let output, output.error == nil {
                                    sink.yield(OpenAIResponse.chunk(q, model: model, text: q.chat ? nil : "", finish: output.finishReason))
                                }
                                return (i, output)
                            }
                        }
                        var outputs = [RequestOutput?](repeating: nil, count: runs.count)
                        for await (i, output) in group { outputs[i] = output }
                        sink.finish()
                        return outputs
                    }
                }
            }
            // A failed write means the client left: cancel every choice.
            var failed = false
            for await chunk in chunks where !failed {
                do { try await send(chunk) } catch {
                    failed = true
                    runs.forEach { $0.cancel() }
                }
            }
            let outputs = await producer.value
            guard !failed, outputs.allSatisfy({ $0 != nil }) else { return }
            do {
                if let e = outputs.compactMap({ $0?.error }).first {
                    try await send(APIError(e).jsonOut)
                } else if p.options.includeUsage {
                    let all = outputs.map { $0! }
                    let n = max(1, p.options.n)
                    let promptTokens = stride(from: 0, to: all.count, by: n).reduce(0) { $0 + all[$1].promptTokens }
                    try await send(OpenAIResponse.usageChunk(p, model: model, promptTokens: promptTokens,
                                                             completionTokens: all.reduce(0) { $0 + $1.outputTokens.count }))
                }
                try await writer.write(ByteBuffer(string: SSE.done))
                try await writer.finish(nil)
            } catch {}
        })
    }
}

extension APIError {
    var jsonOut: JSONOut {
        .object([("error", .object([("message", .string(message)), ("type", .string(type)), ("param", .optional(param)),
                                    ("code", .int(status))]))])
    }
}
