import AsyncHTTPClient
import ChunkedScheduler
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Synchronization
@testable import SwitchyardCore
import SwitchyardModel
@testable import SwitchyardServer

/// The bundled default model (it has a tokenizer, so text prompts work).
let modelDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("models/stdlib-moe").path

func loadModel() throws -> Transformer { try Transformer(directory: modelDirectory) }
func loadTokenizer() throws -> any Tokenizer { try TokenizerLoader.load(directory: modelDirectory) }

let testModelName = "stdlib-moe"

func makeEngine(_ model: Transformer, scheduler: (any Scheduler)? = nil, maxModelLen: Int = 256, numKVBlocks: Int = 512) throws -> Engine {
    Engine(model: model, config: EngineConfig(maxModelLen: maxModelLen, blockSize: 16, numKVBlocks: numKVBlocks),
           scheduler: scheduler ?? ChunkedScheduler(.init(maxNumBatchedTokens: 512, maxNumSeqs: 64)),
           tokenizer: try loadTokenizer())
}

/// Greedy outputs of the offline API (`Engine.generate`) for the same requests.
func offlineTexts(_ model: Transformer, prompts: [[Int32]], maxTokens: [Int]) async throws -> [RequestOutput] {
    let engine = try makeEngine(model)
    let outs = await engine.generate(prompts.enumerated().map { i, p in
        GenerationRequest(id: "offline-\(i)", promptTokens: p, maxTokens: maxTokens[i], ignoreEOS: true)
    })
    engine.shutdown()
    return outs
}

/// Holds back the scheduler until opened, so requests stay queued.
final class GateScheduler: Scheduler {
    let inner = ChunkedScheduler()
    let isOpen = Mutex(false)
    func open() { isOpen.withLock { $0 = true } }
    func schedule(_ context: SchedulingContext) -> IterationPlan {
        guard isOpen.withLock({ $0 }) else { return IterationPlan() }
        return inner.schedule(context)
    }
}

/// Chunked scheduling that stops running a request once it has `holdAfter`
/// output tokens, so it is still running (holding its KV blocks) however
/// late its client goes away.
final class HoldingScheduler: Scheduler {
    let inner = ChunkedScheduler()
    let holdAfter: Int
    init(holdAfter: Int) { self.holdAfter = holdAfter }
    func schedule(_ context: SchedulingContext) -> IterationPlan {
        let held = Set(context.running.filter { $0.outputTokens >= holdAfter }.map(\.handle))
        var plan = inner.schedule(context)
        plan.work.removeAll { held.contains($0.handle) }
        return plan
    }
}

/// An in-process server on an ephemeral loopback port.
final class TestServer: Sendable {
    let server: OpenAIServer
    let port: Int
    let client: HTTPClient
    private let task: Task<Void, any Error>

    var engine: Engine { server.engine }
    var base: String { "http://127.0.0.1:\(port)" }

