import Foundation

/// The architectures the forward pass implements, keyed by HF `model_type`.
public enum Architecture: String, Sendable, CaseIterable, Codable {
    case mixtral
    case qwen2Moe = "qwen2_moe"
    case qwen3Moe = "qwen3_moe"
    case olmoe
    case deepseekV2 = "deepseek_v2"
    case deepseekV3 = "deepseek_v3"
    case glm4Moe = "glm4_moe"
    case gptOss = "gpt_oss"
}

/// Where an architecture applies RMSNorm to queries and keys.
public enum QKNorm: Sendable, Equatable {
    case none
    /// Qwen3: over each head's `head_dim` values, one weight vector shared by heads.
    case perHead
    /// OLMoE: over the whole q (or k) projection output.
    case wholeProjection
}

/// One architecture-neutral description of a model, derived from the HF
/// config structs. The forward pass reads only this.
public struct ModelConfig: Sendable {
    public var architecture: Architecture
    public var vocabSize: Int
    public var hiddenSize: Int
    public var numLayers: Int
    public var numHeads: Int
    public var numKVHeads: Int
    public var headDim: Int
    public var rmsNormEps: Float
    public var ropeTheta: Float
    public var maxPositionEmbeddings: Int
    public var numExperts: Int
    public var numExpertsPerToken: Int
    public var moeIntermediateSize: Int
    /// Dense-MLP width for layers that are not sparse (Qwen `mlp_only_layers`,
    /// `decoder_sparse_step`).
    public var denseIntermediateSize: Int
    public var sharedExpertIntermediateSize: Int
    public var normTopKProb: Bool
    public var sparseLayers: [Bool]
    public var qkvBias: Bool
    public var qkNorm: QKNorm
    public var clipQKV: Float?
    public var tieWordEmbeddings: Bool
    public var bosTokenId: Int?
    public var eosTokenIds: [Int]
    /// How the router scores experts and picks a token's top-k.
    public var routing = RouterConfig()
    /// Multi-head latent attention (DeepSeek); nil for grouped-query attention.
    /// With it, `numKVHeads` is 1 and `headDim` is the cached latent's width:
    /// attention runs as one-kv-head attention over the latent.
    public var latentAttention: LatentAttentionConfig?
    /// Rotary embedding: width, frequencies, scaling, pair layout.
    public var rope = RopeConfig()
    /// Qwen2-MoE scales its shared expert by a sigmoid gate; DeepSeek adds its
    /// shared experts as they are.
    public var sharedExpertGated = true
    /// Per layer, the sliding attention window (0: full attention; empty: all full).
    public var attentionWindows: [Int] = []
    /// gpt-oss: biased `o_proj`, per-head attention sinks, biased router and
    /// experts, and the clamped SwiGLU.
    public var gptOss: GptOssSpecifics?

    @inline(__always)
    public func attentionWindow(layer: Int) -> Int { attentionWindows.isEmpty ? 0 : attentionWindows[layer] }

    public var qSize: Int { numHeads * headDim }
    public var kvSize: Int { numKVHeads * headDim }
    public var hasSharedExpert: Bool { sharedExpertIntermediateSize > 0 }
    /// Values cached per token per layer: keys and values of every kv head,
    /// or MLA's one latent row (its keys are its values).
    public var kvCacheFloatsPerToken: Int { latentAttention == nil ? 2 * kvSize : kvSize }
    /// KV cache bytes one token takes across all layers (Float32 cache).
    public var kvCacheBytesPerToken: Int { kvCacheBytesPerToken(elementBytes: MemoryLayout<Float>.size) }

    /// The same for a cache of `elementBytes` per value (2: BF16).
    public func kvCacheBytesPerToken(elementBytes: Int) -> Int { numLayers * kvCacheFloatsPerToken * elementBytes }

