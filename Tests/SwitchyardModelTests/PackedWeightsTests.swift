import CKernels
import Foundation
import Testing
@testable import SwitchyardModel

/// Experts packed for the products (`MatrixLayout.packedBF16`): the layout
/// is oneDNN's (its matmul reads it directly), every kernel computes from it
/// what it computes from the stored rows, and a model packs in bfloat16 mode
/// and reads the stored weights again in every other mode.
@Suite struct PackedWeightsTests {
    static let canRun = sy_has_avx512_bf16() != 0
    static let defaultModel = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("models/stdlib-moe").path

    /// A random BF16 matrix (values of either sign, about unit size) in
    /// memory the caller frees.
    static func randomMatrix(rows: Int, cols: Int, seed: UInt64) -> (Matrix, UnsafeMutablePointer<UInt16>) {
        var rng = Xoshiro256(seed: seed)
        let p = UnsafeMutablePointer<UInt16>.allocate(capacity: rows * cols)
        for i in 0..<rows * cols { p[i] = narrowToBF16(Float(Int(rng.next() % 2001) - 1000) / 700) }
        return (Matrix(rows: rows, cols: cols, dtype: .bf16, data: UnsafeRawPointer(p)), p)
    }

    /// `tokens` rows of activations already exact in BF16, so every kernel
    /// multiplies the same values whatever it rounds.
    static func activations(tokens: Int, cols: Int, seed: UInt64) -> [Float] {
        var rng = Xoshiro256(seed: seed)
        return (0..<tokens * cols).map { _ in bf16ToFloat(narrowToBF16(Float(Int(rng.next() % 2001) - 1000) / 900)) }
    }

    static func bf16ToFloat(_ v: UInt16) -> Float { Float(bitPattern: UInt32(v) << 16) }

    /// `y[t][r] = Σ_c W[r][c] x[t][c]` in Double from the stored rows.
    static func reference(_ w: UnsafePointer<UInt16>, rows: Int, cols: Int, x: [Float], tokens: Int) -> [Double] {
        var y = [Double](repeating: 0, count: tokens * rows)
        for t in 0..<tokens {
            for r in 0..<rows {
                var s = 0.0
                for c in 0..<cols { s += Double(bf16ToFloat(w[r * cols + c])) * Double(x[t * cols + c]) }
                y[t * rows + r] = s
            }
        }
        return y
    }

    static func worst(_ y: [Float], _ ref: [Double]) -> Double {
        zip(y, ref).map { abs(Double($0) - $1) / (1 + abs($1)) }.max() ?? 0
    }

    @Test(.enabled(if: canRun, "needs AVX512-BF16"))
    func packingRoundTripsAndKeepsEveryValueWhereTheLayoutSays() throws {
        let rows = 192, cols = 80
        let (m, raw) = Self.randomMatrix(rows: rows, cols: cols, seed: 3)
        defer { raw.deallocate() }
        #expect(m.canPack)
        let packedBytes = UnsafeMutableRawPointer.allocate(byteCount: m.byteCount, alignment: 64)
        defer { packedBytes.deallocate() }
        let p = m.packed(into: packedBytes)
        #expect(p.layout == .packedBF16 && p.byteCount == m.byteCount && !p.canPack)
        let words = packedBytes.assumingMemoryBound(to: UInt16.self)
        // The layout oneDNN calls BA16a64b2a.
        for (r, c) in [(0, 0), (0, 1), (1, 0), (63, 79), (64, 0), (130, 17), (191, 78)] {
            #expect(words[(r / 64) * 64 * cols + (c / 2) * 128 + (r % 64) * 2 + c % 2] == raw[r * cols + c], "(\(r), \(c))")
        }
        var back = [UInt16](repeating: 0, count: rows * cols)
        back.withUnsafeMutableBytes { p.writeRowMajor(to: $0.baseAddress!) }
        #expect(back == Array(UnsafeBufferPointer(start: raw, count: rows * cols)))
        // Row ranges that cut blocks, as threads split an upload, add up to
        // the whole, from either layout.
        for source in [p, m] {
            var pieces = [UInt16](repeating: 0, count: rows * cols)
            pieces.withUnsafeMutableBytes { b in
                for r in [0..<5, 5..<64, 64..<131, 131..<192] { source.writeRowMajor(rows: r, to: b.baseAddress!) }
            }
            #expect(pieces == back)
        }
        var widened = [Float](repeating: 0, count: 3 * cols), stored = widened
        p.widenRows(70, count: 3, into: &widened)
        m.widenRows(70, count: 3, into: &stored)
        #expect(widened == stored)
        // A block-aligned slice is the packed slice of those rows.
        let slice = p.rows(64..<192)
        var sliceRows = [Float](repeating: 0, count: cols)
        slice.widenRows(6, count: 1, into: &sliceRows)
        m.widenRows(70, count: 1, into: &stored)
        #expect(sliceRows == Array(stored.prefix(cols)))
    }

