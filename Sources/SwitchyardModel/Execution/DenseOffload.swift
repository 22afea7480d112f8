/// Where the dense products of a layer may be computed besides the CPU: the
/// sibling of `ExpertExecutor` for the work every token does (attention
/// projections, the router, shared experts and dense MLPs, the LM head).
/// The forward asks per product, by role; an offload that holds the
/// product's weights computes it and returns true, and one that does not
/// (or has failed) returns false and the CPU computes it as before. So an
/// offload can take any subset of products, and a failing device never
/// fails a request.
///
/// Attention over the KV cache, norms, RoPE and routing itself stay on the
/// CPU; latent attention's products are not asked for.
///
/// Installed before serving (`Transformer.install(dense:)`) and called from
/// the engine's loop thread only, between expert layers, never while an
/// `ExpertExecutor` is computing.
public protocol DenseOffload: AnyObject, Sendable {
    /// q, k and v of grouped-query attention in `layer` from the same
    /// `tokens` input rows (before biases, norms and RoPE).
    func attentionProjections(layer: Int, x: UnsafePointer<Float>, tokens: Int, q: UnsafeMutablePointer<Float>,
                              k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>) -> Bool

    /// `y = x·Wᵀ` for one product of `layer` (the LM head: any layer).
    func product(_ product: DenseProduct, layer: Int, x: UnsafePointer<Float>, tokens: Int, y: UnsafeMutablePointer<Float>) -> Bool

    /// A SwiGLU MLP, `down(SiLU(gate·x) ⊙ up·x)`: the layer's shared expert
    /// (`shared`), or a dense layer's feed-forward.
    func mlp(layer: Int, shared: Bool, x: UnsafePointer<Float>, tokens: Int, out: UnsafeMutablePointer<Float>) -> Bool
}

/// The single-matrix products a `DenseOffload` is asked for.
public enum DenseProduct: Int, Sendable, CaseIterable {
    /// Grouped-query attention's `o_proj`.
    case attentionOutput
    /// The MoE router's logits.
    case router
    /// The LM head over the final-normed rows.
    case lmHead
}
