import CKernels

/// The SwiGLU MLP of one expert (or of a dense layer, or a shared expert):
/// `down(silu(gate(x)) * up(x))`.
public struct ExpertWeights: Sendable {
    public let gate: Matrix
    public let up: Matrix
    public let down: Matrix
    /// gpt-oss: biases on the three products, and its clamped activation.
    public var gateBias: [Float]?
    public var upBias: [Float]?
    public var downBias: [Float]?
    public var activation: ExpertActivation = .swiglu
    public var byteCount: Int { gate.byteCount + up.byteCount + down.byteCount }
    /// Row ranges that cut none of the three matrices' stored blocks: 64
    /// when all are packed (their row counts are then multiples of 64), else 1.
    public var rowAlignment: Int {
        gate.layout == .packedBF16 && up.layout == .packedBF16 && down.layout == .packedBF16 ? 64 : 1
    }
    /// Gate, up and down: two FLOPs per weight for each token.
    public var flopsPerToken: Double {
        2 * Double(gate.rows * gate.cols + up.rows * up.cols + down.rows * down.cols)
    }

    public init(gate: Matrix, up: Matrix, down: Matrix) {
        self.gate = gate
        self.up = up
        self.down = down
    }
}

extension ExpertWeights {
    /// The same expert computing from other copies of its matrices (an
    /// executor's node-local or device-resident ones): biases and
    /// activation are kept.
    public func replacing(gate: Matrix, up: Matrix, down: Matrix) -> ExpertWeights {
        var e = ExpertWeights(gate: gate, up: up, down: down)
        e.gateBias = gateBias
        e.upBias = upBias
        e.downBias = downBias
        e.activation = activation
        return e
    }
}

/// How an expert combines its gate and up products.
public enum ExpertActivation: Sendable, Equatable {
    /// `silu(gate) · up`.
    case swiglu
    /// gpt-oss: `g = min(gate, limit)`, `u = clamp(up, -limit, limit)`,
    /// `(u + 1) · g · sigmoid(alpha · g)`.
    case clampedSwiGLU(alpha: Float, limit: Float)
}

/// The feed-forward half of a decoder layer.
public enum FeedForwardWeights: Sendable {
    case dense(ExpertWeights)
    case moe(MoEWeights)
}

public struct MoEWeights: Sendable {
    /// `[numExperts, hidden]`.
    public let router: Matrix
    public internal(set) var experts: [ExpertWeights]
    /// Always-on experts: Qwen2-MoE's one, scaled by `sigmoid(sharedGate · x)`;
    /// DeepSeek's `n_shared_experts`, fused into one MLP and added as is.
    public let shared: ExpertWeights?
    public let sharedGate: Matrix?
    /// DeepSeek-V3's per-expert bias on the selection scores.
    public let selectionBias: [Float]?
    /// gpt-oss: the router's bias, added to its logits.
    public var routerBias: [Float]? = nil
}

public struct AttentionWeights: Sendable {
    public let q: Matrix, k: Matrix, v: Matrix, o: Matrix
    public let qBias: [Float]?, kBias: [Float]?, vBias: [Float]?
    public let qNorm: [Float]?, kNorm: [Float]?
    /// gpt-oss: `o_proj` bias and one attention-sink logit per query head.
    public var oBias: [Float]? = nil
    public var sinks: [Float]? = nil

    public var byteCount: Int { q.byteCount + k.byteCount + v.byteCount + o.byteCount }
}

/// The attention half of a decoder layer.
public enum LayerAttentionWeights: Sendable {
    case grouped(AttentionWeights)
    case latent(LatentAttentionWeights)

    /// Weight bytes one token reads.
    public var byteCount: Int {
        switch self {
        case .grouped(let a): return a.byteCount
        case .latent(let a): return a.byteCount
        }
    }
}

public struct LayerWeights: Sendable {
    public let inputNorm: [Float]
    public let postAttentionNorm: [Float]
    public let attention: LayerAttentionWeights
    public internal(set) var feedForward: FeedForwardWeights
}

/// All weights of a model, bound to the checkpoint's memory mappings.
public struct ModelWeights: Sendable {
    public let config: ModelConfig
    public let embedding: Matrix
    public internal(set) var layers: [LayerWeights]

    /// `[layer]`: each layer's routed experts, empty for dense layers.
    public var routedExpertsByLayer: [[ExpertWeights]] {
        layers.map { layer in
            if case .moe(let moe) = layer.feedForward { return moe.experts }
            return []
        }
    }

