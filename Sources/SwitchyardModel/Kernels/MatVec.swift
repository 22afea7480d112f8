import CKernels
import Foundation

/// Matrix times a few vectors, reading 16-bit weights directly: each weight
/// row is loaded once (from memory) and reused from L1 for every token, so
/// with few tokens the kernel runs at memory bandwidth instead of paying for
/// a Float32 copy of the weights. Accumulation order per (row, token) does
/// not depend on how many tokens or rows are in the call, so a token gets the
/// same bits alone or batched with others (as long as this kernel, not the
/// GEMM path, computes it).
enum MatVec {
    /// Whether this CPU has AVX512-BF16, for `computeBF16`.
    /// `SWITCHYARD_PORTABLE_MATVEC=1` turns it off (the Swift kernels run
    /// instead), for same-run before/after measurements.
    static let nativeBF16: Bool = sy_has_avx512_bf16() != 0
        && ProcessInfo.processInfo.environment["SWITCHYARD_PORTABLE_MATVEC"] != "1"

    /// Whether `computeBF16` takes `w` (BF16 or MXFP4 weights on an AVX512-BF16 CPU).
    @inline(__always)
    static func takesBF16Inputs(_ w: Matrix) -> Bool { nativeBF16 && (w.dtype == .bf16 || w.dtype == .mxfp4) }

    /// bfloat16 mode: the same product from BF16 activations, 32 exact
    /// products per `vdpbf16ps` (MXFP4 blocks decoded to BF16 in registers).
    /// Only where `takesBF16Inputs(w)`.
    static func computeBF16(_ w: Matrix, rows rowRange: Range<Int>, x: UnsafePointer<UInt16>, ldx: Int, tokens: Int,
                            y: UnsafeMutablePointer<Float>, ldy: Int) {
        if w.layout == .packedBF16 {
            sy_matvec_bf16_packed(w.data.assumingMemoryBound(to: UInt16.self), w.cols, rowRange.lowerBound,
                                  rowRange.upperBound, x, ldx, tokens, y, ldy)
            return
        }
        switch w.dtype {
        case .bf16:
            sy_matvec_bf16(w.data.assumingMemoryBound(to: UInt16.self), w.cols, rowRange.lowerBound, rowRange.upperBound,
                           w.cols, x, ldx, tokens, y, ldy)
        case .mxfp4:
            sy_matvec_mxfp4(w.data.assumingMemoryBound(to: UInt8.self), w.scales!.assumingMemoryBound(to: UInt8.self),
                            w.rowStride, rowRange.lowerBound, rowRange.upperBound, w.cols, x, ldx, tokens, y, ldy)
        default:
            preconditionFailure("computeBF16 takes BF16 or MXFP4 weights")
        }
    }

    /// Whether `gate` and `up` are the two interleaved halves of one MXFP4
    /// tensor (gpt-oss), so `computePairsBF16` can read them in one pass.
    @inline(__always)
    static func areInterleavedPair(_ gate: Matrix, _ up: Matrix) -> Bool {
        nativeBF16 && gate.dtype == .mxfp4 && up.dtype == .mxfp4 && gate.rowStride == 2 && up.rowStride == 2
            && gate.cols == up.cols && gate.rows == up.rows && up.data == gate.data + gate.cols / 2
            && up.scales == gate.scales.map { $0 + gate.cols / 32 }
    }

    /// `computeBF16` for both halves of an interleaved pair at once: rows
    /// `rowRange` of `gate` into `yGate`, of `up` into `yUp`, reading each
    /// gate row and its neighbouring up row together.
    static func computePairsBF16(gate: Matrix, rows rowRange: Range<Int>, x: UnsafePointer<UInt16>, ldx: Int, tokens: Int,
                                 yGate: UnsafeMutablePointer<Float>, yUp: UnsafeMutablePointer<Float>, ldy: Int) {
        sy_matvec_mxfp4_pairs(gate.data.assumingMemoryBound(to: UInt8.self), gate.scales!.assumingMemoryBound(to: UInt8.self),
                              rowRange.lowerBound, rowRange.upperBound, gate.cols, x, ldx, tokens, yGate, yUp, ldy)
    }