    /// KV cache bytes a query at `position` reads over all layers: its
    /// context, or only the window on sliding-window layers.
    public func kvCacheBytesRead(position: Int, elementBytes: Int = MemoryLayout<Float>.size) -> Int {
        (0..<numLayers).reduce(0) { sum, l in
            let w = attentionWindow(layer: l)
            return sum + (w > 0 ? min(position + 1, w) : position + 1) * kvCacheFloatsPerToken * elementBytes
        }
    }

    public static let configFile = "config.json"

    /// Reads `config.json` (and `generation_config.json` when present) from a checkpoint directory.
    public static func load(directory: URL) throws -> ModelConfig {
        let url = directory.appendingPathComponent(configFile)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw CheckpointError.missingFile(file: url.path, hint: "a Hugging Face checkpoint directory needs config.json")
        }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw CheckpointError.fileUnreadable(file: url.path, reason: "\(error.localizedDescription)")
        }
        var config = try parse(data: data, file: url.path)
        let genURL = directory.appendingPathComponent("generation_config.json")
        if let genData = try? Data(contentsOf: genURL),
           let gen = try? JSONDecoder().decode(GenerationConfiguration.self, from: genData) {
            if let eos = gen.eosTokenId, !eos.ids.isEmpty { config.eosTokenIds = eos.ids }
            if let bos = gen.bosTokenId { config.bosTokenId = bos }
        }
        return config
    }

    struct Header: Decodable {
        var modelType: String?
        var bosTokenId: Int?
        var eosTokenId: TokenIdList?
        enum CodingKeys: String, CodingKey {
            case modelType = "model_type"
            case bosTokenId = "bos_token_id"
            case eosTokenId = "eos_token_id"
        }
    }

    public static func parse(data: Data, file: String = configFile) throws -> ModelConfig {
        let decoder = JSONDecoder()
        let header: Header
        do { header = try decoder.decode(Header.self, from: data) } catch {
            throw CheckpointError.invalidConfig(file: file, reason: describe(error))
        }
        guard let modelType = header.modelType else {
            throw CheckpointError.invalidConfig(file: file, reason: "no model_type key")
        }
        guard let arch = Architecture(rawValue: modelType) else {
            throw CheckpointError.unsupportedModelType(file: file, modelType: modelType,
                                                       supported: Architecture.allCases.map(\.rawValue))
        }
        var config: ModelConfig
        do {
            switch arch {
            case .mixtral:
                config = try fromMixtral(decoder.decode(MixtralConfiguration.self, from: data), file: file)
            case .qwen2Moe, .qwen3Moe:
                config = try fromQwen(decoder.decode(QwenMoeConfiguration.self, from: data), arch: arch, file: file)
            case .olmoe:
                config = try fromOlmoe(decoder.decode(OlmoeConfiguration.self, from: data), file: file)
            case .gptOss:
                config = try fromGptOss(decoder.decode(GptOssConfiguration.self, from: data), file: file)
            case .glm4Moe:
                config = try fromGlm4Moe(decoder.decode(Glm4MoeConfiguration.self, from: data), data: data, file: file)
            case .deepseekV2, .deepseekV3:
                config = try fromDeepseek(decoder.decode(DeepseekConfiguration.self, from: data), arch: arch, data: data, file: file)
            }
        } catch let error as CheckpointError {
            throw error
        } catch {
            throw CheckpointError.invalidConfig(file: file, reason: describe(error))
        }
        config.bosTokenId = header.bosTokenId
        config.eosTokenIds = header.eosTokenId?.ids ?? []
        if config.rope.dim == 0 { config.rope.dim = config.headDim }
        try config.validate(file: file)
        return config
    }

    static func describe(_ error: Error) -> String {
        switch error {
        case let DecodingError.keyNotFound(key, _): return "missing key \"\(key.stringValue)\""
        case let DecodingError.typeMismatch(_, ctx): return "wrong type at \"\(ctx.codingPath.map(\.stringValue).joined(separator: "."))\": \(ctx.debugDescription)"
        case let DecodingError.valueNotFound(_, ctx): return "null value at \"\(ctx.codingPath.map(\.stringValue).joined(separator: "."))\""
        case let DecodingError.dataCorrupted(ctx): return "not valid JSON (\(ctx.debugDescription))"
        default: return "\(error)"
        }
    }

    static func ropeTheta(top: Double?, parameters: RopeParameters?, scaling: RopeParameters?,
                          defaultTheta: Double, file: String) throws -> Float {
        for p in [parameters, scaling].compactMap({ $0 }) where p.kind != "default" {
            throw CheckpointError.invalidConfig(file: file, reason: "rope type \"\(p.kind)\" is not supported (only default RoPE)")
        }
        return Float(parameters?.ropeTheta ?? top ?? defaultTheta)
    }

    /// The RoPE parameters in force: `rope_parameters` (transformers 5) or
    /// `rope_scaling` (4.x, where the theta stays at the top level).
    static func ropeParameters(parameters: RopeParameters?, scaling: RopeParameters?) -> RopeParameters? {
        guard var p = parameters ?? scaling else { return nil }
        if p.ropeTheta == nil { p.ropeTheta = parameters?.ropeTheta }
        return p
    }

    static func checkActivation(_ act: String?, file: String) throws {
        if let act, act != "silu" {
            throw CheckpointError.invalidConfig(file: file, reason: "hidden_act \"\(act)\" is not supported (only silu)")
        }
    }

    static func fromMixtral(_ c: MixtralConfiguration, file: String) throws -> ModelConfig {
        try checkActivation(c.hiddenAct, file: file)
        return ModelConfig(
            architecture: .mixtral, vocabSize: c.vocabSize, hiddenSize: c.hiddenSize,
            numLayers: c.numHiddenLayers, numHeads: c.numAttentionHeads,
            numKVHeads: c.numKeyValueHeads ?? c.numAttentionHeads,
            headDim: c.headDim ?? c.hiddenSize / c.numAttentionHeads,
            rmsNormEps: Float(c.rmsNormEps ?? 1e-5),
            ropeTheta: try ropeTheta(top: c.ropeTheta, parameters: c.ropeParameters, scaling: c.ropeScaling, defaultTheta: 1e6, file: file),
            maxPositionEmbeddings: c.maxPositionEmbeddings ?? 4096 * 32,
            numExperts: c.numLocalExperts, numExpertsPerToken: c.numExpertsPerTok,
            moeIntermediateSize: c.intermediateSize, denseIntermediateSize: c.intermediateSize,
            sharedExpertIntermediateSize: 0, normTopKProb: true,
            sparseLayers: Array(repeating: true, count: c.numHiddenLayers),
            qkvBias: false, qkNorm: .none, clipQKV: nil,
            tieWordEmbeddings: c.tieWordEmbeddings ?? false, bosTokenId: nil, eosTokenIds: [])
    }

    static func fromQwen(_ c: QwenMoeConfiguration, arch: Architecture, file: String) throws -> ModelConfig {
        try checkActivation(c.hiddenAct, file: file)
        guard let numExperts = c.numExperts ?? c.numLocalExperts else {
            throw CheckpointError.invalidConfig(file: file, reason: "missing key \"num_experts\" (or \"num_local_experts\")")
        }
        let step = c.decoderSparseStep ?? 1
        let mlpOnly = Set(c.mlpOnlyLayers ?? [])
        let sparse = (0..<c.numHiddenLayers).map { i in
            !mlpOnly.contains(i) && numExperts > 0 && step > 0 && (i + 1) % step == 0
        }
        let isQwen2 = arch == .qwen2Moe
        return ModelConfig(
            architecture: arch, vocabSize: c.vocabSize, hiddenSize: c.hiddenSize,
            numLayers: c.numHiddenLayers, numHeads: c.numAttentionHeads,
            numKVHeads: c.numKeyValueHeads ?? c.numAttentionHeads,
            headDim: c.headDim ?? c.hiddenSize / c.numAttentionHeads,
            rmsNormEps: Float(c.rmsNormEps ?? 1e-6),
            ropeTheta: try ropeTheta(top: c.ropeTheta, parameters: c.ropeParameters, scaling: c.ropeScaling, defaultTheta: isQwen2 ? 1e6 : 1e4, file: file),
            maxPositionEmbeddings: c.maxPositionEmbeddings ?? 32768,
            numExperts: numExperts, numExpertsPerToken: c.numExpertsPerTok,
            moeIntermediateSize: c.moeIntermediateSize,
            denseIntermediateSize: c.intermediateSize ?? c.moeIntermediateSize,
            sharedExpertIntermediateSize: isQwen2 ? (c.sharedExpertIntermediateSize ?? 0) : 0,
            normTopKProb: c.normTopkProb ?? false,
            sparseLayers: sparse,
            qkvBias: isQwen2 ? (c.qkvBias ?? true) : (c.attentionBias ?? false),
            qkNorm: isQwen2 ? .none : .perHead, clipQKV: nil,
            tieWordEmbeddings: c.tieWordEmbeddings ?? false, bosTokenId: nil, eosTokenIds: [])
    }

    static func fromOlmoe(_ c: OlmoeConfiguration, file: String) throws -> ModelConfig {
        try checkActivation(c.hiddenAct, file: file)
        return ModelConfig(
            architecture: .olmoe, vocabSize: c.vocabSize, hiddenSize: c.hiddenSize,
            numLayers: c.numHiddenLayers, numHeads: c.numAttentionHeads,
            numKVHeads: c.numKeyValueHeads ?? c.numAttentionHeads,
            headDim: c.hiddenSize / c.numAttentionHeads,
            rmsNormEps: Float(c.rmsNormEps ?? 1e-5),
            ropeTheta: try ropeTheta(top: c.ropeTheta, parameters: c.ropeParameters, scaling: c.ropeScaling, defaultTheta: 1e4, file: file),
            maxPositionEmbeddings: c.maxPositionEmbeddings ?? 4096,
            numExperts: c.numExperts, numExpertsPerToken: c.numExpertsPerTok,
            moeIntermediateSize: c.intermediateSize, denseIntermediateSize: c.intermediateSize,
            sharedExpertIntermediateSize: 0, normTopKProb: c.normTopkProb ?? false,
            sparseLayers: Array(repeating: true, count: c.numHiddenLayers),
            qkvBias: c.attentionBias ?? false, qkNorm: .wholeProjection,
            clipQKV: c.clipQkv.map(Float.init),
            tieWordEmbeddings: c.tieWordEmbeddings ?? false, bosTokenId: nil, eosTokenIds: [])
    }

    func validate(file: String) throws {
        func fail(_ reason: String) throws -> Never { throw CheckpointError.invalidConfig(file: file, reason: reason) }
        if vocabSize <= 0 || hiddenSize <= 0 || numLayers <= 0 || numHeads <= 0 || headDim <= 0 {
            try fail("vocab_size, hidden_size, num_hidden_layers, num_attention_heads and head_dim must be positive")
        }
        if numKVHeads <= 0 || numHeads % numKVHeads != 0 {
            try fail("num_attention_heads (\(numHeads)) must be a multiple of num_key_value_heads (\(numKVHeads))")
        }
        if rope.dim % 2 != 0 || rope.dim <= 0 { try fail("the rotary width (\(rope.dim)) must be positive and even") }
        if sparseLayers.contains(true) {
            if numExperts <= 0 { try fail("num_experts must be positive") }
            if numExpertsPerToken <= 0 || numExpertsPerToken > numExperts {
                try fail("num_experts_per_tok (\(numExpertsPerToken)) must be between 1 and the number of experts (\(numExperts))")
            }
            if moeIntermediateSize <= 0 { try fail("the expert intermediate size must be positive") }
        }
    }
}
