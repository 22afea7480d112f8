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
        return 24
    }()

    /// Float32 elements widened per sgemm tile (per thread): large enough that
    /// sgemm runs at full speed, small enough to stay in L2 and to bound
    /// scratch memory.
    static let tileElements = 1 << 18

    /// OpenBLAS runs single-threaded inside our own fork-join threads. Two
    /// thread pools on the same cores (OpenBLAS's spinning workers and ours)
    /// were measured to slow a 16-token product down 30-fold.
    public static let blasConfigured: Bool = {
        openblas_set_num_threads(1)
        return true
    }()

    /// Computes `y[t * ldy + r] = Σ_c W[r, c] · x[t * ldx + c]` for all rows of `w`.
    public static func apply(_ w: Matrix, x: UnsafePointer<Float>, ldx: Int? = nil, tokens: Int,
                             y: UnsafeMutablePointer<Float>, ldy: Int? = nil, scratch: ScratchBuffer) {
        let ldx = ldx ?? w.cols
        let ldy = ldy ?? w.rows
        guard tokens > 0, w.rows > 0 else { return }
        _ = blasConfigured
        nonisolated(unsafe) let xs = x, ys = y
        if w.dtype == .f32 {
            // Split output rows across threads, single-threaded BLAS in each.
            let weights = w.data.assumingMemoryBound(to: Float.self)
            nonisolated(unsafe) let ws = weights
            let cols = w.cols
            Parallel.forRanges(w.rows, minChunk: max(16, minRowsPerThread(w) / max(1, tokens))) { r in
                sgemm(tokens: tokens, x: xs, ldx: ldx, weights: ws + r.lowerBound * cols, rows: r.count, cols: cols,
                      y: ys + r.lowerBound, ldy: ldy)
            }
            return
        }
        if tokens < gemmMinTokens {
            Parallel.forRanges(w.rows, minChunk: minRowsPerThread(w)) { range in
                MatVec.compute(w, rows: range, x: xs, ldx: ldx, tokens: tokens, y: ys, ldy: ldy)
            }
            return
        }
        applyWidenedGemm(w, x: x, ldx: ldx, tokens: tokens, y: y, ldy: ldy, scratch: scratch)
    }

    /// The many-token path for 16-bit weights: each thread widens tiles of
    /// its own rows into its own scratch and multiplies them with
    /// single-threaded sgemm.
    public static func applyWidenedGemm(_ w: Matrix, x: UnsafePointer<Float>, ldx: Int, tokens: Int,
                                        y: UnsafeMutablePointer<Float>, ldy: Int, scratch: ScratchBuffer) {
        _ = blasConfigured
        nonisolated(unsafe) let xs = x, ys = y
        let tileRows = max(1, min(w.rows, tileElements / max(1, w.cols)))
        let perPart = tileRows * w.cols
        let tiles = scratch.reserve(perPart * Parallel.threadCount)
        nonisolated(unsafe) let ts = tiles
        Parallel.forParts(w.rows, minChunk: max(8, tileRows / 4)) { part, range in
            let tile = ts + part * perPart
            var r0 = range.lowerBound
            while r0 < range.upperBound {
                let n = min(tileRows, range.upperBound - r0)
                let src = w.rows(r0..<(r0 + n))
                convertToFloat(src.data, dtype: src.dtype, count: n * src.cols, into: tile)
                sgemm(tokens: tokens, x: xs, ldx: ldx, weights: tile, rows: n, cols: w.cols, y: ys + r0, ldy: ldy)
                r0 += n
            }
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
