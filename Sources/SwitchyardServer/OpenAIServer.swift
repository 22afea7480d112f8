import Foundation
import Hummingbird
import HummingbirdCore
import ServiceLifecycle
import Logging
import Synchronization
import SwitchyardCore
import SwitchyardModel

/// The OpenAI-compatible HTTP server over one engine (see docs/server.md).
public final class OpenAIServer: Sendable {
    public static let version = "0.1.0"

    public let engine: Engine
    public let config: ServerConfig
    public let metrics: ServerMetrics
    public let experts: ExpertStats
    let admission: Admission
    let connections = ConnectionWatch()
    private let nextId = Mutex(0)
    let started = Int(Date().timeIntervalSince1970)

    /// Starts the engine's loop; the HTTP side starts with `run` / `makeApplication`.
    public init(engine: Engine, config: ServerConfig) {
        self.engine = engine
        self.config = config
        let c = engine.model.config
        experts = ExpertStats(engine: engine, map: config.expertMap, placementName: config.placementName)
        metrics = ServerMetrics(modelName: config.modelName, numLayers: c.numLayers, numExperts: max(c.numExperts, 1), map: experts.map,
                                devices: engine.model.experts.devices)
        admission = Admission(limit: config.maxQueuedRequests)
        engine.start()
    }

    /// The 503 of a full queue, counted.
    func queueFull() -> APIError {
        let error = APIError.queueFull(limit: config.maxQueuedRequests ?? 0)
        metrics.recordRejected(error)
        return error
    }

    /// Requests admitted that have not produced a token yet.
    public var queuedRequests: Int { admission.queued }

    func makeId(chat: Bool) -> String {
        let n = nextId.withLock { $0 += 1; return $0 }
        return (chat ? "chatcmpl-" : "cmpl-") + String(n) + "-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
    }

    /// The Hummingbird application; `onRunning` gets the bound port.
    public func makeApplication(logger: Logger? = nil,
                                onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        var log = logger ?? Logger(label: "switchyard.server")
        if logger == nil { log.logLevel = .warning }
        let router = Router(context: ServerRequestContext.self)
        router.add(middleware: GatekeeperMiddleware(apiKey: config.apiKey, logger: log))
        addRoutes(to: router)
        let idle = config.idleTimeout.components
        return Application(router: router,
                           server: .http1(configuration: .init(idleTimeout: .nanoseconds(idle.seconds * 1_000_000_000 + idle.attoseconds / 1_000_000_000))),
                           configuration: .init(address: .hostname(config.host, port: config.port), serverName: "switchyard",
                                                availableConnectionsDelegate: ConnectionCap(config.maxConnections, logger: log)),
                           onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
                           logger: log)
    }

    /// Serves until SIGINT or SIGTERM, lets requests in flight finish for
    /// up to `shutdownTimeout`, cancels the rest, then stops the engine.
    public func run(logger: Logger? = nil, onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let app = makeApplication(logger: logger, onRunning: onRunning)
        var group = ServiceGroupConfiguration(services: [.init(service: app)], gracefulShutdownSignals: [.sigterm, .sigint],
                                              logger: logger ?? Logger(label: "switchyard.server"))
        group.maximumGracefulShutdownDuration = config.shutdownTimeout
        try await ServiceGroup(configuration: group).run()
        engine.shutdown()
    }

    // MARK: - Preparing requests

    /// Checks a request against the model and the engine's limits, with the
    /// engine's own rules (so nothing it would reject is admitted), and
    /// builds the engine request. Errors name the field.
    func prepare(prompt promptTokens: [Int32], promptField: String, options o: GenerationOptions, chat: Bool,
                 extraStopTokens: [Int32] = []) throws(APIError) -> PreparedRequest {
        if let m = o.model, m != config.modelName, !config.modelAliases.contains(m) {
            throw APIError(status: 404, message: "the model `\(m)` does not exist; this server serves `\(config.modelName)`",
                           type: "not_found_error", param: "model")
        }
        let maxLen = engine.config.maxModelLen
        let room = max(0, maxLen - promptTokens.count)
        let maxTokens = o.maxTokens ?? (chat ? room : min(16, room))
        var sampling = SamplingParams(temperature: o.temperature, topP: o.topP, topK: o.topK, seed: o.seed)
        sampling.frequencyPenalty = o.frequencyPenalty
        sampling.presencePenalty = o.presencePenalty
        sampling.repetitionPenalty = o.repetitionPenalty
        sampling.logitBias = o.logitBias
        var request = GenerationRequest(id: makeId(chat: chat), promptTokens: promptTokens, sampling: sampling, maxTokens: maxTokens,
                                        stopTokenIds: o.stopTokenIds + extraStopTokens, stopStrings: o.stop.filter { !$0.isEmpty },
                                        ignoreEOS: o.ignoreEOS, priority: o.priority, minTokens: o.minTokens)
        request.logprobs = o.logprobs
        // echo with logprobs scores the prompt; max_tokens 0 needs a scored prompt to run at all.
        if o.echo && (o.logprobs != nil || maxTokens == 0) { request.promptLogprobs = o.logprobs ?? 0 }
        // The engine's own rules, so nothing it would reject is admitted.
        if let error = engine.validator.validate(request, strictMaxTokens: true) {
            throw APIError(error, promptField: promptField)
        }
        return PreparedRequest(request: request, options: o, chat: chat, created: Int(Date().timeIntervalSince1970))
    }

