import Foundation
import SwitchyardModel

/// Prefill attention through cuBLAS. Where a sequence brings at least
/// `attention.gemmMinTokens` tokens to a batch (a prompt, or a chunk of
/// one), its keys and values are gathered from the paged copy of the
/// cache into contiguous rows; then, per key-value head, one strided-batched
/// product over that head's query heads (the keys shared: stride 0) gives
/// the scores, the softmax kernel makes the weights (rounded to BF16 as
/// the CPU rounds, and zeros outside each token's keys), and a second
/// product gives the output. The two products the kernels do one thread
/// per score or value then run on the tensor cores; decode tokens (one per
/// sequence) keep the kernels. Latent attention (DeepSeek's MLA, absorbed)
/// takes the same two products in Float32, as its cache is, over its one
/// key head. Where the threshold should sit has not been measured on a GPU
/// (`attention_gemm_min_tokens`).
extension CUDAAccelerator {
    /// A sequence whose attention runs through the products: its tokens in
    /// the batch, its keys (positions `0..<context`), and where its cache
    /// slots start in the uploaded list.
    struct GemmSequence {
        var tokens: Range<Int>
        var context: Int
        var slotsOffset: Int
    }

    /// The batch's sequences with enough tokens, in batch order.
    func gemmSequences(_ b: AttentionBatch) -> [GemmSequence] {
        let minimum = attention.gemmMinTokens
        guard minimum > 0, b.tokens >= minimum, b.numHeads % b.numKVHeads == 0 else { return [] }
        var sequences: [GemmSequence] = [], start = 0, slots = 0
        while start < b.tokens {
            var end = start + 1, context = Int(b.tokenPosition[start]) + 1
            while end < b.tokens && b.tokenSequence[end] == b.tokenSequence[start] {
                context = max(context, Int(b.tokenPosition[end]) + 1)
                end += 1
            }
            if end - start >= minimum {
                sequences.append(GemmSequence(tokens: start..<end, context: context, slotsOffset: slots))
                slots += context
            }
            start = end
        }
        return sequences
    }

    /// Queues the copy of each sequence's cache slots, position by position
    /// (not again for a later layer of the same forward: the same slots).
    func uploadSequenceSlots(_ sequences: [GemmSequence], _ b: AttentionBatch) throws {
        let total = sequences.reduce(0) { $0 + $1.context }, bs = b.blockSize
        _ = try uploadOnce(.sequenceSlots, \.sequenceSlotInts, count: total) { ints in
            for s in sequences {
                let table = b.tables + Int(b.tableStart[Int(b.tokenSequence[s.tokens.lowerBound])])
                for j in 0..<s.context { ints.append(table[j / bs] * Int32(bs) + Int32(j % bs)) }
            }
        }
    }

    /// Queues attention for sequence `s` through the products, into its
    /// tokens' rows of `output` (`[token][head][value width]`, Float32).
    /// `latentValues`: latent attention (one key head; queries and cached
    /// rows Float32, the products too; values the rows' first
    /// `latentValues` elements); else BF16 queries, keys and values, and
    /// the weights' BF16 copy into the second product.
    func queueGemmAttention(layer: Int, _ b: AttentionBatch, _ s: GemmSequence, positionOf: UInt64, q16: UInt64, output: UInt64,
                            window: Int, sinks: UInt64, latentValues: Int? = nil) throws {
        let h = b.numHeads, kvh = b.numKVHeads, d = b.headDim, group = h / kvh, ctx = s.context, row = kvh * d
        let f32 = latentValues != nil, size = f32 ? 4 : 2, vd = latentValues ?? d
        try grow(&attention.sequenceKeys, to: ctx * row * size, pinned: false, "a sequence's keys")
        let keys = attention.sequenceKeys.device, slots = attention.buffers[DeviceAttention.Buffer.sequenceSlots.rawValue].device
            + UInt64(s.slotsOffset * 4)
        // The gather moves 16-bit words: a Float32 row is twice as many.
        let words = row * size / 2
        try launch(.gatherRows, count: ctx * words, [.pointer(attention.keys[layer]), .pointer(slots), .pointer(keys), .int32(Int32(words))])
        // Latent attention's values are its rows.
        var values = keys
        if !f32 {
            try grow(&attention.sequenceValues, to: ctx * row * 2, pinned: false, "a sequence's values")
            values = attention.sequenceValues.device
            try launch(.gatherRows, count: ctx * row, [.pointer(attention.values[layer]), .pointer(slots), .pointer(values), .int32(Int32(row))])
        }
        // Scores (and BF16 weights), `[token][head][ctx]`, a chunk of tokens at a time.
        let chunk = max(1, min(s.tokens.count, attention.chunkBytes / ((f32 ? 4 : 6) * h * ctx)))
        // On the device alone: the host never reads them.
        try grow(&attention.gemmScores, to: chunk * h * ctx * 4, pinned: false, "attention scores")
        if !f32 { try grow(&attention.weights16, to: chunk * h * ctx * 2, pinned: false, "attention weights") }
        let scores = attention.gemmScores, weights = f32 ? scores.device : attention.weights16.device
        var threads = 1
        while threads < min(ctx, attention.softmaxThreads) { threads *= 2 }
        var t0 = s.tokens.lowerBound
        while t0 < s.tokens.upperBound {
            let n = min(chunk, s.tokens.upperBound - t0)
            for g in 0..<kvh {
                // scores[t][head][j] = scale · q[t][head] · k[j][g], for the group's heads.
                try stridedGemm(transposingA: true, m: ctx, n: n, k: d, a: keys + UInt64(g * d * size), lda: row, strideA: 0,
                                b: q16 + UInt64((t0 * h + g * group) * d * size), ldb: h * d, strideB: d,
                                c: scores.device + UInt64(g * group * ctx * 4), ldc: h * ctx, strideC: ctx, batch: group, alpha: b.scale,
                                float32Inputs: f32)
            }
            // Without sinks any valid address stands in (not read).
            try launch(.softmax, blocks: n * h, threads: threads,
                       [.pointer(scores.device), .pointer(positionOf), .pointer(sinks != 0 ? sinks : scores.device), .int32(Int32(h)),
                        .int32(Int32(ctx)), .int32(Int32(t0)), .int32(b.roundsToBF16 ? 1 : 0), .int32(Int32(window)),
                        .int32(sinks != 0 ? 1 : 0), .int32(1)])
            if !f32 { try launch(.roundBF16, count: n * h * ctx, [.pointer(scores.device), .pointer(weights)]) }
            for g in 0..<kvh {
                // out[t][head] = Σ_j w[t][head][j] · v[j][g], for the group's heads.
                try stridedGemm(transposingA: false, m: vd, n: n, k: ctx, a: values + UInt64(g * d * size), lda: row, strideA: 0,
                                b: weights + UInt64(g * group * ctx * size), ldb: h * ctx, strideB: ctx,
                                c: output + UInt64((t0 * h + g * group) * vd * 4), ldc: h * vd, strideC: vd, batch: group,
                                float32Inputs: f32)
            }
            t0 += n
        }
        attention.gemmSequences += 1
    }
}
