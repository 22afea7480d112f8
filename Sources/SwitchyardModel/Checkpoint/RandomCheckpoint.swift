import Foundation

/// Writes a random-weight checkpoint in exactly Hugging Face's layout
/// (config.json, generation_config.json, model.safetensors, tokenizer.json,
/// tokenizer_config.json), loadable by `transformers` and by this engine.
/// Weights are uniform with the preset's standard deviation; norms are 1, as
/// transformers initialises them. The same seed gives the same bytes.
public enum RandomCheckpoint {
    public struct Options: Sendable {
        public var architecture: Architecture
        public var preset: ModelPreset
        public var seed: UInt64
        public var dtype: DType
        /// 0: routers as random as every other weight, so routing is close to
        /// uniform. s > 0: row r (in a per-layer random order) of each router
        /// is scaled by 1 + s·r/(E−1); an expert with a larger row has larger
        /// logits in magnitude and so lands in the top-k more often, giving
        /// the skewed expert load of trained models to benchmark placement on.
        public var routerSkew: Double
        /// gpt_oss: experts as MXFP4 blocks and scales, as the published
        /// checkpoints store them (every other weight in `dtype`).
        public var mxfp4Experts: Bool
        public init(architecture: Architecture, preset: ModelPreset, seed: UInt64 = 0, dtype: DType = .bf16, routerSkew: Double = 0,
                    mxfp4Experts: Bool = false) {
            self.routerSkew = routerSkew
            self.mxfp4Experts = mxfp4Experts
            self.architecture = architecture
            self.preset = preset
            self.seed = seed
            self.dtype = dtype
        }
    }

    /// `fp4Blocks`: random E2M1 code pairs; `e8m0Scales`: the scale byte
    /// nearest the preset's standard deviation.
    enum Fill { case weight, ones, bias, fp4Blocks, e8m0Scales }

    public static func create(_ o: Options, at dir: URL) throws {
        let p = o.preset
        let derivesHeadDim = [.mixtral, .qwen2Moe, .olmoe].contains(o.architecture)
        if derivesHeadDim && p.headDim * p.numAttentionHeads != p.hiddenSize {
            throw CheckpointError.invalidConfig(file: "preset",
                reason: "\(o.architecture.rawValue) derives head_dim from hidden_size / num_attention_heads, but the preset has head_dim \(p.headDim) ≠ \(p.hiddenSize) / \(p.numAttentionHeads); use qwen3_moe or fix the preset")
        }
        if o.mxfp4Experts && o.architecture != .gptOss {
            throw CheckpointError.invalidConfig(file: "preset", reason: "MXFP4 experts are a gpt_oss format; use --arch gpt_oss or drop the MXFP4 option")
        }
        if o.mxfp4Experts && (p.hiddenSize % 32 != 0 || p.moeIntermediateSize % 32 != 0) {
            throw CheckpointError.invalidConfig(file: "preset", reason: "MXFP4 experts need hidden_size and moe_intermediate_size to be multiples of 32")
        }
        if p.vocabSize < 257 {
            throw CheckpointError.invalidConfig(file: "preset", reason: "vocab_size must be at least 257 (256 byte tokens and <|endoftext|>)")
        }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let tensors = tensorList(o.architecture, p, mxfp4Experts: o.mxfp4Experts)
        var writer = SafetensorsWriter()
        for t in tensors { writer.declare(t.name, dtype: t.dtype ?? o.dtype, shape: t.shape) }
        let std = Float(p.initializerRange)
        try writer.write(to: dir.appendingPathComponent("model.safetensors")) { entry, buffer in
            let index = tensors.firstIndex { $0.name == entry.name }!
            let seed = o.seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(index)
            var rowScale: [Float]?
            if o.routerSkew > 0 && entry.name.hasSuffix("gate.weight") && entry.shape[0] == p.numExperts && p.numExperts > 1 {
                var rng = Xoshiro256(seed: seed ^ 0x5EED)
                var order = Array(0..<p.numExperts)
                order.shuffle(using: &rng)
                rowScale = order.map { Float(1 + o.routerSkew * Double($0) / Double(p.numExperts - 1)) }
            }
            fill(buffer, count: entry.shape.reduce(1, *), dtype: entry.dtype, kind: tensors[index].fill, std: std,
                 seed: seed, rowScale: rowScale, cols: entry.shape.last ?? 1)
        }
        try writeJSON(config(o), to: dir.appendingPathComponent("config.json"))
        let eos = 256
        try writeJSON(["bos_token_id": eos, "eos_token_id": eos, "_from_model_config": true],
                      to: dir.appendingPathComponent("generation_config.json"))
        try writeJSON(tokenizerJSON(vocabSize: p.vocabSize), to: dir.appendingPathComponent("tokenizer.json"))
        try writeJSON(["tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|endoftext|>",
                       "eos_token": "<|endoftext|>", "model_max_length": p.maxPositionEmbeddings],
                      to: dir.appendingPathComponent("tokenizer_config.json"))
    }

