import Foundation
import Testing
@testable import SwitchyardModel

@Suite struct RandomCheckpointTests {
    static let presetsDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("models/presets")

    func preset(_ name: String) throws -> ModelPreset {
        try ModelPreset.load(Self.presetsDir.appendingPathComponent("\(name).json").path)
    }

    func temp() -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-create-\(UUID().uuidString)")
    }

    @Test(arguments: Architecture.allCases)
    func createdCheckpointLoadsAndRuns(_ arch: Architecture) throws {
        let dir = temp()
        try RandomCheckpoint.create(.init(architecture: arch, preset: preset("tiny"), seed: 1, dtype: .bf16), at: dir)
        let files = try Set(FileManager.default.contentsOfDirectory(atPath: dir.path))
        #expect(files == ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"])
        let model = try Transformer(directory: dir.path)
        #expect(model.config.architecture == arch)
        #expect(model.config.numExperts == 8)
        #expect(model.config.hasSharedExpert == (arch == .qwen2Moe))
        let logits = try Generator(model: model).allLogits([1, 2, 3, 300])
        #expect(logits.count == 4 && logits.allSatisfy { $0.count == 384 && $0.allSatisfy(\.isFinite) })
        let tok = try TokenizerLoader.load(directory: dir.path)
        #expect(tok.decode(tok.encode("héllo <|endoftext|> wörld")) == "héllo <|endoftext|> wörld")
        #expect(tok.eosTokenId == 256)
    }

    @Test func sameSeedSameBytesOtherSeedOtherBytes() throws {
        let a = temp(), b = temp(), c = temp()
        let p = try preset("tiny")
        try RandomCheckpoint.create(.init(architecture: .mixtral, preset: p, seed: 7), at: a)
        try RandomCheckpoint.create(.init(architecture: .mixtral, preset: p, seed: 7), at: b)
        try RandomCheckpoint.create(.init(architecture: .mixtral, preset: p, seed: 8), at: c)
        let da = try Data(contentsOf: a.appendingPathComponent("model.safetensors"))
        #expect(da == (try Data(contentsOf: b.appendingPathComponent("model.safetensors"))))
        #expect(da != (try Data(contentsOf: c.appendingPathComponent("model.safetensors"))))
    }

    @Test func benchPresetExpertsFarExceedTheL3Cache() throws {
        let p = try preset("bench")
        let expertBytes = 3 * p.hiddenSize * p.moeIntermediateSize * 2
        #expect(p.numExperts >= 32)
        #expect(expertBytes >= 1 << 20 && expertBytes <= 2 << 20)
        #expect(p.numHiddenLayers >= 8)
        #expect(p.numExperts * expertBytes * p.numHiddenLayers > 16 * (32 << 20))
    }

    @Test func unknownPresetListsTheAvailableOnes() throws {
        #expect(throws: CheckpointError.self) { try ModelPreset.load("does-not-exist") }
    }
}
