/// Where the dense products of a layer may be computed besides the CPU: the
/// sibling of `ExpertExecutor` for the work every token does (attention
/// projections, the router, shared experts and dense MLPs, the LM head).
/// The forward asks per product, by role; an offload that holds the
/// product's weights computes it and returns true, and one that does not
/// (or has failed) returns false and the CPU computes it as before. So an
/// offload can take any subset of products, and a failing device never
/// fails a request.
///
/// Routing may stay on the CPU (`routes`), and so do the norms but for
/// `moeLayerFront`. Latent attention is offered whole
/// (`latentAttentionLayer`), else by its projections. Attention itself may be offered
/// too, as one step (`attention(layer:batch:q:k:v:out:)`) or as the whole
/// grouped-query attention of a layer in one round trip
/// (`attentionLayer(layer:batch:x:k:v:out:)`): the CPU still stores every
/// key and value in its own cache, so a device that keeps a copy of the
/// cache can compute attention, and the CPU can take over at any time.
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

    /// The whole grouped-query attention of `layer`, asked before any of
    /// the steps above: from the normed rows `x`, q/k/v with their biases,
    /// q/k norms, `clip_qkv` and RoPE (`batch.rope`'s angles per token), the
    /// keys and values stored in the device's copy of the cache, attention
    /// (with the layer's sliding window and sinks, which the offload takes
    /// from the weights and config it holds), then `o_proj` and its bias
    /// into `out`. `k` and `v` come back after RoPE, so the CPU stores them
    /// in its own cache. One round trip where the steps take three. Asked
    /// for every grouped-query layer; the rule for answering true is
    /// `attention`'s.
    func attentionLayer(layer: Int, batch: AttentionBatch, x: UnsafePointer<Float>, k: UnsafeMutablePointer<Float>,
                        v: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>) -> Bool

    /// The whole latent attention (DeepSeek's MLA) of `layer`, asked before
    /// its projections: from the normed rows `x`, the query (`q_proj`, or
    /// `q_a_proj`, its bias and norm, `q_b_proj`), the cached row (`kv_a_proj_with_mqa`,
    /// its bias, the latent's norm, RoPE on the shared key) into `row`
    /// (`tokens × (kvLoraRank + rope)`, which the CPU stores in its own
    /// cache) and the device's copy of the cache, then attention in the
    /// absorbed form over the cached rows, each head's latent output
    /// through `W_UV`, `o_proj` and its bias into `out`. `batch` has one
    /// key head whose width is the cached row's, the softmax scale of the
    /// model's config and its RoPE angles. The rule for answering true is
    /// `attention`'s.
    func latentAttentionLayer(layer: Int, batch: AttentionBatch, x: UnsafePointer<Float>, row: UnsafeMutablePointer<Float>,
                              out: UnsafeMutablePointer<Float>) -> Bool

    /// The router logits of MoE layer `layer` into `logits` (before any
    /// router bias). An offload that also holds the layer's shared expert
    /// may start it from the same rows and answer `.sharedExpertStarted`:
    /// it runs while the routed experts do, and `sharedExpert(layer:tokens:out:)`
    /// collects it after them.
    func router(layer: Int, x: UnsafePointer<Float>, tokens: Int, logits: UnsafeMutablePointer<Float>) -> RouterOffload

    /// The front of MoE layer `layer` (grouped-query attention) in one
    /// round trip, asked before anything else of the layer: from the
    /// residual rows `hidden`, the input RMSNorm, the attention of
    /// `attentionLayer` (`k` and `v` likewise come back for the CPU's
    /// cache), the residual add into `hidden`, the post-attention RMSNorm
    /// into `normed`, and the router's logits into `logits` (before any
    /// router bias), starting the shared expert as `router` does. The norms
    /// then run on the device too, and one round trip does what
    /// `attentionLayer` and `router` take two for. `.notHeld`: nothing was
    /// done, `hidden` is as it was, and the forward asks the calls above.
    /// Also asked for a latent attention (MLA) layer, with `batch` as
    /// `latentAttentionLayer` takes it: `k` then receives the cached rows
    /// and `v` nothing.
    func moeLayerFront(layer: Int, batch: AttentionBatch, hidden: UnsafeMutablePointer<Float>, k: UnsafeMutablePointer<Float>,
                       v: UnsafeMutablePointer<Float>, normed: UnsafeMutablePointer<Float>, logits: UnsafeMutablePointer<Float>)
        -> RouterOffload

    /// `moeLayerFront`, asked instead of it, where the offload may hold the
    /// residual stream across layers. `residualHeld`: the offload kept the
    /// previous layer's output (`keepLayerOutput`), so its own residual
    /// rows are this layer's input and `hidden` is stale: it neither reads
    /// nor writes `hidden` (`.notHeld`: nothing was done; the forward then
    /// takes the rows back with `residualRows`). `mayKeep`: the front may
    /// keep the residual rows to itself (`keepsResidual`), leaving `hidden`
    /// as it was; else it writes `hidden` as `moeLayerFront` does. The
    /// default asks `moeLayerFront` where nothing is held.
    func moeLayerFront(layer: Int, batch: AttentionBatch, hidden: UnsafeMutablePointer<Float>, residualHeld: Bool, mayKeep: Bool,
                       k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, normed: UnsafeMutablePointer<Float>,
                       logits: UnsafeMutablePointer<Float>) -> RouterOffload

    /// A dense layer whole in one round trip (attention, then its dense
    /// MLP), asked before its blocks: from the residual rows (`hidden`, or
    /// the offload's own where `residualHeld`), the input norm, the layer's
    /// attention (`batch` and `k`/`v` as `moeLayerFront` takes them), the
    /// residual add, the post-attention norm, the MLP and its add. `mayKeep`:
    /// it may keep the output rows to itself (`keepsResidual`), leaving
    /// `hidden` as it was; else it writes them into `hidden`. False: nothing
    /// was done.
    func denseLayer(layer: Int, batch: AttentionBatch, hidden: UnsafeMutablePointer<Float>, residualHeld: Bool, mayKeep: Bool,
                    k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>) -> Bool

    /// Asked right after a front (or `denseLayer`) that did something: whether
    /// it kept the residual rows (after attention) to itself, leaving
    /// `hidden` as it was. If so, the layer's output comes back through
    /// `keepLayerOutput`, not the host's add.
    func keepsResidual(layer: Int, tokens: Int) -> Bool

    /// After a front that kept the residual rows: `out` is the share of
    /// the layer's MoE output the CPU combined (its experts, and the
    /// shared expert unless the front answered `.sharedExpertKept`); the
    /// offload adds it and its own share (experts it summed where they
    /// ran, a kept shared expert) into the residual rows it holds, which
    /// are then the layer's output. False: it could not (a device error;
    /// it then takes no more fronts), and the forward recomputes from the
    /// last rows the host has.
    func keepLayerOutput(layer: Int, tokens: Int, out: UnsafePointer<Float>) -> Bool

    /// `keepLayerOutput`, asked instead of it: `outIsZero` says the CPU's
    /// share is all zeros (every picked expert summed on the device, the
    /// shared expert kept or absent, no down biases), so it need not cross.
    /// The default asks `keepLayerOutput`.
    func keepLayerOutput(layer: Int, tokens: Int, out: UnsafePointer<Float>, outIsZero: Bool) -> Bool

    /// The residual rows the offload holds, copied into `hidden` (it still
    /// holds them); false if it cannot give them (a device error).
    func residualRows(tokens: Int, into hidden: UnsafeMutablePointer<Float>) -> Bool

    /// After the last layer, where the offload still holds the residual
    /// rows of all `tokens`: the final RMSNorm and the LM head of the rows
    /// `rows` (indices into those, in order) into `logits`
    /// (`rows.count × vocabSize`). One round trip where taking the rows
    /// back (`residualRows`) and the LM head take two, and the rows do not
    /// cross. False: nothing was done (the forward takes the rows back).
    func residualLogits(tokens: Int, rows: UnsafeBufferPointer<Int32>, logits: UnsafeMutablePointer<Float>) -> Bool

    /// The output of the shared expert `router` started for `layer`; false
    /// if it could not be had (the CPU computes it then).
    func sharedExpert(layer: Int, tokens: Int, out: UnsafeMutablePointer<Float>) -> Bool
    /// Asked right after `router` or `moeLayerFront` computed the logits of
    /// `layer`: the routes too, if the offload chose them where the logits
    /// are, as the CPU would (router bias, scoring, selection bias and
    /// groups, top-k, renormalising and scale from the model's config):
    /// per token `k` expert ids and their weights, in the CPU's order.
    /// False: the CPU routes from the logits.
    func routes(layer: Int, tokens: Int, experts: UnsafeMutablePointer<Int32>, weights: UnsafeMutablePointer<Float>) -> Bool
}

