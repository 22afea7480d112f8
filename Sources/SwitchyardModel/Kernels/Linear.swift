import CBLAS
import Foundation

/// The activations of one product: always as Float32 (row stride `ld`), and
/// also as BF16 (row stride `ldBF16`) when the caller converted them already.
public struct GemmInput {
    public let f32: UnsafePointer<Float>
    public let ld: Int
    public var bf16: UnsafePointer<UInt16>?
    public var ldBF16: Int

    public init(f32: UnsafePointer<Float>, ld: Int, bf16: UnsafePointer<UInt16>? = nil, ldBF16: Int = 0) {
        self.f32 = f32
        self.ld = ld
        self.bf16 = bf16
        self.ldBF16 = ldBF16
    }
}

/// `y = x · Wᵀ` for a batch of token rows, choosing the kernel by batch size
/// and the model's `ComputeOptions`: few tokens read 16-bit weights directly
/// (memory-bound, one pass over the weights); many tokens go through the
/// GEMM backend, oneDNN (BF16 or Float32 matmul on the weights as stored) or
/// OpenBLAS (sgemm on weights widened tile by tile).
///
/// Every product runs on the kernel threads (`Parallel`), each thread
/// calling the library single-threaded on its own slice of output columns,
/// so one set of threads does all the work.
public enum Linear {
    /// Token count from which 16-bit weights go through the GEMM backend
    /// instead of the direct kernel, per backend and precision. Measured with
    /// `switchyard kernel-bench` (docs/performance.md); override with
    /// `SWITCHYARD_GEMM_MIN_TOKENS`.
    public static func gemmMinTokens(_ options: ComputeOptions, layout: MatrixLayout = .rowMajor) -> Int {
        if let n = minTokensOverride { return n }
        switch (options.gemm, options.dtype) {
        case (.openblas, _): return 24
        case (.onednn, .float32): return 48
        case (.onednn, .bfloat16): return layout == .packedBF16 ? packedMinTokens : 8
        }
    }

    /// `gemmMinTokens` for packed weights in bfloat16 mode. On packed
    /// weights the direct kernel runs 1.15-1.3x oneDNN at 4-8 tokens and
    /// level with it from 16, on every expert shape measured
    /// (tools/bench/packed_kernel_vs_onednn.c, docs/performance.md).
    static let packedMinTokens = 16

    private static let minTokensOverride: Int? = {
        if let s = ProcessInfo.processInfo.environment["SWITCHYARD_GEMM_MIN_TOKENS"], let n = Int(s), n > 0 { return n }
        return nil
    }()

    /// Row counts above this are split into a multiple of it plus a
    /// remainder, so oneDNN needs at most `bucket + maxTokens / bucket`
    /// primitives per weight shape (each is built once, ~0.1 ms, ~70 KB).
    static let rowBucket = 64

    /// OpenBLAS runs single-threaded inside our own fork-join threads. Two
    /// thread pools on the same cores (OpenBLAS's spinning workers and ours)
    /// were measured to slow a 16-token product down 30-fold.
    public static let blasConfigured: Bool = {
        openblas_set_num_threads(1)
        return true
    }()

    /// Computes `y[t * ldy + r] = Σ_c W[r, c] · x[t * ldx + c]` for all rows of `w`.
    public static func apply(_ w: Matrix, x: UnsafePointer<Float>, ldx: Int? = nil, tokens: Int,
                             y: UnsafeMutablePointer<Float>, ldy: Int? = nil, ctx: GemmContext) {
        let ldx = ldx ?? w.cols
        guard tokens > 0, w.rows > 0 else { return }
        if usesDirectKernel(w, tokens: tokens, ctx.options) {
            direct(w, x: x, ldx: ldx, tokens: tokens, y: y, ldy: ldy ?? w.rows, ctx: ctx)
            return
        }
        let input = prepare(x, ld: ldx, tokens: tokens, cols: w.cols, ctx: ctx)
        gemm(w, input: input, tokens: tokens, y: y, ldy: ldy ?? w.rows, ctx: ctx)
    }

