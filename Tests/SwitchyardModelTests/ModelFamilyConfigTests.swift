import Foundation
import Testing
@testable import SwitchyardModel

/// DeepSeek-V2/V3 and GLM-4.5 configs decode into MLA dimensions, routing, YaRN and KV
/// sizes equal to what transformers derives; malformed ones are one error
/// naming the file, the key and what was expected.
@Suite struct ModelFamilyConfigTests {
    @Test func groupLimitedV2DecodesLatentAttentionRoutingAndYarn() throws {
        let c = try Checkpoint(directory: Fixtures.model("deepseek_v2_group")).config
        #expect(c.architecture == .deepseekV2)
        let m = try #require(c.latentAttention)
        #expect(m.qLoraRank == 24 && m.kvLoraRank == 18 && m.nopeDim == 6 && m.ropeDim == 12 && m.valueDim == 10)
        #expect(m.bias)
        #expect(c.routing.scoring == .softmax && c.routing.groupCount == 4 && c.routing.groupsKept == 2)
        #expect(c.routing.groupScore == .max && !c.routing.selectionBias && c.routing.scale == 2)
        #expect(!c.normTopKProb, "transformers' V2 router never renormalises")
        #expect(c.sparseLayers == [false, true, true])
        #expect(c.sharedExpertIntermediateSize == 10 && !c.sharedExpertGated)
        // transformers 5.24: model.model.rotary_emb.inv_freq and layers[0].self_attn.scaling.
        let expected: [Float] = [1.0, 0.13465215265750885, 0.011603971011936665, 0.0024999999441206455,
                                 0.0005386085831560194, 0.00011603973689489067]
        let rope = Rope(config: c)
        #expect(rope.interleaved && rope.attentionFactor == 1)
        for (a, b) in zip(rope.invFreq, expected) { #expect(abs(a - b) <= 1e-6 * b, "\(a) vs \(b)") }
        #expect(abs(m.softmaxScale - 0.2841692874592977) < 1e-7)
    }

    @Test func v3DecodesSigmoidBiasedTopTwoGroupRouting() throws {
        let c = try Checkpoint(directory: Fixtures.model("deepseek_v3")).config
        #expect(c.routing.scoring == .sigmoid && c.routing.selectionBias && c.routing.groupScore == .topTwoSum)
        #expect(c.routing.groupCount == 4 && c.routing.groupsKept == 2 && c.routing.scale == 2.5)
        #expect(c.normTopKProb)
        #expect(Rope(config: c).interleaved)
        let flat = try Checkpoint(directory: Fixtures.model("deepseek_v3_noninterleaved_bf16_sharded")).config
        #expect(!Rope(config: flat).interleaved)
        #expect(flat.latentAttention?.qLoraRank == nil)
        #expect(abs(flat.latentAttention!.softmaxScale - 1 / Float(14).squareRoot()) < 1e-7)
    }

    @Test func glmDecodesPartialRotaryQKNormAndV3Routing() throws {
        let c = try Checkpoint(directory: Fixtures.model("glm4_moe")).config
        #expect(c.architecture == .glm4Moe && c.latentAttention == nil)
        #expect(c.headDim == 16 && c.rope.dim == 8 && !c.rope.interleaved)
        #expect(c.qkNorm == .perHead && c.qkvBias)
        #expect(c.routing.scoring == .sigmoid && c.routing.selectionBias && c.routing.groupCount == 2 && c.routing.groupsKept == 1)
        #expect(abs(c.routing.scale - 1.8) < 1e-6 && c.normTopKProb)
        #expect(c.sparseLayers == [false, true, true] && c.sharedExpertIntermediateSize == 12 && !c.sharedExpertGated)
        // transformers: inv_freq = theta^(-2i/rot) over the rotated width, not head_dim.
        #expect(Rope(config: c).invFreq == [1, 0.1, 0.01, 0.001].map { Float($0) })
        let plain = try Checkpoint(directory: Fixtures.model("glm4_moe_bf16_sharded")).config
        #expect(plain.qkNorm == .none && plain.rope.dim == 6 && !plain.routing.isGroupLimited)
    }

    @Test func gptOssDecodesWindowsSinksYarnAndMXFP4() throws {
        let c = try Checkpoint(directory: Fixtures.model("gpt_oss")).config
        #expect(c.attentionWindows == [6, 0, 6, 0])
        #expect(c.routing.scoring == .softmaxOfTopK && c.qkvBias)
        #expect(c.gptOss == GptOssSpecifics(swigluAlpha: 1.702, swigluLimit: 7, mxfp4Experts: false))
        let rope = Rope(config: c)
        #expect(abs(rope.attentionFactor - 1.138629) < 1e-6 && !rope.interleaved)
        // transformers 5.24, truncate false: no floor/ceil on the ramp.
        let expected: [Float] = [1, 0.1169, 0.0127033, 0.00286356, 6.45497e-4, 1.45507e-4, 3.27998e-5, 7.39367e-6]
        for (a, b) in zip(rope.invFreq, expected) { #expect(abs(a - b) <= 1e-4 * b, "\(a) vs \(b)") }
        let q = try Checkpoint(directory: Fixtures.model("gpt_oss_mxfp4")).config
        #expect(q.gptOss?.mxfp4Experts == true && q.numExpertsPerToken == 2)
        let w = try ModelWeights(checkpoint: Checkpoint(directory: Fixtures.model("gpt_oss_mxfp4")))
        guard case .moe(let moe) = w.layers[0].feedForward else { Issue.record("layer 0 is not MoE"); return }
        #expect(moe.experts[0].gate.dtype == .mxfp4 && moe.experts[0].gate.rows == 96 && moe.experts[0].gate.rowStride == 2)
        #expect(moe.experts[0].down.cols == 96 && moe.experts[0].down.rows == 64)
        // 4 bits a value plus a scale byte per 32: 0.53 bytes a weight.
        #expect(moe.experts[0].down.byteCount == 64 * (48 + 3))
    }

    @Test func mxfp4BlocksWithTheWrongShapeAreNamed() throws {
        let dir = try Fixtures.scratchCopy(of: "gpt_oss_mxfp4")
        let name = "model.layers.1.mlp.experts.down_proj_blocks"
        try CheckpointErrorTests().rewriteHeader(dir.appendingPathComponent("model.safetensors")) { h in
            var entry = h[name] as! [String: Any]
            entry["shape"] = [4, 64, 2, 24]
            h[name] = entry
        }
        #expect(throws: CheckpointError.wrongShape(file: "model.safetensors", tensor: name, expected: [4, 64, 3, 16], found: [4, 64, 2, 24])) {
            try Transformer(directory: dir.path)
        }
        let bad = try configError("gpt_oss") { $0["layer_types"] = ["sliding_attention", "chunked_attention", "full_attention", "full_attention"] }
        #expect(bad.contains("layer_types[1] is \"chunked_attention\""))
        let quant = try configError("gpt_oss_mxfp4") { $0["quantization_config"] = ["quant_method": "gptq"] }
        #expect(quant.contains("quant_method \"gptq\" is not supported"))
    }

    /// DeepSeek-V2-Lite's dimensions: a prompt's own prefill runs expanded
    /// (2.3x fewer flops at 1024 tokens), a decode or a short chunk
    /// on a long context absorbed; docs/architecture.md gives the counts.
    @Test func latentAttentionPicksTheCheaperFormPerSequence() {
        let lite = LatentAttentionConfig(qLoraRank: nil, kvLoraRank: 512, nopeDim: 128, ropeDim: 64, valueDim: 128,
                                         bias: false, softmaxScale: 1)
        #expect(lite.prefersExpandedForm(newTokens: 1024, context: 1024))
        #expect(lite.prefersExpandedForm(newTokens: 32, context: 32))
        #expect(lite.prefersExpandedForm(newTokens: 512, context: 2048))
        #expect(!lite.prefersExpandedForm(newTokens: 1, context: 1024))
        #expect(!lite.prefersExpandedForm(newTokens: 40, context: 8000))
    }

    /// docs/architecture.md: MLA caches `num_layers × (kv_lora_rank +
    /// qk_rope_head_dim)` values per token; grouped attention
    /// `2 × num_layers × num_kv_heads × head_dim`.
    @Test func kvBytesPerTokenFollowTheDocumentedFormulas() throws {
        let v2 = try Checkpoint(directory: Fixtures.model("deepseek_v2")).config
        #expect(v2.kvCacheBytesPerToken == 3 * (20 + 8) * 4)
        let qwen = try Checkpoint(directory: Fixtures.model("qwen2_moe")).config
        #expect(qwen.kvCacheBytesPerToken == 2 * 3 * 2 * 16 * 4)
        let cache = PagedKVCache(config: v2, numBlocks: 5, blockSize: 4)
        #expect(!cache.storesValues)
        #expect(cache.totalBytes == 5 * PagedKVCache.bytesPerBlock(config: v2, blockSize: 4))
        #expect(PagedKVCache.bytesPerBlock(config: v2, blockSize: 4) == 4 * v2.kvCacheBytesPerToken)
        // Sliding-window layers read only their window (gpt_oss: window 6 on layers 0 and 2).
        let oss = try Checkpoint(directory: Fixtures.model("gpt_oss")).config
        #expect(oss.kvCacheBytesRead(position: 20) == (6 + 21 + 6 + 21) * 2 * 2 * 16 * 4)
        #expect(oss.kvCacheBytesRead(position: 3) == 4 * oss.kvCacheBytesPerToken)
        // bfloat16 mode keeps grouped-query caches in BF16 (half the bytes,
        // twice the blocks for a memory budget); MLA caches stay Float32.
        let bf16 = ComputeOptions(gemm: .onednn, dtype: .bfloat16)
        #expect(PagedKVCache.bytesPerBlock(config: qwen, blockSize: 4, compute: bf16) * 2
            == PagedKVCache.bytesPerBlock(config: qwen, blockSize: 4))
        #expect(PagedKVCache(config: qwen, numBlocks: 2, blockSize: 4, compute: bf16).storesBF16)
        #expect(!PagedKVCache(config: v2, numBlocks: 2, blockSize: 4, compute: bf16).storesBF16)
        #expect(oss.kvCacheBytesRead(position: 3, elementBytes: 2) * 2 == oss.kvCacheBytesRead(position: 3))
    }