    /// One token's text, for log-probability objects (its id without a tokenizer).
    var tokenText: @Sendable (Int32) -> String {
        let tokenizer = engine.tokenizer
        return { tokenizer?.decode([$0], skipSpecialTokens: false) ?? "\($0)" }
    }

    /// Refuses, before encoding it, a text that cannot fit: every token
    /// stands for at most `maxTokenBytes` bytes, so a text of more than
    /// `maxModelLen × maxTokenBytes` bytes (doubled, for normalizers that
    /// shrink text) has more tokens than the context. Encoding a megabyte to
    /// find that out would hold a core for nothing.
    func checkEncodable(_ text: String, field: String, tokenizer: any Tokenizer) throws(APIError) {
        let maxLen = engine.config.maxModelLen
        let (limit, overflow) = maxLen.multipliedReportingOverflow(by: max(1, tokenizer.maxTokenBytes))
        let bytes = text.utf8.count
        if !overflow && limit < Int.max / 2 && bytes > 2 * limit {
            throw .invalid(field, "\(field) has \(bytes) bytes of text, more than \(maxLen) tokens (--max-model-len) can cover; shorten it or raise --max-model-len")
        }
    }

    /// Every choice a request asks for: each prompt of a batch, `n` times.
    /// Cancelled (the client left) while tokenizing: 499, nothing submitted.
    func prepare(_ body: Data, chat: Bool) throws(APIError) -> [PreparedRequest] {
        let all = try prepareChoices(body, chat: chat)
        if Task.isCancelled { throw APIError(status: 499, message: "client closed the request", type: "client_closed", param: nil) }
        return all
    }

    private func prepareChoices(_ body: Data, chat: Bool) throws(APIError) -> [PreparedRequest] {
        let tokenizer = engine.tokenizer
        if chat {
            let r = try ChatCompletionRequest.parse(body)
            guard let tokenizer else {
                throw .invalid("messages", "the model has no tokenizer.json, so chat messages cannot be encoded; use /v1/completions with token ids")
            }
            let template = config.chatTemplate
            let text = try template.render(r.messages)
            try checkEncodable(text, field: "messages", tokenizer: tokenizer)
            // Encoding stops past the context: the validator then names the prompt as too long.
            let ids = tokenizer.encode(text, addSpecialTokens: !template.rendersSpecialTokens, maxTokens: engine.config.maxModelLen)
            let ends = template.endMarkers.compactMap { tokenizer.tokenId($0) }
            let one = try prepare(prompt: ids, promptField: "messages", options: r.options, chat: true, extraStopTokens: ends)
            return one.choices(r.options.n, first: 0, total: r.options.n)
        }
        let r = try CompletionRequest.parse(body)
        // best_of candidates per prompt; the n best are chosen after they run.
        let n = r.options.bestOf, total = r.prompts.count * n
        var out: [PreparedRequest] = []
        var responseId: String?
        for (i, prompt) in r.prompts.enumerated() {
            let field = r.prompts.count > 1 ? "prompt[\(i)]" : "prompt"
            let ids: [Int32]
            switch prompt {
            case .tokens(let t): ids = t
            case .text(let s):
                guard let tokenizer else {
                    throw .invalid("prompt", "the model has no tokenizer.json, so text prompts cannot be encoded; send token ids")
                }
                try checkEncodable(s, field: field, tokenizer: tokenizer)
                ids = tokenizer.encode(s, addSpecialTokens: true, maxTokens: engine.config.maxModelLen)
            }
            var one = try prepare(prompt: ids, promptField: field, options: r.options, chat: false)
            // Ranking candidates needs each one's total log-probability.
            if r.options.bestOf > r.options.n && one.request.logprobs == nil { one.request.logprobs = 0 }
            // What echo prepends: the text as sent, or the ids decoded in one piece.
            switch prompt {
            case .text(let s): one.promptText = s
            case .tokens(let t): one.promptText = tokenizer?.decode(t, skipSpecialTokens: false)
            }
            // One id for the response; each choice's engine request is `<id>-<choice>`.
            if let id = responseId { one.request.id = id } else { responseId = one.request.id }
            one.responseId = responseId!
            out += one.choices(n, first: i * n, total: total)
        }
        return out
    }
}