/// What `DenseOffload.router` did.
public enum RouterOffload: Sendable {
    /// Nothing: the CPU computes the logits.
    case notHeld
    /// The logits.
    case computed
    /// The logits, and the layer's shared expert is under way.
    case sharedExpertStarted
    /// The logits, and the layer's shared expert is under way where the
    /// offload keeps the residual rows (`keepsResidual`): it adds the
    /// shared expert's output there, and the MoE block adds none.
    case sharedExpertKept
}

extension DenseOffload {
    /// Attention stays on the CPU unless an offload says otherwise.
    public func attention(layer: Int, batch: AttentionBatch, q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                          out: UnsafeMutablePointer<Float>) -> Bool { false }

    public func attentionLayer(layer: Int, batch: AttentionBatch, x: UnsafePointer<Float>, k: UnsafeMutablePointer<Float>,
                               v: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>) -> Bool { false }

    public func latentAttentionLayer(layer: Int, batch: AttentionBatch, x: UnsafePointer<Float>, row: UnsafeMutablePointer<Float>,
                                     out: UnsafeMutablePointer<Float>) -> Bool { false }

    /// The logits as one product; the shared expert is asked for apart (`mlp`).
    public func router(layer: Int, x: UnsafePointer<Float>, tokens: Int, logits: UnsafeMutablePointer<Float>) -> RouterOffload {
        product(.router, layer: layer, x: x, tokens: tokens, y: logits) ? .computed : .notHeld
    }