    struct TensorSpec {
        let name: String
        let shape: [Int]
        let fill: Fill
        /// Overrides the checkpoint dtype (MXFP4's U8 blocks and scales).
        var dtype: DType? = nil
    }

    static func tensorList(_ arch: Architecture, _ p: ModelPreset, mxfp4Experts: Bool = false) -> [TensorSpec] {
        let h = p.hiddenSize, q = p.numAttentionHeads * p.headDim, kv = p.numKeyValueHeads * p.headDim
        var t: [TensorSpec] = [TensorSpec(name: "model.embed_tokens.weight", shape: [p.vocabSize, h], fill: .weight)]
        for l in 0..<p.numHiddenLayers {
            let pre = "model.layers.\(l)."
            t.append(TensorSpec(name: pre + "input_layernorm.weight", shape: [h], fill: .ones))
            t.append(TensorSpec(name: pre + "post_attention_layernorm.weight", shape: [h], fill: .ones))
            if arch == .deepseekV2 || arch == .deepseekV3 {
                t += deepseekLayer(arch, p, layer: l)
                continue
            }
            t.append(TensorSpec(name: pre + "self_attn.q_proj.weight", shape: [q, h], fill: .weight))
            t.append(TensorSpec(name: pre + "self_attn.k_proj.weight", shape: [kv, h], fill: .weight))
            t.append(TensorSpec(name: pre + "self_attn.v_proj.weight", shape: [kv, h], fill: .weight))
            t.append(TensorSpec(name: pre + "self_attn.o_proj.weight", shape: [h, q], fill: .weight))
            switch arch {
            case .qwen2Moe:
                t.append(TensorSpec(name: pre + "self_attn.q_proj.bias", shape: [q], fill: .bias))
                t.append(TensorSpec(name: pre + "self_attn.k_proj.bias", shape: [kv], fill: .bias))
                t.append(TensorSpec(name: pre + "self_attn.v_proj.bias", shape: [kv], fill: .bias))
            case .qwen3Moe:
                t.append(TensorSpec(name: pre + "self_attn.q_norm.weight", shape: [p.headDim], fill: .ones))
                t.append(TensorSpec(name: pre + "self_attn.k_norm.weight", shape: [p.headDim], fill: .ones))
            case .olmoe:
                t.append(TensorSpec(name: pre + "self_attn.q_norm.weight", shape: [q], fill: .ones))
                t.append(TensorSpec(name: pre + "self_attn.k_norm.weight", shape: [kv], fill: .ones))
            case .gptOss:
                t.append(TensorSpec(name: pre + "self_attn.q_proj.bias", shape: [q], fill: .bias))
                t.append(TensorSpec(name: pre + "self_attn.k_proj.bias", shape: [kv], fill: .bias))
                t.append(TensorSpec(name: pre + "self_attn.v_proj.bias", shape: [kv], fill: .bias))
                t.append(TensorSpec(name: pre + "self_attn.o_proj.bias", shape: [h], fill: .bias))
                t.append(TensorSpec(name: pre + "self_attn.sinks", shape: [p.numAttentionHeads], fill: .bias))
                t += gptOssExperts(p, layer: l, mxfp4: mxfp4Experts)
                continue
            case .glm4Moe:
                t.append(TensorSpec(name: pre + "self_attn.q_proj.bias", shape: [q], fill: .bias))
                t.append(TensorSpec(name: pre + "self_attn.k_proj.bias", shape: [kv], fill: .bias))
                t.append(TensorSpec(name: pre + "self_attn.v_proj.bias", shape: [kv], fill: .bias))
                t += sharedExpertFeedForward(arch, p, layer: l)
                continue
            case .mixtral, .deepseekV2, .deepseekV3:
                break
            }
            let block = arch == .mixtral ? "block_sparse_moe." : "mlp."
            t.append(TensorSpec(name: pre + block + "gate.weight", shape: [p.numExperts, h], fill: .weight))
            let i = p.moeIntermediateSize
            for e in 0..<p.numExperts {
                let ex = pre + block + "experts.\(e)."
                if arch == .mixtral {
                    t.append(TensorSpec(name: ex + "w1.weight", shape: [i, h], fill: .weight))
                    t.append(TensorSpec(name: ex + "w2.weight", shape: [h, i], fill: .weight))
                    t.append(TensorSpec(name: ex + "w3.weight", shape: [i, h], fill: .weight))
                } else {
                    t.append(TensorSpec(name: ex + "gate_proj.weight", shape: [i, h], fill: .weight))
                    t.append(TensorSpec(name: ex + "up_proj.weight", shape: [i, h], fill: .weight))
                    t.append(TensorSpec(name: ex + "down_proj.weight", shape: [h, i], fill: .weight))
                }
            }
            if arch == .qwen2Moe {
                let s = p.sharedExpertIntermediateSize
                t.append(TensorSpec(name: pre + "mlp.shared_expert.gate_proj.weight", shape: [s, h], fill: .weight))
                t.append(TensorSpec(name: pre + "mlp.shared_expert.up_proj.weight", shape: [s, h], fill: .weight))
                t.append(TensorSpec(name: pre + "mlp.shared_expert.down_proj.weight", shape: [h, s], fill: .weight))
                t.append(TensorSpec(name: pre + "mlp.shared_expert_gate.weight", shape: [1, h], fill: .weight))
            }
        }
        t.append(TensorSpec(name: "model.norm.weight", shape: [h], fill: .ones))
        if !p.tieWordEmbeddings {
            t.append(TensorSpec(name: "lm_head.weight", shape: [p.vocabSize, h], fill: .weight))
        }
        return t.sorted { $0.name < $1.name }
    }

