import Foundation
import Testing
@testable import SwitchyardModel

/// The bundled default model (models/stdlib-moe) loads, tokenizes like
/// Hugging Face, and continues a fixed prompt exactly as transformers does
/// (models/recipe/evaluate.py wrote the expected ids).
@Suite struct DefaultModelTests {
    static let modelDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("models/stdlib-moe").path

    struct Expected: Decodable {
        let prompt: String
        let prompt_ids: [Int32]
        let greedy: [Int32]
    }

    @Test func greedyContinuationMatchesTransformers() throws {
        let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: Fixtures.root.appendingPathComponent("default_model_greedy.json")))
        let tokenizer = try TokenizerLoader.load(directory: Self.modelDir)
        #expect(tokenizer.encode(expected.prompt) == expected.prompt_ids)
        let model = try Transformer(directory: Self.modelDir)
        let result = try Generator(model: model).generate(prompt: expected.prompt_ids, maxTokens: expected.greedy.count)
        #expect(result.tokens == expected.greedy)
    }

    @Test func defaultModelFitsTheSizeBudget() throws {
        let ckpt = try Checkpoint(directory: Self.modelDir)
        let bytes = ckpt.tensors.values.reduce(0) { $0 + $1.byteCount }
        #expect(bytes <= 16 << 20)
        #expect(ckpt.config.numLayers >= 4)
        #expect(ckpt.config.numExperts >= 16)
        #expect((2...4).contains(ckpt.config.numExpertsPerToken))
        #expect(ckpt.tensors.values.allSatisfy { $0.dtype == .bf16 })
    }
}