    public func sharedExpert(layer: Int, tokens: Int, out: UnsafeMutablePointer<Float>) -> Bool { false }
    public func routes(layer: Int, tokens: Int, experts: UnsafeMutablePointer<Int32>, weights: UnsafeMutablePointer<Float>) -> Bool { false }

    public func moeLayerFront(layer: Int, batch: AttentionBatch, hidden: UnsafeMutablePointer<Float>, k: UnsafeMutablePointer<Float>,
                              v: UnsafeMutablePointer<Float>, normed: UnsafeMutablePointer<Float>, logits: UnsafeMutablePointer<Float>)
        -> RouterOffload { .notHeld }

    public func moeLayerFront(layer: Int, batch: AttentionBatch, hidden: UnsafeMutablePointer<Float>, residualHeld: Bool, mayKeep: Bool,
                              k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, normed: UnsafeMutablePointer<Float>,
                              logits: UnsafeMutablePointer<Float>) -> RouterOffload {
        residualHeld ? .notHeld : moeLayerFront(layer: layer, batch: batch, hidden: hidden, k: k, v: v, normed: normed, logits: logits)
    }

    public func denseLayer(layer: Int, batch: AttentionBatch, hidden: UnsafeMutablePointer<Float>, residualHeld: Bool, mayKeep: Bool,
                           k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>) -> Bool { false }

    public func keepsResidual(layer: Int, tokens: Int) -> Bool { false }
    public func keepLayerOutput(layer: Int, tokens: Int, out: UnsafePointer<Float>) -> Bool { false }
    public func keepLayerOutput(layer: Int, tokens: Int, out: UnsafePointer<Float>, outIsZero: Bool) -> Bool {
        keepLayerOutput(layer: layer, tokens: tokens, out: out)
    }
    public func residualRows(tokens: Int, into hidden: UnsafeMutablePointer<Float>) -> Bool { false }
    public func residualLogits(tokens: Int, rows: UnsafeBufferPointer<Int32>, logits: UnsafeMutablePointer<Float>) -> Bool { false }
}

/// RoPE's angles for a batch, as the CPU applies them: per token `half`
/// cosines and sines (the rotated values of a head are its first
/// `2 * half`), pairs rotate-half or interleaved.
public struct RopeAngles: @unchecked Sendable {
    public var cos: UnsafePointer<Float>, sin: UnsafePointer<Float>
    public var half: Int
    public var interleaved: Bool

    public init(cos: UnsafePointer<Float>, sin: UnsafePointer<Float>, half: Int, interleaved: Bool) {
        self.cos = cos
        self.sin = sin
        self.half = half
        self.interleaved = interleaved
    }
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
    /// Nil where the caller computed RoPE itself (`attention`'s inputs).
    public var rope: RopeAngles?

    public init(tokens: Int, numHeads: Int, numKVHeads: Int, headDim: Int, scale: Float, roundsToBF16: Bool, cache: ObjectIdentifier,
                numBlocks: Int, blockSize: Int, tokenSequence: UnsafePointer<Int32>, tokenPosition: UnsafePointer<Int32>,
                tables: UnsafePointer<Int32>, tableStart: UnsafePointer<Int32>, sequences: Int, tableEntries: Int, rope: RopeAngles? = nil) {
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
        self.rope = rope
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
    /// Latent attention (DeepSeek): `q_proj`, or without it `q_a_proj`
    /// and `q_b_proj` (the norm between stays on the CPU), and
    /// `kv_a_proj_with_mqa`. Its `o_proj` is `attentionOutput`.
    case latentQuery, latentQueryA, latentQueryB, latentKVA
}
