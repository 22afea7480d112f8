import CBLAS
import CKernels
import Foundation

/// Causal grouped-query attention over a paged KV cache, for a ragged batch.
/// Each token attends to its own sequence's positions `0...p`, read through
/// that sequence's block table.
enum PagedAttention {
    /// Writes the batch's new keys and values (`[T, kvHeads * headDim]`) into
    /// their cache slots (only the keys where the cache has no values).
    /// With `roundingToBF16` (bfloat16 mode) they are stored rounded to
    /// BF16 values, so every later product reads the same BF16 keys and
    /// values whichever path computes it; a BF16 cache stores them as BF16.
    static func store(cache: PagedKVCache, layer: Int, batch: ForwardBatch,
                      k: UnsafePointer<Float>, v: UnsafePointer<Float>, roundingToBF16: Bool = false) {
        let d = cache.headDim, bs = cache.blockSize, kvh = cache.numKVHeads
        let rowSize = kvh * d
        for seq in batch.sequences {
            for i in 0..<seq.tokenCount {
                let pos = seq.startPosition + i
                let block = Int(seq.blockTable[pos / bs])
                let slot = pos % bs
                let row = seq.tokenStart + i
                for h in 0..<kvh {
                    let dst = cache.offset(layer: layer, block: block, head: h) + slot * d
                    if cache.storesBF16 {
                        narrowToBF16(k + row * rowSize + h * d, count: d, into: cache.keys16 + dst)
                        narrowToBF16(v + row * rowSize + h * d, count: d, into: cache.values16 + dst)
                    } else if roundingToBF16 {
                        roundThroughBF16(k + row * rowSize + h * d, count: d, into: cache.keys + dst)
                        if cache.storesValues { roundThroughBF16(v + row * rowSize + h * d, count: d, into: cache.values + dst) }
                    } else {
                        (cache.keys + dst).update(from: k + row * rowSize + h * d, count: d)
                        if cache.storesValues { (cache.values + dst).update(from: v + row * rowSize + h * d, count: d) }
                    }
                }
            }
        }
    }

    /// Sequences with at least this many new tokens (prefill chunks) go
    /// through the GEMM path; decodes and short chunks use the per-token path.
    static let gemmMinTokens = 32
    /// Query tokens per GEMM block, bounding the score matrix.
    static let queryBlock = 128

    /// The batch laid out flat for the attention tasks, so a task reads
    /// pointers, never a sequence's arrays (no reference counting across
    /// threads): per token its sequence and position, per sequence where
    /// its block table starts in `tables`.
    struct BatchIndex: @unchecked Sendable {
        let tokenSequence: UnsafePointer<Int32>
        let tokenPosition: UnsafePointer<Int32>
        let tables: UnsafePointer<Int32>
        let tableStart: UnsafePointer<Int32>

        @inline(__always) func table(_ sequence: Int) -> UnsafePointer<Int32> { tables + Int(tableStart[sequence]) }
    }

    /// What one layer's attention computes beyond the cache's shape.
    struct Shape: @unchecked Sendable {
        var numHeads: Int
        /// Output floats per head: the cache's head dim, or for latent
        /// attention the latent's width (its values are the first
        /// `valueDim` floats of each cached row).
        var valueDim: Int
        var scale: Float
        /// Sliding window: a query at position p sees keys p-window+1 ... p
        /// (0: every earlier key).
        var window = 0
        /// gpt-oss: one extra logit per query head in every softmax.
        var sinks: UnsafePointer<Float>?
        /// bfloat16 mode: queries and attention weights enter the products
        /// rounded to BF16, as keys and values are when stored, and prefill
        /// chunks multiply through oneDNN's BF16 matmul. Both paths read the
        /// same rounded values, so a token's result differs between a chunk
        /// and a decode only in summation order, as in every other product.
        var roundsToBF16 = false

        /// The first key position a query at `position` sees.
        @inline(__always) func firstKey(_ position: Int) -> Int { window > 0 ? max(0, position - window + 1) : 0 }

        @inline(__always) func softmax(_ x: UnsafeMutablePointer<Float>, n: Int, head: Int) {
            if let sinks { Elementwise.softmax(x, n: n, sink: sinks[head]) } else { Elementwise.softmax(x, n: n) }
        }
    }

