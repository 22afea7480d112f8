import SwitchyardCore
import Foundation

/// A completion prompt: text for the tokenizer, or token ids as they are.
public enum PromptInput: Sendable, Equatable {
    case text(String)
    case tokens([Int32])
}

/// One chat message (`content` as a string or as text parts, joined).
public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: String
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// The generation fields shared by `/v1/completions` and
/// `/v1/chat/completions`, with OpenAI's defaults (temperature 1).
public struct GenerationOptions: Sendable, Equatable {
    public var model: String?
    /// Nil: completions use 16 (OpenAI's default), chat the rest of the context.
    public var maxTokens: Int?
    public var temperature: Float = 1
    public var topP: Float = 1
    /// 0 = off (vLLM's -1 is accepted as off too).
    public var topK: Int = 0
    public var seed: UInt64?
    public var stop: [String] = []
    public var stopTokenIds: [Int32] = []
    public var ignoreEOS = false
    /// vLLM's `priority`: lower runs earlier under a priority-aware scheduler.
    public var priority = 0
    public var frequencyPenalty: Float = 0
    public var presencePenalty: Float = 0
    public var repetitionPenalty: Float = 1
    /// Token id → bias in [-100, 100].
    public var logitBias: [Int32: Float] = [:]
    public var minTokens = 0
    /// Choices per prompt, each sampled independently (with `seed`, sample
    /// j uses seed + j).
    public var n = 1
    /// Completions' `logprobs` (alternatives per token), chat's
    /// `top_logprobs` when `logprobs` is true; nil: no log-probabilities.
    public var logprobs: Int?
    /// Completions: the prompt is prepended to the text (and, with
    /// `logprobs`, scored token by token).
    public var echo = false
    /// Completions: candidates sampled per prompt, of which the `n` with the
    /// highest total log-probability are returned (≥ n).
    public var bestOf = 1
    public var stream = false
    public var includeUsage = false

    public init() {}
}

public struct CompletionRequest: Sendable, Equatable {
    /// One or more prompts (a batch, as lm-evaluation-harness sends them);
    /// each gets `n` choices, in prompt order.
    public var prompts: [PromptInput]
    public var options: GenerationOptions

    public var prompt: PromptInput { prompts[0] }

    /// Most choices (prompts × `n`) one request may ask for.
    public static let maxChoices = 64
}

public struct ChatCompletionRequest: Sendable, Equatable {
    public var messages: [ChatMessage]
    public var options: GenerationOptions
}

extension CompletionRequest {
    /// Parses and checks a `/v1/completions` body; errors name the field.
    public static func parse(_ body: Data) throws(APIError) -> CompletionRequest {
        let f = Fields(try JSONValue.parseObject(body))
        guard let p = f.value("prompt") else { throw .invalid("prompt", "prompt is required") }
        var prompts: [PromptInput] = []
        switch p {
        case .string(let s): prompts = [.text(s)]
        case .array(let items):
            if items.isEmpty { throw .invalid("prompt", "prompt is empty") }
            switch items[0] {
            case .string, .array:
                // A batch: strings, or token-id lists.
                for (i, item) in items.enumerated() {
                    switch item {
                    case .string(let s): prompts.append(.text(s))
                    case .array(let inner): prompts.append(.tokens(try tokenIds(inner, field: "prompt[\(i)]")))
                    default: throw .invalid("prompt", "prompt[\(i)] must be a string or an array of token ids, like prompt[0]; got \(item.typeName)")
                    }
                }
            default:
                prompts = [.tokens(try tokenIds(items, field: "prompt"))]
            }
        default:
            throw f.wrong("prompt", "a string, an array of token ids, or an array of either", p)
        }
        for (i, prompt) in prompts.enumerated() where prompt == .text("") || prompt == .tokens([]) {
            throw .invalid("prompt", prompts.count == 1 ? "prompt is empty" : "prompt[\(i)] is empty")
        }
        let options = try GenerationOptions.parse(f, chat: false)
        if prompts.count * options.bestOf > maxChoices {
            let field = options.bestOf > options.n ? "best_of" : options.n > 1 ? "n" : "prompt"
            throw .invalid(field, "\(prompts.count) prompts × \(options.bestOf > options.n ? "best_of" : "n") = \(options.bestOf) asks for \(prompts.count * options.bestOf) choices; this server answers at most \(maxChoices) per request")
        }
        return CompletionRequest(prompts: prompts, options: options)
    }
}

