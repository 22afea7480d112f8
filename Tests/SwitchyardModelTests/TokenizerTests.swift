import Foundation
import Testing
@testable import SwitchyardModel

/// Encode and decode match Hugging Face `tokenizers` exactly
/// (tools/reference/make_tokenizer_references.py).
@Suite struct TokenizerTests {
    struct Row: Decodable {
        let text: String
        let ids: [Int32]
        let ids_no_special: [Int32]
        let decoded: String
        let decoded_skip_special: String
    }

    static let cases = ["bytelevel_gpt2", "bytelevel_qwen2", "sentencepiece_bpe", "metaspace_bpe"]

    func load(_ name: String) throws -> (any Tokenizer, [Row]) {
        let dir = Fixtures.tokenizer(name)
        let tok = try TokenizerLoader.load(directory: dir)
        let rows = try JSONDecoder().decode([Row].self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/expected.json")))
        return (tok, rows)
    }

    @Test(arguments: cases)
    func encodeMatchesHuggingFace(_ name: String) throws {
        let (tok, rows) = try load(name)
        for row in rows {
            #expect(tok.encode(row.text, addSpecialTokens: true) == row.ids, "\(name): \(row.text.debugDescription)")
            #expect(tok.encode(row.text, addSpecialTokens: false) == row.ids_no_special, "\(name): \(row.text.debugDescription)")
        }
    }

    @Test(arguments: cases)
    func decodeMatchesHuggingFace(_ name: String) throws {
        let (tok, rows) = try load(name)
        for row in rows {
            #expect(tok.decode(row.ids, skipSpecialTokens: false) == row.decoded, "\(name): \(row.text.debugDescription)")
            #expect(tok.decode(row.ids, skipSpecialTokens: true) == row.decoded_skip_special, "\(name): \(row.text.debugDescription)")
        }
    }

    @Test func byteFallbackEncodesCharactersOutsideTheVocabulary() throws {
        let (tok, _) = try load("sentencepiece_bpe")
        // U+1F9EA is not in the trained vocabulary: four <0xXX> byte tokens.
        let ids = tok.encode("🧪", addSpecialTokens: false)
        let byteIds = [0xF0, 0x9F, 0xA7, 0xAA].map { tok.tokenId(String(format: "<0x%02X>", $0))! }
        #expect(Array(ids.suffix(4)) == byteIds)
        #expect(tok.decode(ids, skipSpecialTokens: true) == "🧪")
    }

    @Test func missingTokenizerFileGivesAnActionableError() {
        #expect(throws: TokenizerError.missing(directory: "/nonexistent")) {
            try TokenizerLoader.load(directory: "/nonexistent")
        }
    }
}

/// BPE merging through a priority queue gives exactly the merges of the
/// textbook loop (rescan, merge the lowest-ranked leftmost pair, repeat),
/// and stays fast on a long word.
@Suite struct BPEMergeTests {
    /// The O(n²) definition, kept here as the reference.
    func naiveMerge(_ model: BPEModel, _ start: [Int32]) -> [Int32] {
        var symbols = start
        while symbols.count > 1 {
            var bestRank = Int32.max, bestPos = -1, bestId: Int32 = 0
            for i in 0..<(symbols.count - 1) {
                let key = UInt64(UInt32(bitPattern: symbols[i])) << 32 | UInt64(UInt32(bitPattern: symbols[i + 1]))
                if let m = model.merges[key], m.rank < bestRank { (bestRank, bestPos, bestId) = (m.rank, i, m.id) }
            }
            if bestPos < 0 { break }
            symbols[bestPos] = bestId
            symbols.remove(at: bestPos + 1)
        }
        return symbols
    }

    @Test(arguments: TokenizerTests.cases)
    func queueMergingEqualsTheTextbookLoop(_ name: String) throws {
        let tok = try #require(try TokenizerLoader.load(directory: Fixtures.tokenizer(name)) as? BPETokenizer)
        let model = tok.model
        // Symbols drawn from the single-character tokens, so many pairs merge.
        let singles = model.vocab.filter { $0.key.unicodeScalars.count == 1 }.map(\.value).sorted()
        try #require(singles.count > 10)
        var rng = Xoshiro256(seed: 9)
        for length in [2, 3, 7, 16, 64, 300] {
            for _ in 0..<20 {
                let word = (0..<length).map { _ in singles[Int(rng.next() % UInt64(singles.count))] }
                #expect(model.mergeAll(word) == naiveMerge(model, word), "\(name), \(length) symbols")
            }
        }
        // Repetitive words stress equal ranks: leftmost first.
        let a = singles[singles.count / 2], b = singles[singles.count / 3]
        let repetitive = (0..<500).map { $0 % 3 == 2 ? b : a }
        #expect(model.mergeAll(repetitive) == naiveMerge(model, repetitive))
    }

    @Test func encodingStopsOncePastTheLimitWithAPrefixOfTheFullEncoding() throws {
        let tok = try TokenizerLoader.load(directory: Fixtures.tokenizer("bytelevel_qwen2"))
        let text = String(repeating: "def f(x): return x + 1\n", count: 2000)
        let full = tok.encode(text, addSpecialTokens: false)
        let cut = tok.encode(text, addSpecialTokens: false, maxTokens: 100)
        #expect(full.count > 1000)
        #expect(cut.count > 100 && cut.count < 120)
        #expect(Array(full.prefix(cut.count)) == cut)
    }

    @Test func aLongWordEncodesAndDecodesBack() throws {
        let tok = try TokenizerLoader.load(directory: Fixtures.tokenizer("bytelevel_qwen2"))
        var letters: [UInt8] = []
        for i in 0..<40_000 {
            let k: Int = (i * 7 + i / 13) % 26
            letters.append(UInt8(97 + k))
        }
        let word = String(decoding: letters, as: UTF8.self)
        let ids = tok.encode(word, addSpecialTokens: false)
        #expect(ids.count < word.count)
        #expect(tok.decode(ids, skipSpecialTokens: true) == word)
        #expect(tok.maxTokenBytes >= 2 && word.utf8.count <= ids.count * tok.maxTokenBytes)
    }
}