    /// Routed experts over all MoE layers, and their weight bytes (what an
    /// executor that computes every expert has resident).
    public var routedExperts: (count: Int, bytes: Int) {
        let all = routedExpertsByLayer.joined()
        return (all.count, all.reduce(0) { $0 + $1.byteCount })
    }
    public let finalNorm: [Float]
    public let lmHead: Matrix
    /// Keeps the mappings the matrices point into alive.
    public let checkpoint: Checkpoint
    /// Keeps the packed copies of the routed experts alive
    /// (`packingExperts()`); nil while they are read as stored.
    public private(set) var packedExperts: PackedWeightStore?

    public init(checkpoint ckpt: Checkpoint) throws {
        let c = ckpt.config
        checkpoint = ckpt
        config = c
        embedding = try ckpt.matrix("model.embed_tokens.weight", rows: c.vocabSize, cols: c.hiddenSize)
        finalNorm = try ckpt.vector("model.norm.weight", count: c.hiddenSize)
        if c.tieWordEmbeddings && !ckpt.has("lm_head.weight") {
            lmHead = embedding
        } else {
            lmHead = try ckpt.matrix("lm_head.weight", rows: c.vocabSize, cols: c.hiddenSize)
        }
        layers = try (0..<c.numLayers).map { try ModelWeights.layer($0, ckpt) }
    }

    static func layer(_ i: Int, _ ckpt: Checkpoint) throws -> LayerWeights {
        let c = ckpt.config
        let p = "model.layers.\(i)."
        let h = c.hiddenSize
        let attn: LayerAttentionWeights = c.latentAttention != nil
            ? .latent(try LatentAttentionWeights(prefix: p + "self_attn.", config: c, checkpoint: ckpt))
            : .grouped(AttentionWeights(
            q: try ckpt.matrix(p + "self_attn.q_proj.weight", rows: c.qSize, cols: h),
            k: try ckpt.matrix(p + "self_attn.k_proj.weight", rows: c.kvSize, cols: h),
            v: try ckpt.matrix(p + "self_attn.v_proj.weight", rows: c.kvSize, cols: h),
            o: try ckpt.matrix(p + "self_attn.o_proj.weight", rows: h, cols: c.qSize),
            qBias: c.qkvBias ? try ckpt.vector(p + "self_attn.q_proj.bias", count: c.qSize) : nil,
            kBias: c.qkvBias ? try ckpt.vector(p + "self_attn.k_proj.bias", count: c.kvSize) : nil,
            vBias: c.qkvBias ? try ckpt.vector(p + "self_attn.v_proj.bias", count: c.kvSize) : nil,
            qNorm: try qkNorm(p + "self_attn.q_norm.weight", c, perHead: c.headDim, whole: c.qSize, ckpt),
            kNorm: try qkNorm(p + "self_attn.k_norm.weight", c, perHead: c.headDim, whole: c.kvSize, ckpt),
            oBias: c.gptOss != nil ? try ckpt.vector(p + "self_attn.o_proj.bias", count: h) : nil,
            sinks: c.gptOss != nil ? try ckpt.vector(p + "self_attn.sinks", count: c.numHeads) : nil))
        let ff: FeedForwardWeights
        if c.sparseLayers[i] {
            ff = .moe(try moe(p, c, ckpt))
        } else {
            ff = .dense(try mlp(p + "mlp.", inter: c.denseIntermediateSize, hidden: h, names: qwenNames, ckpt))
        }
        return LayerWeights(inputNorm: try ckpt.vector(p + "input_layernorm.weight", count: h),
                            postAttentionNorm: try ckpt.vector(p + "post_attention_layernorm.weight", count: h),
                            attention: attn, feedForward: ff)
    }

    static func qkNorm(_ name: String, _ c: ModelConfig, perHead: Int, whole: Int, _ ckpt: Checkpoint) throws -> [Float]? {
        switch c.qkNorm {
        case .none: return nil
        case .perHead: return try ckpt.vector(name, count: perHead)
        case .wholeProjection: return try ckpt.vector(name, count: whole)
        }
    }

    typealias MLPNames = (gate: String, up: String, down: String)
    static let qwenNames: MLPNames = ("gate_proj.weight", "up_proj.weight", "down_proj.weight")
    static let mixtralNames: MLPNames = ("w1.weight", "w3.weight", "w2.weight")

    static func mlp(_ prefix: String, inter: Int, hidden: Int, names: MLPNames, _ ckpt: Checkpoint) throws -> ExpertWeights {
        ExpertWeights(gate: try ckpt.matrix(prefix + names.gate, rows: inter, cols: hidden),
                      up: try ckpt.matrix(prefix + names.up, rows: inter, cols: hidden),
                      down: try ckpt.matrix(prefix + names.down, rows: hidden, cols: inter))
    }

