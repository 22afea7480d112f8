/// The rules a request must meet before it runs, in one place: the engine
/// applies them on admission and the server before it answers, so the server
/// never accepts what the engine would reject, and both say the same thing.
public struct RequestValidator: Sendable {
    /// Stop strings are searched in every new piece of output text, on the
    /// engine's thread: their number and length are bounded so one request
    /// cannot slow every other (OpenAI allows 4; vLLM sets no bound).
    public static let maxStopStrings = 64
    public static let maxStopStringBytes = 512

    public var maxModelLen: Int
    public var vocabSize: Int
    public var kvBlocks: Int
    public var blockSize: Int

    public init(maxModelLen: Int, vocabSize: Int, kvBlocks: Int, blockSize: Int) {
        self.maxModelLen = maxModelLen
        self.vocabSize = vocabSize
        self.kvBlocks = kvBlocks
        self.blockSize = blockSize
    }

    /// The first rule `r` breaks, or nil. With `strictMaxTokens` a
    /// `max_tokens` beyond the context is an error (the OpenAI API's rule);
    /// without, the request stops at the context length (`length`).
    public func validate(_ r: GenerationRequest, strictMaxTokens: Bool = false) -> RequestError? {
        let n = r.promptTokens.count
        if n == 0 { return .emptyPrompt(id: r.id) }
        if n >= maxModelLen { return .promptTooLong(id: r.id, promptTokens: n, maxModelLen: maxModelLen) }
        if let bad = r.promptTokens.first(where: { $0 < 0 || Int($0) >= vocabSize }) {
            return .tokenOutOfRange(id: r.id, token: bad, vocabSize: vocabSize)
        }
        if let bad = r.stopTokenIds.first(where: { $0 < 0 || Int($0) >= vocabSize }) {
            return .stopTokenOutOfRange(id: r.id, token: bad, vocabSize: vocabSize)
        }
        if r.maxTokens < (r.promptLogprobs == nil ? 1 : 0) { return .invalidMaxTokens(id: r.id, value: r.maxTokens) }
        for n in [r.logprobs, r.promptLogprobs].compactMap({ $0 }) where !(0...GenerationRequest.maxLogprobs).contains(n) {
            return .invalidLogprobs(id: r.id, value: n, limit: GenerationRequest.maxLogprobs)
        }
        if r.minTokens < 0 || r.minTokens > r.maxTokens {
            return .invalidMinTokens(id: r.id, minTokens: r.minTokens, maxTokens: r.maxTokens)
        }
        if r.stopStrings.count > Self.maxStopStrings {
            return .tooManyStopStrings(id: r.id, count: r.stopStrings.count, limit: Self.maxStopStrings)
        }
        if let long = r.stopStrings.first(where: { $0.utf8.count > Self.maxStopStringBytes }) {
            return .stopStringTooLong(id: r.id, bytes: long.utf8.count, limit: Self.maxStopStringBytes)
        }
        if let bad = r.sampling.logitBias.keys.first(where: { $0 < 0 || Int($0) >= vocabSize }) {
            return .logitBiasOutOfRange(id: r.id, token: bad, vocabSize: vocabSize)
        }
        if strictMaxTokens && n + r.maxTokens > maxModelLen {
            return .maxTokensBeyondContext(id: r.id, maxTokens: r.maxTokens, promptTokens: n, maxModelLen: maxModelLen)
        }
        do { try r.sampling.validate() } catch { return .invalidSampling(id: r.id, reason: "\(error)") }
        let need = min(n + r.maxTokens, maxModelLen)
        if (need + blockSize - 1) / blockSize > kvBlocks {
            return .exceedsKVCapacity(id: r.id, tokensNeeded: need, capacity: kvBlocks * blockSize)
        }
        return nil
    }
}
