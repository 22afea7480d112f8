import CBLAS
import Foundation

/// The weights of one multi-head latent attention layer (DeepSeek-V2/V3),
/// with the key up-projection pre-transposed per head for the absorbed form.
public struct LatentAttentionWeights: Sendable {
    /// `q_proj` `[heads * (nope + rope), hidden]`, when there is no q bottleneck.
    public let q: Matrix?
    /// `q_a_proj` `[qLoraRank, hidden]`, its bias, `q_a_layernorm`, `q_b_proj`.
    public let qA: Matrix?, qABias: [Float]?, qANorm: [Float]?, qB: Matrix?
    /// `kv_a_proj_with_mqa` `[kvLoraRank + rope, hidden]`, its bias, `kv_a_layernorm`.
    public let kvA: Matrix, kvABias: [Float]?, kvANorm: [Float]
    /// Per head, `W_UKᵀ` `[kvLoraRank, nope]`: turns a head's no-position query
    /// into a query against the latent (`q·k = (W_UKᵀ q)·latent`).
    public let absorbedKeys: [Matrix]
    /// Per head, `W_UV` `[valueDim, kvLoraRank]`: rows of `kv_b_proj`, no copy.
    public let valueUp: [Matrix]
    /// `kv_b_proj` `[heads * (nope + valueDim), kvLoraRank]`, for the expanded form.
    public let kvB: Matrix
    public let o: Matrix, oBias: [Float]?

    /// Weight bytes one token reads.
    public var byteCount: Int {
        [q, qA, qB].compactMap { $0?.byteCount }.reduce(0, +) + kvA.byteCount + kvB.byteCount + o.byteCount
    }

    init(prefix p: String, config c: ModelConfig, checkpoint ckpt: Checkpoint) throws {
        let m = c.latentAttention!, h = c.hiddenSize, heads = c.numHeads
        let qWidth = heads * m.queryHeadDim
        if let rank = m.qLoraRank {
            q = nil
            qA = try ckpt.matrix(p + "q_a_proj.weight", rows: rank, cols: h)
            qABias = m.bias ? try ckpt.vector(p + "q_a_proj.bias", count: rank) : nil
            qANorm = try ckpt.vector(p + "q_a_layernorm.weight", count: rank)
            qB = try ckpt.matrix(p + "q_b_proj.weight", rows: qWidth, cols: rank)
        } else {
            q = try ckpt.matrix(p + "q_proj.weight", rows: qWidth, cols: h)
            qA = nil; qABias = nil; qANorm = nil; qB = nil
        }
        kvA = try ckpt.matrix(p + "kv_a_proj_with_mqa.weight", rows: m.cacheWidth, cols: h)
        kvABias = m.bias ? try ckpt.vector(p + "kv_a_proj_with_mqa.bias", count: m.cacheWidth) : nil
        kvANorm = try ckpt.vector(p + "kv_a_layernorm.weight", count: m.kvLoraRank)
        let perHead = m.nopeDim + m.valueDim
        let kvB = try ckpt.matrix(p + "kv_b_proj.weight", rows: heads * perHead, cols: m.kvLoraRank)
        self.kvB = kvB
        absorbedKeys = (0..<heads).map { ckpt.transposed(kvB.rows((perHead * $0)..<(perHead * $0 + m.nopeDim))) }
        valueUp = (0..<heads).map { kvB.rows((perHead * $0 + m.nopeDim)..<(perHead * ($0 + 1))) }
        o = try ckpt.matrix(p + "o_proj.weight", rows: h, cols: heads * m.valueDim)
        oBias = m.bias ? try ckpt.vector(p + "o_proj.bias", count: h) : nil
    }
}

/// Multi-head latent attention (DeepSeek). The cache holds one
/// `kvLoraRank + rope` row per token (the normed latent, then the rotated
/// shared key), never keys and values per head, so a token's cache costs
/// `kvLoraRank + rope` floats per layer, as in vLLM and SGLang. Attention
/// runs in one of two forms per sequence, whichever costs fewer flops
/// (`LatentAttentionConfig.prefersExpandedForm`), as vLLM and SGLang also
/// split decode from prefill:
/// - absorbed (decodes, short chunks): each head's query is mapped into
///   latent space (`W_UKᵀ q_nope`, then its rotated part), attention runs as
///   one-kv-head attention over the cached rows with the latent as the
///   value, and each head's latent output goes up through `W_UV`;
/// - expanded (prefills): the sequence's cached latents are up-projected
///   through `kv_b_proj` to per-head keys and values, and each head attends
///   with head-sized dot products, as the model was trained.
extension Transformer {
    /// transformers builds `q_a_layernorm` and `kv_a_layernorm` with the
    /// RMSNorm default epsilon, not `rms_norm_eps`.
    public static let latentNormEps: Float = 1e-6