    /// Whether `tokens` rows of `w` go through the direct 16-bit kernel.
    @inline(__always)
    static func usesDirectKernel(_ w: Matrix, tokens: Int, _ options: ComputeOptions) -> Bool {
        w.dtype != .f32 && tokens < gemmMinTokens(options, layout: w.layout)
    }

    /// `Parallel.forRanges` over the rows of `w`, cut only at multiples of
    /// its `rowAlignment`, so no packed block is read by two threads.
    @inline(__always)
    static func forRowRanges(_ w: Matrix, minChunk: Int, _ body: (Range<Int>) -> Void) {
        let unit = w.rowAlignment
        Parallel.forRanges((w.rows + unit - 1) / unit, minChunk: max(1, minChunk / unit)) { r in
            body((r.lowerBound * unit)..<min(w.rows, r.upperBound * unit))
        }
    }

    /// The q, k and v projections of one input: the input is converted
    /// once, and with few tokens one parallel pass covers all three
    /// matrices' rows, saving two fork-joins. Allocates nothing.
    public static func applyQKV(q: Matrix, _ yq: UnsafeMutablePointer<Float>, k: Matrix, _ yk: UnsafeMutablePointer<Float>,
                                v: Matrix, _ yv: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, tokens: Int,
                                ctx: GemmContext) {
        guard tokens > 0 else { return }
        let sameCols = k.cols == q.cols && v.cols == q.cols
        let allDirect = sameCols && usesDirectKernel(q, tokens: tokens, ctx.options)
            && usesDirectKernel(k, tokens: tokens, ctx.options) && usesDirectKernel(v, tokens: tokens, ctx.options)
        guard allDirect else {
            guard sameCols else {
                apply(q, x: x, tokens: tokens, y: yq, ctx: ctx)
                apply(k, x: x, tokens: tokens, y: yk, ctx: ctx)
                apply(v, x: x, tokens: tokens, y: yv, ctx: ctx)
                return
            }
            let input = prepare(x, ld: q.cols, tokens: tokens, cols: q.cols, ctx: ctx)
            gemm(q, input: input, tokens: tokens, y: yq, ldy: q.rows, ctx: ctx)
            gemm(k, input: input, tokens: tokens, y: yk, ldy: k.rows, ctx: ctx)
            gemm(v, input: input, tokens: tokens, y: yv, ldy: v.rows, ctx: ctx)
            return
        }
        let xs = roundedIfNeeded(x, ld: q.cols, tokens: tokens, cols: q.cols, ctx: ctx)
        let kStart = q.rows, vStart = q.rows + k.rows, total = vStart + v.rows
        nonisolated(unsafe) let oq = yq, ok = yk, ov = yv
        Parallel.forRanges(total, minChunk: minRowsPerThread(q)) { range in
            @inline(__always) func part(_ w: Matrix, _ y: UnsafeMutablePointer<Float>, _ start: Int) {
                let lo = max(range.lowerBound, start), hi = min(range.upperBound, start + w.rows)
                if lo < hi {
                    MatVec.compute(w, rows: (lo - start)..<(hi - start), x: xs.pointer, ldx: w.cols, tokens: tokens, y: y, ldy: w.rows)
                }
            }
            part(q, oq, 0)
            part(k, ok, kStart)
            part(v, ov, vStart)
        }
    }

    /// Token count below which `applyPerHead` runs 16-bit per-head weights
    /// through the direct kernel in one parallel pass: the matrices are small
    /// (MLA's are 128 KiB a head), so a GEMM call per head costs more in
    /// dispatch than its arithmetic.
    static let perHeadDirectMaxTokens = 32

