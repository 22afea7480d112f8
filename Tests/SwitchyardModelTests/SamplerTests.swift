import Foundation
import Testing
@testable import SwitchyardModel

@Suite struct SamplerTests {
    let logits: [Float] = [1.0, 3.0, 2.5, -1.0, 0.0, 2.9]

    func draw(_ p: SamplingParams, _ n: Int) -> [Int] {
        var s = Sampler(p)
        return logits.withUnsafeBufferPointer { b in (0..<n).map { _ in s.sample(b) } }
    }

    @Test func temperatureZeroIsArgmax() {
        #expect(draw(SamplingParams(temperature: 0), 5) == [1, 1, 1, 1, 1])
    }

    @Test func sameSeedSameTokens() {
        let p = SamplingParams(temperature: 1, seed: 42)
        #expect(draw(p, 50) == draw(p, 50))
        #expect(draw(p, 50) != draw(SamplingParams(temperature: 1, seed: 43), 50))
    }

    @Test func topKRestrictsToTheKLargest() {
        let tokens = Set(draw(SamplingParams(temperature: 5, topK: 2, seed: 1), 400))
        #expect(tokens == [1, 5])
    }

    @Test func topPKeepsTheSmallestSetReachingTheMass() {
        // Probabilities at T=1: token 1 ≈ 0.37, 5 ≈ 0.33, 2 ≈ 0.22 → top_p 0.6 keeps {1, 5}.
        let tokens = Set(draw(SamplingParams(temperature: 1, topP: 0.6, seed: 7), 400))
        #expect(tokens == [1, 5])
    }

    /// Over a real vocabulary the banded nucleus search keeps exactly the
    /// set a full sort keeps: every draw is inside it and every member shows up.
    @Test(arguments: [0.5, 0.9, 0.99] as [Float])
    func topPOverALargeVocabularyKeepsTheFullSortNucleus(_ topP: Float) {
        var rng = Xoshiro256(seed: 11)
        let vocab = (0..<4096).map { i in Float(rng.next() % 1000) / 100 - (i % 7 == 0 ? 0 : 6) }
        // The reference: softmax at T = 1, sorted, smallest prefix reaching top_p.
        let m = vocab.max()!
        let e = vocab.map { expf($0 - m) }
        let sum = e.reduce(0, +)
        let order = e.indices.sorted { e[$0] > e[$1] || (e[$0] == e[$1] && $0 < $1) }
        var mass: Float = 0
        var nucleus: Set<Int> = []
        for i in order {
            nucleus.insert(i)
            mass += e[i] / sum
            if mass >= topP { break }
        }
        var sampler = Sampler(SamplingParams(temperature: 1, topP: topP, seed: 3))
        let draws = vocab.withUnsafeBufferPointer { b in (0..<(20 * nucleus.count)).map { _ in sampler.sample(b) } }
        #expect(Set(draws).isSubset(of: nucleus))
        // Every member likely enough to be drawn ten times is drawn.
        let likely = nucleus.filter { e[$0] / sum / mass * Float(draws.count) >= 10 }
        #expect(!likely.isEmpty && likely.isSubset(of: Set(draws)))
    }

    @Test func frequenciesFollowTheSoftmax() {
        let n = 20000
        let counts = draw(SamplingParams(temperature: 1, seed: 11), n).reduce(into: [Int: Int]()) { $0[$1, default: 0] += 1 }
        let z = logits.map { exp(Double($0)) }.reduce(0, +)
        for (i, l) in logits.enumerated() {
            let expected = exp(Double(l)) / z
            #expect(abs(Double(counts[i, default: 0]) / Double(n) - expected) < 0.015, "token \(i)")
        }
    }

    @Test func invalidParametersAreRejected() {
        #expect(throws: SamplingError.self) { try SamplingParams(temperature: -1).validate() }
        #expect(throws: SamplingError.self) { try SamplingParams(topP: 0).validate() }
    }
}