    func latentAttention(_ a: LatentAttentionWeights, layer l: Int, batch: ForwardBatch, cache: PagedKVCache,
                         normed: UnsafeMutablePointer<Float>, out projected: UnsafeMutablePointer<Float>)
        -> (projection: Double, attention: Double, output: Double) {
        let c = config, m = c.latentAttention!, tokens = batch.tokenCount, heads = c.numHeads
        let qWidth = heads * m.queryHeadDim, width = m.cacheWidth, r = m.kvLoraRank
        let t0 = monotonicSeconds()
        if let dense {
            let (b, row, _, _) = wholeLayerBatch(layer: l, batch: batch, cache: cache)
            if dense.latentAttentionLayer(layer: l, batch: b, x: normed, row: row, out: projected) {
                // The device did it all; the CPU's cache still gets every row.
                PagedAttention.store(cache: cache, layer: l, batch: batch, k: row, v: row)
                return (0, monotonicSeconds() - t0, 0)
            }
        }
        // Queries, per head [nope | rope].
        let qFull = ws.q.reserve(tokens * qWidth)
        if let q = a.q {
            if dense?.product(.latentQuery, layer: l, x: normed, tokens: tokens, y: qFull) != true {
                Linear.apply(q, x: normed, tokens: tokens, y: qFull, ctx: ws.gemm)
            }
        } else {
            let rank = m.qLoraRank!
            let qa = ws.latentQueryA.reserve(tokens * rank)
            if dense?.product(.latentQueryA, layer: l, x: normed, tokens: tokens, y: qa) != true {
                Linear.apply(a.qA!, x: normed, tokens: tokens, y: qa, ctx: ws.gemm)
            }
            if let b = a.qABias { addBias(qa, b, rows: tokens) }
            a.qANorm!.withUnsafeBufferPointer { w in
                for t in 0..<tokens { Elementwise.rmsNorm(qa + t * rank, weight: w.baseAddress!, eps: Self.latentNormEps, n: rank, out: qa + t * rank) }
            }
            if dense?.product(.latentQueryB, layer: l, x: qa, tokens: tokens, y: qFull) != true {
                Linear.apply(a.qB!, x: qa, tokens: tokens, y: qFull, ctx: ws.gemm)
            }
        }
        // The cached row: normed latent, then the rotated key.
        let row = ws.k.reserve(tokens * width)
        if dense?.product(.latentKVA, layer: l, x: normed, tokens: tokens, y: row) != true {
            Linear.apply(a.kvA, x: normed, tokens: tokens, y: row, ctx: ws.gemm)
        }
        if let b = a.kvABias { addBias(row, b, rows: tokens) }
        let half = rope.headDim / 2
        let cosT = ws.ropeCos.pointer, sinT = ws.ropeSin.pointer
        a.kvANorm.withUnsafeBufferPointer { w in
            for t in 0..<tokens {
                Elementwise.rmsNorm(row + t * width, weight: w.baseAddress!, eps: Self.latentNormEps, n: r, out: row + t * width)
                rope.apply(row + t * width + r, heads: 1, cos: cosT + t * half, sin: sinT + t * half)
            }
        }
        let expanded = { (s: BatchSequence) -> Bool in
            s.tokenCount >= PagedAttention.gemmMinTokens
                && m.prefersExpandedForm(newTokens: s.tokenCount, context: s.startPosition + s.tokenCount)
        }
        // Token rows of the absorbed sequences, adjacent ones merged.
        func forEachAbsorbedRun(_ body: (Range<Int>) -> Void) {
            var run = 0..<0
            for s in batch.sequences where !expanded(s) {
                if run.upperBound == s.tokenStart {
                    run = run.lowerBound..<(s.tokenStart + s.tokenCount)
                } else {
                    if !run.isEmpty { body(run) }
                    run = s.tokenStart..<(s.tokenStart + s.tokenCount)
                }
            }
            if !run.isEmpty { body(run) }
        }
        // Absorbed queries, per head [W_UKᵀ q_nope | rotated q_rope].
        let query = ws.latentQuery.reserve(tokens * heads * width)
        forEachAbsorbedRun { run in
            Linear.applyPerHead(a.absorbedKeys, x: qFull + run.lowerBound * qWidth, ldx: qWidth, xStride: m.queryHeadDim,
                                tokens: run.count, y: query + run.lowerBound * heads * width, ldy: heads * width, yStride: width,
                                ctx: ws.gemm)
            for t in run {
                for h in 0..<heads {
                    (query + (t * heads + h) * width + r).update(from: qFull + t * qWidth + h * m.queryHeadDim + m.nopeDim, count: m.ropeDim)
                }
                rope.apply(query + t * heads * width + r, heads: heads, stride: width, cos: cosT + t * half, sin: sinT + t * half)
            }
        }
        let t1 = monotonicSeconds()
        PagedAttention.store(cache: cache, layer: l, batch: batch, k: row, v: row)
        let latentOut = ws.attention.reserve(tokens * heads * r)
        PagedAttention.compute(cache: cache, layer: l, batch: batch,
                               shape: .init(numHeads: heads, valueDim: r, scale: m.softmaxScale), q: query, out: latentOut, index: attentionIndex,
                               scratch: ws.attentionScores, tokenList: ws.attentionTokens, skipping: expanded)
        let values = ws.latentValues.reserve(tokens * heads * m.valueDim)
        for (i, s) in batch.sequences.enumerated() where expanded(s) {
            expandedLatentAttention(a, layer: l, sequence: s, table: attentionIndex.table(i), cache: cache,
                                    queries: qFull, values: values)
        }
        let t2 = monotonicSeconds()
        forEachAbsorbedRun { run in
            Linear.applyPerHead(a.valueUp, x: latentOut + run.lowerBound * heads * r, ldx: heads * r, xStride: r, tokens: run.count,
                                y: values + run.lowerBound * heads * m.valueDim, ldy: heads * m.valueDim, yStride: m.valueDim,
                                ctx: ws.gemm)
        }
        if dense?.product(.attentionOutput, layer: l, x: values, tokens: tokens, y: projected) != true {
            Linear.apply(a.o, x: values, tokens: tokens, y: projected, ctx: ws.gemm)
        }
        if let b = a.oBias { addBias(projected, b, rows: tokens) }
        let t3 = monotonicSeconds()
        return (t1 - t0, t2 - t1, t3 - t2)
    }

