/// Grouped-query attention (Mixtral, Qwen, OLMoE, GLM, gpt-oss): q/k/v
/// projections in one pass, their biases, q/k norms and `clip_qkv` where the
/// architecture has them, RoPE, then paged attention over the cache
/// (windowed and with sinks where gpt-oss asks) and `o_proj`.
extension Transformer {
    func groupedAttention(_ a: AttentionWeights, layer l: Int, batch: ForwardBatch, cache: PagedKVCache,
                          normed: UnsafeMutablePointer<Float>, out projected: UnsafeMutablePointer<Float>)
        -> (projection: Double, attention: Double, output: Double) {
        let c = config, tokens = batch.tokenCount
        let q = ws.q.reserve(tokens * c.qSize)
        let k = ws.k.reserve(tokens * c.kvSize)
        let v = ws.v.reserve(tokens * c.kvSize)
        let t0 = monotonicSeconds()
        let bf16 = ws.gemm.options.dtype == .bfloat16
        let scale = 1 / Float(c.headDim).squareRoot()
        if let dense, dense.attentionLayer(layer: l, batch: attentionBatch(batch, cache: cache, scale: scale, withRope: true), x: normed, k: k, v: v,
                                out: projected) {
            // The device did it all; the CPU's cache still gets every key and value.
            PagedAttention.store(cache: cache, layer: l, batch: batch, k: k, v: v, roundingToBF16: bf16)
            return (0, monotonicSeconds() - t0, 0)
        }
        if dense?.attentionProjections(layer: l, x: normed, tokens: tokens, q: q, k: k, v: v) != true {
            Linear.applyQKV(q: a.q, q, k: a.k, k, v: a.v, v, x: normed, tokens: tokens, ctx: ws.gemm)
        }
        let t1 = monotonicSeconds()
        if let b = a.qBias { addBias(q, b, rows: tokens) }
        if let b = a.kBias { addBias(k, b, rows: tokens) }
        if let b = a.vBias { addBias(v, b, rows: tokens) }
        switch c.qkNorm {
        case .none: break
        case .perHead:
            rmsNormRows(q, weight: a.qNorm!, n: c.headDim, rows: tokens * c.numHeads, out: q)
            rmsNormRows(k, weight: a.kNorm!, n: c.headDim, rows: tokens * c.numKVHeads, out: k)
        case .wholeProjection:
            rmsNormRows(q, weight: a.qNorm!, n: c.qSize, rows: tokens, out: q)
            rmsNormRows(k, weight: a.kNorm!, n: c.kvSize, rows: tokens, out: k)
        }
        if let clip = c.clipQKV {
            clamp(q, tokens * c.qSize, clip)
            clamp(k, tokens * c.kvSize, clip)
            clamp(v, tokens * c.kvSize, clip)
        }
        let half = rope.headDim / 2
        let cosT = ws.ropeCos.pointer, sinT = ws.ropeSin.pointer
        for t in 0..<tokens {
            rope.apply(q + t * c.qSize, heads: c.numHeads, stride: c.headDim, cos: cosT + t * half, sin: sinT + t * half)
            rope.apply(k + t * c.kvSize, heads: c.numKVHeads, stride: c.headDim, cos: cosT + t * half, sin: sinT + t * half)
        }
        let t2 = monotonicSeconds()
        PagedAttention.store(cache: cache, layer: l, batch: batch, k: k, v: v, roundingToBF16: bf16)
        let attn = ws.attention.reserve(tokens * c.qSize)
        var shape = PagedAttention.Shape(numHeads: c.numHeads, valueDim: c.headDim, scale: scale,
                                         window: c.attentionWindow(layer: l), roundsToBF16: bf16)
        func attend() {
            PagedAttention.compute(cache: cache, layer: l, batch: batch, shape: shape, q: q, out: attn, index: attentionIndex,
                                   scratch: ws.attentionScores, tokenList: ws.attentionTokens)
        }
        if let dense, shape.window == 0, a.sinks == nil, dense.attention(layer: l, batch: attentionBatch(batch, cache: cache, scale: shape.scale),
                                                                       q: q, k: k, v: v, out: attn) {
            // The device computed it from its copy of the cache.
        } else if let sinks = a.sinks {
            sinks.withUnsafeBufferPointer { shape.sinks = $0.baseAddress; attend() }
        } else {
            attend()
        }
        let t3 = monotonicSeconds()
        if dense?.product(.attentionOutput, layer: l, x: attn, tokens: tokens, y: projected) != true {
            Linear.apply(a.o, x: attn, tokens: tokens, y: projected, ctx: ws.gemm)
        }
        if let b = a.oBias { addBias(projected, b, rows: tokens) }
        let t4 = monotonicSeconds()
        return (t1 - t0, t3 - t2, t4 - t3)
    }