    /// A DeepSeek layer: MLA, then a dense MLP (the first
    /// `first_k_dense_replace` layers) or routed plus shared experts.
    static func deepseekLayer(_ arch: Architecture, _ p: ModelPreset, layer l: Int) -> [TensorSpec] {
        let h = p.hiddenSize, heads = p.numAttentionHeads, m = p.latent
        let pre = "model.layers.\(l).", a = pre + "self_attn."
        // (The caller has added the layer's two norms.)
        var t: [TensorSpec] = [
            TensorSpec(name: a + "kv_a_proj_with_mqa.weight", shape: [m.kvLoraRank + m.rope, h], fill: .weight),
            TensorSpec(name: a + "kv_a_layernorm.weight", shape: [m.kvLoraRank], fill: .ones),
            TensorSpec(name: a + "kv_b_proj.weight", shape: [heads * (m.nope + m.value), m.kvLoraRank], fill: .weight),
            TensorSpec(name: a + "o_proj.weight", shape: [h, heads * m.value], fill: .weight),
        ]
        if let rank = m.qLoraRank {
            t.append(TensorSpec(name: a + "q_a_proj.weight", shape: [rank, h], fill: .weight))
            t.append(TensorSpec(name: a + "q_a_layernorm.weight", shape: [rank], fill: .ones))
            t.append(TensorSpec(name: a + "q_b_proj.weight", shape: [heads * (m.nope + m.rope), rank], fill: .weight))
        } else {
            t.append(TensorSpec(name: a + "q_proj.weight", shape: [heads * (m.nope + m.rope), h], fill: .weight))
        }
        return t + sharedExpertFeedForward(arch, p, layer: l)
    }

