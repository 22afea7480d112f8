import Foundation
import Testing
@testable import SwitchyardModel

/// MXFP4 weights decode exactly as the OCP format says, and the AVX512-BF16
/// kernels give the products of the portable kernels on the same values.
@Suite struct MXFP4KernelTests {
    /// One row of 32 values: byte 0 is 0x2F (low nibble 0xF = −6 for element
    /// 0, high nibble 0x2 = 1.0 for element 1), byte 1 is 0x90 (0 then −0.5),
    /// the rest 0x71 (0.5 then 6); scale byte 128 doubles every value.
    @Test func dequantizesNibblesLowFirstWithTheE8M0Scale() {
        var blocks = [UInt8](repeating: 0x71, count: 16)
        blocks[0] = 0x2F
        blocks[1] = 0x90
        let scales: [UInt8] = [128]
        var out = [Float](repeating: .nan, count: 32)
        blocks.withUnsafeBytes { b in
            scales.withUnsafeBytes { s in
                let m = Matrix(rows: 1, cols: 32, dtype: .mxfp4, data: b.baseAddress!, scales: s.baseAddress!)
                #expect(m.byteCount == 17)
                out.withUnsafeMutableBufferPointer { MXFP4.dequantizeRow(m, 0, into: $0.baseAddress!) }
            }
        }
        #expect(Array(out.prefix(4)) == [-12, 2, 0, -1])
        #expect(Array(out.suffix(2)) == [1, 12])
    }

