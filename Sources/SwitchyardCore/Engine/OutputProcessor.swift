import SwitchyardModel

/// After a forward: samples each sequence that completed its tokens,
/// streams the token with its new text, checks stop conditions, and builds
/// final outputs. Owns nothing but the rules; sequences carry their state.
struct OutputProcessor {
    let maxModelLen: Int

    /// Samples `seq`'s next token from `logits`, appends and streams it.
    /// Returns why the sequence stops, or nil to continue.
    func append(_ seq: SequenceState, logits: UnsafeMutableBufferPointer<Float>, time: Double) -> FinishReason? {
        if let p = seq.logitsProcessor, p.isActive(outputs: seq.outputCount) { p.apply(logits, outputs: seq.outputCount) }
        let token = Int32(seq.sampler.sample(UnsafeBufferPointer(logits)))
        if let top = seq.request.logprobs {
            seq.outputLogprobs.append(TokenLogprob.of(token, in: UnsafeBufferPointer(logits), top: top))
        }
        seq.logitsProcessor?.append(token)
        seq.tokens.append(token)
        if seq.firstTokenTime == nil { seq.firstTokenTime = time }
        seq.tokenTimes.append(time)
        // Within `min_tokens` nothing may stop the request.
        let early = seq.outputCount <= seq.request.minTokens
        // Mutated in place: a copy out and back would copy the whole text
        // each token (the copy shares its buffer until the first append).
        let (delta, stoppedByString) = seq.detokenizer?.push(seq.outputTokens, checkStops: !early) ?? ("", false)
        seq.continuation?.yield(.token(token, time: time, text: delta,
                                       logprob: seq.request.logprobs == nil ? nil : seq.outputLogprobs.last))
        if !early && (seq.stopTokens.contains(token) || stoppedByString) { return .stop }
        if seq.outputCount >= seq.request.maxTokens || seq.tokens.count >= maxModelLen { return .length }
        return nil
    }

    /// Scores the prompt tokens the rows of a prefill chunk predict: row j
    /// of a chunk starting at position `start` predicts the token at
    /// `start + j + 1`. Tokens already scored (before a preemption) are skipped.
    func scorePrompt(_ seq: SequenceState, logits: LogitsView, firstRow: Int, start: Int, rows: Int) {
        guard let top = seq.request.promptLogprobs else { return }
        let promptLen = seq.request.promptTokens.count
        for j in 0..<rows {
            let position = start + j + 1
            guard position < promptLen, position - 1 == seq.promptLogprobs.count else { continue }
            let token = seq.request.promptTokens[position]
            seq.promptLogprobs.append(TokenLogprob.of(token, in: logits.row(firstRow + j), top: top))
            if seq.promptLogprobs.count == promptLen - 1 { seq.continuation?.yield(.promptScored(seq.promptLogprobs)) }
        }
    }

    /// The final output of `seq` (its text without a matched stop string).
    func output(_ seq: SequenceState, reason: FinishReason, error: RequestError?, time: Double) -> RequestOutput {
        seq.detokenizer?.flush(seq.outputTokens)
        return RequestOutput(id: seq.request.id, promptTokens: seq.request.promptTokens.count, outputTokens: Array(seq.outputTokens),
                      text: seq.detokenizer?.text, finishReason: reason, error: error, arrivalTime: seq.arrivalTime,
                      firstTokenTime: seq.firstTokenTime, finishTime: time, tokenTimes: seq.tokenTimes,
                      preemptions: seq.preemptions,
                      logprobs: seq.request.logprobs == nil ? nil : seq.outputLogprobs,
                      promptLogprobs: seq.request.promptLogprobs == nil ? nil : seq.promptLogprobs)
    }
}
