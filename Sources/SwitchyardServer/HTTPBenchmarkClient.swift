import AsyncHTTPClient
import Foundation
import NIOCore
import SwitchyardCore
import SwitchyardModel

/// `switchyard bench --base-url`: replays a workload against any
/// OpenAI-compatible server (Switchyard, vLLM, llama.cpp's server) in real
/// time, streaming every request, and measures what the client sees, as
/// vLLM's `bench serve` does: TTFT to the first chunk with text, ITL between
/// chunks with text, output tokens from the final `usage` (or the chunk count).
public struct HTTPBenchmarkClient: Sendable {
    public var baseURL: String
    public var endpoint: String
    /// The model name to send; nil asks `GET /v1/models` for the first.
    public var model: String?
    public var workload: [WorkloadRequest]
    /// Chat endpoints send text: prompts are decoded with this tokenizer.
    public var tokenizer: (any Tokenizer)?
    public var progress: (@Sendable (Int, Int) -> Void)?

    public init(baseURL: String, endpoint: String = "/v1/completions", model: String? = nil, workload: [WorkloadRequest],
                tokenizer: (any Tokenizer)? = nil, progress: (@Sendable (Int, Int) -> Void)? = nil) {
        var base = baseURL
        while base.hasSuffix("/") { base.removeLast() }
        self.baseURL = base
        self.endpoint = endpoint.hasPrefix("/") ? endpoint : "/" + endpoint
        self.model = model
        self.workload = workload
        self.tokenizer = tokenizer
        self.progress = progress
    }

    public var isChat: Bool { endpoint.contains("chat") }

    public struct ClientError: Error, CustomStringConvertible {
        public var description: String
    }

