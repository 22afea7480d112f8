/// DeepSeek's multi-head latent attention (MLA). Keys and values are
/// compressed into one `kvLoraRank` latent per token plus a shared rotary key
/// of `ropeDim`; the cache keeps only those (`cacheWidth` floats per token per
/// layer, not per head). Queries come straight from the hidden state, or
/// through a `qLoraRank` bottleneck with its own norm.
public struct LatentAttentionConfig: Sendable, Equatable {
    public var qLoraRank: Int?
    public var kvLoraRank: Int
    /// Per-head query/key width without position (`qk_nope_head_dim`).
    public var nopeDim: Int
    /// Per-head rotary width (`qk_rope_head_dim`), shared by all heads on the key side.
    public var ropeDim: Int
    /// Per-head value width (`v_head_dim`).
    public var valueDim: Int
    /// `attention_bias`: biases on `q_a_proj`, `kv_a_proj_with_mqa` and `o_proj`.
    public var bias: Bool
    /// Softmax scale: `(nopeDim + ropeDim)^-0.5`, times YaRN's mscale² where the
    /// config scales RoPE with `mscale_all_dim`.
    public var softmaxScale: Float

    public var queryHeadDim: Int { nopeDim + ropeDim }
    /// Floats one token caches per layer: the normed latent, then the rotated key.
    public var cacheWidth: Int { kvLoraRank + ropeDim }

    /// Whether `newTokens` queries at the end of `context` cached positions
    /// (the new ones included) cost fewer flops in the expanded form than in
    /// the absorbed one. Absorbed, every (query, key) pair is a dot product
    /// over the cached row and a latent-wide value sum, plus each query's
    /// trip into and out of latent space; expanded, the pairs are head-sized
    /// but every cached token's latent is first up-projected to a key and a
    /// value per head. A prompt's own prefill always favours expansion; a
    /// decode or a short chunk on a long context never does.
    public func prefersExpandedForm(newTokens m: Int, context: Int) -> Bool {
        let pairs = m * (context - m) + m * (m + 1) / 2
        let absorbed = pairs * (cacheWidth + kvLoraRank) + m * kvLoraRank * (nopeDim + valueDim)
        let expanded = pairs * (queryHeadDim + valueDim) + context * kvLoraRank * (nopeDim + valueDim)
        return expanded < absorbed
    }
}