    init(engine: Engine, maxQueuedRequests: Int? = nil, expertMap: ExpertMap? = nil, chatTemplate: ChatTemplate = .default,
         apiKey: String? = nil, modelAliases: [String] = [], idleTimeout: Duration = .seconds(60),
         bodyTimeout: Duration = .seconds(30), maxConnections: Int? = nil) async throws {
        var serverConfig = ServerConfig(host: "127.0.0.1", port: 0, modelName: testModelName, maxQueuedRequests: maxQueuedRequests,
                                        chatTemplate: chatTemplate, expertMap: expertMap)
        serverConfig.apiKey = apiKey
        serverConfig.modelAliases = modelAliases
        serverConfig.idleTimeout = idleTimeout
        serverConfig.bodyTimeout = bodyTimeout
        if let maxConnections { serverConfig.maxConnections = maxConnections }
        let server = OpenAIServer(engine: engine, config: serverConfig)
        let (ports, portSink) = AsyncStream<Int>.makeStream()
        var logger = Logger(label: "test-server")
        logger.logLevel = .critical
        let app = server.makeApplication(logger: logger) { port in portSink.yield(port) }
        task = Task { try await app.run() }
        var it = ports.makeAsyncIterator()
        port = await it.next() ?? 0
        self.server = server
        var config = HTTPClient.Configuration()
        config.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 128)
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
    }

    func stop() async {
        try? await client.shutdown()
        task.cancel()
        _ = await task.result
        engine.shutdown()
    }

    struct Reply {
        var status: Int
        var body: String
        var json: [String: Any] { ((try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any]) ?? [:] }
        /// The `data:` payloads of an event stream.
        var events: [String] {
            var p = SSE.Parser()
            return p.feed(Array(body.utf8))
        }
    }

    func get(_ path: String) async throws -> Reply {
        let r = try await client.execute(HTTPClientRequest(url: base + path), timeout: .seconds(120))
        return Reply(status: Int(r.status.code), body: String(buffer: try await r.body.collect(upTo: 64 << 20)))
    }

    /// Any method, any headers; the reply's headers too.
    func send(_ method: HTTPMethod, _ path: String, body: String? = nil, headers: [(String, String)] = []) async throws -> (Reply, HTTPHeaders) {
        var req = HTTPClientRequest(url: base + path)
        req.method = method
        for (name, value) in headers { req.headers.add(name: name, value: value) }
        if let body { req.body = .bytes(ByteBuffer(string: body)) }
        let r = try await client.execute(req, timeout: .seconds(120))
        return (Reply(status: Int(r.status.code), body: String(buffer: try await r.body.collect(upTo: 64 << 20))), r.headers)
    }

    func post(_ path: String, _ body: String) async throws -> Reply {
        var req = HTTPClientRequest(url: base + path)
        req.method = .POST
        req.headers.add(name: "Content-Type", value: "application/json")
        req.body = .bytes(ByteBuffer(string: body))
        let r = try await client.execute(req, timeout: .seconds(300))
        return Reply(status: Int(r.status.code), body: String(buffer: try await r.body.collect(upTo: 64 << 20)))
    }

    func post(_ path: String, json: [String: Any]) async throws -> Reply {
        try await post(path, String(decoding: try JSONSerialization.data(withJSONObject: json), as: UTF8.self))
    }

    /// Waits (up to a generous bound) until `condition` holds; returns whether it did.
    func eventually(_ condition: () async -> Bool) async -> Bool {
        for _ in 0..<3000 {
            if await condition() { return true }
            try? await Task.sleep(nanoseconds: 10_000_000)
        }
        return await condition()
    }

    /// Sum of the samples of `name` whose labels include `labels`.
    func metric(_ name: String, _ labels: [String: String] = [:]) async throws -> Double? {
        let text = try await get("/metrics").body
        return parseMetric(text, name, labels)
    }
}

func parseMetric(_ text: String, _ name: String, _ labels: [String: String] = [:]) -> Double? {
    var total: Double?
    for line in text.split(separator: "\n") where !line.hasPrefix("#") {
        guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
        let series = line[..<space]
        let metricName = series.prefix { $0 != "{" }
        guard metricName == name else { continue }
        let labelText = series.dropFirst(metricName.count)
        if labels.allSatisfy({ labelText.contains("\($0.key)=\"\($0.value)\"") }) { total = (total ?? 0) + value }
    }
    return total
}

/// Concatenated text of a completion or chat stream's chunks.
func streamedText(_ events: [String]) -> (text: String, finish: String?, usage: [String: Any]?, done: Bool) {
    var text = ""
    var finish: String?
    var usage: [String: Any]?
    for e in events where e != "[DONE]" {
        guard let obj = (try? JSONSerialization.jsonObject(with: Data(e.utf8))) as? [String: Any] else { continue }
        if let u = obj["usage"] as? [String: Any] { usage = u }
        guard let c = (obj["choices"] as? [[String: Any]])?.first else { continue }
        text += (c["text"] as? String) ?? ((c["delta"] as? [String: Any])?["content"] as? String) ?? ""
        if let f = c["finish_reason"] as? String { finish = f }
    }
    return (text, finish, usage, events.last == "[DONE]")
}