    func configError(_ base: String, _ edit: (inout [String: Any]) -> Void) throws -> String {
        let dir = try Fixtures.scratchCopy(of: base)
        let url = dir.appendingPathComponent("config.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        edit(&json)
        try JSONSerialization.data(withJSONObject: json).write(to: url)
        do {
            _ = try Transformer(directory: dir.path)
            return ""
        } catch let e as CheckpointError {
            #expect(e.description.contains(url.standardizedFileURL.path), "names the file: \(e)")
            return e.description
        }
    }

    @Test func malformedRoutingKeysAreNamedWithTheExpectedValue() throws {
        let method = try configError("deepseek_v2_group") { $0["topk_method"] = "noaux_tc_v9" }
        #expect(method.contains("topk_method \"noaux_tc_v9\"") && method.contains("\"greedy\" or \"group_limited_greedy\""))
        let groups = try configError("deepseek_v3") { $0["n_group"] = 3 }
        #expect(groups.contains("n_group (3) must divide n_routed_experts (8)"))
        let kept = try configError("deepseek_v3") { $0["topk_group"] = 5 }
        #expect(kept.contains("topk_group (5) must be between 1 and n_group (4)"))
        let rope = try configError("deepseek_v3") { $0["rope_parameters"] = ["rope_type": "longrope", "rope_theta": 10000.0] }
        #expect(rope.contains("rope type \"longrope\"") && rope.contains("\"default\" or \"yarn\""))
        let freq = try configError("deepseek_v2") { $0["moe_layer_freq"] = 2 }
        #expect(freq.contains("moe_layer_freq is 2"))
    }

    @Test func missingLatentTensorIsNamed() throws {
        let dir = try Fixtures.scratchCopy(of: "deepseek_v3")
        try CheckpointErrorTests().rewriteHeader(dir.appendingPathComponent("model.safetensors")) {
            $0.removeValue(forKey: "model.layers.2.self_attn.kv_b_proj.weight")
        }
        #expect(throws: CheckpointError.missingTensor(tensor: "model.layers.2.self_attn.kv_b_proj.weight",
                                                      directory: dir.standardizedFileURL.path)) {
            try Transformer(directory: dir.path)
        }
    }
}
