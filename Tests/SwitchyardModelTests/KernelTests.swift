import Foundation
import Testing
@testable import SwitchyardModel

@Suite struct KernelTests {
    /// Random BF16 matrix with values in [-1, 1].
    func randomBF16(rows: Int, cols: Int, seed: UInt64) -> ([UInt16], [Float]) {
        var rng = Xoshiro256(seed: seed)
        var bits: [UInt16] = []
        var floats: [Float] = []
        for _ in 0..<(rows * cols) {
            let b = narrowToBF16(rng.nextUnitFloat() * 2 - 1)
            bits.append(b)
            floats.append(Float(bitPattern: UInt32(b) << 16))
        }
        return (bits, floats)
    }

    func naive(_ w: [Float], rows: Int, cols: Int, x: [Float], tokens: Int) -> [Float] {
        var y = [Float](repeating: 0, count: tokens * rows)
        for t in 0..<tokens { for r in 0..<rows {
            var s: Double = 0
            for c in 0..<cols { s += Double(w[r * cols + c]) * Double(x[t * cols + c]) }
            y[t * rows + r] = Float(s)
        } }
        return y
    }

    /// Every Float32 backend this machine has: the product must be exact up to summation order.
    static let float32Backends = ComputeOptions.available.filter { $0.dtype == .float32 }

    @Test(arguments: [(1, 37), (3, 64), (5, 129), (12, 72), (40, 96), (64, 80)], KernelTests.float32Backends)
    func linearMatchesNaiveProductForAnyTokenCount(_ shape: (tokens: Int, cols: Int), _ compute: ComputeOptions) {
        let (tokens, cols) = shape
        let rows = 67
        let (bits, floats) = randomBF16(rows: rows, cols: cols, seed: 1)
        var rng = Xoshiro256(seed: 2)
        let x = (0..<(tokens * cols)).map { _ in rng.nextUnitFloat() - 0.5 }
        let expected = naive(floats, rows: rows, cols: cols, x: x, tokens: tokens)
        var y = [Float](repeating: .nan, count: tokens * rows)
        bits.withUnsafeBytes { wb in
            let m = Matrix(rows: rows, cols: cols, dtype: .bf16, data: wb.baseAddress!)
            x.withUnsafeBufferPointer { xb in
                y.withUnsafeMutableBufferPointer { yb in
                    Linear.apply(m, x: xb.baseAddress!, tokens: tokens, y: yb.baseAddress!, ctx: GemmContext(options: compute))
                }
            }
        }
        for i in 0..<y.count { #expect(abs(y[i] - expected[i]) < 1e-4, "index \(i)") }
    }

    @Test(arguments: [1, 5, 30], KernelTests.float32Backends)
    func f16WeightsMatchNaiveProduct(_ tokens: Int, _ compute: ComputeOptions) {
        let rows = 19, cols = 45
        var rng = Xoshiro256(seed: 8)
        let halves = (0..<(rows * cols)).map { _ in Float16(rng.nextUnitFloat() * 2 - 1) }
        let floats = halves.map(Float.init)
        let x = (0..<(tokens * cols)).map { _ in rng.nextUnitFloat() - 0.5 }
        let expected = naive(floats, rows: rows, cols: cols, x: x, tokens: tokens)
        var y = [Float](repeating: .nan, count: tokens * rows)
        halves.map(\.bitPattern).withUnsafeBytes { wb in
            let m = Matrix(rows: rows, cols: cols, dtype: .f16, data: wb.baseAddress!)
            x.withUnsafeBufferPointer { xb in
                y.withUnsafeMutableBufferPointer { yb in
                    Linear.apply(m, x: xb.baseAddress!, tokens: tokens, y: yb.baseAddress!, ctx: GemmContext(options: compute))
                }
            }
        }
        for i in 0..<y.count { #expect(abs(y[i] - expected[i]) < 1e-4, "index \(i)") }
    }

    @Test func f16CheckpointLoadsAndRuns() throws {
        let preset = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("models/presets/tiny.json").path
        let dir = Fixtures.scratchDirectory("f16")
        try RandomCheckpoint.create(.init(architecture: .olmoe, preset: ModelPreset.load(preset), seed: 3, dtype: .f16), at: dir)
        let model = try Transformer(directory: dir.path)
        #expect(model.weights.embedding.dtype == .f16)
        let logits = try Generator(model: model).allLogits([1, 2, 3, 4, 5])
        #expect(logits.count == 5 && logits.allSatisfy { $0.allSatisfy(\.isFinite) })
    }

    @Test func matVecGivesTheSameBitsAloneAndBatched() {
        let rows = 33, cols = 200
        let (bits, _) = randomBF16(rows: rows, cols: cols, seed: 3)
        var rng = Xoshiro256(seed: 4)
        let x = (0..<(7 * cols)).map { _ in rng.nextUnitFloat() - 0.5 }
        var batched = [Float](repeating: 0, count: 7 * rows)
        var alone = [Float](repeating: 0, count: 7 * rows)
        bits.withUnsafeBytes { wb in
            let m = Matrix(rows: rows, cols: cols, dtype: .bf16, data: wb.baseAddress!)
            x.withUnsafeBufferPointer { xb in
                batched.withUnsafeMutableBufferPointer { yb in
                    MatVec.compute(m, rows: 0..<rows, x: xb.baseAddress!, ldx: cols, tokens: 7, y: yb.baseAddress!, ldy: rows)
                }
                alone.withUnsafeMutableBufferPointer { yb in
                    for t in 0..<7 {
                        MatVec.compute(m, rows: 0..<rows, x: xb.baseAddress! + t * cols, ldx: cols, tokens: 1,
                                       y: yb.baseAddress! + t * rows, ldy: rows)
                    }
                }
            }
        }
        #expect(batched == alone)
    }

    @Test func f16AndBF16WideningAreExact() {
        #expect(widenBF16(narrowToBF16(1.5)) == 1.5)
        #expect(widenBF16(narrowToBF16(-0.1)) == Float(bitPattern: 0xBDCD_0000))  // 0xBDCCCCCD rounds up
        #expect(narrowToBF16(1.00390625) == 0x3F80)  // ties to even
        #expect(widenF16(0x3C00) == 1)
        #expect(widenF16(0xC000) == -2)
        #expect(widenF16(0x0001) == Float(5.9604645e-8))
    }

    @Test func topKSelectionPicksLargestFirst() {
        let p: [Float] = [0.1, 0.4, 0.05, 0.3, 0.15]
        var e = [Int32](repeating: -1, count: 3)
        var w = [Float](repeating: 0, count: 3)
        MoEBlock.selectTopK(p, n: 5, k: 3, experts: &e, weights: &w)
        #expect(e == [1, 3, 4])
        #expect(w == [0.4, 0.3, 0.15])
    }
}