    /// The direct kernels (BF16 and Float32 activations, any row range,
    /// token counts around each four-token group) and oneDNN's matmul on the
    /// packed weights, against Double sums of the stored rows; products
    /// are exact, so only the Float32 summation order differs.
    @Test(.enabled(if: canRun, "needs AVX512-BF16"), arguments: [1, 3, 4, 5, 9, 70])
    func everyKernelComputesFromPackedWeightsWhatTheStoredRowsGive(_ tokens: Int) throws {
        let rows = 256, cols = 96
        let (m, raw) = Self.randomMatrix(rows: rows, cols: cols, seed: UInt64(tokens))
        defer { raw.deallocate() }
        let storage = UnsafeMutableRawPointer.allocate(byteCount: m.byteCount, alignment: 64)
        defer { storage.deallocate() }
        let p = m.packed(into: storage)
        let x = Self.activations(tokens: tokens, cols: cols, seed: 100 + UInt64(tokens))
        let ref = Self.reference(raw, rows: rows, cols: cols, x: x, tokens: tokens)
        let xb = x.map(narrowToBF16)

        var direct = [Float](repeating: .nan, count: tokens * rows)
        // Two ranges that cut blocks, covering every row once.
        for range in [0..<77, 77..<rows] {
            MatVec.computeBF16(p, rows: range, x: xb, ldx: cols, tokens: tokens, y: &direct, ldy: rows)
        }
        #expect(Self.worst(direct, ref) < 1e-5)
        var f32 = [Float](repeating: .nan, count: tokens * rows)
        MatVec.compute(p, rows: 0..<rows, x: x, ldx: cols, tokens: tokens, y: &f32, ldy: rows)
        #expect(Self.worst(f32, ref) < 1e-5)

        guard OneDNN.hasNativeBF16 else { return }
        for options in ComputeOptions.available {
            var y = [Float](repeating: .nan, count: tokens * rows)
            Linear.apply(p, x: x, tokens: tokens, y: &y, ctx: GemmContext(options: options))
            #expect(Self.worst(y, ref) < 1e-5, "\(options)")
        }
        #expect(OneDNN.failureCount == 0)
    }

    /// Packed weights are only worth it on oneDNN's BF16 kernel (brgemm);
    /// its reference implementation, which it picks for shapes the kernel
    /// does not take (an output stride wider than the slice), is ~50x
    /// slower. Every shape `Linear` asks for must get the kernel.
    @Test(.enabled(if: canRun && OneDNN.hasNativeBF16, "needs AVX512-BF16 and oneDNN"))
    func oneDNNMultipliesPackedWeightsWithItsBF16Kernel() throws {
        for (m, n, k) in [(1, 512, 1024), (4, 256, 1024), (8, 1024, 512), (64, 64, 256), (6, 512, 1024)] {
            let impl = OneDNN.implementation(m: m, n: n, k: k, bf16: true, packed: true)
            #expect(impl.hasPrefix("brg"), "\(m)x\(n)x\(k): \(impl)")
        }
    }

    @Test(.enabled(if: canRun, "needs AVX512-BF16"))
    func aModelPacksItsExpertsInBFloat16AndReadsThemAsStoredOtherwise() throws {
        guard OneDNN.hasNativeBF16 else { return }
        let bf16 = ComputeOptions(gemm: .onednn, dtype: .bfloat16)
        let prompt: [Int32] = (0..<40).map { Int32(($0 * 97 + 5) % 4096) }
        let stored = try Transformer(directory: Self.defaultModel)
        try stored.configure(compute: bf16, packingExperts: false)
        #expect(!stored.expertsArePacked)
        let model = try Transformer(directory: Self.defaultModel)
        try model.configure(compute: bf16, packingExperts: true)
        #expect(model.expertsArePacked)
        let experts = model.weights.routedExpertsByLayer.joined()
        #expect(experts.allSatisfy { $0.gate.layout == .packedBF16 && $0.up.layout == .packedBF16 && $0.down.layout == .packedBF16 })
        #expect(model.weights.routedExperts.bytes == stored.weights.routedExperts.bytes)

        // Same BF16 products summed in another order. A last-bit change can
        // move a later layer's BF16 rounding of its inputs, so the logits are
        // not Float32-close; they must stay well inside bfloat16 mode's own
        // error against the Float32 model (measured: 0.013 apart, both 0.168
        // from Float32), and be as close to Float32 as the stored layout's.
        let relative = { (x: [Float], y: [Float]) in zip(x, y).map { abs($0 - $1) / (1 + abs($1)) }.max() ?? 0 }
        let a = try Generator(model: model).allLogits(prompt).flatMap { $0 }
        let b = try Generator(model: stored).allLogits(prompt).flatMap { $0 }
        let exact = try Generator(model: Transformer(directory: Self.defaultModel)).allLogits(prompt).flatMap { $0 }
        let apart = relative(a, b), storedError = relative(b, exact), packedError = relative(a, exact)
        #expect(apart < storedError / 4, "packed vs stored \(apart); stored vs float32 \(storedError)")
        #expect(packedError < storedError * 1.1, "packed vs float32 \(packedError); stored vs float32 \(storedError)")
        #expect(try Generator(model: model).generate(prompt: prompt, maxTokens: 16).tokens
                == (try Generator(model: stored).generate(prompt: prompt, maxTokens: 16).tokens))

        // Float32 mode reads the stored experts again: bit for bit a model
        // that never packed.
        try model.configure(compute: .exact)
        #expect(!model.expertsArePacked)
        let fresh = try Transformer(directory: Self.defaultModel)
        #expect(try Generator(model: model).allLogits(prompt) == (try Generator(model: fresh).allLogits(prompt)))
    }
}