    /// An MoE layer's attention, norms and router in one round trip
    /// (`DenseOffload.moeLayerFront`); nil where no offload took it, and
    /// the layer runs block by block.
    /// `residualHeld`: the offload holds this layer's input rows (`hidden`
    /// is stale); `mayKeep`: it may keep this layer's.
    func moeLayerFront(layer l: Int, batch: ForwardBatch, cache: PagedKVCache, hidden: UnsafeMutablePointer<Float>,
                       residualHeld: Bool, mayKeep: Bool) -> RouterOffload? {
        guard let dense, case .moe = weights.layers[l].feedForward else { return nil }
        let c = config, tokens = batch.tokenCount
        let t0 = monotonicSeconds()
        let (b, k, v, latent) = wholeLayerBatch(layer: l, batch: batch, cache: cache)
        let routed = dense.moeLayerFront(layer: l, batch: b, hidden: hidden, residualHeld: residualHeld, mayKeep: mayKeep, k: k, v: v,
                                         normed: ws.normed.reserve(tokens * c.hiddenSize),
                                         logits: ws.routerLogits.reserve(tokens * c.numExperts))
        guard routed != .notHeld else { return nil }
        storeWholeLayer(l, batch: batch, cache: cache, k: k, v: v, latent: latent, since: t0)
        return routed
    }

    /// A dense layer whole on the offload (`DenseOffload.denseLayer`);
    /// false where none took it.
    func denseLayerWhole(layer l: Int, batch: ForwardBatch, cache: PagedKVCache, hidden: UnsafeMutablePointer<Float>,
                         residualHeld: Bool, mayKeep: Bool) -> Bool {
        guard let dense, case .dense = weights.layers[l].feedForward else { return false }
        let t0 = monotonicSeconds()
        let (b, k, v, latent) = wholeLayerBatch(layer: l, batch: batch, cache: cache)
        guard dense.denseLayer(layer: l, batch: b, hidden: hidden, residualHeld: residualHeld, mayKeep: mayKeep, k: k, v: v) else {
            return false
        }
        storeWholeLayer(l, batch: batch, cache: cache, k: k, v: v, latent: latent, since: t0)
        return true
    }

    /// The batch a whole-layer offload call takes for layer `l` and where
    /// its keys and values come back. Latent attention: one key head the
    /// cached row's width (`k` gets the rows, `v` nothing).
    func wholeLayerBatch(layer l: Int, batch: ForwardBatch, cache: PagedKVCache)
        -> (AttentionBatch, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, Bool) {
        let c = config, tokens = batch.tokenCount
        var b = attentionBatch(batch, cache: cache, scale: 1 / Float(c.headDim).squareRoot(), withRope: true)
        var rows = c.kvSize, latent = false
        if case .latent = weights.layers[l].attention, let m = c.latentAttention {
            (b.numKVHeads, b.headDim, b.scale, b.roundsToBF16) = (1, m.cacheWidth, m.softmaxScale, false)
            (rows, latent) = (m.cacheWidth, true)
        }
        return (b, ws.k.reserve(tokens * rows), ws.v.reserve(tokens * rows), latent)
    }

    /// The keys and values (latent: rows) a whole-layer call brought back,
    /// into the CPU's cache; its time counted as attention.
    private func storeWholeLayer(_ l: Int, batch: ForwardBatch, cache: PagedKVCache, k: UnsafeMutablePointer<Float>,
                                 v: UnsafeMutablePointer<Float>, latent: Bool, since t0: Double) {
        if latent {
            PagedAttention.store(cache: cache, layer: l, batch: batch, k: k, v: k)
        } else {
            PagedAttention.store(cache: cache, layer: l, batch: batch, k: k, v: v, roundingToBF16: ws.gemm.options.dtype == .bfloat16)
        }
        let seconds = monotonicSeconds() - t0
        profile.attentionSeconds += seconds
        layerSeconds += seconds
    }

    /// The batch as `DenseOffload.attention` (and, `withRope`, as
    /// `attentionLayer`) sees it.
    func attentionBatch(_ batch: ForwardBatch, cache: PagedKVCache, scale: Float, withRope: Bool = false) -> AttentionBatch {
        let c = config, index = attentionIndex
        return AttentionBatch(tokens: batch.tokenCount, numHeads: c.numHeads, numKVHeads: c.numKVHeads, headDim: c.headDim, scale: scale,
                              roundsToBF16: ws.gemm.options.dtype == .bfloat16, cache: ObjectIdentifier(cache),
                              numBlocks: cache.numBlocks, blockSize: cache.blockSize,
                              tokenSequence: index.tokenSequence, tokenPosition: index.tokenPosition, tables: index.tables,
                              tableStart: index.tableStart, sequences: batch.sequences.count,
                              tableEntries: batch.sequences.reduce(0) { $0 + $1.blockTable.count },
                              rope: withRope ? RopeAngles(cos: ws.ropeCos.pointer, sin: ws.ropeSin.pointer, half: rope.headDim / 2,
                                                          interleaved: rope.interleaved) : nil)
    }
}
