import CBLAS
import Foundation

/// Causal grouped-query attention over a paged KV cache, for a ragged batch.
/// Each token attends to its own sequence's positions `0...p`, read through
/// that sequence's block table.
enum PagedAttention {
    /// Writes the batch's new keys and values (`[T, kvHeads * headDim]`) into
    /// their cache slots (only the keys where the cache has no values).
    static func store(cache: PagedKVCache, layer: Int, batch: ForwardBatch,
                      k: UnsafePointer<Float>, v: UnsafePointer<Float>) {
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
                    (cache.keys + dst).update(from: k + row * rowSize + h * d, count: d)
                    if cache.storesValues { (cache.values + dst).update(from: v + row * rowSize + h * d, count: d) }
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
    static func compute(cache: PagedKVCache, layer: Int, batch: ForwardBatch, shape: Shape,
                        q: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                        index: BatchIndex, scratch: ScratchBuffer, tokenList: IndexBuffer,
                        skipping: (BatchSequence) -> Bool = { _ in false }) {
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
    /// `O = softmax(S)·V` with single-threaded OpenBLAS, the tasks spread
    /// over the kernel threads, with the causal mask applied to `S`.
    static func computeChunk(cache: PagedKVCache, layer: Int, start: Int, tokenStart: Int, tokenCount: Int,
                             table: UnsafePointer<Int32>, shape: Shape,
                             q: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, scratch: ScratchBuffer) {
        _ = Linear.blasConfigured
        let numHeads = shape.numHeads, dv = shape.valueDim, scale = shape.scale
        let d = cache.headDim, bs = cache.blockSize, kvh = cache.numKVHeads
        let rep = numHeads / kvh
        let separateValues = cache.storesValues
        let ctx = start + tokenCount
        let qb = min(queryBlock, tokenCount)
        let blocks = (tokenCount + qb - 1) / qb
        let kSize = ctx * d, qSize = qb * rep * d, sSize = qb * rep * ctx
        let perPart = 2 * kSize + 2 * qSize + sSize
        let base = scratch.reserve(perPart * Parallel.threadCount)
        nonisolated(unsafe) let bp = base, qs = q, os = out, tb = table
        Parallel.forParts(kvh * blocks) { part, range in
            // Latent attention reads its values from the gathered keys.
            let kc = bp + part * perPart, vc = separateValues ? kc + kSize : kc
            let qc = kc + 2 * kSize, oc = qc + qSize, sc = oc + qSize
            for task in range {
                let g = task / blocks
                let i0 = (task % blocks) * qb
                let m = min(qb, tokenCount - i0)
                let rows = m * rep
                // Only the keys some row of this block can see: from the
                // first row's window start to the last row's position.
                let first = shape.firstKey(start + i0)
                let cols = start + i0 + m - first
                var j = first
                while j < first + cols {
                    let block = Int(tb[j / bs])
                    let n = min(bs - j % bs, first + cols - j)
                    let off = cache.offset(layer: layer, block: block, head: g) + (j % bs) * d
                    (kc + (j - first) * d).update(from: cache.keys + off, count: n * d)
                    if separateValues { (vc + (j - first) * d).update(from: cache.values + off, count: n * d) }
                    j += n
                }
                // Query rows ordered (token, head-in-group).
                for i in 0..<m {
                    for r in 0..<rep {
                        (qc + (i * rep + r) * d).update(from: qs + (tokenStart + i0 + i) * numHeads * d + (g * rep + r) * d, count: d)
                    }
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(cols), Int32(d),
                            scale, qc, Int32(d), kc, Int32(d), 0, sc, Int32(cols))
                for row in 0..<rows {
                    let position = start + i0 + row / rep
                    let lo = shape.firstKey(position) - first, visible = position + 1 - first
                    let r = sc + row * cols
                    for c in 0..<lo { r[c] = 0 }
                    shape.softmax(r + lo, n: visible - lo, head: g * rep + row % rep)
                    for c in visible..<cols { r[c] = 0 }
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(dv), Int32(cols),
                            1, sc, Int32(cols), vc, Int32(d), 0, oc, Int32(dv))
                for i in 0..<m {
                    for r in 0..<rep {
                        (os + (tokenStart + i0 + i) * numHeads * dv + (g * rep + r) * dv).update(from: oc + (i * rep + r) * dv, count: dv)
                    }
                }
            }
        }
    }

    /// Per-token attention splits across threads only when each share has at
    /// least this many flops to pay for waking a thread. At 1M a batch-1
    /// decode of the `compare` preset (4 kv heads, 64-96 tokens of context)
    /// ran on one thread; at 100k it takes both, and its attention phase went
    /// from 0.66-0.75 to 0.40-0.44 ms per step (docs/performance.md).
    static let minFlopsPerThread = 100_000

    /// Decodes and short chunks: one task per (token, kv head), scores kept
    /// in per-thread scratch.
    static func computePerToken(cache: PagedKVCache, layer: Int, batch: ForwardBatch, shape: Shape,
                                q: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                                index: BatchIndex, tokens: UnsafePointer<Int32>, count: Int,
                                scratch: ScratchBuffer) {
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
                // Scores for the `rep` query heads that share kv head g.
                var j = first
                while j < ctx {
                    let block = Int(table[j / bs])
                    let base = cache.keys + cache.offset(layer: layer, block: block, head: g)
                    let end = min(ctx, (j / bs + 1) * bs)
                    while j < end {
                        let kj = base + (j % bs) * d
                        for r in heads {
                            let qh = qs + t * numHeads * d + (g * rep + r) * d
                            sc[r * maxContext + j - first] = Elementwise.dot(qh, kj, n: d) * scale
                        }
                        j += 1
                    }
                }
                for r in heads {
                    shape.softmax(sc + r * maxContext, n: n, head: g * rep + r)
                    let oh = os + t * numHeads * dv + (g * rep + r) * dv
                    oh.initialize(repeating: 0, count: dv)
                }
                j = first
                while j < ctx {
                    let block = Int(table[j / bs])
                    let base = cache.values + cache.offset(layer: layer, block: block, head: g)
                    let end = min(ctx, (j / bs + 1) * bs)
                    while j < end {
                        let vj = base + (j % bs) * d
                        for r in heads {
                            let oh = os + t * numHeads * dv + (g * rep + r) * dv
                            Elementwise.axpy(sc[r * maxContext + j - first], vj, oh, n: dv)
                        }
                        j += 1
                    }
                }
            }
        }
    }
}
