import SwitchyardModel

/// What a client asks the engine for: a prompt (as token ids) and how to
/// continue it. Field meanings follow vLLM's `SamplingParams`.
public struct GenerationRequest: Sendable {
    public var id: String
    public var promptTokens: [Int32]
    public var sampling: SamplingParams
    public var maxTokens: Int
    public var stopTokenIds: [Int32]
    public var stopStrings: [String]
    public var ignoreEOS: Bool
    /// Scheduling priority, as vLLM's `priority`: lower runs earlier under a
    /// scheduler that honours it (the built-in ones ignore it). Default 0.
    public var priority: Int
    /// vLLM's `min_tokens`: end-of-sequence and stop token ids cannot be
    /// sampled (and stop strings do not end the request) before this many
    /// output tokens.
    public var minTokens: Int
    /// Log-probabilities of each sampled token with its `logprobs` most
    /// likely alternatives (0: the token's alone); nil: none.
    public var logprobs: Int? = nil
    /// The same for every prompt token after the first (scoring, `echo`);
    /// nil: none. With it, `maxTokens` may be 0: score the prompt only.
    public var promptLogprobs: Int? = nil

    /// Most alternatives per token (vLLM's limit).
    public static let maxLogprobs = 20

    public init(id: String, promptTokens: [Int32], sampling: SamplingParams = .greedy, maxTokens: Int = 16,
                stopTokenIds: [Int32] = [], stopStrings: [String] = [], ignoreEOS: Bool = false, priority: Int = 0,
                minTokens: Int = 0) {
        self.priority = priority
        self.minTokens = minTokens
        self.id = id
        self.promptTokens = promptTokens
        self.sampling = sampling
        self.maxTokens = maxTokens
        self.stopTokenIds = stopTokenIds
        self.stopStrings = stopStrings
        self.ignoreEOS = ignoreEOS
    }
}

/// Why a request stopped, with vLLM's / OpenAI's spellings.
public enum FinishReason: String, Sendable, Codable {
    /// Hit `max_tokens` or the model's context length.
    case length
    /// Produced an end-of-sequence token, a stop token id or a stop string.
    case stop
    /// Rejected (for example a prompt longer than the context) or cancelled.
    case abort
}

/// Why a request was rejected without running, or (`.engine`) why it
/// failed while running.
public enum RequestError: Error, CustomStringConvertible, Equatable, Sendable {
    case emptyPrompt(id: String)
    case promptTooLong(id: String, promptTokens: Int, maxModelLen: Int)
    case invalidMaxTokens(id: String, value: Int)
    case invalidMinTokens(id: String, minTokens: Int, maxTokens: Int)
    case tooManyStopStrings(id: String, count: Int, limit: Int)
    case stopStringTooLong(id: String, bytes: Int, limit: Int)
    case logitBiasOutOfRange(id: String, token: Int32, vocabSize: Int)
    case invalidLogprobs(id: String, value: Int, limit: Int)
    case maxTokensBeyondContext(id: String, maxTokens: Int, promptTokens: Int, maxModelLen: Int)
    case tokenOutOfRange(id: String, token: Int32, vocabSize: Int)
    case stopTokenOutOfRange(id: String, token: Int32, vocabSize: Int)
    case invalidSampling(id: String, reason: String)
    case exceedsKVCapacity(id: String, tokensNeeded: Int, capacity: Int)
    /// The forward pass failed for the batch this request was in (a bug, not
    /// the client's fault: the server answers 500 with this message).
    case engine(id: String, message: String)

    public var id: String {
        switch self {
        case let .emptyPrompt(id), let .promptTooLong(id, _, _), let .invalidMaxTokens(id, _),
             let .invalidMinTokens(id, _, _), let .tooManyStopStrings(id, _, _), let .stopStringTooLong(id, _, _),
             let .logitBiasOutOfRange(id, _, _), let .invalidLogprobs(id, _, _),
             let .maxTokensBeyondContext(id, _, _, _), let .tokenOutOfRange(id, _, _), let .stopTokenOutOfRange(id, _, _),
             let .invalidSampling(id, _), let .exceedsKVCapacity(id, _, _), let .engine(id, _):
            return id
        }
    }

    /// The request field at fault, with the OpenAI API's names (nil: none).
    public var field: String? {
        switch self {
        case .emptyPrompt, .promptTooLong, .tokenOutOfRange: return "prompt"
        case .invalidMaxTokens, .maxTokensBeyondContext, .exceedsKVCapacity: return "max_tokens"
        case .stopTokenOutOfRange: return "stop_token_ids"
        case .invalidMinTokens: return "min_tokens"
        case .tooManyStopStrings, .stopStringTooLong: return "stop"
        case .logitBiasOutOfRange: return "logit_bias"
        case .invalidLogprobs: return "logprobs"
        case .invalidSampling: return "sampling"
        case .engine: return nil
        }
    }

    /// What is wrong and how to fix it, without the request id.
    public var reason: String {
        switch self {
        case .emptyPrompt: return "the prompt is empty"
        case let .promptTooLong(_, n, max):
            return "the prompt has \(n) tokens but --max-model-len is \(max); shorten the prompt or raise --max-model-len"
        case let .invalidMaxTokens(_, v): return "max_tokens must be at least 1, got \(v)"
        case let .maxTokensBeyondContext(_, m, n, max):
            return "max_tokens is \(m) but the prompt has \(n) tokens and --max-model-len is \(max), leaving \(max - n); lower max_tokens or raise --max-model-len"
        case let .tokenOutOfRange(_, t, v): return "the prompt has token id \(t), outside the vocabulary (0..<\(v))"
        case let .stopTokenOutOfRange(_, t, v): return "stop_token_ids has token id \(t), outside the vocabulary (0..<\(v))"
        case let .invalidMinTokens(_, m, max): return "min_tokens must be between 0 and max_tokens (\(max)), got \(m)"
        case let .tooManyStopStrings(_, n, limit): return "stop has \(n) strings; this server accepts at most \(limit)"
        case let .stopStringTooLong(_, n, limit): return "a stop string has \(n) bytes; this server accepts at most \(limit)"
        case let .logitBiasOutOfRange(_, t, v): return "logit_bias has token id \(t), outside the vocabulary (0..<\(v))"
        case let .invalidLogprobs(_, n, limit): return "logprobs must be between 0 and \(limit), got \(n)"
        case let .invalidSampling(_, r): return r
        case let .exceedsKVCapacity(_, n, cap):
            return "prompt + max_tokens need \(n) KV-cache tokens but the cache holds \(cap); lower max_tokens or raise --num-kv-blocks / --kv-cache-memory"
        case let .engine(_, m): return "the engine failed while running this request: \(m)"
        }
    }

    public var description: String { "request \(id): \(reason)" }
}
