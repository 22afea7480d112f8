import Foundation

/// GLM-4.5 / 4.5-Air (`glm4_moe`): grouped-query attention with q/k/v bias,
/// optional per-head q/k norms and RoPE on the first `partial_rotary_factor`
/// of each head; DeepSeek-V3's sigmoid routing with a selection bias and
/// groups ranked by their best two; ungated shared experts; dense first
/// layers. Absent keys take transformers 5's defaults.
public struct Glm4MoeConfiguration: Codable, Sendable {
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int?
    public var moeIntermediateSize: Int?
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int?
    public var headDim: Int?
    public var partialRotaryFactor: Double?
    public var nRoutedExperts: Int?
    public var numLocalExperts: Int?
    public var nSharedExperts: Int?
    public var numExpertsPerTok: Int?
    public var routedScalingFactor: Double?
    public var nGroup: Int?
    public var topkGroup: Int?
    public var firstKDenseReplace: Int?
    public var normTopkProb: Bool?
    public var useQkNorm: Bool?
    public var attentionBias: Bool?
    public var rmsNormEps: Double?
    public var ropeTheta: Double?
    public var ropeParameters: RopeParameters?
    public var ropeScaling: RopeParameters?
    public var maxPositionEmbeddings: Int?
    public var tieWordEmbeddings: Bool?
    public var hiddenAct: String?

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size"
        case hiddenSize = "hidden_size"
        case intermediateSize = "intermediate_size"
        case moeIntermediateSize = "moe_intermediate_size"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads"
        case headDim = "head_dim"
        case partialRotaryFactor = "partial_rotary_factor"
        case nRoutedExperts = "n_routed_experts"
        case numLocalExperts = "num_local_experts"
        case nSharedExperts = "n_shared_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case routedScalingFactor = "routed_scaling_factor"
        case nGroup = "n_group"
        case topkGroup = "topk_group"
        case firstKDenseReplace = "first_k_dense_replace"
        case normTopkProb = "norm_topk_prob"
        case useQkNorm = "use_qk_norm"
        case attentionBias = "attention_bias"
        case rmsNormEps = "rms_norm_eps"
        case ropeTheta = "rope_theta"
        case ropeParameters = "rope_parameters"
        case ropeScaling = "rope_scaling"
        case maxPositionEmbeddings = "max_position_embeddings"
        case tieWordEmbeddings = "tie_word_embeddings"
        case hiddenAct = "hidden_act"
    }
}

/// `partial_rotary_factor` may sit in `rope_parameters` (transformers 5) or at the top.
struct PartialRotaryFactor: Decodable {
    var ropeParameters: Inner?
    struct Inner: Decodable {
        var partialRotaryFactor: Double?
        enum CodingKeys: String, CodingKey { case partialRotaryFactor = "partial_rotary_factor" }
    }
    enum CodingKeys: String, CodingKey { case ropeParameters = "rope_parameters" }
}

extension ModelConfig {
    static func fromGlm4Moe(_ c: Glm4MoeConfiguration, data: Data, file: String) throws -> ModelConfig {
        func fail(_ reason: String) throws -> Never { throw CheckpointError.invalidConfig(file: file, reason: reason) }
        try checkActivation(c.hiddenAct, file: file)
        guard let numExperts = c.nRoutedExperts ?? c.numLocalExperts else {
            try fail("missing key \"n_routed_experts\": the number of routed experts per MoE layer")
        }
        let topK = c.numExpertsPerTok ?? 8
        var routing = RouterConfig()
        routing.scoring = .sigmoid
        routing.selectionBias = true
        routing.groupScore = .topTwoSum
        routing.groupCount = c.nGroup ?? 1
        routing.groupsKept = c.topkGroup ?? 1
        routing.scale = Float(c.routedScalingFactor ?? 1)
        if routing.groupCount > RouterConfig.maxGroups {
            try fail("n_group (\(routing.groupCount)) is more than the \(RouterConfig.maxGroups) groups the router ranks")
        }
        if routing.groupCount < 1 || numExperts % routing.groupCount != 0 {
            try fail("n_group (\(routing.groupCount)) must divide n_routed_experts (\(numExperts))")
        }
        if routing.groupsKept < 1 || routing.groupsKept > routing.groupCount {
            try fail("topk_group (\(routing.groupsKept)) must be between 1 and n_group (\(routing.groupCount))")
        }
        if routing.isGroupLimited && numExperts / routing.groupCount < 2 {
            try fail("n_group (\(routing.groupCount)) leaves fewer than 2 experts per group; groups are ranked by their best two")
        }
        let headDim = c.headDim ?? c.hiddenSize / c.numAttentionHeads
        let nested = try? JSONDecoder().decode(PartialRotaryFactor.self, from: data)
        let factor = nested?.ropeParameters?.partialRotaryFactor ?? c.partialRotaryFactor ?? 0.5
        if !(factor > 0 && factor <= 1) { try fail("partial_rotary_factor (\(factor)) must be in (0, 1]") }
        var rope = RopeConfig()
        rope.dim = Int(Double(headDim) * factor)
        if rope.dim > headDim || rope.dim % 2 != 0 {
            try fail("partial_rotary_factor (\(factor)) × head_dim (\(headDim)) = \(rope.dim) rotated values; must be even")
        }
        let moeInter = c.moeIntermediateSize ?? 1408
        let firstDense = c.firstKDenseReplace ?? 1
        var config = ModelConfig(
            architecture: .glm4Moe, vocabSize: c.vocabSize, hiddenSize: c.hiddenSize,
            numLayers: c.numHiddenLayers, numHeads: c.numAttentionHeads,
            numKVHeads: c.numKeyValueHeads ?? c.numAttentionHeads, headDim: headDim,
            rmsNormEps: Float(c.rmsNormEps ?? 1e-5),
            ropeTheta: try ropeTheta(top: c.ropeTheta, parameters: c.ropeParameters, scaling: c.ropeScaling, defaultTheta: 10000, file: file),
            maxPositionEmbeddings: c.maxPositionEmbeddings ?? 131072,
            numExperts: numExperts, numExpertsPerToken: topK,
            moeIntermediateSize: moeInter, denseIntermediateSize: c.intermediateSize ?? 10944,
            sharedExpertIntermediateSize: moeInter * (c.nSharedExperts ?? 1),
            normTopKProb: c.normTopkProb ?? true,
            sparseLayers: (0..<c.numHiddenLayers).map { $0 >= firstDense },
            qkvBias: c.attentionBias ?? false, qkNorm: (c.useQkNorm ?? false) ? .perHead : .none, clipQKV: nil,
            tieWordEmbeddings: c.tieWordEmbeddings ?? false, bosTokenId: nil, eosTokenIds: [])
        config.routing = routing
        config.rope = rope
        config.sharedExpertGated = false
        return config
    }
}
