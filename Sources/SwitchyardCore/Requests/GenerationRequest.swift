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
    /// Replay on the engine's iteration clock: the engine holds the request
    /// until it has run this many iterations (idle stretches count as if
    /// iterations had run), then admits it, stamping its arrival then. nil:
    /// admitted as soon as it is submitted (real time).
    public var arrivalIteration: Int?

    public init(id: String, promptTokens: [Int32], sampling: SamplingParams = .greedy, maxTokens: Int = 16,
                stopTokenIds: [Int32] = [], stopStrings: [String] = [], ignoreEOS: Bool = false, arrivalIteration: Int? = nil) {
        self.arrivalIteration = arrivalIteration
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

/// Why a request was rejected without running.
public enum RequestError: Error, CustomStringConvertible, Equatable, Sendable {
    case emptyPrompt(id: String)
    case promptTooLong(id: String, promptTokens: Int, maxModelLen: Int)
    case invalidMaxTokens(id: String, value: Int)
    case tokenOutOfRange(id: String, token: Int32, vocabSize: Int)
    case invalidSampling(id: String, reason: String)
    case exceedsKVCapacity(id: String, tokensNeeded: Int, capacity: Int)

    public var description: String {
        switch self {
        case let .emptyPrompt(id): return "request \(id): the prompt is empty"
        case let .promptTooLong(id, n, max):
            return "request \(id): prompt has \(n) tokens but --max-model-len is \(max); shorten the prompt or raise --max-model-len"
        case let .invalidMaxTokens(id, v): return "request \(id): max_tokens must be at least 1, got \(v)"
        case let .tokenOutOfRange(id, t, v): return "request \(id): token id \(t) is outside the vocabulary (0..<\(v))"
        case let .invalidSampling(id, r): return "request \(id): \(r)"
        case let .exceedsKVCapacity(id, n, cap):
            return "request \(id): needs \(n) KV-cache tokens but the cache holds \(cap); raise --num-kv-blocks / --kv-cache-memory"
        }
    }
}
