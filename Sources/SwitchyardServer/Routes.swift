import Foundation
import Hummingbird
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

    static func error(_ e: APIError) -> Response {
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
        var request = request
        let body: ByteBuffer
        do { body = try await request.collectBody(upTo: config.maxBodyBytes) } catch {
            let e = APIError(status: 413, message: "the request body is larger than \(config.maxBodyBytes) bytes",
                             type: "invalid_request_error", param: nil)
            metrics.recordRejected(e)
            return Self.error(e)
        }
        let run: GenerationRun
        do {
            let prepared = try prepare(Data(buffer: body), chat: chat)
            run = try GenerationRun(server: self, prepared: prepared)
        } catch {
            if error.status != 503 { metrics.recordRejected(error) }
            return Self.error(error)
        }
        if run.prepared.options.stream { return stream(run, on: channel) }

        var text = ""
        let output = await connections.during(run, on: channel) { await run.run { text += $0 } }
        guard let output else {
            return Self.error(APIError(status: 499, message: "client closed the request", type: "client_closed", param: nil))
        }
        if let e = output.error { return Self.error(APIError(e)) }
        return Self.json(OpenAIResponse.full(run.prepared, model: config.modelName, text: text, output: output))
    }

    func stream(_ run: GenerationRun, on channel: any Channel) -> Response {
        let model = config.modelName
        let p = run.prepared
        let connections = connections
        let headers: HTTPFields = [.contentType: "text/event-stream", .cacheControl: "no-cache"]
        return Response(status: .ok, headers: headers, body: .init { writer in
            func send(_ chunk: JSONOut) async throws {
                var s = "data: "
                chunk.write(into: &s)
                s += "\n\n"
                try await writer.write(ByteBuffer(string: s))
            }
            // A failed write also means the client left: `run` cancels then.
            let output = await connections.during(run, on: channel) { () -> RequestOutput? in
                do {
                    if p.chat { try await send(OpenAIResponse.chunk(p, model: model, text: "", role: true)) }
                } catch {
                    run.cancel()
                }
                return await run.run { text in try await send(OpenAIResponse.chunk(p, model: model, text: text)) }
            }
            guard let output else { return }
            do {
                if let e = output.error {
                    try await send(APIError(e).jsonOut)
                } else {
                    try await send(OpenAIResponse.chunk(p, model: model, text: p.chat ? nil : "", finish: output.finishReason))
                    if p.options.includeUsage { try await send(OpenAIResponse.usageChunk(p, model: model, output: output)) }
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
