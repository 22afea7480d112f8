import Foundation
import Testing
@testable import SwitchyardModel

/// The bar for the forward pass: logits and greedy continuations equal what
/// Hugging Face transformers computes in fp32 (tools/reference/make_model_references.py).
@Suite struct ReferenceLogitsTests {
    @Test(arguments: Fixtures.modelCases)
    func logitsMatchTransformersAtEveryPosition(_ name: String) throws {
        let (ref, expected) = try Fixtures.reference(name)
        let model = try Transformer(directory: Fixtures.model(name))
        let rows = try Generator(model: model).allLogits(ref.tokens)
        #expect(rows.count == ref.rows)
        var worst: Float = 0
        for (i, row) in rows.enumerated() {
            #expect(row.count == ref.vocab)
            for (j, v) in row.enumerated() {
                let r = expected[i * ref.vocab + j]
                worst = max(worst, abs(v - r) / (1 + abs(r)))
            }
        }
        #expect(worst <= 1e-4, "worst relative error \(worst) for \(name)")
    }

    @Test(arguments: Fixtures.modelCases)
    func greedyGenerationMatchesTransformers(_ name: String) throws {
        let (ref, _) = try Fixtures.reference(name)
        let model = try Transformer(directory: Fixtures.model(name))
        let result = try Generator(model: model).generate(prompt: ref.tokens, maxTokens: ref.greedy.count)
        #expect(result.tokens == ref.greedy)
    }

    @Test func configsDecodeArchitectureSpecificFields() throws {
        let qwen2 = try Checkpoint(directory: Fixtures.model("qwen2_moe")).config
        #expect(qwen2.architecture == .qwen2Moe)
        #expect(qwen2.sparseLayers == [true, false, true])
        #expect(qwen2.sharedExpertIntermediateSize == 40)
        #expect(qwen2.qkvBias)
        let qwen3 = try Checkpoint(directory: Fixtures.model("qwen3_moe")).config
        #expect(qwen3.headDim == 12)
        #expect(qwen3.qkNorm == .perHead)
        #expect(qwen3.sparseLayers == [false, true, false])
        #expect(qwen3.tieWordEmbeddings)
        #expect(qwen3.ropeTheta == 1_000_000)
        let olmoe = try Checkpoint(directory: Fixtures.model("olmoe")).config
        #expect(olmoe.qkNorm == .wholeProjection)
        #expect(olmoe.clipQKV == 2.5)
        #expect(olmoe.numExpertsPerToken == 4)
        let sharded = try Checkpoint(directory: Fixtures.model("qwen3_moe_bf16_sharded"))
        #expect(sharded.tensors["model.embed_tokens.weight"]?.dtype == .bf16)
        #expect(Set(sharded.tensors.values.map { ($0.file.path as NSString).lastPathComponent }).count == 3)
    }
}
