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
    public let o: Matrix, oBias: [Float]?
    let kvBBytes: Int

    /// Weight bytes one token reads.
    public var byteCount: Int {
        [q, qA, qB].compactMap { $0?.byteCount }.reduce(0, +) + kvA.byteCount + kvBBytes + o.byteCount
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
        kvBBytes = kvB.byteCount
        absorbedKeys = (0..<heads).map { ckpt.transposed(kvB.rows((perHead * $0)..<(perHead * $0 + m.nopeDim))) }
        valueUp = (0..<heads).map { kvB.rows((perHead * $0 + m.nopeDim)..<(perHead * ($0 + 1))) }
        o = try ckpt.matrix(p + "o_proj.weight", rows: h, cols: heads * m.valueDim)
        oBias = m.bias ? try ckpt.vector(p + "o_proj.bias", count: h) : nil
    }
}

/// Multi-head latent attention (DeepSeek) in the absorbed form, for prefill and decode
/// alike: the cache holds one `kvLoraRank + rope` row per token (the normed
/// latent, then the rotated shared key), each head's query is mapped into
/// latent space (`W_UKᵀ q_nope`, then its rotated part), attention runs as
/// one-kv-head attention over the cached rows with the latent as the value,
/// and each head's latent output goes up through `W_UV` before `o_proj`.
/// Keys and values are never expanded per head, so a token's cache costs
/// `kvLoraRank + rope` floats per layer, as in vLLM and SGLang.
extension Transformer {
    /// transformers builds `q_a_layernorm` and `kv_a_layernorm` with the
    /// RMSNorm default epsilon, not `rms_norm_eps`.
    static let latentNormEps: Float = 1e-6

    func latentAttention(_ a: LatentAttentionWeights, layer l: Int, batch: ForwardBatch, cache: PagedKVCache,
                         normed: UnsafeMutablePointer<Float>, out projected: UnsafeMutablePointer<Float>)
        -> (projection: Double, attention: Double, output: Double) {
        let c = config, m = c.latentAttention!, tokens = batch.tokenCount, heads = c.numHeads
        let qWidth = heads * m.queryHeadDim, width = m.cacheWidth, r = m.kvLoraRank
        let t0 = monotonicSeconds()
        // Queries, per head [nope | rope].
        let qFull = ws.q.reserve(tokens * qWidth)
        if let q = a.q {
            Linear.apply(q, x: normed, tokens: tokens, y: qFull, ctx: ws.gemm)
        } else {
            let rank = m.qLoraRank!
            let qa = ws.latentQueryA.reserve(tokens * rank)
            Linear.apply(a.qA!, x: normed, tokens: tokens, y: qa, ctx: ws.gemm)
            if let b = a.qABias { addBias(qa, b, rows: tokens) }
            a.qANorm!.withUnsafeBufferPointer { w in
                for t in 0..<tokens { Elementwise.rmsNorm(qa + t * rank, weight: w.baseAddress!, eps: Self.latentNormEps, n: rank, out: qa + t * rank) }
            }
            Linear.apply(a.qB!, x: qa, tokens: tokens, y: qFull, ctx: ws.gemm)
        }
        // The cached row: normed latent, then the rotated key.
        let row = ws.k.reserve(tokens * width)
        Linear.apply(a.kvA, x: normed, tokens: tokens, y: row, ctx: ws.gemm)
        if let b = a.kvABias { addBias(row, b, rows: tokens) }
        let half = rope.headDim / 2
        let cosT = ws.ropeCos.pointer, sinT = ws.ropeSin.pointer
        a.kvANorm.withUnsafeBufferPointer { w in
            for t in 0..<tokens {
                Elementwise.rmsNorm(row + t * width, weight: w.baseAddress!, eps: Self.latentNormEps, n: r, out: row + t * width)
                rope.apply(row + t * width + r, heads: 1, cos: cosT + t * half, sin: sinT + t * half)
            }
        }
        // Attention queries, per head [W_UKᵀ q_nope | rotated q_rope].
        let query = ws.latentQuery.reserve(tokens * heads * width)
        Linear.applyPerHead(a.absorbedKeys, x: qFull, ldx: qWidth, xStride: m.queryHeadDim, tokens: tokens,
                            y: query, ldy: heads * width, yStride: width, ctx: ws.gemm)
        for t in 0..<tokens {
            for h in 0..<heads {
                (query + (t * heads + h) * width + r).update(from: qFull + t * qWidth + h * m.queryHeadDim + m.nopeDim, count: m.ropeDim)
            }
            rope.apply(query + t * heads * width + r, heads: heads, stride: width, cos: cosT + t * half, sin: sinT + t * half)
        }
        let t1 = monotonicSeconds()
        PagedAttention.store(cache: cache, layer: l, batch: batch, k: row, v: row)
        let latentOut = ws.attention.reserve(tokens * heads * r)
        PagedAttention.compute(cache: cache, layer: l, batch: batch,
                               shape: .init(numHeads: heads, valueDim: r, scale: m.softmaxScale), q: query, out: latentOut, index: attentionIndex,
                               scratch: ws.attentionScores, tokenList: ws.attentionTokens)
        let t2 = monotonicSeconds()
        let values = ws.latentValues.reserve(tokens * heads * m.valueDim)
        Linear.applyPerHead(a.valueUp, x: latentOut, ldx: heads * r, xStride: r, tokens: tokens,
                            y: values, ldy: heads * m.valueDim, yStride: m.valueDim, ctx: ws.gemm)
        Linear.apply(a.o, x: values, tokens: tokens, y: projected, ctx: ws.gemm)
        if let b = a.oBias { addBias(projected, b, rows: tokens) }
        let t3 = monotonicSeconds()
        return (t1 - t0, t2 - t1, t3 - t2)
    }
}
