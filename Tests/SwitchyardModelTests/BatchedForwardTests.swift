import Foundation
import Testing
@testable import SwitchyardModel

/// The serving engine batches prefill chunks and decodes of different
/// sequences into one ragged forward; each sequence must get the logits it
/// would get alone.
@Suite struct BatchedForwardTests {
    func maxRelativeDifference(_ a: [Float], _ b: [Float]) -> Float {
        zip(a, b).map { abs($0 - $1) / (1 + abs($1)) }.max() ?? 0
    }

    @Test(arguments: ["mixtral", "qwen2_moe", "qwen3_moe_bf16_sharded", "deepseek_v2", "deepseek_v3", "glm4_moe", "gpt_oss"])
    func raggedBatchMatchesSequencesRunAlone(_ name: String) throws {
        let model = try Transformer(directory: Fixtures.model(name))
        let (ref, _) = try Fixtures.reference(name)
        let gen = Generator(model: model, blockSize: 4)
        let prompts: [[Int32]] = [Array(ref.tokens.prefix(9)), Array(ref.tokens.suffix(5)), [ref.tokens[3]], Array(ref.tokens)]
        let alone = try prompts.map { try gen.allLogits($0) }

        // Same prompts as one batch, each in its own blocks of a shared cache,
        // non-contiguous and in reverse order to exercise the block tables.
        let blockSize = 4
        let cache = PagedKVCache(config: model.config, numBlocks: 40, blockSize: blockSize)
        var batch = ForwardBatch()
        var next = Int32(39)
        for p in prompts {
            let blocks = (p.count + blockSize - 1) / blockSize
            var table: [Int32] = []
            for _ in 0..<blocks { table.append(next); next -= 1 }
            batch.append(tokens: p, startPosition: 0, blockTable: table, logits: .all)
        }
        let logits = try model.forward(batch, cache: cache).toArrays()
        var row = 0
        for (i, p) in prompts.enumerated() {
            for j in 0..<p.count {
                #expect(maxRelativeDifference(logits[row], alone[i][j]) < 1e-5, "prompt \(i) position \(j)")
                row += 1
            }
        }
    }

