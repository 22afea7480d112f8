import Foundation

/// Per-request sampling settings, with vLLM's / OpenAI's meanings:
/// temperature 0 is greedy; `topK` 0 (or less) and `topP` 1 disable those filters.
public struct SamplingParams: Sendable, Equatable, Codable {
    public var temperature: Float
    public var topP: Float
    public var topK: Int
    public var seed: UInt64?
    /// OpenAI's penalties on the output so far: each logit minus
    /// `frequencyPenalty` × (times the token was generated) and minus
    /// `presencePenalty` if it was generated at all. Both in [-2, 2].
    public var frequencyPenalty: Float = 0
    public var presencePenalty: Float = 0
    /// vLLM's / Hugging Face's repetition penalty over prompt and output
    /// tokens: a positive logit divided by it, a negative one multiplied. 1 is off.
    public var repetitionPenalty: Float = 1
    /// Added to the logits of these token ids, in [-100, 100].
    public var logitBias: [Int32: Float] = [:]

    public init(temperature: Float = 0, topP: Float = 1, topK: Int = 0, seed: UInt64? = nil) {
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.seed = seed
    }

    /// Whether any penalty or bias changes the logits before sampling.
    public var processesLogits: Bool {
        frequencyPenalty != 0 || presencePenalty != 0 || repetitionPenalty != 1 || !logitBias.isEmpty
    }

    public static let greedy = SamplingParams()

    public var isGreedy: Bool { temperature <= 0 || topK == 1 }

    /// Throws a message naming the bad field.
    public func validate() throws {
        if !(temperature >= 0) || !temperature.isFinite { throw SamplingError.invalid("temperature must be a finite number >= 0, got \(temperature)") }
        if !(topP > 0 && topP <= 1) { throw SamplingError.invalid("top_p must be in (0, 1], got \(topP)") }
        if !(abs(frequencyPenalty) <= 2) { throw SamplingError.invalid("frequency_penalty must be in [-2, 2], got \(frequencyPenalty)") }
        if !(abs(presencePenalty) <= 2) { throw SamplingError.invalid("presence_penalty must be in [-2, 2], got \(presencePenalty)") }
        if !(repetitionPenalty > 0) || !repetitionPenalty.isFinite {
            throw SamplingError.invalid("repetition_penalty must be a finite number > 0, got \(repetitionPenalty)")
        }
        if let (t, b) = logitBias.first(where: { !(abs($0.value) <= 100) }) {
            throw SamplingError.invalid("logit_bias for token \(t) must be in [-100, 100], got \(b)")
        }
    }
}

public enum SamplingError: Error, CustomStringConvertible, Equatable {
    case invalid(String)
    public var description: String {
        switch self { case let .invalid(m): m }
    }
}

/// Turns one row of logits into a token id. Filters apply in Hugging Face's
/// order: temperature, then top-k, then top-p. Buffers are reused across
/// calls.
public struct Sampler: Sendable {
    public let params: SamplingParams
    private var rng: Xoshiro256
    private var candidates: [Int32] = []
    private var probs: [Float] = []
    // Reused scratch: top-k selection, and the nucleus's pool and result.
    private var scratch: [Float] = []
    private var pool: [Int32] = []
    private var keptCandidates: [Int32] = []
    private var keptProbs: [Float] = []

    public init(_ params: SamplingParams) {
        self.params = params
        rng = Xoshiro256(seed: params.seed ?? UInt64.random(in: 0...UInt64.max))
    }

    public static func argmax(_ logits: UnsafeBufferPointer<Float>) -> Int {
        var best = 0
        var bestValue = -Float.infinity
        for i in 0..<logits.count where logits[i] > bestValue {
            best = i
            bestValue = logits[i]
        }
        return best
    }