    static func makeClient(connections: Int) -> HTTPClient {
        var config = HTTPClient.Configuration()
        config.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: max(8, connections))
        config.timeout = .init(connect: .seconds(10), read: .seconds(3600))
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
    }

    /// The first model id of `GET /v1/models`.
    public static func firstModel(baseURL: String, client: HTTPClient) async throws -> String {
        let response = try await client.execute(HTTPClientRequest(url: baseURL + "/v1/models"), timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 16 << 20)
        guard response.status == .ok,
              let obj = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any],
              let data = obj["data"] as? [[String: Any]], let id = data.first?["id"] as? String else {
            throw ClientError(description: "GET \(baseURL)/v1/models did not list a model (HTTP \(response.status.code)); pass --served-model-name")
        }
        return id
    }

    func body(for w: WorkloadRequest, model: String, seed: UInt64, temperature: Float, ignoreEOS: Bool) -> String {
        var fields: [(String, JSONOut)] = [("model", .string(model))]
        if isChat {
            let text = tokenizer?.decode(w.promptTokens, skipSpecialTokens: false) ?? w.promptTokens.map(String.init).joined(separator: " ")
            fields.append(("messages", .array([.object([("role", "user"), ("content", .string(text))])])))
            fields.append(("max_completion_tokens", .int(w.maxTokens)))
        } else {
            fields.append(("prompt", .array(w.promptTokens.map { .int(Int($0)) })))
        }
        fields += [("max_tokens", .int(w.maxTokens)), ("temperature", .double(Double(temperature))), ("seed", .int(Int(seed % (1 << 62)))),
                   ("stream", .bool(true)), ("stream_options", .object([("include_usage", .bool(true))])),
                   ("ignore_eos", .bool(ignoreEOS))]
        return JSONOut.object(fields).serialized
    }

    /// What one run measured.
    public struct Run: Sendable {
        public var records: [ClientRecord]
        public var duration: Double
        /// The server's expert counters over the run (after minus before), when
        /// it serves `GET /v1/experts/stats` (Switchyard does; vLLM and
        /// llama.cpp do not). Requests other clients sent meanwhile count too.
        public var experts: ExpertCounts?
    }

    /// The server's expert counters, or nil when it has none to give.
    public static func expertCounters(baseURL: String, client: HTTPClient) async -> ExpertCounts? {
        guard let response = try? await client.execute(HTTPClientRequest(url: baseURL + "/v1/experts/stats"), timeout: .seconds(30)),
              response.status == .ok,
              let body = try? await response.body.collect(upTo: 64 << 20),
              let obj = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any],
              let tokens = obj["tokens_per_layer_expert"] as? [[Int]], let numExperts = tokens.first?.count,
              tokens.allSatisfy({ $0.count == numExperts }),
              let bytes = obj["expert_weight_bytes_read"] as? Int,
              let activations = obj["expert_activations"] as? Int else { return nil }
        return ExpertCounts(numLayers: tokens.count, numExperts: numExperts, tokens: tokens.flatMap { $0 },
                            expertWeightBytesRead: bytes, expertActivations: activations)
    }

    /// `after − before`, or nil when the shapes differ or a count went down
    /// (the server's stats window was reset during the run).
    static func difference(_ after: ExpertCounts, _ before: ExpertCounts) -> ExpertCounts? {
        guard after.numLayers == before.numLayers, after.numExperts == before.numExperts else { return nil }
        let d = after - before
        guard d.expertWeightBytesRead >= 0, d.expertActivations >= 0, d.tokens.allSatisfy({ $0 >= 0 }) else { return nil }
        return d
    }

    /// Runs the workload; every request is sent at its arrival time.
    public func run(seed: UInt64 = 0, temperature: Float = 0, ignoreEOS: Bool = true) async throws -> Run {
        let client = Self.makeClient(connections: workload.count)
        do {
            let before = await Self.expertCounters(baseURL: baseURL, client: client)
            let (records, duration) = try await run(client: client, seed: seed, temperature: temperature, ignoreEOS: ignoreEOS)
            var experts: ExpertCounts?
            if let before, let after = await Self.expertCounters(baseURL: baseURL, client: client) {
                experts = Self.difference(after, before)
            }
            try await client.shutdown()
            return Run(records: records, duration: duration, experts: experts)
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    func run(client: HTTPClient, seed: UInt64, temperature: Float, ignoreEOS: Bool) async throws -> (records: [ClientRecord], duration: Double) {
        let modelName: String
        if let model { modelName = model } else { modelName = try await Self.firstModel(baseURL: baseURL, client: client) }
        let url = baseURL + endpoint
        let total = workload.count
        let done = ProgressCounter()
        let start = monotonicSeconds()
        let records = await withTaskGroup(of: (Int, ClientRecord).self) { group in
            for (i, w) in workload.enumerated() {
                let body = self.body(for: w, model: modelName, seed: seed &+ UInt64(i), temperature: temperature, ignoreEOS: ignoreEOS)
                group.addTask { [progress] in
                    let wait = w.arrival - (monotonicSeconds() - start)
                    if wait > 0 { try? await Task.sleep(nanoseconds: UInt64(wait * 1e9)) }
                    let record = await Self.send(client: client, url: url, body: body, promptTokens: w.promptTokens.count,
                                                 benchStart: start)
                    progress?(done.increment(), total)
                    return (i, record)
                }
            }
            var out = [ClientRecord?](repeating: nil, count: total)
            for await (i, r) in group { out[i] = r }
            return out.map { $0! }
        }
        return (records, monotonicSeconds() - start)
    }

    /// One streamed request, timed as the client receives it.
    static func send(client: HTTPClient, url: String, body: String, promptTokens: Int, benchStart: Double) async -> ClientRecord {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: body))
        let submitted = monotonicSeconds()
        var times: [Double] = []
        var usageTokens: Int?
        var error = ""
        do {
            let response = try await client.execute(request, timeout: .hours(1))
            if response.status != .ok {
                let b = try await response.body.collect(upTo: 1 << 20)
                error = "HTTP \(response.status.code): \(String(buffer: b))"
            } else {
                var parser = SSE.Parser()
                stream: for try await buffer in response.body {
                    for payload in parser.feed(buffer.readableBytesView) {
                        if payload == "[DONE]" { break stream }
                        guard let obj = (try? JSONSerialization.jsonObject(with: Data(payload.utf8))) as? [String: Any] else { continue }
                        if let e = obj["error"] as? [String: Any] {
                            error = (e["message"] as? String) ?? "error in stream"
                            continue
                        }
                        if let choices = obj["choices"] as? [[String: Any]], let c = choices.first {
                            let text = (c["text"] as? String) ?? ((c["delta"] as? [String: Any])?["content"] as? String) ?? ""
                            if !text.isEmpty { times.append(monotonicSeconds()) }
                        }
                        if let usage = obj["usage"] as? [String: Any], let n = (usage["completion_tokens"] as? NSNumber)?.intValue {
                            usageTokens = n
                        }
                    }
                }
            }
        } catch let e {
            error = "\(e)"
        }
        let end = monotonicSeconds()
        let ok = error.isEmpty && !times.isEmpty
        return ClientRecord(promptTokens: promptTokens, outputTokens: usageTokens ?? times.count, success: ok, error: error,
                            startTime: submitted - benchStart, ttft: (times.first ?? end) - submitted, latency: end - submitted,
                            itls: zip(times.dropFirst(), times).map { $0 - $1 })
    }
}