    @Test func chunkedPrefillAndDecodeMatchOneFullPrefill() throws {
        let model = try Transformer(directory: Fixtures.model("qwen3_moe"))
        let (ref, _) = try Fixtures.reference("qwen3_moe")
        let full = try Generator(model: model).allLogits(ref.tokens)
        let cache = PagedKVCache(config: model.config, numBlocks: 8, blockSize: 4)
        let table: [Int32] = [5, 2, 7, 0, 1, 3]
        // Prefill in chunks of 7, 6, then decode the remaining tokens one by one.
        var position = 0
        var produced: [[Float]] = []
        for chunk in [7, 6, 1, 1, 1, 1, 1, 1, 1, 1] {
            var batch = ForwardBatch()
            batch.append(tokens: ref.tokens[position..<(position + chunk)], startPosition: position, blockTable: table, logits: .all)
            produced += try model.forward(batch, cache: cache).toArrays()
            position += chunk
        }
        #expect(position == ref.tokens.count)
        for (a, b) in zip(produced, full) { #expect(maxRelativeDifference(a, b) < 1e-5) }
    }

    /// Long prefill chunks take the GEMM attention path (for DeepSeek's
    /// latent attention: the expanded form); short chunks the per-token one
    /// (absorbed). Both must agree, including when the chunk starts
    /// mid-sequence (causal mask offset) and with a decode in the same batch.
    @Test(arguments: ["qwen2_moe", "deepseek_v2_group", "deepseek_v3_noninterleaved_bf16_sharded", "glm4_moe_bf16_sharded",
                      "gpt_oss", "gpt_oss_mxfp4"])
    func gemmAttentionPathMatchesPerTokenPath(_ name: String) throws {
        let model = try Transformer(directory: Fixtures.model(name))
        var rng = Xoshiro256(seed: 5)
        let tokens = (0..<150).map { _ in Int32(rng.next() % UInt64(model.config.vocabSize)) }
        let blockSize = 8
        let table = (0..<Int32(19)).reversed().map { $0 }
        func run(chunks: [Int]) throws -> [[Float]] {
            let cache = PagedKVCache(config: model.config, numBlocks: 40, blockSize: blockSize)
            var rows: [[Float]] = []
            var position = 0
            for chunk in chunks {
                var batch = ForwardBatch()
                batch.append(tokens: tokens[position..<(position + chunk)], startPosition: position, blockTable: table, logits: .all)
                // A one-token decode of another sequence rides along.
                batch.append(tokens: [7], startPosition: 0, blockTable: [39], logits: .none)
                rows += try model.forward(batch, cache: cache).toArrays()
                position += chunk
            }
            return rows
        }
        let viaGemm = try run(chunks: [40, 110])  // both chunks ≥ 32 tokens
        let perToken = try run(chunks: Array(repeating: 25, count: 6))
        #expect(viaGemm.count == 150 && perToken.count == 150)
        // MXFP4 experts go through dequantised tiles on the GEMM path and a
        // row kernel on the other; the sums differ in order, and this
        // fixture's experts are scaled up (its clamp must fire), so its
        // logits are large: measured up to 1.08e-5.
        let tolerance: Float = name == "gpt_oss_mxfp4" ? 3e-5 : 1e-5
        for (a, b) in zip(viaGemm, perToken) { #expect(maxRelativeDifference(a, b) < tolerance) }
    }

    /// Layered prefill: a prompt advancing one layer group per forward, its
    /// hidden states carried between forwards, while another sequence decodes
    /// through every layer in the same forwards, gets the same logits as a
    /// plain prefill.
    @Test(arguments: ["qwen2_moe", "deepseek_v3"])
    func layerGroupsWithCarriedHiddenStatesMatchAFullPrefill(_ name: String) throws {
        let model = try Transformer(directory: Fixtures.model(name))
        let (ref, _) = try Fixtures.reference(name)
        #expect(model.config.numLayers == 3)
        let h = model.config.hiddenSize
        let prompt = Array(ref.tokens)
        let expected = try Generator(model: model).allLogits(prompt).last!
        let decodeAlone = try Generator(model: model).allLogits([5, 6, 7, 8])
        let cache = PagedKVCache(config: model.config, numBlocks: 16, blockSize: 8)
        let promptTable: [Int32] = [3, 4, 5]
        let otherTable: [Int32] = [9]
        var carried: [Float]? = nil
        var other: [Int32] = [5, 6, 7, 8]
        for (g, layers) in [0..<1, 1..<2, 2..<3].enumerated() {
            var batch = ForwardBatch()
            batch.append(tokens: prompt, startPosition: 0, blockTable: promptTable, logits: layers.upperBound == 3 ? .last : .none,
                         layers: layers, inputHidden: carried)
            batch.append(tokens: [other[g]], startPosition: g, blockTable: otherTable, logits: .last)
            let logits = try model.forward(batch, cache: cache).toArrays()
            // The decode rides along at full depth and matches its own prefill.
            #expect(maxRelativeDifference(logits.last!, decodeAlone[g]) < 1e-5)
            if layers.upperBound == 3 {
                #expect(maxRelativeDifference(logits[0], expected) < 1e-5)
            } else {
                carried = Array(UnsafeBufferPointer(start: model.lastHidden!, count: prompt.count * h))
            }
        }
        _ = other.removeFirst()
        var bad = ForwardBatch()
        bad.append(tokens: prompt, startPosition: 0, blockTable: promptTable, logits: .none, layers: 1..<2, inputHidden: nil)
        #expect(throws: ForwardError.self) { try model.forward(bad, cache: cache) }
    }

    @Test func invalidTokenOrBlockTableIsAnErrorNotACrash() throws {
        let model = try Transformer(directory: Fixtures.model("mixtral"))
        let cache = PagedKVCache(config: model.config, numBlocks: 2, blockSize: 4)
        var batch = ForwardBatch()
        batch.append(tokens: [1, 2, 999], startPosition: 0, blockTable: [0], logits: .last)
        #expect(throws: ForwardError.tokenOutOfRange(token: 999, vocabSize: 251)) { try model.forward(batch, cache: cache) }
        var short = ForwardBatch()
        short.append(tokens: [1, 2, 3, 4, 5], startPosition: 0, blockTable: [0], logits: .last)
        #expect(throws: ForwardError.blockTableTooShort(sequence: 0, needed: 2, have: 1)) { try model.forward(short, cache: cache) }
        var bad = ForwardBatch()
        bad.append(tokens: [1], startPosition: 0, blockTable: [7], logits: .last)
        #expect(throws: ForwardError.invalidBlock(sequence: 0, block: 7, numBlocks: 2)) { try model.forward(bad, cache: cache) }
    }

    /// Shared experts are counted apart from routed ones: once per MoE layer
    /// per forward, whatever the routing.
    @Test func sharedExpertBytesAreCountedApartFromRoutedOnes() throws {
        let model = try Transformer(directory: Fixtures.model("deepseek_v2"))
        let c = model.config
        _ = try Generator(model: model).allLogits([3, 1, 4, 1, 5])
        let moeLayers = c.sparseLayers.filter { $0 }.count
        var sharedBytes = 0, routedBytes = 0
        for layer in model.weights.layers {
            if case .moe(let m) = layer.feedForward {
                sharedBytes += m.shared!.byteCount
                routedBytes += m.experts[0].byteCount
            }
        }
        #expect(model.counters.sharedExpertWeightBytesRead == sharedBytes)
        #expect(model.counters.tokens.reduce(0, +) == 5 * c.numExpertsPerToken * moeLayers)
        // Routed bytes count each distinct expert a layer ran (all experts here are one size).
        #expect(model.counters.expertWeightBytesRead % (routedBytes / moeLayers) == 0)
    }

    @Test func expertCountersSeeEveryRoutedToken() throws {
        let model = try Transformer(directory: Fixtures.model("olmoe"))
        let (ref, _) = try Fixtures.reference("olmoe")
        _ = try Generator(model: model).allLogits(ref.tokens)
        let c = model.config
        for l in 0..<c.numLayers {
            let perLayer = model.counters.tokens[(l * c.numExperts)..<((l + 1) * c.numExperts)].reduce(0, +)
            #expect(perLayer == ref.tokens.count * c.numExpertsPerToken)
        }
        #expect(model.counters.expertWeightBytesRead > 0)
    }
}
