import Foundation
import SwitchyardCore

/// OpenAI's response and stream-chunk objects for completions and chat.
enum OpenAIResponse {
    static func usage(_ prompt: Int, _ completion: Int) -> JSONOut {
        .object([("prompt_tokens", .int(prompt)), ("completion_tokens", .int(completion)), ("total_tokens", .int(prompt + completion))])
    }

    static func finishReason(_ r: FinishReason?) -> JSONOut { .optional(r?.rawValue) }

    /// A whole (non-streamed) response.
    static func full(_ p: PreparedRequest, model: String, text: String, output: RequestOutput) -> JSONOut {
        let choice: JSONOut
        if p.chat {
            choice = .object([("index", 0), ("message", .object([("role", "assistant"), ("content", .string(text))])),
                              ("logprobs", nil), ("finish_reason", finishReason(output.finishReason))])
        } else {
            choice = .object([("index", 0), ("text", .string(text)), ("logprobs", nil),
                              ("finish_reason", finishReason(output.finishReason))])
        }
        return .object([
            ("id", .string(p.request.id)), ("object", p.chat ? "chat.completion" : "text_completion"),
            ("created", .int(p.created)), ("model", .string(model)), ("choices", .array([choice])),
            ("usage", usage(output.promptTokens, output.outputTokens.count)),
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
            choice = .object([("index", 0), ("delta", .object(delta)), ("logprobs", nil), ("finish_reason", finishReason(finish))])
        } else {
            choice = .object([("index", 0), ("text", .string(text ?? "")), ("logprobs", nil), ("finish_reason", finishReason(finish))])
        }
        var fields: [(String, JSONOut)] = [
            ("id", .string(p.request.id)), ("object", p.chat ? "chat.completion.chunk" : "text_completion"),
            ("created", .int(p.created)), ("model", .string(model)), ("choices", .array([choice])),
        ]
        if p.options.includeUsage { fields.append(("usage", nil)) }
        return .object(fields)
    }

    /// The last chunk under `stream_options.include_usage`: no choices, the usage.
    static func usageChunk(_ p: PreparedRequest, model: String, output: RequestOutput) -> JSONOut {
        .object([
            ("id", .string(p.request.id)), ("object", p.chat ? "chat.completion.chunk" : "text_completion"),
            ("created", .int(p.created)), ("model", .string(model)), ("choices", .array([])),
            ("usage", usage(output.promptTokens, output.outputTokens.count)),
        ])
    }

    /// An error inside a stream that has already started.
    static func streamError(_ message: String) -> JSONOut {
        .object([("error", .object([("message", .string(message)), ("type", "internal_error"), ("param", nil), ("code", 500)]))])
    }
}
