import Foundation

/// Causal grouped-query attention over a paged KV cache, for a ragged batch.
/// Each token attends to its own sequence's positions `0...p`, read through
/// that sequence's block table.
enum PagedAttention {
    /// Writes the batch's new keys and values (`[T, kvHeads * headDim]`) into their cache slots.
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
                    (cache.values + dst).update(from: v + row * rowSize + h * d, count: d)
                }
            }
        }
    }

    /// `out[t, h*d ..< (h+1)*d] = softmax(q_h · Kᵀ / √d) · V` for every token
    /// and query head. `tokenSequence[t]` indexes `batch.sequences`.
    static func compute(cache: PagedKVCache, layer: Int, batch: ForwardBatch, numHeads: Int,
                        q: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                        tokenSequence: UnsafePointer<Int32>, scratch: ScratchBuffer) {
        let d = cache.headDim, bs = cache.blockSize, kvh = cache.numKVHeads
        let rep = numHeads / kvh
        let scale = 1 / Float(d).squareRoot()
        let maxContext = batch.sequences.reduce(0) { max($0, $1.startPosition + $1.tokenCount) }
        let perPart = rep * maxContext
        let scores = scratch.reserve(perPart * Parallel.threadCount)
        let tasks = batch.tokenCount * kvh
        nonisolated(unsafe) let qs = q, os = out, ts = tokenSequence, ss = scores
        let sequences = batch.sequences
        Parallel.forParts(tasks, minChunk: 1) { part, range in
            let sc = ss + part * perPart
            for task in range {
                let t = task / kvh
                let g = task % kvh
                let seq = sequences[Int(ts[t])]
                let pos = seq.startPosition + (t - seq.tokenStart)
                let ctx = pos + 1
                // Scores for the `rep` query heads that share kv head g.
                var j = 0
                while j < ctx {
                    let block = Int(seq.blockTable[j / bs])
                    let base = cache.keys + cache.offset(layer: layer, block: block, head: g)
                    let end = min(ctx, (j / bs + 1) * bs)
                    while j < end {
                        let kj = base + (j % bs) * d
                        for r in 0..<rep {
                            let qh = qs + t * numHeads * d + (g * rep + r) * d
                            sc[r * maxContext + j] = Elementwise.dot(qh, kj, n: d) * scale
                        }
                        j += 1
                    }
                }
                for r in 0..<rep {
                    Elementwise.softmax(sc + r * maxContext, n: ctx)
                    let oh = os + t * numHeads * d + (g * rep + r) * d
                    oh.initialize(repeating: 0, count: d)
                }
                j = 0
                while j < ctx {
                    let block = Int(seq.blockTable[j / bs])
                    let base = cache.values + cache.offset(layer: layer, block: block, head: g)
                    let end = min(ctx, (j / bs + 1) * bs)
                    while j < end {
                        let vj = base + (j % bs) * d
                        for r in 0..<rep {
                            let oh = os + t * numHeads * d + (g * rep + r) * d
                            Elementwise.axpy(sc[r * maxContext + j], vj, oh, n: d)
                        }
                        j += 1
                    }
                }
            }
        }
    }
}