extension ChatCompletionRequest {
    /// Parses and checks a `/v1/chat/completions` body; errors name the field.
    public static func parse(_ body: Data) throws(APIError) -> ChatCompletionRequest {
        let f = Fields(try JSONValue.parseObject(body))
        guard let m = f.value("messages") else { throw .invalid("messages", "messages is required") }
        guard case .array(let items) = m else { throw f.wrong("messages", "an array of messages", m) }
        if items.isEmpty { throw .invalid("messages", "messages is empty") }
        var messages: [ChatMessage] = []
        for (i, item) in items.enumerated() {
            let name = "messages[\(i)]"
            guard case .object(let o) = item else { throw .invalid(name, "\(name) must be an object, got \(item.typeName)") }
            let mf = Fields(o, prefix: name + ".")
            guard let role = try mf.string("role") else { throw .invalid(name + ".role", "\(name).role is required") }
            guard ["system", "user", "assistant", "developer", "tool"].contains(role) else {
                throw .invalid(name + ".role", "\(name).role must be one of system, developer, user, assistant, tool; got \"\(role)\"")
            }
            var content = ""
            switch mf.value("content") {
            case nil: break
            case .string(let s)?: content = s
            case .array(let parts)?:
                for (j, part) in parts.enumerated() {
                    guard case .object(let po) = part, case .string(let text)? = po["text"] else {
                        throw .invalid(name + ".content[\(j)]", "\(name).content[\(j)] must be a text part {\"type\": \"text\", \"text\": ...}")
                    }
                    content += text
                }
            case let v?: throw mf.wrong("content", "a string or an array of text parts", v)
            }
            messages.append(ChatMessage(role: role, content: content))
        }
        return ChatCompletionRequest(messages: messages, options: try GenerationOptions.parse(f, chat: true))
    }
}

func tokenIds(_ items: [JSONValue], field: String) throws(APIError) -> [Int32] {
    var ids: [Int32] = []
    ids.reserveCapacity(items.count)
    for (i, v) in items.enumerated() {
        guard case .int(let t) = v, t >= 0, t <= Int64(Int32.max) else {
            let got: String
            if case .int(let t) = v { got = "\(t)" } else { got = v.typeName }
            throw .invalid(field, "\(field)[\(i)] must be a non-negative token id, got \(got)")
        }
        ids.append(Int32(t))
    }
    return ids
}

