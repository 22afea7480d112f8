import CBLAS
import Foundation

/// `y = x · Wᵀ` for a batch of token rows, choosing the kernel by batch size:
/// few tokens read 16-bit weights directly (memory-bound, one pass over the
/// weights); many tokens widen the weights to Float32 tile by tile and call
/// OpenBLAS sgemm (compute-bound, where the widening is amortised).
public enum Linear {
    /// Token count from which 16-bit weights go through sgemm. Measured with
    /// `switchyard kernel-bench` (docs/performance.md); override with
    /// `SWITCHYARD_GEMM_MIN_TOKENS`.
    public static let gemmMinTokens: Int = {
        if let s = ProcessInfo.processInfo.environment["SWITCHYARD_GEMM_MIN_TOKENS"], let n = Int(s), n > 0 { return n }
        return 12
    }()

    /// Float32 elements widened per sgemm tile: large enough that sgemm runs at
    /// full speed, small enough to stay in L2/L3 and to bound scratch memory.
    static let tileElements = 1 << 20

    /// Computes `y[t * ldy + r] = Σ_c W[r, c] · x[t * ldx + c]` for all rows of `w`.
    public static func apply(_ w: Matrix, x: UnsafePointer<Float>, ldx: Int? = nil, tokens: Int,
                             y: UnsafeMutablePointer<Float>, ldy: Int? = nil, scratch: ScratchBuffer) {
        let ldx = ldx ?? w.cols
        let ldy = ldy ?? w.rows
        guard tokens > 0, w.rows > 0 else { return }
        if w.dtype == .f32 {
            sgemm(tokens: tokens, x: x, ldx: ldx, weights: w.data.assumingMemoryBound(to: Float.self),
                  rows: w.rows, cols: w.cols, y: y, ldy: ldy)
            return
        }
        if tokens < gemmMinTokens {
            nonisolated(unsafe) let xs = x, ys = y
            Parallel.forRanges(w.rows, minChunk: minRowsPerThread(w)) { range in
                MatVec.compute(w, rows: range, x: xs, ldx: ldx, tokens: tokens, y: ys, ldy: ldy)
            }
            return
        }
        let tileRows = max(1, min(w.rows, tileElements / max(1, w.cols)))
        let tile = scratch.reserve(tileRows * w.cols)
        var r0 = 0
        while r0 < w.rows {
            let n = min(tileRows, w.rows - r0)
            widen(w.rows(r0..<(r0 + n)), into: tile)
            sgemm(tokens: tokens, x: x, ldx: ldx, weights: tile, rows: n, cols: w.cols, y: y + r0, ldy: ldy)
            r0 += n
        }
    }

    /// Rows per thread such that each thread streams at least 64 KiB of
    /// weights: below that, waking a thread costs more than it saves.
    @inline(__always)
    static func minRowsPerThread(_ w: Matrix) -> Int {
        max(4, 65536 / max(1, w.cols * w.dtype.byteSize))
    }

    /// Several products of the same input (q, k and v projections) in one
    /// parallel pass over their concatenated rows, saving a fork-join per
    /// matrix when few tokens make each product short.
    public static func applyFused(_ outputs: [(w: Matrix, y: UnsafeMutablePointer<Float>)], x: UnsafePointer<Float>,
                                  tokens: Int, scratch: ScratchBuffer) {
        let allDirect = tokens < gemmMinTokens && outputs.allSatisfy { $0.w.dtype != .f32 && $0.w.cols == outputs[0].w.cols }
        guard allDirect, let first = outputs.first else {
            for o in outputs { apply(o.w, x: x, tokens: tokens, y: o.y, scratch: scratch) }
            return
        }
        let starts = outputs.reduce(into: [0]) { $0.append($0.last! + $1.w.rows) }
        let total = starts.last!
        nonisolated(unsafe) let xs = x
        let outs = outputs.map { (w: $0.w, y: UnsafeSendablePointer($0.y)) }
        Parallel.forRanges(total, minChunk: minRowsPerThread(first.w)) { range in
            for (i, o) in outs.enumerated() {
                let lo = max(range.lowerBound, starts[i]), hi = min(range.upperBound, starts[i + 1])
                if lo < hi {
                    MatVec.compute(o.w, rows: (lo - starts[i])..<(hi - starts[i]), x: xs, ldx: o.w.cols, tokens: tokens,
                                   y: o.y.pointer, ldy: o.w.rows)
                }
            }
        }
    }

    /// Widens a whole 16-bit matrix into `dst`, split across threads.
    public static func widen(_ w: Matrix, into dst: UnsafeMutablePointer<Float>) {
        nonisolated(unsafe) let d = dst
        let cols = w.cols
        Parallel.forRanges(w.rows, minChunk: max(1, 16384 / max(1, cols))) { range in
            convertToFloat(w.data + range.lowerBound * cols * w.dtype.byteSize, dtype: w.dtype,
                           count: range.count * cols, into: d + range.lowerBound * cols)
        }
    }

    @inline(__always)
    static func sgemm(tokens: Int, x: UnsafePointer<Float>, ldx: Int, weights: UnsafePointer<Float>,
                      rows: Int, cols: Int, y: UnsafeMutablePointer<Float>, ldy: Int) {
        if tokens == 1 {
            cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(rows), Int32(cols), 1, weights, Int32(cols),
                        x, 1, 0, y, 1)
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(tokens), Int32(rows), Int32(cols),
                        1, x, Int32(ldx), weights, Int32(cols), 0, y, Int32(ldy))
        }
    }
}

/// A pointer that may cross into the fork-join closures; the kernels
/// guarantee that threads write disjoint parts.
struct UnsafeSendablePointer: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Float>
    init(_ p: UnsafeMutablePointer<Float>) { pointer = p }
}
