/// One sequence's penalties, bias and `min_tokens` rule, applied to its
/// logits row before sampling (vLLM's order: bias and the `min_tokens` mask
/// first, then repetition, frequency and presence penalties). Keeps what it
/// needs as the sequence grows, so a step costs O(distinct tokens seen),
/// not O(output) or O(vocabulary).
public struct LogitsProcessor: Sendable {
    public let params: SamplingParams
    /// Tokens that may not be sampled before `minTokens` outputs.
    public let minTokens: Int
    public let stopTokens: [Int32]
    /// Output tokens and how often each was generated.
    private var outputCounts: [Int32: Int] = [:]
    /// Prompt and output tokens (repetition penalty only).
    private var seen: Set<Int32> = []

    public init(params: SamplingParams, prompt: [Int32], minTokens: Int = 0, stopTokens: [Int32] = []) {
        self.params = params
        self.minTokens = minTokens
        self.stopTokens = stopTokens
        if params.repetitionPenalty != 1 { seen = Set(prompt) }
    }

    /// Whether `apply` changes anything for a sequence with this many outputs.
    public func isActive(outputs: Int) -> Bool { params.processesLogits || outputs < minTokens }

    /// Records a generated token.
    public mutating func append(_ token: Int32) {
        if params.frequencyPenalty != 0 || params.presencePenalty != 0 { outputCounts[token, default: 0] += 1 }
        if params.repetitionPenalty != 1 { seen.insert(token) }
    }

    /// Rewrites `logits` in place for a sequence that has `outputs` tokens.
    public func apply(_ logits: UnsafeMutableBufferPointer<Float>, outputs: Int) {
        let n = logits.count
        for (token, bias) in params.logitBias where Int(token) < n { logits[Int(token)] += bias }
        if outputs < minTokens {
            for t in stopTokens where Int(t) < n { logits[Int(t)] = -.infinity }
        }
        let r = params.repetitionPenalty
        if r != 1 {
            for t in seen where Int(t) < n {
                let v = logits[Int(t)]
                logits[Int(t)] = v > 0 ? v / r : v * r
            }
        }
        if params.frequencyPenalty != 0 || params.presencePenalty != 0 {
            for (t, count) in outputCounts where Int(t) < n {
                logits[Int(t)] -= params.frequencyPenalty * Float(count) + params.presencePenalty
            }
        }
    }
}