    /// Bytes of up-projected keys and values held at once: heads are taken
    /// in groups that fit, so a long context never needs all of them.
    static let expandedGroupBytes = 32 << 20

    /// The expanded form for one sequence whose rows (latent and rotated key)
    /// are already cached: its queries (`queries`, per head [nope | rope],
    /// the rope part unrotated, rotated here in place) attend over positions
    /// `0 ..< startPosition + tokenCount`, each head's output written to
    /// `values` (`[token, head * valueDim]`).
    private func expandedLatentAttention(_ a: LatentAttentionWeights, layer l: Int, sequence s: BatchSequence,
                                         table: UnsafePointer<Int32>, cache: PagedKVCache,
                                         queries: UnsafeMutablePointer<Float>, values: UnsafeMutablePointer<Float>) {
        _ = Linear.blasConfigured
        let m = config.latentAttention!, heads = config.numHeads
        let qWidth = heads * m.queryHeadDim, width = m.cacheWidth, r = m.kvLoraRank, nope = m.nopeDim, dv = m.valueDim
        let perHead = nope + dv, ldv = heads * dv, scale = m.softmaxScale
        let start = s.startPosition, count = s.tokenCount, context = start + count
        let half = rope.headDim / 2
        for t in s.tokenStart..<(s.tokenStart + count) {
            rope.apply(queries + t * qWidth + nope, heads: heads, stride: m.queryHeadDim,
                       cos: ws.ropeCos.pointer + t * half, sin: ws.ropeSin.pointer + t * half)
        }
        // The sequence's cached rows, contiguous.
        let latent = ws.latentContext.reserve(context * width)
        let bs = cache.blockSize
        var j = 0
        while j < context {
            let n = min(bs - j % bs, context - j)
            (latent + j * width).update(from: cache.keys + cache.offset(layer: l, block: Int(table[j / bs]), head: 0) + (j % bs) * width,
                                        count: n * width)
            j += n
        }
        let group = max(1, min(heads, Self.expandedGroupBytes / max(1, context * perHead * MemoryLayout<Float>.stride)))
        let kv = ws.latentExpanded.reserve(context * group * perHead)
        let qb = min(PagedAttention.queryBlock, count)
        let blocks = (count + qb - 1) / qb
        let scores = ws.attentionScores.reserve(qb * context * Parallel.threadCount)
        nonisolated(unsafe) let qs = queries, vs = values, ls = latent, kvs = kv, ss = scores
        var h0 = 0
        while h0 < heads {
            let g = min(group, heads - h0)
            // [context, g * (nope + dv)]: per head its keys' no-position part, then its values.
            Linear.apply(a.kvB.rows((h0 * perHead)..<((h0 + g) * perHead)), x: latent, ldx: width, tokens: context,
                         y: kv, ctx: ws.gemm)
            let first = h0
            Parallel.forParts(g * blocks) { part, range in
                let sc = ss + part * qb * context
                for task in range {
                    let h = first + task / blocks, i0 = (task % blocks) * qb
                    let rows = min(qb, count - i0), cols = start + i0 + rows
                    let q = qs + (s.tokenStart + i0) * qWidth + h * m.queryHeadDim
                    let kh = kvs + (h - first) * perHead
                    // Scores: the no-position parts against this head's keys,
                    // plus the rotated parts against the shared rotated key.
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(cols), Int32(nope),
                                scale, q, Int32(qWidth), kh, Int32(g * perHead), 0, sc, Int32(cols))
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(cols), Int32(m.ropeDim),
                                scale, q + nope, Int32(qWidth), ls + r, Int32(width), 1, sc, Int32(cols))
                    for i in 0..<rows {
                        let visible = start + i0 + i + 1
                        Elementwise.softmax(sc + i * cols, n: visible)
                        (sc + i * cols + visible).initialize(repeating: 0, count: cols - visible)
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(dv), Int32(cols),
                                1, sc, Int32(cols), kh + nope, Int32(g * perHead), 0,
                                vs + (s.tokenStart + i0) * ldv + h * dv, Int32(ldv))
                }
            }
            h0 += g
        }
    }
}
