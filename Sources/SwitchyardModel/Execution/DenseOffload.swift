/// Where the dense products of a layer may be computed besides the CPU: the
/// sibling of `ExpertExecutor` for the work every token does (attention
/// projections, the router, shared experts and dense MLPs, the LM head).
/// The forward asks per product, by role; an offload that holds the
/// product's weights computes it and returns true, and one that does not
/// (or has failed) returns false and the CPU computes it as before. So an
/// offload can take any subset of products, and a failing device never
/// fails a request.
///
/// Norms, RoPE and routing stay on the CPU; latent attention's products
/// are not asked for. Attention itself may be offered too
/// (`attention(layer:batch:q:k:v:out:)`): the CPU still stores every key and
/// value in its own cache first, so a device that keeps a copy of the cache
/// can compute attention, and the CPU can take over at any time.
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

    /// Grouped-query attention of `layer` for the batch's tokens: store
    /// `k` and `v` (after RoPE) in the device's copy of the cache, then
    /// `out = softmax(scale·q·Kᵀ)·V` over each token's positions 0...p.
    /// Asked only for layers without a sliding window or sinks. A device
    /// that answers true for a layer must answer for every later batch of
    /// that cache, or stop for good: the keys it skipped would be missing.
    func attention(layer: Int, batch: AttentionBatch, q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                   out: UnsafeMutablePointer<Float>) -> Bool
}

extension DenseOffload {
    /// Attention stays on the CPU unless an offload says otherwise.
    public func attention(layer: Int, batch: AttentionBatch, q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                          out: UnsafeMutablePointer<Float>) -> Bool { false }
}

/// What attention needs of a batch: its shape, the paged cache's geometry
/// and identity (a new cache starts empty), and per token its sequence and
/// position, per sequence its block table (`tables[tableStart[s]...]`).
public struct AttentionBatch: @unchecked Sendable {
    public var tokens: Int
    public var numHeads: Int, numKVHeads: Int, headDim: Int
    public var scale: Float
    /// Queries and attention weights enter the products rounded to BF16, as
    /// keys and values are stored (bfloat16 mode).
    public var roundsToBF16: Bool
    public var cache: ObjectIdentifier
    public var numBlocks: Int, blockSize: Int
    public var tokenSequence: UnsafePointer<Int32>, tokenPosition: UnsafePointer<Int32>
    public var tables: UnsafePointer<Int32>, tableStart: UnsafePointer<Int32>
    public var sequences: Int, tableEntries: Int

    public init(tokens: Int, numHeads: Int, numKVHeads: Int, headDim: Int, scale: Float, roundsToBF16: Bool, cache: ObjectIdentifier,
                numBlocks: Int, blockSize: Int, tokenSequence: UnsafePointer<Int32>, tokenPosition: UnsafePointer<Int32>,
                tables: UnsafePointer<Int32>, tableStart: UnsafePointer<Int32>, sequences: Int, tableEntries: Int) {
        self.tokens = tokens
        self.numHeads = numHeads
        self.numKVHeads = numKVHeads
        self.headDim = headDim
        self.scale = scale
        self.roundsToBF16 = roundsToBF16
        self.cache = cache
        self.numBlocks = numBlocks
        self.blockSize = blockSize
        self.tokenSequence = tokenSequence
        self.tokenPosition = tokenPosition
        self.tables = tables
        self.tableStart = tableStart
        self.sequences = sequences
        self.tableEntries = tableEntries
    }
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
