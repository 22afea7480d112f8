import Foundation

/// gpt-oss-20b / 120b (`gpt_oss`): grouped-query attention with biases on
/// q/k/v/o and a learned sink logit per head, sliding-window layers
/// alternating with full ones (`layer_types`, `sliding_window`), YaRN RoPE;
/// a biased router whose top-k logits are softmaxed among themselves;
/// experts with fused, interleaved gate/up columns, biases and a clamped
/// SwiGLU; experts stored in BF16/F32 (transformers' layout) or MXFP4 (the
/// published `*_blocks` / `*_scales`).
public struct GptOssConfiguration: Codable, Sendable {
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int?
    public var headDim: Int?
    public var numLocalExperts: Int
    public var numExpertsPerTok: Int?
    public var expertsPerToken: Int?
    public var slidingWindow: Int?
    public var layerTypes: [String]?
    public var swigluLimit: Double?
    public var swigluAlpha: Double?
    public var attentionBias: Bool?
    public var rmsNormEps: Double?
    public var ropeTheta: Double?
    public var ropeParameters: RopeParameters?
    public var ropeScaling: RopeParameters?
    public var maxPositionEmbeddings: Int?
    public var tieWordEmbeddings: Bool?
    public var hiddenAct: String?
    public var quantizationConfig: Quantization?

    public struct Quantization: Codable, Sendable {
        public var quantMethod: String?
        enum CodingKeys: String, CodingKey { case quantMethod = "quant_method" }
    }

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size"
        case hiddenSize = "hidden_size"
        case intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads"
        case headDim = "head_dim"
        case numLocalExperts = "num_local_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case expertsPerToken = "experts_per_token"
        case slidingWindow = "sliding_window"
        case layerTypes = "layer_types"
        case swigluLimit = "swiglu_limit"
        case swigluAlpha = "swiglu_alpha"
        case attentionBias = "attention_bias"
        case rmsNormEps = "rms_norm_eps"
        case ropeTheta = "rope_theta"
        case ropeParameters = "rope_parameters"
        case ropeScaling = "rope_scaling"
        case maxPositionEmbeddings = "max_position_embeddings"
        case tieWordEmbeddings = "tie_word_embeddings"
        case hiddenAct = "hidden_act"
        case quantizationConfig = "quantization_config"
    }
}

/// What gpt-oss adds to the common layer.
public struct GptOssSpecifics: Sendable, Equatable {
    /// `swiglu_alpha` (1.702 in the reference code) and `swiglu_limit`.
    public var swigluAlpha: Float
    public var swigluLimit: Float
    /// Experts stored as MXFP4 blocks and scales (`quant_method: mxfp4`).
    public var mxfp4Experts: Bool
}

extension ModelConfig {
    static func fromGptOss(_ c: GptOssConfiguration, file: String) throws -> ModelConfig {
        func fail(_ reason: String) throws -> Never { throw CheckpointError.invalidConfig(file: file, reason: reason) }
        let topK = c.numExpertsPerTok ?? c.expertsPerToken ?? 4
        let headDim = c.headDim ?? 64
        var mxfp4 = false
        if let q = c.quantizationConfig {
            guard q.quantMethod == "mxfp4" else {
                try fail("quantization_config.quant_method \"\(q.quantMethod ?? "none")\" is not supported (expected \"mxfp4\", or no quantization_config for BF16/F32 experts)")
            }
            mxfp4 = true
            if c.hiddenSize % 32 != 0 || c.intermediateSize % 32 != 0 {
                try fail("MXFP4 experts need hidden_size (\(c.hiddenSize)) and intermediate_size (\(c.intermediateSize)) to be multiples of 32")
            }
        }
        var windows = Array(repeating: 0, count: c.numHiddenLayers)
        if let types = c.layerTypes {
            guard types.count == c.numHiddenLayers else {
                try fail("layer_types has \(types.count) entries; num_hidden_layers is \(c.numHiddenLayers)")
            }
            for (i, t) in types.enumerated() {
                switch t {
                case "full_attention": break
                case "sliding_attention":
                    guard let w = c.slidingWindow, w > 0 else { try fail("layer_types has sliding_attention but sliding_window is not a positive number") }
                    windows[i] = w
                default: try fail("layer_types[\(i)] is \"\(t)\" (expected \"sliding_attention\" or \"full_attention\")")
                }
            }
        }
        var rope = RopeConfig()
        rope.dim = headDim
        let theta = c.ropeParameters?.ropeTheta ?? c.ropeTheta ?? 150000
        let maxPositions = c.maxPositionEmbeddings ?? 131072
        if let p = ropeParameters(parameters: c.ropeParameters, scaling: c.ropeScaling) {
            switch p.kind {
            case "default": break
            case "yarn":
                rope.yarn = try YarnScaling(p, maxPositions: maxPositions, defaultOriginal: 4096, file: file)
            case let kind: try fail("rope type \"\(kind)\" is not supported for gpt_oss (expected \"yarn\" or \"default\")")
            }
        }
        var config = ModelConfig(
            architecture: .gptOss, vocabSize: c.vocabSize, hiddenSize: c.hiddenSize,
            numLayers: c.numHiddenLayers, numHeads: c.numAttentionHeads,
            numKVHeads: c.numKeyValueHeads ?? c.numAttentionHeads, headDim: headDim,
            rmsNormEps: Float(c.rmsNormEps ?? 1e-5), ropeTheta: Float(theta),
            maxPositionEmbeddings: maxPositions,
            numExperts: c.numLocalExperts, numExpertsPerToken: topK,
            moeIntermediateSize: c.intermediateSize, denseIntermediateSize: c.intermediateSize,
            sharedExpertIntermediateSize: 0, normTopKProb: false,
            sparseLayers: Array(repeating: true, count: c.numHiddenLayers),
            qkvBias: c.attentionBias ?? true, qkNorm: .none, clipQKV: nil,
            tieWordEmbeddings: c.tieWordEmbeddings ?? false, bosTokenId: nil, eosTokenIds: [])
        config.routing.scoring = .softmaxOfTopK
        config.rope = rope
        config.attentionWindows = windows
        config.gptOss = GptOssSpecifics(swigluAlpha: Float(c.swigluAlpha ?? 1.702), swigluLimit: Float(c.swigluLimit ?? 7.0),
                                        mxfp4Experts: mxfp4)
        return config
    }
}
