import Foundation
import SwitchyardCore

/// OpenAI's response and stream-chunk objects for completions and chat.
enum OpenAIResponse {
    static func usage(_ prompt: Int, _ completion: Int) -> JSONOut {
        .object([("prompt_tokens", .int(prompt)), ("completion_tokens", .int(completion)), ("total_tokens", .int(prompt + completion))])
    }

    static func finishReason(_ r: FinishReason?) -> JSONOut { .optional(r?.rawValue) }

    /// A whole (non-streamed) response: one choice per prepared request, in
    /// choice order. Usage counts each prompt once (as OpenAI does for `n`)
    /// and every choice's completion tokens.
    static func full(_ ps: [PreparedRequest], model: String, results: [(text: String, output: RequestOutput)]) -> JSONOut {
        let p = ps[0]
        let choices: [JSONOut] = zip(ps, results).map { q, r in
            if q.chat {
                return .object([("index", .int(q.choice)), ("message", .object([("role", "assistant"), ("content", .string(r.text))])),
                                ("logprobs", nil), ("finish_reason", finishReason(r.output.finishReason))])
            }
            return .object([("index", .int(q.choice)), ("text", .string(r.text)), ("logprobs", nil),
                            ("finish_reason", finishReason(r.output.finishReason))])
        }
        let n = max(1, p.options.n)
        let promptTokens = stride(from: 0, to: results.count, by: n).reduce(0) { $0 + results[$1].output.promptTokens }
        let completionTokens = results.reduce(0) { $0 + $1.output.outputTokens.count }
        return .object([
            ("id", .string(p.responseId)), ("object", p.chat ? "chat.completion" : "text_completion"),
            ("created", .int(p.created)), ("model", .string(model)), ("choices", .array(choices)),
            ("usage", usage(promptTokens, completionTokens)),
        ])
    }

    /// A stream chunk carrying `text` (chat: the first chunk also carries
    /// the assistant role), or the finish reason when given.
    static func chunk(_ p: PreparedRequest, model: String, text: String?, role: Bool = false, finish: FinishReason? = nil) -> JSONOut {
        let choice: JSONOut
        if p.chat {
            var delta: [(String, JSONOut)] = []
            if role { delta.append(("role", "assistant")) }
            if let text { delta.append(("content", .string(text))) }
            choice = .object([("index", .int(p.choice)), ("delta", .object(delta)), ("logprobs", nil), ("finish_reason", finishReason(finish))])
        } else {
            choice = .object([("index", .int(p.choice)), ("text", .string(text ?? "")), ("logprobs", nil), ("finish_reason", finishReason(finish))])
        }
        var fields: [(String, JSONOut)] = [
            ("id", .string(p.responseId)), ("object", p.chat ? "chat.completion.chunk" : "text_completion"),
            ("created", .int(p.created)), ("model", .string(model)), ("choices", .array([choice])),
        ]
        if p.options.includeUsage { fields.append(("usage", nil)) }
        return .object(fields)
    }

    /// The last chunk under `stream_options.include_usage`: no choices, the usage.
    static func usageChunk(_ p: PreparedRequest, model: String, promptTokens: Int, completionTokens: Int) -> JSONOut {
        .object([
            ("id", .string(p.responseId)), ("object", p.chat ? "chat.completion.chunk" : "text_completion"),
            ("created", .int(p.created)), ("model", .string(model)), ("choices", .array([])),
            ("usage", usage(promptTokens, completionTokens)),
        ])
    }

    /// An error inside a stream that has already started.
    static func streamError(_ message: String) -> JSONOut {
        .object([("error", .object([("message", .string(message)), ("type", "internal_error"), ("param", nil), ("code", 500)]))])
    }
}