    /// `out[t, h*dv ..< (h+1)*dv] = softmax(scale · q_h · Kᵀ) · V` for every
    /// token and query head over the keys its position sees.
    /// Sequences for which `skipping` is true are left alone (latent
    /// attention runs its long prefills in another form).
    /// In bfloat16 mode (`shape.roundsToBF16`) `q` is rounded in place first.
    static func compute(cache: PagedKVCache, layer: Int, batch: ForwardBatch, shape: Shape,
                        q: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>,
                        index: BatchIndex, scratch: ScratchBuffer, tokenList: IndexBuffer,
                        skipping: (BatchSequence) -> Bool = { _ in false }) {
        if shape.roundsToBF16 { roundThroughBF16(q, count: batch.tokenCount * shape.numHeads * cache.headDim, into: q) }
        // Tokens of short sequences, for the per-token path.
        let list = tokenList.reserve(batch.tokenCount)
        var n = 0
        for s in batch.sequences where s.tokenCount < gemmMinTokens && !skipping(s) {
            for i in 0..<s.tokenCount { list[n] = Int32(s.tokenStart + i); n += 1 }
        }
        if n > 0 {
            computePerToken(cache: cache, layer: layer, batch: batch, shape: shape, q: q, out: out,
                            index: index, tokens: list, count: n, scratch: scratch)
        }
        for (i, s) in batch.sequences.enumerated() where s.tokenCount >= gemmMinTokens && !skipping(s) {
            computeChunk(cache: cache, layer: layer, start: s.startPosition, tokenStart: s.tokenStart, tokenCount: s.tokenCount,
                         table: index.table(i), shape: shape, q: q, out: out, scratch: scratch)
        }
    }

    /// A prefill chunk: for each (kv head, block of query tokens), gather the
    /// visible keys and values contiguously, then `S = Q·Kᵀ` and
    /// `O = softmax(S)·V`, each task on one kernel thread, with the causal
    /// mask applied to `S`. Float32 mode multiplies with single-threaded
    /// OpenBLAS sgemm; bfloat16 mode with oneDNN's BF16 matmul on the
    /// rounded values (twice sgemm's rate on these shapes), falling back to
    /// sgemm on the same rounded values if oneDNN fails.
    static func computeChunk(cache: PagedKVCache, layer: Int, start: Int, tokenStart: Int, tokenCount: Int,
                             table: UnsafePointer<Int32>, shape: Shape,
                             q: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, scratch: ScratchBuffer) {
        _ = Linear.blasConfigured
        let numHeads = shape.numHeads
        let d = cache.headDim, kvh = cache.numKVHeads
        let rep = numHeads / kvh
        let ctx = start + tokenCount
        let qb = min(queryBlock, tokenCount)
        let blocks = (tokenCount + qb - 1) / qb
        let kSize = ctx * d, qSize = qb * rep * d, sSize = qb * rep * ctx
        // Float32 keys, values, queries, outputs and scores; in bfloat16
        // mode also the BF16 keys, values (transposed), queries and weights.
        let perPart = 2 * kSize + 2 * qSize + sSize + (shape.roundsToBF16 ? (2 * kSize + qSize + sSize) / 2 + 4 : 0)
        let base = scratch.reserve(perPart * Parallel.threadCount)
        nonisolated(unsafe) let bp = base, qs = q, os = out, tb = table
        Parallel.forParts(kvh * blocks) { part, range in
            let region = ChunkScratch(base: bp + part * perPart, keys: kSize, queries: qSize, scores: sSize)
            for task in range {
                let g = task / blocks
                let i0 = (task % blocks) * qb
                let job = ChunkTask(group: g, firstRow: i0, tokens: min(qb, tokenCount - i0), rep: rep, start: start,
                                    tokenStart: tokenStart, first: shape.firstKey(start + i0))
                if shape.roundsToBF16,
                   chunkTaskBF16(job, cache: cache, layer: layer, table: tb, shape: shape, q: qs, out: os, scratch: region) {
                    continue
                }
                chunkTaskF32(job, cache: cache, layer: layer, table: tb, shape: shape, q: qs, out: os, scratch: region)
            }
        }
    }

    /// One (kv head, query block) of a prefill chunk.
    struct ChunkTask {
        let group: Int, firstRow: Int, tokens: Int, rep: Int, start: Int, tokenStart: Int
        /// The first key some row of the block sees (its first row's window start).
        let first: Int
        var rows: Int { tokens * rep }
        /// Keys some row of the block sees: up to the last row's position.
        var cols: Int { start + firstRow + tokens - first }
    }