    /// `y_h = x_h · W_hᵀ` for equally shaped matrices `ws`, head `h` reading
    /// rows of `x + h * xStride` (row stride `ldx`) and writing
    /// `y + h * yStride` (row stride `ldy`). With few tokens and 16-bit
    /// weights one parallel pass covers every head's rows (one fork-join
    /// instead of one per head); otherwise each head is one `apply`.
    public static func applyPerHead(_ ws: [Matrix], x: UnsafePointer<Float>, ldx: Int, xStride: Int, tokens: Int,
                                    y: UnsafeMutablePointer<Float>, ldy: Int, yStride: Int, ctx: GemmContext) {
        guard tokens > 0, let first = ws.first else { return }
        let direct = tokens < perHeadDirectMaxTokens && ws.allSatisfy { $0.dtype != .f32 }
        guard direct else {
            for (h, w) in ws.enumerated() {
                apply(w, x: x + h * xStride, ldx: ldx, tokens: tokens, y: y + h * yStride, ldy: ldy, ctx: ctx)
            }
            return
        }
        // Rounding or narrowing (bfloat16 mode) covers whole input rows, so
        // every head's slice keeps its offset and stride.
        let bf16 = ctx.options.dtype == .bfloat16 && ws.allSatisfy(MatVec.takesBF16Inputs)
        let xb = bf16 ? narrowedInput(x, ld: ldx, tokens: tokens, cols: ldx, ctx: ctx) : nil
        let xs = bf16 ? nil : roundedIfNeeded(x, ld: ldx, tokens: tokens, cols: ldx, ctx: ctx)
        nonisolated(unsafe) let ys = y
        Parallel.forRanges(ws.count * first.rows, minChunk: minRowsPerThread(first)) { range in
            Parallel.forEachSegment(range, segmentLength: first.rows, count: ws.count) { h, rows in
                if let xb {
                    MatVec.computeBF16(ws[h], rows: rows, x: xb.pointer + h * xStride, ldx: ldx, tokens: tokens,
                                       y: ys + h * yStride, ldy: ldy)
                } else if let xs {
                    MatVec.compute(ws[h], rows: rows, x: xs.pointer + h * xStride, ldx: ldx, tokens: tokens,
                                   y: ys + h * yStride, ldy: ldy)
                }
            }
        }
    }

    // MARK: - Direct kernel

    private static func direct(_ w: Matrix, x: UnsafePointer<Float>, ldx: Int, tokens: Int,
                               y: UnsafeMutablePointer<Float>, ldy: Int, ctx: GemmContext) {
        if ctx.options.dtype == .bfloat16 && MatVec.takesBF16Inputs(w) {
            let xb = narrowedInput(x, ld: ldx, tokens: tokens, cols: w.cols, ctx: ctx)
            nonisolated(unsafe) let ys = y
            forRowRanges(w, minChunk: minRowsPerThread(w)) { range in
                MatVec.computeBF16(w, rows: range, x: xb.pointer, ldx: w.cols, tokens: tokens, y: ys, ldy: ldy)
            }
            return
        }
        let xs = roundedIfNeeded(x, ld: ldx, tokens: tokens, cols: w.cols, ctx: ctx)
        let ld = ctx.options.dtype == .bfloat16 ? w.cols : ldx
        nonisolated(unsafe) let ys = y
        forRowRanges(w, minChunk: minRowsPerThread(w)) { range in
            MatVec.compute(w, rows: range, x: xs.pointer, ldx: ld, tokens: tokens, y: ys, ldy: ldy)
        }
    }

    /// In bfloat16 mode, the input rounded through BF16 (contiguous rows of
    /// `cols`), so the direct kernel multiplies what a BF16 GEMM would.
    /// `tokens` rows of `cols` activations as BF16 (round to nearest even,
    /// the values `roundedIfNeeded` gives), packed `[tokens, cols]`.
    static func narrowedInput(_ x: UnsafePointer<Float>, ld: Int, tokens: Int, cols: Int,
                              ctx: GemmContext) -> UnsafeSendableConstPointer<UInt16> {
        let b = ctx.inputs.reserve(tokens * cols * 2).assumingMemoryBound(to: UInt16.self)
        for t in 0..<tokens { narrowToBF16(x + t * ld, count: cols, into: b + t * cols) }
        return UnsafeSendableConstPointer(UnsafePointer(b))
    }

    private static func roundedIfNeeded(_ x: UnsafePointer<Float>, ld: Int, tokens: Int, cols: Int,
                                        ctx: GemmContext) -> UnsafeSendableConstPointer<Float> {
        guard ctx.options.dtype == .bfloat16 else { return UnsafeSendableConstPointer(x) }
        let r = ctx.rounded.reserve(tokens * cols)
        for t in 0..<tokens { roundThroughBF16(x + t * ld, count: cols, into: r + t * cols) }
        return UnsafeSendableConstPointer(UnsafePointer(r))
    }

