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
}
