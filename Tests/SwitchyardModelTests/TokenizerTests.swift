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