    /// gpt-oss's router and fused experts, dense (transformers' input-major
    /// layout) or MXFP4 (the published output-major blocks and scales).
    static func gptOssExperts(_ p: ModelPreset, layer l: Int, mxfp4: Bool) -> [TensorSpec] {
        let h = p.hiddenSize, i = p.moeIntermediateSize, e = p.numExperts
        let x = "model.layers.\(l).mlp."
        var t = [TensorSpec(name: x + "router.weight", shape: [e, h], fill: .weight),
                 TensorSpec(name: x + "router.bias", shape: [e], fill: .bias),
                 TensorSpec(name: x + "experts.gate_up_proj_bias", shape: [e, 2 * i], fill: .bias),
                 TensorSpec(name: x + "experts.down_proj_bias", shape: [e, h], fill: .bias)]
        if mxfp4 {
            t.append(TensorSpec(name: x + "experts.gate_up_proj_blocks", shape: [e, 2 * i, h / 32, 16], fill: .fp4Blocks, dtype: .u8))
            t.append(TensorSpec(name: x + "experts.gate_up_proj_scales", shape: [e, 2 * i, h / 32], fill: .e8m0Scales, dtype: .u8))
            t.append(TensorSpec(name: x + "experts.down_proj_blocks", shape: [e, h, i / 32, 16], fill: .fp4Blocks, dtype: .u8))
            t.append(TensorSpec(name: x + "experts.down_proj_scales", shape: [e, h, i / 32], fill: .e8m0Scales, dtype: .u8))
        } else {
            t.append(TensorSpec(name: x + "experts.gate_up_proj", shape: [e, h, 2 * i], fill: .weight))
            t.append(TensorSpec(name: x + "experts.down_proj", shape: [e, i, h], fill: .weight))
        }
        return t
    }

    /// DeepSeek's and GLM's feed-forward: a dense MLP in the first
    /// `first_k_dense_replace` layers, then routed experts (with V3/GLM's
    /// selection bias) plus ungated shared experts.
    static func sharedExpertFeedForward(_ arch: Architecture, _ p: ModelPreset, layer l: Int) -> [TensorSpec] {
        let h = p.hiddenSize, pre = "model.layers.\(l)."
        func mlp(_ prefix: String, _ i: Int) -> [TensorSpec] {
            [TensorSpec(name: prefix + "gate_proj.weight", shape: [i, h], fill: .weight),
             TensorSpec(name: prefix + "up_proj.weight", shape: [i, h], fill: .weight),
             TensorSpec(name: prefix + "down_proj.weight", shape: [h, i], fill: .weight)]
        }
        if l < (p.firstKDenseReplace ?? 1) { return mlp(pre + "mlp.", p.intermediateSize) }
        var t = [TensorSpec(name: pre + "mlp.gate.weight", shape: [p.numExperts, h], fill: .weight)]
        if arch == .deepseekV3 || arch == .glm4Moe {
            t.append(TensorSpec(name: pre + "mlp.gate.e_score_correction_bias", shape: [p.numExperts], fill: .bias))
        }
        for e in 0..<p.numExperts { t += mlp(pre + "mlp.experts.\(e).", p.moeIntermediateSize) }
        return t + mlp(pre + "mlp.shared_experts.", p.moeIntermediateSize * (p.nSharedExperts ?? (arch == .deepseekV2 ? 2 : 1)))
    }

    /// Fills in fixed 64 Ki-element chunks, each with its own RNG stream, so
    /// the bytes do not depend on the thread count.
    static func fill(_ buffer: UnsafeMutableRawBufferPointer, count: Int, dtype: DType, kind: Fill, std: Float, seed: UInt64,
                     rowScale: [Float]? = nil, cols: Int = 1) {
        let chunk = 1 << 16
        let chunks = (count + chunk - 1) / chunk
        let a = std * Float(3).squareRoot()
        nonisolated(unsafe) let base = buffer.baseAddress!
        Parallel.forEach(chunks) { c in
            var rng = Xoshiro256(seed: seed ^ (UInt64(c) &* 0xD1B5_4A32_D192_ED03))
            for i in (c * chunk)..<min(count, (c + 1) * chunk) {
                let v: Float
                switch kind {
                case .weight: v = (rng.nextUnitFloat() * 2 - 1) * a * (rowScale?[i / cols] ?? 1)
                case .ones: v = 1
                case .bias: v = 0
                case .fp4Blocks:
                    base.storeBytes(of: UInt8(truncatingIfNeeded: rng.next()), toByteOffset: i, as: UInt8.self)
                    continue
                case .e8m0Scales:
                    // Mean |E2M1 code| is 2.3125: pick 2^(s−127) so values have about the preset's std.
                    base.storeBytes(of: UInt8(max(1, min(254, 127 + Int(log2(Double(std) / 2.3125).rounded())))),
                                    toByteOffset: i, as: UInt8.self)
                    continue
                }
                switch dtype {
                case .f32: (base + 4 * i).storeBytes(of: v, as: Float.self)
                case .bf16: (base + 2 * i).storeBytes(of: narrowToBF16(v), as: UInt16.self)
                case .f16: (base + 2 * i).storeBytes(of: Float16(v).bitPattern, as: UInt16.self)
                case .u8, .mxfp4: preconditionFailure("byte tensors are filled as MXFP4 blocks or scales")
                }
            }
        }
    }

