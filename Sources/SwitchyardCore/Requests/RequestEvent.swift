import SwitchyardModel

/// What a request's stream carries: each new token as it is sampled, with
/// the text it completes, then exactly one `.finished`.
public enum RequestEvent: Sendable {
    /// `text`: new output text (empty without a tokenizer, while a UTF-8
    /// sequence is incomplete, or while it could be the start of a stop
    /// string). The deltas concatenate to a prefix of the final `text`.
    /// `logprob`: the token's log-probability when the request asked for `logprobs`.
    case token(Int32, time: Double, text: String, logprob: TokenLogprob?)
    /// Once, when a request that asked for `promptLogprobs` has its whole
    /// prompt scored (after its last prefill chunk, before its first token):
    /// per prompt token from the second. Not sent for a one-token prompt.
    case promptScored([TokenLogprob])
    case finished(RequestOutput)
}

/// The complete result of one request, with its timeline (seconds on the
/// engine's monotonic clock).
public struct RequestOutput: Sendable {
    public var id: String
    public var promptTokens: Int
    public var outputTokens: [Int32]
    /// Decoded output (set when the engine has a tokenizer), stop string removed.
    public var text: String?
    public var finishReason: FinishReason
    public var error: RequestError?
    public var arrivalTime: Double
    public var firstTokenTime: Double?
    public var finishTime: Double
    public var tokenTimes: [Double]
    public var preemptions: Int
    /// Per output token, when the request asked for `logprobs`.
    public var logprobs: [TokenLogprob]? = nil
    /// Per prompt token from the second, when it asked for `promptLogprobs`.
    public var promptLogprobs: [TokenLogprob]? = nil

    public var ttft: Double? { firstTokenTime.map { $0 - arrivalTime } }
    public var e2eLatency: Double { finishTime - arrivalTime }
    /// Gaps between consecutive tokens.
    public var interTokenLatencies: [Double] { zip(tokenTimes.dropFirst(), tokenTimes).map { $0 - $1 } }
}
