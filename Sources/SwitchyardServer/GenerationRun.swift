import Foundation
import SwitchyardCore
import SwitchyardModel
import Synchronization

/// A validated request, ready for the engine.
struct PreparedRequest: Sendable {
    var request: GenerationRequest
    var options: GenerationOptions
    var chat: Bool
    var created: Int
    /// The response's id (one per HTTP request; `request.id` is this
    /// choice's engine request), and the choice's index in the response.
    var responseId: String
    var choice = 0
    /// The prompt as the client sent it, when it was text (for `echo`).
    var promptText: String?

    init(request: GenerationRequest, options: GenerationOptions, chat: Bool, created: Int) {
        self.request = request
        self.options = options
        self.chat = chat
        self.created = created
        responseId = request.id
    }

    /// `n` choices of this request, numbered from `first`: engine ids
    /// `<id>-<choice>`, and with a seed, sample j seeded `seed + j`.
    func choices(_ n: Int, first: Int, total: Int) -> [PreparedRequest] {
        guard total > 1 else { return [self] }
        return (0..<n).map { j in
            var p = self
            p.choice = first + j
            p.request.id = "\(request.id)-\(first + j)"
            if let seed = request.sampling.seed { p.request.sampling.seed = seed &+ UInt64(j) }
            return p
        }
    }
}

/// One request in flight: submits it, tracks the server's queue of requests
/// that have not produced a token yet, and turns engine events into text.
/// A run dropped without being run (its response was never written: the
/// client left first) cancels its request and gives back its queue slot.
final class GenerationRun: Sendable {
    let server: OpenAIServer
    let prepared: PreparedRequest
    let events: AsyncStream<RequestEvent>
    private let queued: QueueSlot
    private let consumed = Mutex(false)

    /// Submits, or throws 503 when `--max-queued-requests` are already
    /// queued. `slot`: one taken already (before the request was tokenized).
    init(server: OpenAIServer, prepared: PreparedRequest, slot: QueueSlot? = nil) throws(APIError) {
        self.server = server
        self.prepared = prepared
        guard let slot = slot ?? server.admission.take() else {
            throw server.queueFull()
        }
        queued = slot
        events = server.engine.submit(prepared.request)
    }

    var id: String { prepared.request.id }

    /// Iterates the events: `onText` gets each token's new text (possibly
    /// empty) and the return value is the final output. The request leaves
    /// the queue at its first token or when it finishes. When `onText` throws
    /// (the client went away) the request is cancelled, its end is still
    /// recorded in the metrics, and nil comes back.
    /// `onPromptScored`, when given, gets the prompt's log-probabilities
    /// exactly once, before any text: when the engine has scored the prompt,
    /// or (a prompt with nothing to score, or a request that ends first) with
    /// what is known at its first token or its end.
    func run(onPromptScored: (([TokenLogprob]) async throws -> Void)? = nil,
             _ onText: (String, TokenLogprob?) async throws -> Void) async -> RequestOutput? {
        var promptPending = onPromptScored != nil
        func promptScored(_ lps: [TokenLogprob]) async throws {
            guard promptPending, let onPromptScored else { return }
            promptPending = false
            try await onPromptScored(lps)
        }
        consumed.withLock { $0 = true }
        var output: RequestOutput?
        // Bytes of text streamed so far: the engine's deltas concatenate to a
        // prefix of its final text, whose rest goes out at the end.
        var sentBytes = 0
        defer { queued.release() }
        do {
            for await event in events {
                switch event {
                case .token(_, _, let text, let logprob):
                    queued.release()
                    try await promptScored([])
                    sentBytes += text.utf8.count
                    try await onText(text, logprob)
                case .promptScored(let lps):
                    try await promptScored(lps)
                case .finished(let out):
                    queued.release()
                    output = out
                    server.metrics.recordFinished(out)
                    if out.error == nil { try await promptScored(out.promptLogprobs ?? []) }
                    if let final = out.text, final.utf8.count > sentBytes {
                        try await onText(String(decoding: final.utf8.dropFirst(sentBytes), as: UTF8.self), nil)
                    }
                }
            }
        } catch {
            if output == nil {
                cancel()
                for await event in events {
                    if case .finished(let out) = event { server.metrics.recordFinished(out) }
                }
            }
            return nil
        }
        return output
    }

    func cancel() { server.engine.cancel(requestId: id) }

    deinit {
        queued.release()
        guard !consumed.withLock({ $0 }) else { return }
        server.engine.cancel(requestId: prepared.request.id)
        let events = events, metrics = server.metrics
        Task {
            for await event in events {
                if case .finished(let out) = event { metrics.recordFinished(out) }
            }
        }
    }
}

/// Admission control for `--max-queued-requests`: a slot is held from
/// submission until the request's first token (or its end).
final class Admission: Sendable {
    let limit: Int?
    private let count = Mutex(0)
    init(limit: Int?) { self.limit = limit }

    var queued: Int { count.withLock { $0 } }

    func take() -> QueueSlot? {
        let ok = count.withLock { c -> Bool in
            if let limit, c >= limit { return false }
            c += 1
            return true
        }
        return ok ? QueueSlot(admission: self) : nil
    }

    fileprivate func give() { count.withLock { $0 -= 1 } }
}

final class QueueSlot: Sendable {
    private let admission: Admission
    private let held = Mutex(true)
    fileprivate init(admission: Admission) { self.admission = admission }

    func release() {
        if held.withLock({ h -> Bool in defer { h = false }; return h }) { admission.give() }
    }

    deinit { release() }
}
