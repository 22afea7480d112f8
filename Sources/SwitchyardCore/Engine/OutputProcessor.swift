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
        seq.logitsProcessor?.append(token)
        seq.tokens.append(token)
        if seq.firstTokenTime == nil { seq.firstTokenTime = time }
        seq.tokenTimes.append(time)
        // Within `min_tokens` nothing may stop the request.
        let early = seq.outputCount <= seq.request.minTokens
        var delta = ""
        var stoppedByString = false
        if var d = seq.detokenizer {
            (delta, stoppedByString) = d.push(seq.outputTokens, checkStops: !early)
            seq.detokenizer = d
        }
        seq.continuation?.yield(.token(token, time: time, text: delta))
        if !early && (seq.stopTokens.contains(token) || stoppedByString) { return .stop }
        if seq.outputCount >= seq.request.maxTokens || seq.tokens.count >= maxModelLen { return .length }
        return nil
    }

    /// The final output of `seq` (its text without a matched stop string).
    func output(_ seq: SequenceState, reason: FinishReason, error: RequestError?, time: Double) -> RequestOutput {
        RequestOutput(id: seq.request.id, promptTokens: seq.request.promptTokens.count, outputTokens: Array(seq.outputTokens),
                      text: seq.detokenizer?.text, finishReason: reason, error: error, arrivalTime: seq.arrivalTime,
                      firstTokenTime: seq.firstTokenTime, finishTime: time, tokenTimes: seq.tokenTimes,
                      preemptions: seq.preemptions)
    }
}