    public mutating func sample(_ logits: UnsafeBufferPointer<Float>) -> Int {
        if params.isGreedy { return Sampler.argmax(logits) }
        let n = logits.count
        let invT = 1 / params.temperature
        candidates.removeAll(keepingCapacity: true)
        if params.topK > 0 && params.topK < n {
            // Keep the k largest (ties at the threshold are kept, as HF does).
            scratch.removeAll(keepingCapacity: true)
            scratch.append(contentsOf: logits)
            let kth = Sampler.kthLargest(&scratch, params.topK)
            for i in 0..<n where logits[i] >= kth { candidates.append(Int32(i)) }
        } else {
            candidates.append(contentsOf: (0..<Int32(n)))
        }
        // Softmax over the candidates at temperature T.
        var m = -Float.infinity
        for c in candidates where logits[Int(c)] > m { m = logits[Int(c)] }
        probs.removeAll(keepingCapacity: true)
        var sum: Float = 0
        for c in candidates {
            let e = expf((logits[Int(c)] - m) * invT)
            probs.append(e)
            sum += e
        }
        for i in probs.indices { probs[i] /= sum }
        if params.topP < 1 { applyTopP(params.topP) }
        let u = rng.nextUnitFloat()
        var acc: Float = 0
        for i in probs.indices {
            acc += probs[i]
            if u < acc { return Int(candidates[i]) }
        }
        return Int(candidates[candidates.count - 1])
    }

    /// Keeps the smallest set of most likely candidates whose mass reaches
    /// `p` (most likely first, ties to the lower index), renormalised.
    /// Only tokens that can be in that set are sorted: a pass sums the mass
    /// per power-of-two band of probability, and the bands above the one
    /// where the mass reaches `p` (and that band) form the pool, which holds
    /// every token of the nucleus and, for a peaked distribution, few others.
    private mutating func applyTopP(_ p: Float) {
        @inline(__always) func band(_ x: Float) -> Int { x > 0 ? min(63, -Int(x.exponent)) : 63 }
        var last = 63
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 64) { mass in
            mass.initialize(repeating: 0)
            for x in probs { mass[band(x)] += x }
            var total: Float = 0
            for b in 0..<64 {
                total += mass[b]
                if total >= p { last = b; break }
            }
        }
        pool.removeAll(keepingCapacity: true)
        for i in probs.indices where band(probs[i]) <= last { pool.append(Int32(i)) }
        if pool.count < probs.count {
            // Summed in another order the pool's mass can fall short of p by
            // rounding: then every token is a candidate, as without the bands.
            var poolMass: Float = 0
            for i in pool { poolMass += probs[Int(i)] }
            if poolMass < p {
                pool.removeAll(keepingCapacity: true)
                pool.append(contentsOf: 0..<Int32(probs.count))
            }
        }
        let ps = probs
        pool.sort { ps[Int($0)] > ps[Int($1)] || (ps[Int($0)] == ps[Int($1)] && $0 < $1) }
        keptCandidates.removeAll(keepingCapacity: true)
        keptProbs.removeAll(keepingCapacity: true)
        var mass: Float = 0
        for i in pool {
            keptCandidates.append(candidates[Int(i)])
            keptProbs.append(probs[Int(i)])
            mass += probs[Int(i)]
            if mass >= p { break }
        }
        swap(&candidates, &keptCandidates)
        swap(&probs, &keptProbs)
        for i in probs.indices { probs[i] /= mass }
    }

    /// The k-th largest value (quickselect, reorders `values`).
    static func kthLargest(_ values: inout [Float], _ k: Int) -> Float {
        var lo = 0, hi = values.count - 1
        let target = k - 1
        while lo < hi {
            let pivot = values[(lo + hi) / 2]
            var i = lo, j = hi
            while i <= j {
                while values[i] > pivot { i += 1 }
                while values[j] < pivot { j -= 1 }
                if i <= j { values.swapAt(i, j); i += 1; j -= 1 }
            }
            if target <= j { hi = j } else if target >= i { lo = i } else { return values[target] }
        }
        return values[target]
    }
}
