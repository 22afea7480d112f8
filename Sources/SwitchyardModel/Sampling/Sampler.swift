import Foundation

/// Per-request sampling settings, with vLLM's / OpenAI's meanings:
/// temperature 0 is greedy; `topK` 0 (or less) and `topP` 1 disable those filters.
public struct SamplingParams: Sendable, Equatable, Codable {
    public var temperature: Float
    public var topP: Float
    public var topK: Int
    public var seed: UInt64?

    public init(temperature: Float = 0, topP: Float = 1, topK: Int = 0, seed: UInt64? = nil) {
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.seed = seed
    }

    public static let greedy = SamplingParams()

    public var isGreedy: Bool { temperature <= 0 || topK == 1 }

    /// Throws a message naming the bad field.
    public func validate() throws {
        if !(temperature >= 0) || !temperature.isFinite { throw SamplingError.invalid("temperature must be a finite number >= 0, got \(temperature)") }
        if !(topP > 0 && topP <= 1) { throw SamplingError.invalid("top_p must be in (0, 1], got \(topP)") }
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
            var scratch = probs
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
        if params.topP < 1 {
            // Smallest set of most likely tokens whose mass reaches top_p.
            let order = probs.indices.sorted { probs[$0] > probs[$1] || (probs[$0] == probs[$1] && $0 < $1) }
            var mass: Float = 0
            var keep: [Int32] = []
            var keptProbs: [Float] = []
            for i in order {
                keep.append(candidates[i])
                keptProbs.append(probs[i])
                mass += probs[i]
                if mass >= params.topP { break }
            }
            candidates = keep
            probs = keptProbs.map { $0 / mass }
        }
        let u = rng.nextUnitFloat()
        var acc: Float = 0
        for i in probs.indices {
            acc += probs[i]
            if u < acc { return Int(candidates[i]) }
        }
        return Int(candidates[candidates.count - 1])
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