    /// `tokens` rows of x rounded in place through BF16 (bfloat16 mode's
    /// inputs for callers that keep their own activations, e.g. the MoE block).
    public static func roundInPlace(_ x: UnsafeMutablePointer<Float>, count: Int) {
        roundThroughBF16(x, count: count, into: x)
    }

    // MARK: - GEMM

    /// Converts the input to BF16 once, in parallel, when the product will
    /// be a BF16 matmul.
    static func prepare(_ x: UnsafePointer<Float>, ld: Int, tokens: Int, cols: Int, ctx: GemmContext) -> GemmInput {
        var input = GemmInput(f32: x, ld: ld)
        guard ctx.options.gemm == .onednn, ctx.options.dtype == .bfloat16 else { return input }
        let b = ctx.inputs.reserve(tokens * cols * 2).assumingMemoryBound(to: UInt16.self)
        nonisolated(unsafe) let xs = x, bs = b
        Parallel.forRanges(tokens, minChunk: max(1, 16384 / max(cols, 1))) { r in
            for t in r { narrowToBF16(xs + t * ld, count: cols, into: bs + t * cols) }
        }
        input.bf16 = UnsafePointer(b)
        input.ldBF16 = cols
        return input
    }

    /// The GEMM path over all rows of `w`: each kernel thread takes a slice
    /// of output columns (weight rows), aligned to 16.
    static func gemm(_ w: Matrix, input: GemmInput, tokens: Int, y: UnsafeMutablePointer<Float>, ldy: Int,
                     ctx: GemmContext) {
        _ = blasConfigured
        let options = ctx.options
        let parts = max(1, min(Parallel.threadCount, w.rows / 64))
        let scratch = ctx.reservePerThread(threads: parts, inputElements: 0)
        nonisolated(unsafe) let ys = y, tiles = scratch.tiles
        let input = input
        let align = max(16, w.rowAlignment)
        Parallel.forParts(parts, minChunk: 1) { part, _ in
            let lo = (w.rows * part / parts + align - 1) / align * align
            let hi = part == parts - 1 ? w.rows : (w.rows * (part + 1) / parts + align - 1) / align * align
            guard lo < min(hi, w.rows) else { return }
            gemmRows(w, rows: lo..<min(hi, w.rows), input: input, tokens: tokens, y: ys, ldy: ldy, options: options,
                     tile: tiles + part * GemmContext.tileBytes, convertedInput: nil)
        }
    }

    /// `y[t, r] = W[r] · x[t]` for `rows` of `w`, on the calling thread, by
    /// the direct kernel or the GEMM backend. The single-threaded product
    /// that executors run on threads they manage themselves (pinned pools).
    /// `scratch` is this thread's (`GemmContext.reserveThreadScratch`).
    public static func product(_ w: Matrix, rows: Range<Int>, input: GemmInput, tokens: Int, y: UnsafeMutablePointer<Float>,
                               ldy: Int, options: ComputeOptions, scratch: ThreadScratch) {
        if usesDirectKernel(w, tokens: tokens, options) {
            let rounded = scratch.rounded
            if options.dtype == .bfloat16 && MatVec.takesBF16Inputs(w) {
                // The kernel the default executor uses, so every executor
                // computes the same sums.
                if let xb = input.bf16 {
                    MatVec.computeBF16(w, rows: rows, x: xb, ldx: input.ldBF16, tokens: tokens, y: y, ldy: ldy)
                } else {
                    rounded.withMemoryRebound(to: UInt16.self, capacity: tokens * w.cols) { xb in
                        for t in 0..<tokens { narrowToBF16(input.f32 + t * input.ld, count: w.cols, into: xb + t * w.cols) }
                        MatVec.computeBF16(w, rows: rows, x: xb, ldx: w.cols, tokens: tokens, y: y, ldy: ldy)
                    }
                }
            } else if options.dtype == .bfloat16 {
                for t in 0..<tokens { roundThroughBF16(input.f32 + t * input.ld, count: w.cols, into: rounded + t * w.cols) }
                MatVec.compute(w, rows: rows, x: rounded, ldx: w.cols, tokens: tokens, y: y, ldy: ldy)
            } else {
                MatVec.compute(w, rows: rows, x: input.f32, ldx: input.ld, tokens: tokens, y: y, ldy: ldy)
            }
            return
        }
        gemmRows(w, rows: rows, input: input, tokens: tokens, y: y, ldy: ldy, options: options, tile: scratch.tile,
                 convertedInput: scratch.input)
    }