    static func moe(_ p: String, _ c: ModelConfig, _ ckpt: Checkpoint) throws -> MoEWeights {
        if let oss = c.gptOss { return try gptOssExperts(p + "mlp.", c, oss, ckpt) }
        let h = c.hiddenSize, inter = c.moeIntermediateSize, e = c.numExperts
        let block = c.architecture == .mixtral ? "block_sparse_moe." : "mlp."
        let names = c.architecture == .mixtral ? mixtralNames : qwenNames
        let router = try ckpt.matrix(p + block + "gate.weight", rows: e, cols: h)
        let experts: [ExpertWeights]
        let fusedGateUp = p + block + "experts.gate_up_proj"
        if ckpt.has(fusedGateUp) {
            // transformers 5 in-memory layout: gate_up_proj [E, 2I, H] (gate
            // rows first), down_proj [E, H, I].
            let fusedDown = p + block + "experts.down_proj"
            experts = try (0..<e).map { j in
                ExpertWeights(
                    gate: try ckpt.matrix(fusedGateUp, expert: j, of: e, rows: 0..<inter, totalRows: 2 * inter, cols: h),
                    up: try ckpt.matrix(fusedGateUp, expert: j, of: e, rows: inter..<(2 * inter), totalRows: 2 * inter, cols: h),
                    down: try ckpt.matrix(fusedDown, expert: j, of: e, rows: 0..<h, totalRows: h, cols: inter))
            }
        } else {
            experts = try (0..<e).map { j in
                try mlp(p + block + "experts.\(j).", inter: inter, hidden: h, names: names, ckpt)
            }
        }
        var shared: ExpertWeights?
        var sharedGate: Matrix?
        if c.hasSharedExpert && c.sharedExpertGated {
            shared = try mlp(p + "mlp.shared_expert.", inter: c.sharedExpertIntermediateSize, hidden: h, names: qwenNames, ckpt)
            sharedGate = try ckpt.matrix(p + "mlp.shared_expert_gate.weight", rows: 1, cols: h)
        } else if c.hasSharedExpert {
            shared = try mlp(p + "mlp.shared_experts.", inter: c.sharedExpertIntermediateSize, hidden: h, names: qwenNames, ckpt)
        }
        let selectionBias = c.routing.selectionBias
            ? try ckpt.vector(p + block + "gate.e_score_correction_bias", count: e) : nil
        return MoEWeights(router: router, experts: experts, shared: shared, sharedGate: sharedGate, selectionBias: selectionBias)
    }
}

extension ModelWeights {
    /// Whether `packingExperts()` would pack anything on this CPU: routed
    /// experts in BF16 whose shapes pack (`Matrix.canPack`), and AVX512-BF16
    /// for the direct kernel that reads them.
    public var expertsCanPack: Bool {
        guard packedExperts == nil, sy_has_avx512_bf16() != 0 else { return false }
        let all = routedExpertsByLayer.joined()
        return !all.isEmpty && all.allSatisfy { $0.gate.canPack && $0.up.canPack && $0.down.canPack }
    }

    /// These weights with every routed expert packed for the products
    /// (`MatrixLayout.packedBF16`) into one new allocation, in parallel;
    /// nil when `expertsCanPack` is false. Costs the experts' bytes in
    /// memory; the stored experts' pages are handed back to the kernel as
    /// each is packed (`Matrix.releasePages`), so the resident set holds one
    /// copy.
    public func packingExperts() throws -> ModelWeights? {
        guard expertsCanPack else { return nil }
        let bytes = routedExperts.bytes
        let store = try PackedWeightStore(bytes: bytes)
        var packed = self
        packed.packedExperts = store
        var at = 0
        for (l, layer) in layers.enumerated() {
            guard case .moe(var moe) = layer.feedForward else { continue }
            // Offsets first, so the copies can run in parallel.
            let offsets = moe.experts.map { e -> Int in
                defer { at += e.byteCount }
                return at
            }
            let result = UnsafeMutableBufferPointer<ExpertWeights>.allocate(capacity: moe.experts.count)
            defer {
                _ = result.deinitialize()
                result.deallocate()
            }
            nonisolated(unsafe) let out = result
            let experts = moe.experts, base = store.base
            Parallel.forEach(experts.count) { j in
                let e = experts[j]
                let p = base + offsets[j]
                (out.baseAddress! + j).initialize(to: e.replacing(
                    gate: e.gate.packed(into: p), up: e.up.packed(into: p + e.gate.byteCount),
                    down: e.down.packed(into: p + e.gate.byteCount + e.up.byteCount)))
                for m in [e.gate, e.up, e.down] { m.releasePages() }
            }
            moe.experts = Array(result)
            packed.layers[l].feedForward = .moe(moe)
        }
        return packed
    }
}