    func randomMXFP4(rows: Int, cols: Int, seed: UInt64) -> (blocks: [UInt8], scales: [UInt8]) {
        var rng = Xoshiro256(seed: seed)
        let blocks = (0..<(rows * cols / 2)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let scales = (0..<(rows * cols / 32)).map { _ in UInt8(120 + rng.next() % 8) }
        return (blocks, scales)
    }

    func bf16Inputs(tokens: Int, cols: Int, seed: UInt64) -> (bits: [UInt16], floats: [Float]) {
        var rng = Xoshiro256(seed: seed)
        let bits = (0..<(tokens * cols)).map { _ in narrowToBF16(rng.nextUnitFloat() * 2 - 1) }
        return (bits, bits.map(widenBF16))
    }

    /// `m` times every input row through the AVX512-BF16 kernel (BF16
    /// inputs) and the portable one (the same values as Float32).
    func bothKernels(_ m: Matrix, _ x: (bits: [UInt16], floats: [Float]), tokens: Int) -> (fast: [Float], slow: [Float]) {
        var fast = [Float](repeating: 0, count: tokens * m.rows), slow = fast
        x.bits.withUnsafeBufferPointer { xb in
            fast.withUnsafeMutableBufferPointer {
                MatVec.computeBF16(m, rows: 0..<m.rows, x: xb.baseAddress!, ldx: m.cols, tokens: tokens, y: $0.baseAddress!, ldy: m.rows)
            }
        }
        x.floats.withUnsafeBufferPointer { xf in
            slow.withUnsafeMutableBufferPointer {
                MatVec.compute(m, rows: 0..<m.rows, x: xf.baseAddress!, ldx: m.cols, tokens: tokens, y: $0.baseAddress!, ldy: m.rows)
            }
        }
        return (fast, slow)
    }

    func close(_ a: [Float], _ b: [Float]) -> Float {
        zip(a, b).map { abs($0 - $1) / (1e-3 + abs($1)) }.max() ?? 0
    }

    /// Columns cover the kernel's layouts: blocks decoded one at a time only
    /// (96 = 3 blocks), whole four-block quads (512), an odd number of quads
    /// plus leftover blocks (416 = 3 quads + 1, 2880 = gpt-oss's hidden size,
    /// 22 quads + 2).
    @Test(.enabled(if: MatVec.nativeBF16, "no AVX512-BF16 on this CPU"),
          arguments: [(1, 96), (3, 416), (4, 512), (6, 416), (9, 2880), (1, 2880)])
    func avx512MXFP4KernelMatchesTheRowKernel(tokens: Int, cols: Int) {
        let rows = 24
        let w = randomMXFP4(rows: 2 * rows, cols: cols, seed: 3)
        let x = bf16Inputs(tokens: tokens, cols: cols, seed: 4)
        var fast = [Float](repeating: 0, count: tokens * rows), slow = fast
        w.blocks.withUnsafeBytes { b in
            w.scales.withUnsafeBytes { s in
                // Every other stored row, as gpt-oss's interleaved gate/up rows.
                let m = Matrix(rows: 2 * rows, cols: cols, dtype: .mxfp4, data: b.baseAddress!, scales: s.baseAddress!)
                    .interleavedRows(phase: 1)
                (fast, slow) = bothKernels(m, x, tokens: tokens)
            }
        }
        // The two kernels sum in different orders (Float32 rounding grows with the
        // row length); a misplaced weight or scale would be off by O(1).
        #expect(close(fast, slow) < 1e-5 * Float(max(1, cols / 512)), "tokens \(tokens), cols \(cols)")
        #expect(slow.contains { $0 != 0 })
    }

    @Test(.enabled(if: MatVec.nativeBF16, "no AVX512-BF16 on this CPU"), arguments: [(1, 100), (4, 64), (7, 129)])
    func avx512BF16KernelMatchesTheSIMDKernel(tokens: Int, cols: Int) {
        let rows = 20
        var rng = Xoshiro256(seed: 9)
        let w = (0..<(rows * cols)).map { _ in narrowToBF16(rng.nextUnitFloat() - 0.5) }
        let x = bf16Inputs(tokens: tokens, cols: cols, seed: 10)
        var fast = [Float](repeating: 0, count: tokens * rows), slow = fast
        w.withUnsafeBytes { wb in
            let m = Matrix(rows: rows, cols: cols, dtype: .bf16, data: wb.baseAddress!)
            (fast, slow) = bothKernels(m, x, tokens: tokens)
        }
        #expect(close(fast, slow) < 1e-5)
    }
}

extension MXFP4KernelTests {
    /// The engine batches decodes; a token must get the same bits whether
    /// the kernel sees it alone or in a group of four.
    @Test(.enabled(if: MatVec.nativeBF16, "no AVX512-BF16 on this CPU"))
    func avx512KernelsGiveATokenTheSameBitsAloneAndBatched() {
        let rows = 8, cols = 416
        var rng = Xoshiro256(seed: 11)
        let w16 = (0..<(rows * cols)).map { _ in narrowToBF16(rng.nextUnitFloat() - 0.5) }
        let mx = randomMXFP4(rows: rows, cols: cols, seed: 12)
        let x = bf16Inputs(tokens: 5, cols: cols, seed: 13)
        w16.withUnsafeBytes { wb in
            mx.blocks.withUnsafeBytes { b in
                mx.scales.withUnsafeBytes { s in
                    for m in [Matrix(rows: rows, cols: cols, dtype: .bf16, data: wb.baseAddress!),
                              Matrix(rows: rows, cols: cols, dtype: .mxfp4, data: b.baseAddress!, scales: s.baseAddress!)] {
                        var batched = [Float](repeating: 0, count: 5 * rows)
                        x.bits.withUnsafeBufferPointer { xb in
                            batched.withUnsafeMutableBufferPointer {
                                MatVec.computeBF16(m, rows: 0..<rows, x: xb.baseAddress!, ldx: cols, tokens: 5, y: $0.baseAddress!, ldy: rows)
                            }
                            for t in 0..<5 {
                                var alone = [Float](repeating: 0, count: rows)
                                alone.withUnsafeMutableBufferPointer {
                                    MatVec.computeBF16(m, rows: 0..<rows, x: xb.baseAddress! + t * cols, ldx: cols, tokens: 1,
                                                       y: $0.baseAddress!, ldy: rows)
                                }
                                #expect(alone == Array(batched[(t * rows)..<((t + 1) * rows)]), "\(m.dtype) token \(t)")
                            }
                        }
                    }
                }
            }
        }
    }
}

extension MXFP4KernelTests {
    /// gpt-oss's gate and up rows alternate in one tensor; the paired kernel
    /// reads both in one pass and must give each half's own products.
    @Test(.enabled(if: MatVec.nativeBF16, "no AVX512-BF16 on this CPU"), arguments: [1, 5])
    func pairedGateUpKernelEqualsEachHalfAlone(tokens: Int) {
        let pairs = 12, cols = 416
        let w = randomMXFP4(rows: 2 * pairs, cols: cols, seed: 21)
        let x = bf16Inputs(tokens: tokens, cols: cols, seed: 22)
        w.blocks.withUnsafeBytes { b in
            w.scales.withUnsafeBytes { s in
                let fused = Matrix(rows: 2 * pairs, cols: cols, dtype: .mxfp4, data: b.baseAddress!, scales: s.baseAddress!)
                let gate = fused.interleavedRows(phase: 0), up = fused.interleavedRows(phase: 1)
                #expect(MatVec.areInterleavedPair(gate, up) && !MatVec.areInterleavedPair(up, gate))
                var g = [Float](repeating: 0, count: tokens * pairs), u = g, gAlone = g, uAlone = g
                x.bits.withUnsafeBufferPointer { xb in
                    g.withUnsafeMutableBufferPointer { gp in
                        u.withUnsafeMutableBufferPointer { up_ in
                            MatVec.computePairsBF16(gate: gate, rows: 2..<pairs, x: xb.baseAddress!, ldx: cols, tokens: tokens,
                                                    yGate: gp.baseAddress!, yUp: up_.baseAddress!, ldy: pairs)
                        }
                    }
                    gAlone.withUnsafeMutableBufferPointer {
                        MatVec.computeBF16(gate, rows: 2..<pairs, x: xb.baseAddress!, ldx: cols, tokens: tokens, y: $0.baseAddress!, ldy: pairs)
                    }
                    uAlone.withUnsafeMutableBufferPointer {
                        MatVec.computeBF16(up, rows: 2..<pairs, x: xb.baseAddress!, ldx: cols, tokens: tokens, y: $0.baseAddress!, ldy: pairs)
                    }
                }
                #expect(g == gAlone && u == uAlone)
                #expect(g.contains { $0 != 0 })
            }
        }
    }
}

extension MXFP4KernelTests {
    /// The GEMM path's weight tiles: the vector decoder gives exactly the
    /// row-by-row reference, in Float32 and in BF16.
    @Test(.enabled(if: MatVec.nativeBF16, "no AVX512-BF16 on this CPU"))
    func vectorTileDecodeEqualsTheReferenceDecode() {
        let rows = 10, cols = 96
        let w = randomMXFP4(rows: 2 * rows, cols: cols, seed: 31)
        w.blocks.withUnsafeBytes { b in
            w.scales.withUnsafeBytes { s in
                let m = Matrix(rows: 2 * rows, cols: cols, dtype: .mxfp4, data: b.baseAddress!, scales: s.baseAddress!)
                    .interleavedRows(phase: 1)
                var reference = [Float](repeating: 0, count: (rows - 3) * cols)
                reference.withUnsafeMutableBufferPointer { r in
                    for i in 0..<(rows - 3) { MXFP4.dequantizeRow(m, 3 + i, into: r.baseAddress! + i * cols) }
                }
                var f32 = [Float](repeating: .nan, count: (rows - 3) * cols)
                f32.withUnsafeMutableBufferPointer { MXFP4.dequantizeRows(m, 3, count: rows - 3, into: $0.baseAddress!) }
                #expect(f32 == reference)
                var bf16 = [UInt16](repeating: 0, count: (rows - 3) * cols)
                var scratch = [Float](repeating: 0, count: cols)
                bf16.withUnsafeMutableBufferPointer { d in
                    scratch.withUnsafeMutableBufferPointer {
                        MXFP4.dequantizeRowsToBF16(m, 3, count: rows - 3, into: d.baseAddress!, scratch: $0.baseAddress!)
                    }
                }
                #expect(bf16.map(widenBF16) == reference)
            }
        }
    }
}
