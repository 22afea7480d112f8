import Foundation
import Hummingbird
import NIOCore
import SwitchyardCore

extension OpenAIServer {
    func addRoutes(to router: Router<BasicRequestContext>) {
        router.post("/v1/completions") { request, _ in await self.generate(request, chat: false) }
        router.post("/v1/chat/completions") { request, _ in await self.generate(request, chat: true) }
        router.get("/v1/models") { _, _ in self.models() }
        router.get("/health") { _, _ in Response(status: .ok) }
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
        Response(status: .init(code: e.status), headers: [.contentType: "application/json"],
                 body: .init(byteBuffer: ByteBuffer(bytes: e.json)))
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
    /// blocks before its next iteration); such responses end the connection.
    func generate(_ request: Request, chat: Bool) async -> Response {
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
        let requestBody = request.body
        if run.prepared.options.stream { return stream(run, requestBody: requestBody) }

        let result: (output: RequestOutput?, text: String)? = try? await requestBody.consumeWithInboundCloseHandler { _ in
            var text = ""
            let out = await run.run { text += $0 }
            return (out, text)
        } onInboundClosed: {
            run.cancel()
        }
        // Watching for the client hanging up consumed the connection's
        // inbound side, so it cannot carry another request: say so.
        var response: Response
        if let result, let output = result.output {
            if let e = output.error {
                response = Self.error(.invalid(nil, e.description))
            } else {
                response = Self.json(OpenAIResponse.full(run.prepared, model: config.modelName, text: result.text, output: output))
            }
        } else {
            response = Self.error(APIError(status: 499, message: "client closed the request", type: "client_closed", param: nil))
        }
        response.headers[.connection] = "close"
        return response
    }

    func stream(_ run: GenerationRun, requestBody: RequestBody) -> Response {
        let model = config.modelName
        let p = run.prepared
        let headers: HTTPFields = [.contentType: "text/event-stream", .cacheControl: "no-cache", .connection: "close"]
        return Response(status: .ok, headers: headers, body: .init { writer in
            func send(_ chunk: JSONOut) async throws {
                var s = "data: "
                chunk.write(into: &s)
                s += "\n\n"
                try await writer.write(ByteBuffer(string: s))
            }
            let output: RequestOutput? = try? await requestBody.consumeWithInboundCloseHandler { _ in
                do {
                    if p.chat { try await send(OpenAIResponse.chunk(p, model: model, text: "", role: true)) }
                } catch {
                    run.cancel()
                }
                return await run.run { text in try await send(OpenAIResponse.chunk(p, model: model, text: text)) }
            } onInboundClosed: {
                run.cancel()
            }
            guard let output else { return }
            do {
                if let e = output.error {
                    try await send(APIError.invalid(nil, e.description).jsonOut)
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
