import CKernels
import Foundation

/// MXFP4 (OCP microscaling FP4), as gpt-oss's published checkpoints store
/// expert weights: per row, `cols / 32` blocks of 16 bytes, each byte two
/// E2M1 codes (low nibble first: element `2i` is `byte & 0xF`, `2i+1` is
/// `byte >> 4`), and one E8M0 scale byte per block (value `2^(s − 127)`).
/// A code is a sign bit over `{0, 0.5, 1, 1.5, 2, 3, 4, 6}`. Every value is
/// exact in BF16 and Float32, so dequantising loses nothing; it happens a
/// row or a tile at a time inside the kernels, never for a whole matrix.
enum MXFP4 {
    static let values: [Float] = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6]

    /// The E8M0 scale `2^(s − 127)` (the NaN code 255 is not used by checkpoints).
    @inline(__always)
    static func scale(_ s: UInt8) -> Float { Float(sign: .plus, exponent: Int(s) - 127, significand: 1) }

    /// Row `r` of `w` as `w.cols` Float32 values.
    @inline(__always)
    static func dequantizeRow(_ w: Matrix, _ r: Int, into dst: UnsafeMutablePointer<Float>) {
        let blocks = w.cols / 32
        let stored = r * w.rowStride
        let src = (w.data + stored * (w.cols / 2)).assumingMemoryBound(to: UInt8.self)
        let scales = (w.scales! + stored * blocks).assumingMemoryBound(to: UInt8.self)
        values.withUnsafeBufferPointer { lut in
            for g in 0..<blocks {
                let s = scale(scales[g])
                let bytes = src + 16 * g, out = dst + 32 * g
                for i in 0..<16 {
                    let b = Int(bytes[i])
                    out[2 * i] = lut[b & 15] * s
                    out[2 * i + 1] = lut[b >> 4] * s
                }
            }
        }
    }

    /// Rows `r0 ..< r0 + count` as Float32, `[count, cols]` (GEMM weight
    /// tiles): decoded in registers where the CPU has AVX512-BF16.
    static func dequantizeRows(_ w: Matrix, _ r0: Int, count: Int, into dst: UnsafeMutablePointer<Float>) {
        if MatVec.nativeBF16 {
            sy_mxfp4_rows_to_f32(w.data.assumingMemoryBound(to: UInt8.self), w.scales!.assumingMemoryBound(to: UInt8.self),
                                 w.rowStride, r0, count, w.cols, dst)
        } else {
            for i in 0..<count { dequantizeRow(w, r0 + i, into: dst + i * w.cols) }
        }
    }

    /// The same as BF16 (exact); `scratch` holds one Float32 row on the portable path.
    static func dequantizeRowsToBF16(_ w: Matrix, _ r0: Int, count: Int, into dst: UnsafeMutablePointer<UInt16>,
                                     scratch: UnsafeMutablePointer<Float>) {
        if MatVec.nativeBF16 {
            sy_mxfp4_rows_to_bf16(w.data.assumingMemoryBound(to: UInt8.self), w.scales!.assumingMemoryBound(to: UInt8.self),
                                  w.rowStride, r0, count, w.cols, dst)
        } else {
            for i in 0..<count {
                dequantizeRow(w, r0 + i, into: scratch)
                narrowToBF16(scratch, count: w.cols, into: dst + i * w.cols)
            }
        }
    }

    /// `MatVec` for MXFP4: each row is dequantised once into a stack buffer
    /// and reused for every token.
    static func matVec(_ w: Matrix, rows rowRange: Range<Int>, x: UnsafePointer<Float>, ldx: Int, tokens: Int,
                       y: UnsafeMutablePointer<Float>, ldy: Int) {
        let k = w.cols
        withUnsafeTemporaryAllocation(of: Float.self, capacity: k) { buffer in
            let row = buffer.baseAddress!
            for r in rowRange {
                dequantizeRow(w, r, into: row)
                for t in 0..<tokens { y[t * ldy + r] = Elementwise.dot(row, x + t * ldx, n: k) }
            }
        }
    }
}
