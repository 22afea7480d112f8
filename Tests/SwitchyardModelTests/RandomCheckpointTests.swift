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
        Fixtures.scratchDirectory("create")
    }

    @Test(arguments: Architecture.allCases)
    func createdCheckpointLoadsAndRuns(_ arch: Architecture) throws {
        let dir = temp()
        try RandomCheckpoint.create(.init(architecture: arch, preset: preset("tiny"), seed: 1, dtype: .bf16), at: dir)
        let files = try Set(FileManager.default.contentsOfDirectory(atPath: dir.path))
        #expect(files == ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"])
        let names = RandomCheckpoint.tensorList(arch, try preset("tiny")).map(\.name)
        #expect(Set(names).count == names.count, "every tensor is declared once")
        let model = try Transformer(directory: dir.path)
        #expect(model.config.architecture == arch)
        #expect(model.config.numExperts == 8)
        #expect(model.config.hasSharedExpert == [.qwen2Moe, .deepseekV2, .deepseekV3, .glm4Moe].contains(arch))
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

    @Test func routerSkewScalesRouterRowsByAPermutedRampAndNothingElse() throws {
        let plain = temp(), skewed = temp()
        let p = try preset("tiny")
        try RandomCheckpoint.create(.init(architecture: .qwen3Moe, preset: p, seed: 4, dtype: .f32), at: plain)
        try RandomCheckpoint.create(.init(architecture: .qwen3Moe, preset: p, seed: 4, dtype: .f32, routerSkew: 3), at: skewed)
        let a = try Transformer(directory: plain.path), b = try Transformer(directory: skewed.path)
        func rows(_ m: Matrix) -> [[Float]] {
            (0..<m.rows).map { r in (0..<m.cols).map { m.data.assumingMemoryBound(to: Float.self)[r * m.cols + $0] } }
        }
        guard case .moe(let ma) = a.weights.layers[0].feedForward, case .moe(let mb) = b.weights.layers[0].feedForward else {
            Issue.record("layer 0 is not MoE"); return
        }
        // Each router row is the plain row times 1 + 3·rank/(E−1), ranks a permutation.
        func ratio(_ pa: [Float], _ pb: [Float]) -> Float {
            let k = pa.indices.max { abs(pa[$0]) < abs(pa[$1]) }!
            return pb[k] / pa[k]
        }
        let scales = zip(rows(ma.router), rows(mb.router)).map { Double(ratio($0, $1)) }
        let expected = (0..<p.numExperts).map { 1 + 3 * Double($0) / Double(p.numExperts - 1) }
        #expect(zip(scales.sorted(), expected).allSatisfy { abs($0 - $1) < 1e-5 })
        for (pa, pb) in zip(rows(ma.router), rows(mb.router)) {
            let s = ratio(pa, pb)
            #expect(zip(pa, pb).allSatisfy { abs($0 * s - $1) <= 1e-5 * max(1, abs($1)) })
        }
        // Experts are untouched.
        #expect(rows(ma.experts[2].down) == rows(mb.experts[2].down))
        // Whether that skews routing depends on the hidden states (zero-mean
        // ones favour larger rows); docs/placement.md measures it on `bench`.
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