    /// One thread's scratch for chunk tasks, carved from its part.
    struct ChunkScratch {
        let keys: UnsafeMutablePointer<Float>, values: UnsafeMutablePointer<Float>
        let queries: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>
        let scores: UnsafeMutablePointer<Float>
        /// bfloat16 mode only (past the Float32 regions).
        let keys16: UnsafeMutablePointer<UInt16>, valuesT16: UnsafeMutablePointer<UInt16>
        let queries16: UnsafeMutablePointer<UInt16>, weights16: UnsafeMutablePointer<UInt16>

        init(base: UnsafeMutablePointer<Float>, keys k: Int, queries q: Int, scores s: Int) {
            keys = base
            values = base + k
            queries = base + 2 * k
            output = queries + q
            scores = output + q
            let raw = UnsafeMutableRawPointer(scores + s).assumingMemoryBound(to: UInt16.self)
            keys16 = raw
            valuesT16 = raw + k
            queries16 = raw + 2 * k
            weights16 = queries16 + q
        }
    }

    /// Masks a block's scores (rows ordered token, head-in-group), scaling
    /// the visible ones first when `scale` is given, and applies softmax:
    /// after it every row holds attention weights, zero where not visible.
    @inline(__always)
    static func maskedSoftmax(_ t: ChunkTask, scores sc: UnsafeMutablePointer<Float>, shape: Shape, scale: Float?) {
        let cols = t.cols
        for row in 0..<t.rows {
            let position = t.start + t.firstRow + row / t.rep
            let lo = shape.firstKey(position) - t.first, visible = position + 1 - t.first
            let r = sc + row * cols
            for c in 0..<lo { r[c] = 0 }
            if let scale { for c in lo..<visible { r[c] *= scale } }
            shape.softmax(r + lo, n: visible - lo, head: t.group * t.rep + row % t.rep)
            for c in visible..<cols { r[c] = 0 }
        }
    }

    /// Copies the block's output rows back to `out`, head by head.
    @inline(__always)
    static func scatterOutput(_ t: ChunkTask, from oc: UnsafePointer<Float>, out os: UnsafeMutablePointer<Float>, shape: Shape) {
        let numHeads = shape.numHeads, dv = shape.valueDim
        for i in 0..<t.tokens {
            for r in 0..<t.rep {
                (os + (t.tokenStart + t.firstRow + i) * numHeads * dv + (t.group * t.rep + r) * dv)
                    .update(from: oc + (i * t.rep + r) * dv, count: dv)
            }
        }
    }