    /// For rows in `rowRange`: `y[t * ldy + r] = dot(W[r], x[t * ldx ..< t * ldx + cols])`.
    static func compute(_ w: Matrix, rows rowRange: Range<Int>,
                        x: UnsafePointer<Float>, ldx: Int, tokens: Int,
                        y: UnsafeMutablePointer<Float>, ldy: Int) {
        if w.layout == .packedBF16 {
            // Packing happens only on AVX512-BF16 CPUs (`ModelWeights.packingExperts`).
            sy_matvec_f32_packed(w.data.assumingMemoryBound(to: UInt16.self), w.cols, rowRange.lowerBound,
                                 rowRange.upperBound, x, ldx, tokens, y, ldy)
            return
        }
        switch w.dtype {
        case .bf16: kernel16(BF16Format.self, w, rows: rowRange, x: x, ldx: ldx, tokens: tokens, y: y, ldy: ldy)
        case .f16: kernel16(F16Format.self, w, rows: rowRange, x: x, ldx: ldx, tokens: tokens, y: y, ldy: ldy)
        case .f32: kernel32(w, rows: rowRange, x: x, ldx: ldx, tokens: tokens, y: y, ldy: ldy)
        case .mxfp4: MXFP4.matVec(w, rows: rowRange, x: x, ldx: ldx, tokens: tokens, y: y, ldy: ldy)
        case .u8: preconditionFailure("U8 tensors are MXFP4 parts, not matrices")
        }
    }

    /// Generic over the format (not closures) so each format gets its own
    /// fully inlined copy: an out-of-line widen per 8 weights costs ~3x.
    @inline(__always)
    private static func kernel16<F: HalfWidthFormat>(_ format: F.Type, _ w: Matrix, rows rowRange: Range<Int>,
                                                      x: UnsafePointer<Float>, ldx: Int, tokens: Int,
                                                      y: UnsafeMutablePointer<Float>, ldy: Int) {
        @inline(__always) func widen(_ v: SIMD8<UInt16>) -> SIMD8<Float> { F.widen(v) }
        @inline(__always) func scalarWiden(_ v: UInt16) -> Float { F.widen(v) }
        let k = w.cols
        let k16 = k & ~15
        let k8 = k & ~7
        let rowBytes = k * 2
        let xr = UnsafeRawPointer(x)
        // Rows are processed in blocks of ~64 KiB of weights: the block streams
        // from memory once and stays in L2 while every group of four tokens
        // (whose inputs stay in L1) passes over it.
        let rowBlock = max(4, 65536 / max(rowBytes, 1))
        var rb = rowRange.lowerBound
        while rb < rowRange.upperBound {
            let re = min(rb + rowBlock, rowRange.upperBound)
            var t = 0
            while t + 4 <= tokens {
                let x0 = xr + 4 * (t * ldx), x1 = x0 + 4 * ldx, x2 = x1 + 4 * ldx, x3 = x2 + 4 * ldx
                for r in rb..<re {
                    let wr = w.data + r * rowBytes
                    var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
                    var b0 = SIMD8<Float>(), b1 = SIMD8<Float>(), b2 = SIMD8<Float>(), b3 = SIMD8<Float>()
                    var c = 0
                    while c < k16 {
                        let wa = widen((wr + 2 * c).loadUnaligned(as: SIMD8<UInt16>.self))
                        let wb = widen((wr + 2 * c + 16).loadUnaligned(as: SIMD8<UInt16>.self))
                        a0.addProduct(wa, (x0 + 4 * c).loadUnaligned(as: SIMD8<Float>.self))
                        b0.addProduct(wb, (x0 + 4 * c + 32).loadUnaligned(as: SIMD8<Float>.self))
                        a1.addProduct(wa, (x1 + 4 * c).loadUnaligned(as: SIMD8<Float>.self))
                        b1.addProduct(wb, (x1 + 4 * c + 32).loadUnaligned(as: SIMD8<Float>.self))
                        a2.addProduct(wa, (x2 + 4 * c).loadUnaligned(as: SIMD8<Float>.self))
                        b2.addProduct(wb, (x2 + 4 * c + 32).loadUnaligned(as: SIMD8<Float>.self))
                        a3.addProduct(wa, (x3 + 4 * c).loadUnaligned(as: SIMD8<Float>.self))
                        b3.addProduct(wb, (x3 + 4 * c + 32).loadUnaligned(as: SIMD8<Float>.self))
                        c += 16
                    }
                    while c < k8 {
                        let wa = widen((wr + 2 * c).loadUnaligned(as: SIMD8<UInt16>.self))
                        a0.addProduct(wa, (x0 + 4 * c).loadUnaligned(as: SIMD8<Float>.self))
                        a1.addProduct(wa, (x1 + 4 * c).loadUnaligned(as: SIMD8<Float>.self))
                        a2.addProduct(wa, (x2 + 4 * c).loadUnaligned(as: SIMD8<Float>.self))
                        a3.addProduct(wa, (x3 + 4 * c).loadUnaligned(as: SIMD8<Float>.self))
                        c += 8
                    }
                    var s0 = (a0 + b0).sum(), s1 = (a1 + b1).sum(), s2 = (a2 + b2).sum(), s3 = (a3 + b3).sum()
                    while c < k {
                        let wv = scalarWiden((wr + 2 * c).loadUnaligned(as: UInt16.self))
                        s0 += wv * x[t * ldx + c]; s1 += wv * x[(t + 1) * ldx + c]
                        s2 += wv * x[(t + 2) * ldx + c]; s3 += wv * x[(t + 3) * ldx + c]
                        c += 1
                    }
                    y[t * ldy + r] = s0; y[(t + 1) * ldy + r] = s1
                    y[(t + 2) * ldy + r] = s2; y[(t + 3) * ldy + r] = s3
                }
                t += 4
            }
            while t < tokens {
                for r in rb..<re {
                    y[t * ldy + r] = dot16(F.self, w.data + r * rowBytes, x + t * ldx, k: k)
                }
                t += 1
            }
            rb = re
        }
    }

