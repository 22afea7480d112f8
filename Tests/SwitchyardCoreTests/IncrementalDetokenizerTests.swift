import Foundation
import Testing
@testable import SwitchyardCore
@testable import SwitchyardModel

/// Incremental decoding must give exactly the full decode, whatever the
/// tokens (multi-byte characters split across tokens included), and never
/// stream text past a stop string.
@Suite struct IncrementalDetokenizerTests {
    static let tokenizerDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("SwitchyardModelTests/Fixtures/tokenizers/bytelevel_qwen2").path

    @Test func deltasAddUpToTheFullDecodeOfAnyTokens() throws {
        let tok = try TokenizerLoader.load(directory: Self.tokenizerDir)
        var rng = Xoshiro256(seed: 4)
        // Real text with multi-byte characters, and random ids (partial UTF-8 sequences).
        let texts = [tok.encode("naïve café — 東京 🙂 done", addSpecialTokens: false),
                     (0..<200).map { _ in Int32(rng.next() % UInt64(min(tok.vocabSize, 5000))) }]
        for ids in texts {
            var d = IncrementalDetokenizer(tokenizer: tok, stopStrings: [])
            var streamed = ""
            for i in ids.indices { streamed += d.push(ids[...i]).delta }
            d.flush(ids[...])
            streamed += d.finish()
            let full = tok.decode(ids, skipSpecialTokens: true)
            #expect(d.text == full)
            #expect(streamed == full)
        }
    }

    @Test func textThatCouldStartAStopStringIsHeldBackAndTheStopIsCut() throws {
        let tok = try TokenizerLoader.load(directory: Self.tokenizerDir)
        let ids = tok.encode("alpha beta END gamma", addSpecialTokens: false)
        var d = IncrementalDetokenizer(tokenizer: tok, stopStrings: ["END"])
        var streamed = ""
        var stoppedAt: Int?
        for i in ids.indices {
            let (delta, stopped) = d.push(ids[...i])
            streamed += delta
            #expect(!streamed.contains("E"), "streamed \(streamed.debugDescription) before the stop string was complete")
            if stopped { stoppedAt = i; break }
        }
        #expect(stoppedAt != nil)
        d.flush(ids[...])
        #expect(d.text == "alpha beta ")
        #expect(streamed + d.finish() == "alpha beta ")
    }
}
