import Foundation

/// `deepseek_v2` and `deepseek_v3` (also Kimi K2 and Moonlight, which reuse
/// `deepseek_v3`): multi-head latent attention, dense first layers, shared
/// experts, and group-limited routing. Absent keys take transformers 5's
/// defaults for the model type.
public struct DeepseekConfiguration: Codable, Sendable {
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var moeIntermediateSize: Int?
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var nRoutedExperts: Int?
    public var numExperts: Int?
    public var numLocalExperts: Int?
    public var nSharedExperts: Int?
    public var numExpertsPerTok: Int?
    public var routedScalingFactor: Double?
    public var kvLoraRank: Int?
    public var qLoraRank: Int?
    public var qkRopeHeadDim: Int?
    public var qkNopeHeadDim: Int?
    public var vHeadDim: Int?
    public var topkMethod: String?
    public var scoringFunc: String?
    public var nGroup: Int?
    public var topkGroup: Int?
    public var firstKDenseReplace: Int?
    public var moeLayerFreq: Int?
    public var normTopkProb: Bool?
    public var rmsNormEps: Double?
    public var ropeTheta: Double?
    public var ropeParameters: RopeParameters?
    public var ropeScaling: RopeParameters?
    public var ropeInterleave: Bool?
    public var attentionBias: Bool?
    public var mlpBias: Bool?
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
        case nRoutedExperts = "n_routed_experts"
        case numExperts = "num_experts"
        case numLocalExperts = "num_local_experts"
        case nSharedExperts = "n_shared_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case routedScalingFactor = "routed_scaling_factor"
        case kvLoraRank = "kv_lora_rank"
        case qLoraRank = "q_lora_rank"
        case qkRopeHeadDim = "qk_rope_head_dim"
        case qkNopeHeadDim = "qk_nope_head_dim"
        case vHeadDim = "v_head_dim"
        case topkMethod = "topk_method"
        case scoringFunc = "scoring_func"
        case nGroup = "n_group"
        case topkGroup = "topk_group"
        case firstKDenseReplace = "first_k_dense_replace"
        case moeLayerFreq = "moe_layer_freq"
        case normTopkProb = "norm_topk_prob"
        case rmsNormEps = "rms_norm_eps"
        case ropeTheta = "rope_theta"
        case ropeParameters = "rope_parameters"
        case ropeScaling = "rope_scaling"
        case ropeInterleave = "rope_interleave"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
        case maxPositionEmbeddings = "max_position_embeddings"
        case tieWordEmbeddings = "tie_word_embeddings"
        case hiddenAct = "hidden_act"
    }
}

extension ModelConfig {
    /// `data` is the raw config.json: transformers' default `q_lora_rank` is
    /// 1536 when the key is absent, but none when it is `null`, which the
    /// decoded optional cannot tell apart.
    static func fromDeepseek(_ c: DeepseekConfiguration, arch: Architecture, data: Data, file: String) throws -> ModelConfig {
        func fail(_ reason: String) throws -> Never { throw CheckpointError.invalidConfig(file: file, reason: reason) }
        try checkActivation(c.hiddenAct, file: file)
        let v3 = arch == .deepseekV3
        let raw = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]

        guard let numExperts = c.nRoutedExperts ?? c.numExperts ?? c.numLocalExperts else {
            try fail("missing key \"n_routed_experts\": the number of routed experts per MoE layer")
        }
        guard let topK = c.numExpertsPerTok else { try fail("missing key \"num_experts_per_tok\"") }
        if let freq = c.moeLayerFreq, freq != 1 {
            try fail("moe_layer_freq is \(freq); only 1 is supported (every layer from first_k_dense_replace on is MoE, as in transformers)")
        }
        if c.mlpBias == true { try fail("mlp_bias true is not supported (expected false)") }

