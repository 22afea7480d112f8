import Foundation

/// The log-probability of one token under a logits row, with the row's
/// most likely tokens (OpenAI's `logprobs` / `top_logprobs`).
public struct TokenLogprob: Sendable, Equatable {
    public var token: Int32
    public var logprob: Float
    /// The `top` most likely tokens of the row, most likely first (ties: lower id).
    public var topTokens: [Int32]
    public var topLogprobs: [Float]

    public init(token: Int32, logprob: Float, topTokens: [Int32] = [], topLogprobs: [Float] = []) {
        self.token = token
        self.logprob = logprob
        self.topTokens = topTokens
        self.topLogprobs = topLogprobs
    }

    /// `token`'s log-softmax under `row`, and the `top` best tokens: two
    /// passes over the row (max and log-sum-exp, then selection), no copy.
    public static func of(_ token: Int32, in row: UnsafeBufferPointer<Float>, top: Int) -> TokenLogprob {
        var m = -Float.infinity
        for v in row where v > m { m = v }
        var sum: Double = 0
        for v in row { sum += Double(expf(v - m)) }
        let logZ = m + Float(log(sum))
        var topTokens: [Int32] = [], topValues: [Float] = []
        if top > 0 {
            topTokens.reserveCapacity(top + 1)
            topValues.reserveCapacity(top + 1)
            for i in 0..<row.count {
                let v = row[i]
                guard topValues.count < top || v > topValues[topValues.count - 1] else { continue }
                var at = topValues.count
                while at > 0 && topValues[at - 1] < v { at -= 1 }
                topValues.insert(v, at: at)
                topTokens.insert(Int32(i), at: at)
                if topValues.count > top { topValues.removeLast(); topTokens.removeLast() }
            }
        }
        return TokenLogprob(token: token, logprob: row[Int(token)] - logZ, topTokens: topTokens,
                            topLogprobs: topValues.map { $0 - logZ })
    }
}