    /// One thread's GEMM over `rows` of `w`.
    static func gemmRows(_ w: Matrix, rows: Range<Int>, input: GemmInput, tokens: Int, y: UnsafeMutablePointer<Float>,
                         ldy: Int, options: ComputeOptions, tile: UnsafeMutableRawPointer,
                         convertedInput: UnsafeMutablePointer<UInt16>?) {
        let k = w.cols
        if options.gemm == .onednn {
            let bf16 = options.dtype == .bfloat16
            if bf16 {
                var src = input.bf16, lds = input.ldBF16
                if src == nil, let c = convertedInput {
                    for t in 0..<tokens { narrowToBF16(input.f32 + t * input.ld, count: k, into: c + t * k) }
                    src = UnsafePointer(c)
                    lds = k
                }
                if let src, oneDNNRows(w, rows: rows, src: UnsafeRawPointer(src), lds: lds, tokens: tokens, y: y, ldy: ldy,
                                       bf16: true, tile: tile) {
                    return
                }
            } else if oneDNNRows(w, rows: rows, src: UnsafeRawPointer(input.f32), lds: input.ld, tokens: tokens, y: y,
                                 ldy: ldy, bf16: false, tile: tile) {
                return
            }
            // oneDNN could not build this product (reported once): OpenBLAS, in Float32.
        }
        blasRows(w, rows: rows, x: input.f32, ldx: input.ld, tokens: tokens, y: y, ldy: ldy,
                 tile: tile.assumingMemoryBound(to: Float.self))
    }

    /// oneDNN over `rows` of `w`, straight from the weights when they are
    /// already in the product's type (packed ones through `packedRows`),
    /// else through converted tiles.
    private static func oneDNNRows(_ w: Matrix, rows: Range<Int>, src: UnsafeRawPointer, lds: Int, tokens: Int,
                                   y: UnsafeMutablePointer<Float>, ldy: Int, bf16: Bool, tile: UnsafeMutableRawPointer) -> Bool {
        let k = w.cols
        if bf16 && w.layout == .packedBF16 {
            return packedRows(w, rows: rows, src: src, lds: lds, tokens: tokens, y: y, ldy: ldy)
        }
        if (bf16 && w.dtype == .bf16 && w.layout == .rowMajor) || (!bf16 && w.dtype == .f32) {
            let wr = w.data + rows.lowerBound * k * w.dtype.byteSize
            return matmulBucketed(m: tokens, n: rows.count, k: k, src: src, lds: lds, wei: wr, ldw: k,
                                  dst: y + rows.lowerBound, ldd: ldy, bf16: bf16)
        }
        let elementBytes = bf16 ? 2 : 4
        // Convert a whole tile's worth of rows, in multiples of 16.
        let tileRows = max(16, (GemmContext.tileBytes / 2 / (k * elementBytes)) / 16 * 16)
        let conversionScratch = (tile + GemmContext.tileBytes / 2).assumingMemoryBound(to: Float.self)
        var r0 = rows.lowerBound
        while r0 < rows.upperBound {
            let n = min(tileRows, rows.upperBound - r0)
            if bf16 {
                w.narrowRows(r0, count: n, into: tile.assumingMemoryBound(to: UInt16.self),
                             scratch: conversionScratch, scratchCount: GemmContext.tileBytes / 8)
            } else {
                w.widenRows(r0, count: n, into: tile.assumingMemoryBound(to: Float.self))
            }
            guard matmulBucketed(m: tokens, n: n, k: k, src: src, lds: lds, wei: UnsafeRawPointer(tile), ldw: k,
                                 dst: y + r0, ldd: ldy, bf16: bf16) else { return false }
            r0 += n
        }
        return true
    }