        var routing = RouterConfig()
        routing.scale = Float(c.routedScalingFactor ?? (v3 ? 2.5 : 1.0))
        let normalize: Bool
        if v3 {
            if let m = c.topkMethod, m != "noaux_tc" {
                try fail("topk_method \"\(m)\" is not supported for deepseek_v3 (expected \"noaux_tc\" or no key)")
            }
            if let s = c.scoringFunc, s != "sigmoid" {
                try fail("scoring_func \"\(s)\" is not supported for deepseek_v3 (expected \"sigmoid\")")
            }
            routing.scoring = .sigmoid
            routing.selectionBias = true
            routing.groupScore = .topTwoSum
            routing.groupCount = c.nGroup ?? 8
            routing.groupsKept = c.topkGroup ?? 4
            normalize = c.normTopkProb ?? true
        } else {
            if let s = c.scoringFunc, s != "softmax" {
                try fail("scoring_func \"\(s)\" is not supported for deepseek_v2 (expected \"softmax\")")
            }
            switch c.topkMethod ?? "greedy" {
            case "greedy": break
            case "group_limited_greedy":
                guard let g = c.nGroup, let kept = c.topkGroup else {
                    try fail("topk_method \"group_limited_greedy\" needs n_group and topk_group")
                }
                routing.groupCount = g
                routing.groupsKept = kept
                routing.groupScore = .max
            case let m:
                try fail("topk_method \"\(m)\" is not supported for deepseek_v2 (expected \"greedy\" or \"group_limited_greedy\")")
            }
            // transformers' DeepseekV2 router never renormalises: its weights
            // are the softmax scores times routed_scaling_factor.
            normalize = false
        }
        if routing.groupCount > 1 {
            if routing.groupCount > RouterConfig.maxGroups {
                try fail("n_group (\(routing.groupCount)) is more than the \(RouterConfig.maxGroups) groups the router ranks")
            }
            if numExperts % routing.groupCount != 0 {
                try fail("n_group (\(routing.groupCount)) must divide n_routed_experts (\(numExperts))")
            }
            let perGroup = numExperts / routing.groupCount
            if routing.groupsKept < 1 || routing.groupsKept > routing.groupCount {
                try fail("topk_group (\(routing.groupsKept)) must be between 1 and n_group (\(routing.groupCount))")
            }
            if routing.groupsKept * perGroup < topK {
                try fail("topk_group (\(routing.groupsKept)) groups of \(perGroup) experts cannot hold num_experts_per_tok (\(topK)) experts")
            }
            if routing.groupScore == .topTwoSum && perGroup < 2 {
                try fail("n_group (\(routing.groupCount)) leaves \(perGroup) expert per group; deepseek_v3 ranks groups by their best two")
            }
        }

        let kvLoraRank = c.kvLoraRank ?? 512
        let qLoraRank: Int? = raw.keys.contains("q_lora_rank") ? c.qLoraRank : 1536
        let nope = c.qkNopeHeadDim ?? 128, ropeDim = c.qkRopeHeadDim ?? 64, valueDim = c.vHeadDim ?? 128
        for (key, value) in [("kv_lora_rank", kvLoraRank), ("qk_nope_head_dim", nope), ("qk_rope_head_dim", ropeDim), ("v_head_dim", valueDim)] where value <= 0 {
            try fail("\(key) must be positive (found \(value))")
        }
        if let q = qLoraRank, q <= 0 { try fail("q_lora_rank must be positive or null (found \(q))") }

        var rope = RopeConfig()
        rope.dim = ropeDim
        rope.interleaved = v3 ? (c.ropeInterleave ?? true) : true
        let theta = Double(try ropeTheta(top: c.ropeTheta, parameters: nil, scaling: nil, defaultTheta: 10000, file: file))
        let params = ropeParameters(parameters: c.ropeParameters, scaling: c.ropeScaling)
        let maxPositions = c.maxPositionEmbeddings ?? (v3 ? 4096 : 2048)
        switch params?.kind ?? "default" {
        case "default": break
        case "yarn":
            rope.yarn = try YarnScaling(params!, maxPositions: maxPositions, defaultOriginal: maxPositions, file: file)
        case let kind:
            try fail("rope type \"\(kind)\" is not supported for \(arch.rawValue) (expected \"default\" or \"yarn\")")
        }
        let ropeTheta = Float(params?.ropeTheta ?? theta)
        let scale = (1 / Double(nope + ropeDim).squareRoot()) * (rope.yarn?.softmaxScaleMultiplier ?? 1)
        let latent = LatentAttentionConfig(qLoraRank: qLoraRank, kvLoraRank: kvLoraRank, nopeDim: nope, ropeDim: ropeDim,
                                           valueDim: valueDim, bias: c.attentionBias ?? false, softmaxScale: Float(scale))
        let firstDense = c.firstKDenseReplace ?? (v3 ? 3 : 0)
        let moeInter = c.moeIntermediateSize ?? (v3 ? 2048 : 1407)
        var config = ModelConfig(
            architecture: arch, vocabSize: c.vocabSize, hiddenSize: c.hiddenSize,
            numLayers: c.numHiddenLayers, numHeads: c.numAttentionHeads,
            numKVHeads: 1, headDim: latent.cacheWidth,
            rmsNormEps: Float(c.rmsNormEps ?? 1e-6), ropeTheta: ropeTheta,
            maxPositionEmbeddings: maxPositions,
            numExperts: numExperts, numExpertsPerToken: topK,
            moeIntermediateSize: moeInter, denseIntermediateSize: c.intermediateSize,
            sharedExpertIntermediateSize: moeInter * (c.nSharedExperts ?? (v3 ? 1 : 2)),
            normTopKProb: normalize,
            sparseLayers: (0..<c.numHiddenLayers).map { $0 >= firstDense },
            qkvBias: false, qkNorm: .none, clipQKV: nil,
            tieWordEmbeddings: c.tieWordEmbeddings ?? false, bosTokenId: nil, eosTokenIds: [])
        config.routing = routing
        config.latentAttention = latent
        config.rope = rope
        config.sharedExpertGated = false
        return config
    }
}
