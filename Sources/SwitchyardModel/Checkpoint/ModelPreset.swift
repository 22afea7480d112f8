import Foundation

/// Model dimensions for `switchyard model create`, kept as JSON in
/// `models/presets/` with Hugging Face key names. The architecture is chosen
/// separately, so one preset yields a Mixtral, Qwen-MoE, OLMoE or DeepSeek model.
public struct ModelPreset: Codable, Sendable {
    public var description: String?
    public var vocabSize: Int
    public var hiddenSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    public var numExperts: Int
    public var numExpertsPerTok: Int
    public var moeIntermediateSize: Int
    public var sharedExpertIntermediateSize: Int
    public var intermediateSize: Int
    public var maxPositionEmbeddings: Int
    public var ropeTheta: Double
    public var rmsNormEps: Double
    public var initializerRange: Double
    public var tieWordEmbeddings: Bool
    // DeepSeek (MLA, dense first layers, shared experts, groups); ignored by
    // the other architectures. Absent: DeepSeek-V2-Lite's values.
    public var kvLoraRank: Int?
    public var qLoraRank: Int?
    public var qkNopeHeadDim: Int?
    public var qkRopeHeadDim: Int?
    public var vHeadDim: Int?
    public var nSharedExperts: Int?
    public var firstKDenseReplace: Int?
    public var nGroup: Int?
    public var topkGroup: Int?

    enum CodingKeys: String, CodingKey {
        case description
        case vocabSize = "vocab_size"
        case hiddenSize = "hidden_size"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads"
        case headDim = "head_dim"
        case numExperts = "num_experts"
        case numExpertsPerTok = "num_experts_per_tok"
        case moeIntermediateSize = "moe_intermediate_size"
        case sharedExpertIntermediateSize = "shared_expert_intermediate_size"
        case intermediateSize = "intermediate_size"
        case maxPositionEmbeddings = "max_position_embeddings"
        case ropeTheta = "rope_theta"
        case rmsNormEps = "rms_norm_eps"
        case initializerRange = "initializer_range"
        case tieWordEmbeddings = "tie_word_embeddings"
        case kvLoraRank = "kv_lora_rank"
        case qLoraRank = "q_lora_rank"
        case qkNopeHeadDim = "qk_nope_head_dim"
        case qkRopeHeadDim = "qk_rope_head_dim"
        case vHeadDim = "v_head_dim"
        case nSharedExperts = "n_shared_experts"
        case firstKDenseReplace = "first_k_dense_replace"
        case nGroup = "n_group"
        case topkGroup = "topk_group"
    }

    /// The MLA dimensions a DeepSeek checkpoint made from this preset gets.
    var latent: (kvLoraRank: Int, qLoraRank: Int?, nope: Int, rope: Int, value: Int) {
        (kvLoraRank ?? 512, qLoraRank, qkNopeHeadDim ?? 128, qkRopeHeadDim ?? 64, vHeadDim ?? 128)
    }

    /// Where presets are looked up: `models/presets` under the working
    /// directory, then next to the executable's package checkout.
    public static func searchDirectories() -> [URL] {
        var dirs = [URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent("models/presets")]
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        // .build/<config>/switchyard → package root.
        dirs.append(exe.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("models/presets"))
        return dirs
    }

    public static func available() -> [String] {
        for dir in searchDirectories() {
            if let files = try? FileManager.default.contentsOfDirectory(atPath: dir.path) {
                let names = files.filter { $0.hasSuffix(".json") }.map { String($0.dropLast(5)) }.sorted()
                if !names.isEmpty { return names }
            }
        }
        return []
    }

    /// Loads a preset by name (`tiny`) or by path to a JSON file.
    public static func load(_ nameOrPath: String) throws -> ModelPreset {
        var candidates: [URL] = []
        if nameOrPath.hasSuffix(".json") || nameOrPath.contains("/") {
            candidates.append(URL(fileURLWithPath: nameOrPath))
        } else {
            candidates = searchDirectories().map { $0.appendingPathComponent(nameOrPath + ".json") }
        }
        guard let url = candidates.first(where: { FileManager.default.fileExists(atPath: $0.path) }) else {
            let known = available()
            throw CheckpointError.missingFile(file: nameOrPath,
                hint: "no such preset; available: \(known.isEmpty ? "(none found; run from the repository root)" : known.joined(separator: ", ")), or pass a path to a preset JSON file")
        }
        do {
            return try JSONDecoder().decode(ModelPreset.self, from: Data(contentsOf: url))
        } catch {
            throw CheckpointError.invalidConfig(file: url.path, reason: ModelConfig.describe(error))
        }
    }
}