    /// `rows` of packed weights. oneDNN's BF16 kernel (brgemm)
    /// takes blocked weights only with a dense output: given the output row
    /// stride of a slice it falls back to its reference implementation,
    /// ~50x slower, and through a dense scratch tile it ran 0.67-0.80x the
    /// direct kernel at 16-256 tokens (kernel-bench). So oneDNN gets whole
    /// matrices (the forward's many-expert layers give each thread whole
    /// experts) and a slice, a thread's share of the rows, takes the direct
    /// kernel, which also takes ranges that cut a block.
    private static func packedRows(_ w: Matrix, rows: Range<Int>, src: UnsafeRawPointer, lds: Int, tokens: Int,
                                   y: UnsafeMutablePointer<Float>, ldy: Int) -> Bool {
        guard rows.count == ldy, rows.lowerBound % 64 == 0 else {
            MatVec.computeBF16(w, rows: rows, x: src.assumingMemoryBound(to: UInt16.self), ldx: lds, tokens: tokens,
                               y: y, ldy: ldy)
            return true
        }
        return matmulBucketed(m: tokens, n: rows.count, k: w.cols, src: src, lds: lds, wei: w.data + rows.lowerBound * w.cols * 2,
                              ldw: w.cols, dst: y + rows.lowerBound, ldd: ldy, bf16: true, packed: true)
    }

    /// One matmul, as at most two cached primitives: a multiple of
    /// `rowBucket` rows and the remainder.
    @inline(__always)
    private static func matmulBucketed(m: Int, n: Int, k: Int, src: UnsafeRawPointer, lds: Int, wei: UnsafeRawPointer,
                                       ldw: Int, dst: UnsafeMutablePointer<Float>, ldd: Int, bf16: Bool,
                                       packed: Bool = false) -> Bool {
        let full = m > rowBucket ? m / rowBucket * rowBucket : m
        let elementBytes = bf16 ? 2 : 4
        guard OneDNN.matmul(m: full, n: n, k: k, src: src, lds: lds, wei: wei, ldw: ldw, dst: dst, ldd: ldd, bf16: bf16,
                            packed: packed) else {
            return false
        }
        if full < m {
            return OneDNN.matmul(m: m - full, n: n, k: k, src: src + full * lds * elementBytes, lds: lds, wei: wei, ldw: ldw,
                                 dst: dst + full * ldd, ldd: ldd, bf16: bf16, packed: packed)
        }
        return true
    }

    /// OpenBLAS over `rows` of `w`: sgemm straight on Float32 weights, on
    /// widened tiles otherwise.
    static func blasRows(_ w: Matrix, rows: Range<Int>, x: UnsafePointer<Float>, ldx: Int, tokens: Int,
                         y: UnsafeMutablePointer<Float>, ldy: Int, tile: UnsafeMutablePointer<Float>) {
        _ = blasConfigured
        let k = w.cols
        if w.dtype == .f32 {
            let base = w.data.assumingMemoryBound(to: Float.self) + rows.lowerBound * k
            sgemm(tokens: tokens, x: x, ldx: ldx, weights: base, rows: rows.count, cols: k, y: y + rows.lowerBound, ldy: ldy)
            return
        }
        let tileRows = max(1, GemmContext.tileBytes / 4 / k)
        var r0 = rows.lowerBound
        while r0 < rows.upperBound {
            let n = min(tileRows, rows.upperBound - r0)
            w.widenRows(r0, count: n, into: tile)
            sgemm(tokens: tokens, x: x, ldx: ldx, weights: tile, rows: n, cols: k, y: y + r0, ldy: ldy)
            r0 += n
        }
    }

    /// Rows per thread such that each thread streams at least 64 KiB of
    /// weights: below that, waking a thread costs more than it saves.
    @inline(__always)
    static func minRowsPerThread(_ w: Matrix) -> Int {
        max(4, 65536 / max(1, w.rowBytes))
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

/// A read-only pointer that may cross into the fork-join closures.
struct UnsafeSendableConstPointer<Element>: @unchecked Sendable {
    let pointer: UnsafePointer<Element>
    init(_ p: UnsafePointer<Element>) { pointer = p }
}