extension GenerationOptions {
    static func parse(_ f: Fields, chat: Bool) throws(APIError) -> GenerationOptions {
        var o = GenerationOptions()
        o.model = try f.string("model")
        if !chat { o.echo = try f.bool("echo") ?? false }
        var maxKey = "max_tokens"
        var maxTokens = try f.int("max_tokens")
        if chat, maxTokens == nil, let m = try f.int("max_completion_tokens") { maxTokens = m; maxKey = "max_completion_tokens" }
        if let m = maxTokens {
            // 0 with echo: score the prompt, generate nothing (lm-evaluation-harness's loglikelihood).
            guard m >= (o.echo ? 0 : 1) else {
                throw .invalid(maxKey, "\(maxKey) must be at least 1 (0 only with echo), got \(m)")
            }
            o.maxTokens = Int(clamping: m)
        }
        let limit = Int64(GenerationRequest.maxLogprobs)
        if chat {
            if try f.bool("logprobs") == true {
                let top = try f.int("top_logprobs") ?? 0
                guard (0...limit).contains(top) else { throw .invalid("top_logprobs", "top_logprobs must be between 0 and \(limit), got \(top)") }
                o.logprobs = Int(top)
            } else if let top = try f.int("top_logprobs"), top != 0 {
                throw .invalid("top_logprobs", "top_logprobs needs \"logprobs\": true")
            }
        } else {
            switch f.value("logprobs") {
            case nil, .bool(false)?: break
            case .int(let n)? where (0...limit).contains(n): o.logprobs = Int(n)
            case .int(let n)?: throw .invalid("logprobs", "logprobs must be between 0 and \(limit), got \(n)")
            case let v?: throw .invalid("logprobs", "logprobs must be an integer between 0 and \(limit), got \(v.typeName)")
            }
        }
        if let t = try f.number("temperature") {
            guard t >= 0, t.isFinite else { throw .invalid("temperature", "temperature must be a finite number >= 0, got \(t)") }
            o.temperature = Float(t)
        }
        if let p = try f.number("top_p") {
            guard p > 0, p <= 1 else { throw .invalid("top_p", "top_p must be in (0, 1], got \(p)") }
            o.topP = Float(p)
        }
        if let k = try f.int("top_k") {
            guard k >= -1 else { throw .invalid("top_k", "top_k must be -1 or 0 (off) or positive, got \(k)") }
            o.topK = k <= 0 ? 0 : Int(clamping: k)
        }
        if let s = try f.int("seed") { o.seed = UInt64(bitPattern: s) }
        switch f.value("stop") {
        case nil: break
        case .string(let s)?: o.stop = [s]
        case .array(let items)?:
            for (i, v) in items.enumerated() {
                guard case .string(let s) = v else { throw .invalid("stop", "stop[\(i)] must be a string, got \(v.typeName)") }
                o.stop.append(s)
            }
        case let v?: throw f.wrong("stop", "a string or an array of strings", v)
        }
        switch f.value("stop_token_ids") {
        case nil: break
        case .array(let items)?: o.stopTokenIds = try tokenIds(items, field: "stop_token_ids")
        case let v?: throw f.wrong("stop_token_ids", "an array of token ids", v)
        }
        o.ignoreEOS = try f.bool("ignore_eos") ?? false
        if let p = try f.int("priority") {
            guard let v = Int(exactly: p), abs(v) <= 1 << 31 else {
                throw .invalid("priority", "priority must be an integer within ±2^31, got \(p)")
            }
            o.priority = v
        }
        o.stream = try f.bool("stream") ?? false
        if let so = try f.object("stream_options") { o.includeUsage = try so.bool("include_usage") ?? false }
        if let n = try f.int("n") {
            guard (1...Int64(CompletionRequest.maxChoices)).contains(n) else {
                throw .invalid("n", "n must be between 1 and \(CompletionRequest.maxChoices), got \(n)")
            }
            o.n = Int(n)
        }
        for (key, target) in [("frequency_penalty", \GenerationOptions.frequencyPenalty), ("presence_penalty", \.presencePenalty)] {
            if let v = try f.number(key) {
                guard abs(v) <= 2 else { throw .invalid(key, "\(key) must be in [-2, 2], got \(v)") }
                o[keyPath: target] = Float(v)
            }
        }
        if let v = try f.number("repetition_penalty") {
            guard v > 0, v.isFinite else { throw .invalid("repetition_penalty", "repetition_penalty must be a finite number > 0, got \(v)") }
            o.repetitionPenalty = Float(v)
        }
        if let bias = try f.object("logit_bias") {
            for (key, value) in bias.object where value != .null {
                guard let token = Int32(key), token >= 0 else {
                    throw .invalid("logit_bias", "logit_bias keys must be token ids, got \"\(key)\"")
                }
                guard let b = try bias.number(key), abs(b) <= 100 else {
                    throw .invalid("logit_bias", "logit_bias[\"\(key)\"] must be a number in [-100, 100]")
                }
                o.logitBias[token] = Float(b)
            }
        }
        if let m = try f.int("min_tokens") {
            guard m >= 0 else { throw .invalid("min_tokens", "min_tokens must be >= 0, got \(m)") }
            o.minTokens = Int(clamping: m)
        }
        if !chat, let b = try f.int("best_of") {
            guard b >= Int64(o.n), b <= Int64(CompletionRequest.maxChoices) else {
                throw .invalid("best_of", "best_of must be between n (\(o.n)) and \(CompletionRequest.maxChoices), got \(b)")
            }
            o.bestOf = Int(b)
            if o.stream && o.bestOf > 1 { throw .invalid("best_of", "best_of cannot be used with stream (as OpenAI's API)") }
        }
        o.bestOf = max(o.bestOf, o.n)
        try rejectUnsupported(f, chat: chat)
        return o
    }

    /// Fields every request may carry; the endpoint's own are added.
    static let supported: Set<String> = [
        "model", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stop_token_ids", "ignore_eos",
        "stream", "stream_options", "n", "priority", "frequency_penalty", "presence_penalty", "repetition_penalty",
        "logit_bias", "min_tokens", "user",
    ]

    /// Any other field is a 400 naming it, unless it holds the value that
    /// asks for nothing (`"echo": false`, `"best_of": 1`, `"tools": []`...):
    /// a field this server would ignore must not look as if it were honoured.
    static func rejectUnsupported(_ f: Fields, chat: Bool) throws(APIError) {
        let own: Set<String> = chat ? ["messages", "max_completion_tokens", "logprobs", "top_logprobs"] : ["prompt", "logprobs", "echo", "best_of"]
        for key in f.object.keys.sorted() where !supported.contains(key) && !own.contains(key) {
            let value = f.object[key]!
            let harmless: Bool
            switch (key, value) {
            case (_, .null): harmless = true
            case ("echo", .bool(false)), ("logprobs", .bool(false)), ("logprobs", .int(0)), ("top_logprobs", .int(0)),
                 ("suffix", .string("")), ("tool_choice", .string("none")), ("parallel_tool_calls", _):
                harmless = true
            case ("tools", .array(let a)), ("functions", .array(let a)): harmless = a.isEmpty
            case ("response_format", .object(let o)): harmless = o["type"] == .string("text") && o.count == 1
            default: harmless = false
            }
            guard !harmless else { continue }
            let known = ["logprobs", "top_logprobs", "echo", "best_of", "suffix", "response_format", "tools", "tool_choice",
                         "functions", "function_call"]
            throw .invalid(key, known.contains(key)
                ? "\(key) is not supported by this server; remove it (docs/server.md lists every field)"
                : "unknown field \(key); docs/server.md lists the fields this server accepts")
        }
    }
}
