import Foundation
import SwitchyardCore
import SwitchyardModel

/// OpenAI's response and stream-chunk objects for completions and chat.
enum OpenAIResponse {
    static func usage(_ prompt: Int, _ completion: Int) -> JSONOut {
        .object([("prompt_tokens", .int(prompt)), ("completion_tokens", .int(completion)), ("total_tokens", .int(prompt + completion))])
    }

    static func finishReason(_ r: FinishReason?) -> JSONOut { .optional(r?.rawValue) }

    /// A whole (non-streamed) response: one choice per prepared request, in
    /// choice order. Usage counts each prompt once (as OpenAI does for `n`)
    /// and every choice's completion tokens.
    static func full(_ ps: [PreparedRequest], model: String, results: [(text: String, output: RequestOutput)],
                     generatedTokens: Int? = nil, tokenText: (Int32) -> String) -> JSONOut {
        let p = ps[0]
        let choices: [JSONOut] = zip(ps, results).map { q, r in
            if q.chat {
                return .object([("index", .int(q.choice)), ("message", .object([("role", "assistant"), ("content", .string(r.text))])),
                                ("logprobs", chatLogprobs(r.output.logprobs, tokenText: tokenText)),
                                ("finish_reason", finishReason(r.output.finishReason))])
            }
            var text = r.text
            var echoed: [Int32] = []
            if q.options.echo {
                echoed = q.request.promptTokens
                text = (q.promptText ?? "") + text
            }
            return .object([("index", .int(q.choice)), ("text", .string(text)),
                            ("logprobs", completionLogprobs(r.output.logprobs, prompt: r.output.promptLogprobs, echoed: echoed,
                                                            tokenText: tokenText)),
                            ("finish_reason", finishReason(r.output.finishReason))])
        }
        let n = max(1, p.options.n)
        let promptTokens = stride(from: 0, to: results.count, by: n).reduce(0) { $0 + results[$1].output.promptTokens }
        // With best_of, every candidate's tokens were generated: the caller counts them all.
        let completionTokens = generatedTokens ?? results.reduce(0) { $0 + $1.output.outputTokens.count }
        return .object([
            ("id", .string(p.responseId)), ("object", p.chat ? "chat.completion" : "text_completion"),
            ("created", .int(p.created)), ("model", .string(model)), ("choices", .array(choices)),
            ("usage", usage(promptTokens, completionTokens)),
        ])
    }

    /// The legacy completions `logprobs` object (vLLM's and OpenAI's):
    /// `tokens`, `token_logprobs`, `top_logprobs` (the alternatives and the
    /// chosen token, by text) and `text_offset` (offsets into the returned
    /// text). With `echo` the prompt's tokens come first; the first has no
    /// logprob (nothing predicts it).
    static func completionLogprobs(_ output: [TokenLogprob]?, prompt: [TokenLogprob]?, echoed: [Int32], tokenText: (Int32) -> String,
                                   offset start: Int = 0) -> JSONOut {
        guard let generated = output ?? (echoed.isEmpty ? nil : []) else { return nil }
        var tokens: [JSONOut] = [], values: [JSONOut] = [], tops: [JSONOut] = [], offsets: [JSONOut] = []
        var offset = start
        func add(_ token: Int32, _ lp: TokenLogprob?) {
            let text = tokenText(token)
            tokens.append(.string(text))
            offsets.append(.int(offset))
            offset += text.count
            guard let lp else { values.append(nil); tops.append(nil); return }
            values.append(.double(Double(lp.logprob)))
            var top: [(String, JSONOut)] = zip(lp.topTokens, lp.topLogprobs).map { (tokenText($0), .double(Double($1))) }
            if !lp.topTokens.contains(token) { top.append((text, .double(Double(lp.logprob)))) }
            tops.append(.object(top))
        }
        if let first = echoed.first {
            add(first, nil)
            let scored = prompt ?? []
            for (i, t) in echoed.dropFirst().enumerated() { add(t, i < scored.count ? scored[i] : nil) }
        }
        for lp in generated { add(lp.token, lp) }
        return .object([("tokens", .array(tokens)), ("token_logprobs", .array(values)), ("top_logprobs", .array(tops)),
                        ("text_offset", .array(offsets))])
    }

    /// Chat's `logprobs`: `{"content": [{token, logprob, bytes, top_logprobs}]}`.
    static func chatLogprobs(_ output: [TokenLogprob]?, tokenText: (Int32) -> String) -> JSONOut {
        guard let lps = output else { return nil }
        func entry(_ token: Int32, _ logprob: Float) -> [(String, JSONOut)] {
            let text = tokenText(token)
            return [("token", .string(text)), ("logprob", .double(Double(logprob))),
                    ("bytes", .array(text.utf8.map { .int(Int($0)) }))]
        }
        return .object([("content", .array(lps.map { lp in
            .object(entry(lp.token, lp.logprob) + [("top_logprobs", .array(zip(lp.topTokens, lp.topLogprobs).map { .object(entry($0, $1)) }))])
        }))])
    }

    /// A stream chunk carrying `text` (chat: the first chunk also carries
    /// the assistant role), or the finish reason when given.
    /// With `logprob` (a request that asked for `logprobs`), the chunk
    /// carries that token's log-probabilities in the request's format.
    static func chunk(_ p: PreparedRequest, model: String, text: String?, role: Bool = false, finish: FinishReason? = nil,
                      logprob: TokenLogprob? = nil, textOffset: Int = 0, tokenText: (Int32) -> String = { "\($0)" },
                      logprobs given: JSONOut = nil) -> JSONOut {
        var logprobs: JSONOut = given
        if let lp = logprob {
            logprobs = p.chat ? chatLogprobs([lp], tokenText: tokenText)
                : completionLogprobs([lp], prompt: nil, echoed: [], tokenText: tokenText, offset: textOffset)
        }
        let choice: JSONOut
        if p.chat {
            var delta: [(String, JSONOut)] = []
            if role { delta.append(("role", "assistant")) }
            if let text { delta.append(("content", .string(text))) }
            choice = .object([("index", .int(p.choice)), ("delta", .object(delta)), ("logprobs", logprobs), ("finish_reason", finishReason(finish))])
        } else {
            choice = .object([("index", .int(p.choice)), ("text", .string(text ?? "")), ("logprobs", logprobs), ("finish_reason", finishReason(finish))])
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