    static func config(_ o: Options) -> [String: Any] {
        let p = o.preset
        var c: [String: Any] = [
            "model_type": o.architecture.rawValue,
            "vocab_size": p.vocabSize, "hidden_size": p.hiddenSize, "num_hidden_layers": p.numHiddenLayers,
            "num_attention_heads": p.numAttentionHeads, "num_key_value_heads": p.numKeyValueHeads,
            "max_position_embeddings": p.maxPositionEmbeddings, "rms_norm_eps": p.rmsNormEps,
            "rope_theta": p.ropeTheta, "tie_word_embeddings": p.tieWordEmbeddings, "hidden_act": "silu",
            "initializer_range": p.initializerRange, "attention_dropout": 0.0, "use_cache": true,
            "torch_dtype": o.dtype == .bf16 ? "bfloat16" : (o.dtype == .f16 ? "float16" : "float32"),
            "bos_token_id": 256, "eos_token_id": 256, "num_experts_per_tok": p.numExpertsPerTok,
            "output_router_logits": false,
        ]
        switch o.architecture {
        case .mixtral:
            c["architectures"] = ["MixtralForCausalLM"]
            c["intermediate_size"] = p.moeIntermediateSize
            c["num_local_experts"] = p.numExperts
            c["head_dim"] = p.headDim
        case .qwen2Moe:
            c["architectures"] = ["Qwen2MoeForCausalLM"]
            c["intermediate_size"] = p.intermediateSize
            c["moe_intermediate_size"] = p.moeIntermediateSize
            c["shared_expert_intermediate_size"] = p.sharedExpertIntermediateSize
            c["num_experts"] = p.numExperts
            c["norm_topk_prob"] = false
            c["decoder_sparse_step"] = 1
            c["mlp_only_layers"] = [Int]()
            c["use_sliding_window"] = false
        case .qwen3Moe:
            c["architectures"] = ["Qwen3MoeForCausalLM"]
            c["intermediate_size"] = p.intermediateSize
            c["moe_intermediate_size"] = p.moeIntermediateSize
            c["num_experts"] = p.numExperts
            c["head_dim"] = p.headDim
            c["norm_topk_prob"] = true
            c["decoder_sparse_step"] = 1
            c["mlp_only_layers"] = [Int]()
            c["attention_bias"] = false
        case .olmoe:
            c["architectures"] = ["OlmoeForCausalLM"]
            c["intermediate_size"] = p.moeIntermediateSize
            c["num_experts"] = p.numExperts
            c["norm_topk_prob"] = false
            c["attention_bias"] = false
        case .gptOss:
            c["architectures"] = ["GptOssForCausalLM"]
            c["intermediate_size"] = p.moeIntermediateSize
            c["num_local_experts"] = p.numExperts
            c["head_dim"] = p.headDim
            c["attention_bias"] = true
            c["sliding_window"] = 128
            c["layer_types"] = (0..<p.numHiddenLayers).map { $0 % 2 == 0 ? "sliding_attention" : "full_attention" }
            c["swiglu_limit"] = 7.0
            c["rope_scaling"] = ["rope_type": "yarn", "factor": 32.0, "original_max_position_embeddings": 4096,
                                 "beta_fast": 32.0, "beta_slow": 1.0, "truncate": false] as [String: Any]
            if o.mxfp4Experts {
                c["quantization_config"] = ["quant_method": "mxfp4",
                                            "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                                       "model.embed_tokens", "lm_head"]] as [String: Any]
            }
        case .glm4Moe:
            c["architectures"] = ["Glm4MoeForCausalLM"]
            c["intermediate_size"] = p.intermediateSize
            c["moe_intermediate_size"] = p.moeIntermediateSize
            c["n_routed_experts"] = p.numExperts
            c["n_shared_experts"] = p.nSharedExperts ?? 1
            c["first_k_dense_replace"] = p.firstKDenseReplace ?? 1
            c["head_dim"] = p.headDim
            c["partial_rotary_factor"] = 0.5
            c["attention_bias"] = true
            c["use_qk_norm"] = false
            c["n_group"] = p.nGroup ?? 1
            c["topk_group"] = p.topkGroup ?? 1
            c["norm_topk_prob"] = true
            c["routed_scaling_factor"] = 1.0
        case .deepseekV2, .deepseekV3:
            let v3 = o.architecture == .deepseekV3, m = p.latent
            c["architectures"] = [v3 ? "DeepseekV3ForCausalLM" : "DeepseekV2ForCausalLM"]
            // MLA has no kv heads of its own; transformers expects one per query head.
            c["num_key_value_heads"] = p.numAttentionHeads
            c["intermediate_size"] = p.intermediateSize
            c["moe_intermediate_size"] = p.moeIntermediateSize
            c["n_routed_experts"] = p.numExperts
            c["n_shared_experts"] = p.nSharedExperts ?? (v3 ? 1 : 2)
            c["first_k_dense_replace"] = p.firstKDenseReplace ?? 1
            c["kv_lora_rank"] = m.kvLoraRank
            c["q_lora_rank"] = m.qLoraRank ?? NSNull()
            c["qk_nope_head_dim"] = m.nope
            c["qk_rope_head_dim"] = m.rope
            c["v_head_dim"] = m.value
            c["routed_scaling_factor"] = 1.0
            c["norm_topk_prob"] = v3
            if v3 {
                c["n_group"] = p.nGroup ?? 1
                c["topk_group"] = p.topkGroup ?? 1
                c["rope_interleave"] = true
            } else if let g = p.nGroup, let kept = p.topkGroup {
                c["topk_method"] = "group_limited_greedy"
                c["n_group"] = g
                c["topk_group"] = kept
            } else {
                c["topk_method"] = "greedy"
            }
        }
        return c
    }

    /// A byte-level BPE tokenizer with no merges: ids 0–255 are the bytes, 256
    /// is `<|endoftext|>`, the rest are placeholders so every id decodes.
    static func tokenizerJSON(vocabSize: Int) -> [String: Any] {
        var vocab: [String: Int] = [:]
        for b in 0..<256 { vocab[String(ByteLevelAlphabet.byteToScalar[b])] = b }
        vocab["<|endoftext|>"] = 256
        for i in 257..<vocabSize { vocab["<extra_\(i)>"] = i }
        let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true]
        return [
            "version": "1.0",
            "truncation": NSNull(), "padding": NSNull(),
            "added_tokens": [["id": 256, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                              "rstrip": false, "normalized": false, "special": true]],
            "normalizer": NSNull(),
            "pre_tokenizer": byteLevel,
            "post_processor": byteLevel,
            "decoder": byteLevel,
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
                      "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": false, "vocab": vocab, "merges": [String]()] as [String: Any],
        ]
    }

    /// Writes JSON with sorted keys, keeping a Double a float literal
    /// (`1.0`, not `1`): transformers 5's strict configs reject an integer
    /// where a float field is declared (DeepSeek's `attention_dropout`,
    /// `routed_scaling_factor`), and JSONSerialization drops the `.0`.
    static func writeJSON(_ object: Any, to url: URL) throws {
        try Data((try jsonText(object, indent: "") + "\n").utf8).write(to: url)
    }

    static func jsonText(_ value: Any, indent: String) throws -> String {
        let inner = indent + "  "
        switch value {
        case let d as [String: Any]:
            if d.isEmpty { return "{}" }
            let items = try d.keys.sorted().map { "\(inner)\(try jsonText($0, indent: inner)): \(try jsonText(d[$0]!, indent: inner))" }
            return "{\n" + items.joined(separator: ",\n") + "\n\(indent)}"
        case let a as [Any]:
            if a.isEmpty { return "[]" }
            return "[\n" + (try a.map { inner + (try jsonText($0, indent: inner)) }).joined(separator: ",\n") + "\n\(indent)]"
        case let s as String:
            return String(decoding: try JSONSerialization.data(withJSONObject: [s], options: [.fragmentsAllowed]), as: UTF8.self)
                .dropFirst().dropLast().description
        case let b as Bool: return b ? "true" : "false"
        case let i as Int: return String(i)
        case let f as Double:
            guard f.isFinite else { throw CheckpointError.invalidConfig(file: "config.json", reason: "non-finite number \(f)") }
            return "\(f)"
        case is NSNull: return "null"
        default:
            throw CheckpointError.invalidConfig(file: "config.json", reason: "cannot write \(type(of: value)) as JSON")
        }
    }
}