    /// The Float32 form: sgemm on gathered keys, values and queries.
    static func chunkTaskF32(_ t: ChunkTask, cache: PagedKVCache, layer: Int, table tb: UnsafePointer<Int32>, shape: Shape,
                             q qs: UnsafePointer<Float>, out os: UnsafeMutablePointer<Float>, scratch: ChunkScratch) {
        let d = cache.headDim, bs = cache.blockSize, numHeads = shape.numHeads, dv = shape.valueDim
        let separateValues = cache.storesValues
        let rows = t.rows, cols = t.cols, first = t.first
        // Latent attention reads its values from the gathered keys.
        let kc = scratch.keys, vc = separateValues ? scratch.values : scratch.keys
        let qc = scratch.queries, oc = scratch.output, sc = scratch.scores
        var j = first
        while j < first + cols {
            let block = Int(tb[j / bs])
            let n = min(bs - j % bs, first + cols - j)
            let off = cache.offset(layer: layer, block: block, head: t.group) + (j % bs) * d
            cache.read(values: false, offset: off, count: n * d, into: kc + (j - first) * d)
            if separateValues { cache.read(values: true, offset: off, count: n * d, into: vc + (j - first) * d) }
            j += n
        }
        // Query rows ordered (token, head-in-group).
        for i in 0..<t.tokens {
            for r in 0..<t.rep {
                (qc + (i * t.rep + r) * d).update(from: qs + (t.tokenStart + t.firstRow + i) * numHeads * d + (t.group * t.rep + r) * d, count: d)
            }
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(cols), Int32(d),
                    shape.scale, qc, Int32(d), kc, Int32(d), 0, sc, Int32(cols))
        maskedSoftmax(t, scores: sc, shape: shape, scale: nil)
        // Only reached in bfloat16 mode when oneDNN failed: the weights are
        // rounded as the BF16 form and the per-token path round them.
        if shape.roundsToBF16 { roundThroughBF16(sc, count: rows * cols, into: sc) }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(dv), Int32(cols),
                    1, sc, Int32(cols), vc, Int32(d), 0, oc, Int32(dv))
        scatterOutput(t, from: oc, out: os, shape: shape)
    }

    /// The BF16 form: keys, transposed values, queries and weights narrowed
    /// to BF16 (exactly: all were rounded to BF16 values before), products
    /// through oneDNN. False if oneDNN failed; the caller then runs the
    /// Float32 form on the same values.
    static func chunkTaskBF16(_ t: ChunkTask, cache: PagedKVCache, layer: Int, table tb: UnsafePointer<Int32>, shape: Shape,
                              q qs: UnsafePointer<Float>, out os: UnsafeMutablePointer<Float>, scratch: ChunkScratch) -> Bool {
        let d = cache.headDim, bs = cache.blockSize, numHeads = shape.numHeads, dv = shape.valueDim
        let rows = t.rows, cols = t.cols, first = t.first
        let k16 = scratch.keys16, vt16 = scratch.valuesT16, q16 = scratch.queries16, p16 = scratch.weights16
        let sc = scratch.scores, oc = scratch.output
        var j = first
        while j < first + cols {
            let block = Int(tb[j / bs])
            let n = min(bs - j % bs, first + cols - j)
            let off = cache.offset(layer: layer, block: block, head: t.group) + (j % bs) * d
            // Values transposed, `[dv][cols]`: the product's second operand
            // is read with its reduction dimension (the keys) contiguous.
            if cache.storesBF16 {
                (k16 + (j - first) * d).update(from: cache.keys16 + off, count: n * d)
                for i in 0..<n {
                    let src = cache.values16 + off + i * d
                    for c in 0..<dv { vt16[c * cols + j - first + i] = src[c] }
                }
            } else {
                narrowToBF16(cache.keys + off, count: n * d, into: k16 + (j - first) * d)
                for i in 0..<n {
                    let src = cache.values + off + i * d
                    for c in 0..<dv { vt16[c * cols + j - first + i] = narrowToBF16(src[c]) }
                }
            }
            j += n
        }
        for i in 0..<t.tokens {
            for r in 0..<t.rep {
                narrowToBF16(qs + (t.tokenStart + t.firstRow + i) * numHeads * d + (t.group * t.rep + r) * d, count: d,
                             into: q16 + (i * t.rep + r) * d)
            }
        }
        guard OneDNN.matmulBF16AnyShape(m: rows, n: cols, k: d, src: q16, lds: d, wei: k16, ldw: d, dst: sc, ldd: cols) else {
            return false
        }
        maskedSoftmax(t, scores: sc, shape: shape, scale: shape.scale)
        narrowToBF16(sc, count: rows * cols, into: p16)
        guard OneDNN.matmulBF16AnyShape(m: rows, n: dv, k: cols, src: p16, lds: cols, wei: vt16, ldw: cols, dst: oc, ldd: dv) else {
            return false
        }
        scatterOutput(t, from: oc, out: os, shape: shape)
        return true
    }

    /// Per-token attention splits across threads only when each share has at
    /// least this many flops to pay for waking a thread. At 1M a batch-1
    /// decode of the `compare` preset (4 kv heads, 64-96 tokens of context)
    /// ran on one thread; at 100k it takes both, and its attention phase went
    /// from 0.66-0.75 to 0.40-0.44 ms per step (docs/performance.md).
    static let minFlopsPerThread = 100_000

    /// Whether decodes run the AVX-512 kernel (`sy_attend_token`: each key
    /// and value row widened once for all query heads of its group, value
    /// sums in registers) instead of the portable loops below: at batch 64
    /// and context 512 it took the attention phase from 96 to 66 ms per step
    /// (docs/results/before-after-decode-attention-kernel).
    static let vectorKernel = sy_has_avx512() != 0

    /// Decodes and short chunks: one task per (token, kv head), scores kept
    /// in per-thread scratch.
    static func computePerToken(cache: PagedKVCache, layer: Int, batch: ForwardBatch, shape: Shape,
                                q: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                                index: BatchIndex, tokens: UnsafePointer<Int32>, count: Int,
                                scratch: ScratchBuffer, useVectorKernel: Bool = vectorKernel) {
        let d = cache.headDim, bs = cache.blockSize, kvh = cache.numKVHeads
        let numHeads = shape.numHeads, dv = shape.valueDim, scale = shape.scale
        let rep = numHeads / kvh
        let maxContext = batch.sequences.reduce(0) { max($0, $1.startPosition + $1.tokenCount) }
        let perPart = rep * maxContext
        let scores = scratch.reserve(perPart * Parallel.threadCount)
        // With fewer (token, kv head) pairs than threads (a batch-1 decode of
        // latent attention has one), each pair's query heads are split over
        // the threads too: every head's sums stay the same, the shares each
        // read the keys once more.
        let splits = count * kvh < Parallel.threadCount ? min(rep, Parallel.threadCount) : 1
        let headsPerSplit = (rep + splits - 1) / splits
        let tasks = count * kvh * splits
        nonisolated(unsafe) let qs = q, os = out, ss = scores, tl = tokens
        nonisolated(unsafe) let keyBase = cache.storesBF16 ? UnsafeRawPointer(cache.keys16) : UnsafeRawPointer(cache.keys)
        nonisolated(unsafe) let valueBase = cache.storesBF16 ? UnsafeRawPointer(cache.values16) : UnsafeRawPointer(cache.values)
        let blockStride = cache.blockStride
        let flopsPerTask = max(1, 4 * maxContext * headsPerSplit * d)
        Parallel.forParts(tasks, minChunk: max(1, Self.minFlopsPerThread / flopsPerTask)) { part, range in
            let sc = ss + part * perPart
            for task in range {
                let pair = task / splits, split = task % splits
                let heads = (split * headsPerSplit)..<min(rep, (split + 1) * headsPerSplit)
                let t = Int(tl[pair / kvh])
                let g = pair % kvh
                let table = index.table(Int(index.tokenSequence[t]))
                let position = Int(index.tokenPosition[t])
                let ctx = position + 1, first = shape.firstKey(position), n = ctx - first
                if useVectorKernel {
                    let lo = heads.lowerBound
                    sy_attend_token(qs + t * numHeads * d + (g * rep + lo) * d, d, heads.count, keyBase, valueBase,
                                    cache.storesBF16 ? 1 : 0, table, bs, blockStride, cache.offset(layer: layer, block: 0, head: g),
                                    first, ctx, d, dv, scale, shape.sinks.map { $0 + g * rep + lo }, shape.roundsToBF16 ? 1 : 0,
                                    sc + lo * maxContext, maxContext, os + t * numHeads * dv + (g * rep + lo) * dv, dv)
                    continue
                }
                // Scores for the `rep` query heads that share kv head g.
                var j = first
                while j < ctx {
                    let block = Int(table[j / bs])
                    let start = cache.offset(layer: layer, block: block, head: g)
                    let end = min(ctx, (j / bs + 1) * bs)
                    while j < end {
                        let kj = start + (j % bs) * d
                        for r in heads {
                            let qh = qs + t * numHeads * d + (g * rep + r) * d
                            let dot = cache.storesBF16 ? Elementwise.dot(qh, cache.keys16 + kj, n: d)
                                : Elementwise.dot(qh, cache.keys + kj, n: d)
                            sc[r * maxContext + j - first] = dot * scale
                        }
                        j += 1
                    }
                }
                for r in heads {
                    shape.softmax(sc + r * maxContext, n: n, head: g * rep + r)
                    if shape.roundsToBF16 { roundThroughBF16(sc + r * maxContext, count: n, into: sc + r * maxContext) }
                    let oh = os + t * numHeads * dv + (g * rep + r) * dv
                    oh.initialize(repeating: 0, count: dv)
                }
                j = first
                while j < ctx {
                    let block = Int(table[j / bs])
                    let start = cache.offset(layer: layer, block: block, head: g)
                    let end = min(ctx, (j / bs + 1) * bs)
                    while j < end {
                        let vj = start + (j % bs) * d
                        for r in heads {
                            let oh = os + t * numHeads * dv + (g * rep + r) * dv
                            if cache.storesBF16 {
                                Elementwise.axpy(sc[r * maxContext + j - first], cache.values16 + vj, oh, n: dv)
                            } else {
                                Elementwise.axpy(sc[r * maxContext + j - first], cache.values + vj, oh, n: dv)
                            }
                        }
                        j += 1
                    }
                }
            }
        }
    }
}
