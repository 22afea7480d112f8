import CKernels
import Foundation
import Testing
@testable import SwitchyardModel

/// Softmax and SwiGLU on glibc's vector expf, against Double references:
/// every length up to three vectors (so each tail length), sinks, and the
/// extremes where exp overflows or underflows; on each path this CPU runs
/// (AVX-512, AVX2, scalar), since a machine without AVX-512 takes a
/// narrower one.
@Suite struct VectorMathTests {
    /// 2: AVX-512, 1: AVX2, 0: scalar.
    static let paths: [Int32] = [2, 1, 0]
    /// The widest path this CPU runs.
    static var widest: Int32 { sy_vector_math_width() == 16 ? 2 : sy_vector_math_width() == 8 ? 1 : 0 }

    /// Softmax on `path`; false (checked) where this CPU does not run it.
    func softmax(_ x: inout [Float], sink: Float?, path: Int32) -> Bool {
        let result = sy_softmax_f32_at(&x, x.count, sink == nil ? 0 : 1, sink ?? 0, path)
        #expect(result == (path <= Self.widest ? 0 : -1))
        return result == 0
    }

    func values(_ n: Int, seed: UInt64, spread: Float) -> [Float] {
        var rng = Xoshiro256(seed: seed)
        return (0..<n).map { _ in (rng.nextUnitFloat() * 2 - 1) * spread }
    }

    /// The exponent `x - max` is rounded to Float as the kernel's is: at
    /// -20 that rounding alone moves e^x by 1e-6 relative, which no
    /// Float32 softmax avoids.
    func referenceSoftmax(_ x: [Float], sink: Float?) -> [Double] {
        let m = max(x.max() ?? -.infinity, sink ?? -.infinity)
        let e = x.map { exp(Double($0 - m)) }
        let s = e.reduce(0, +) + (sink.map { exp(Double($0 - m)) } ?? 0)
        return e.map { $0 / s }
    }

    @Test(arguments: [nil, Float(1.5)], paths)
    func softmaxMatchesADoubleReferenceAtEveryTailLength(sink: Float?, path: Int32) {
        for n in 1...50 {
            var x = values(n, seed: UInt64(n), spread: 12)
            let expected = referenceSoftmax(x, sink: sink)
            guard softmax(&x, sink: sink, path: path) else { return }
            for i in 0..<n {
                #expect(abs(Double(x[i]) - expected[i]) <= 1e-6 * expected[i] + 1e-30, "n \(n), i \(i): \(x[i]) vs \(expected[i])")
            }
            if sink == nil { #expect(abs(x.reduce(0, +) - 1) < 1e-5) }
        }
    }

    @Test(arguments: paths)
    func softmaxKeepsMaskedAndHugeScoresFinite(path: Int32) {
        // Scores far below the maximum underflow to exactly 0, and a large
        // maximum does not overflow (it is subtracted first).
        var x: [Float] = [80, -1e30, 80, 0, -200]
        guard softmax(&x, sink: nil, path: path) else { return }
        #expect(x[0] == x[2])
        #expect(abs(x[0] - 0.5) < 1e-6)
        #expect(x[1] == 0 && x[4] == 0)
        #expect(x.allSatisfy { $0.isFinite })
    }

    @Test(arguments: paths)
    func swigluMatchesADoubleReferenceAtEveryTailLengthAndExtremes(path: Int32) {
        guard path <= Self.widest else {
            var g: [Float] = [1]
            #expect(sy_swiglu_f32_at(&g, [1], 1, path) == -1)
            return
        }
        for n in 1...50 {
            var gate = values(n, seed: UInt64(100 + n), spread: 9)
            let up = values(n, seed: UInt64(200 + n), spread: 3)
            let expected = zip(gate, up).map { g, u in Double(g) / (1 + exp(-Double(g))) * Double(u) }
            #expect(sy_swiglu_f32_at(&gate, up, n, path) == 0)
            for i in 0..<n {
                #expect(abs(Double(gate[i]) - expected[i]) <= 1e-6 * abs(expected[i]) + 1e-12, "n \(n), i \(i)")
            }
        }
        // exp(-g) overflows for very negative g (silu -> -0) and vanishes for large g (silu -> g).
        var gate: [Float] = [-200, 200, 0]
        #expect(sy_swiglu_f32_at(&gate, [2, 2, 5], 3, path) == 0)
        #expect(gate[0] == 0)
        #expect(gate[1] == 400)
        #expect(gate[2] == 0)
    }

    @Test func vectorWidthIsTheWidestThisCPURuns() {
        let width = Int(sy_vector_math_width())
        #expect([1, 8, 16].contains(width))
        // This project's build machines have AVX-512 (docs/performance.md).
        if sy_has_avx512_bf16() != 0 { #expect(width == 16) }
    }
}