    /// Same accumulation order as the four-token path above (two interleaved
    /// accumulators over 16-wide steps), so a (row, token) gives the same bits
    /// whichever path computes it.
    @inline(__always)
    private static func dot16<F: HalfWidthFormat>(_ format: F.Type, _ wr: UnsafeRawPointer, _ x: UnsafePointer<Float>, k: Int) -> Float {
        @inline(__always) func widen(_ v: SIMD8<UInt16>) -> SIMD8<Float> { F.widen(v) }
        @inline(__always) func scalarWiden(_ v: UInt16) -> Float { F.widen(v) }
        let xr = UnsafeRawPointer(x)
        var a = SIMD8<Float>(), b = SIMD8<Float>()
        var c = 0
        while c + 16 <= k {
            a.addProduct(widen((wr + 2 * c).loadUnaligned(as: SIMD8<UInt16>.self)), (xr + 4 * c).loadUnaligned(as: SIMD8<Float>.self))
            b.addProduct(widen((wr + 2 * c + 16).loadUnaligned(as: SIMD8<UInt16>.self)), (xr + 4 * c + 32).loadUnaligned(as: SIMD8<Float>.self))
            c += 16
        }
        while c + 8 <= k {
            a.addProduct(widen((wr + 2 * c).loadUnaligned(as: SIMD8<UInt16>.self)), (xr + 4 * c).loadUnaligned(as: SIMD8<Float>.self))
            c += 8
        }
        var s = (a + b).sum()
        while c < k { s += scalarWiden((wr + 2 * c).loadUnaligned(as: UInt16.self)) * x[c]; c += 1 }
        return s
    }

    private static func kernel32(_ w: Matrix, rows rowRange: Range<Int>,
                                 x: UnsafePointer<Float>, ldx: Int, tokens: Int,
                                 y: UnsafeMutablePointer<Float>, ldy: Int) {
        let k = w.cols
        let xr = UnsafeRawPointer(x)
        for r in rowRange {
            let wr = w.data + r * k * 4
            for t in 0..<tokens {
                let xt = xr + 4 * t * ldx
                var a = SIMD8<Float>()
                var c = 0
                while c + 8 <= k {
                    a.addProduct((wr + 4 * c).loadUnaligned(as: SIMD8<Float>.self), (xt + 4 * c).loadUnaligned(as: SIMD8<Float>.self))
                    c += 8
                }
                var s = a.sum()
                while c < k { s += (wr + 4 * c).loadUnaligned(as: Float.self) * x[t * ldx + c]; c += 1 }
                y[t * ldy + r] = s
            }
        }
    }
}
