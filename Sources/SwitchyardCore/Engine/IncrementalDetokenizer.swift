import SwitchyardModel

/// One request's output text, decoded as tokens arrive at a cost that
/// depends on the new tokens, not on the output so far.
///
/// vLLM's offsets: each step decodes only the tokens from `prefixOffset`,
/// once without and once with the tokens since `readOffset`, and takes the
/// difference as the new text. Decoding a few tokens of context before the
/// new ones keeps decoders that treat the first token specially (a leading
/// space, a byte fallback) correct; text that ends in an incomplete UTF-8
/// sequence waits for its next token. Stop strings are searched only in the
/// bytes the new text could complete, and text that could still turn out to
/// be the start of a stop string is held back from the stream.
struct IncrementalDetokenizer {
    let tokenizer: any Tokenizer
    /// Stop strings as UTF-8, non-empty.
    private let stops: [[UInt8]]
    private let holdBack: Int
    /// All complete text so far (UTF-8), cut at a stop string when one matched.
    private(set) var bytes: [UInt8] = []
    /// Bytes of `bytes` already handed out as deltas.
    private var released = 0
    private var prefixOffset = 0
    private var readOffset = 0
    /// A stop string matched: the text is final.
    private var stopped = false

    init(tokenizer: any Tokenizer, stopStrings: [String]) {
        self.tokenizer = tokenizer
        stops = stopStrings.filter { !$0.isEmpty }.map { Array($0.utf8) }
        holdBack = max(0, (stops.map(\.count).max() ?? 0) - 1)
    }

    var text: String { String(decoding: bytes, as: UTF8.self) }

    /// Takes the output tokens so far (the newest last). Returns the text
    /// that may be streamed now and whether a stop string matched (the text
    /// is then cut just before it); with `checkStops` false (before
    /// `min_tokens`) stop strings are not looked for in the new text.
    mutating func push(_ output: ArraySlice<Int32>, checkStops: Bool = true) -> (delta: String, stopped: Bool) {
        let searchFrom = max(0, bytes.count - holdBack)
        guard advance(output, acceptIncomplete: false) else { return ("", false) }
        if checkStops, let cut = firstStop(from: searchFrom) {
            bytes.removeSubrange(cut...)
            stopped = true
            return (release(upTo: bytes.count), true)
        }
        return (release(upTo: bytes.count - holdBack), false)
    }

    /// At the end: the tokens still waiting to complete a character are
    /// decoded as they are (a replacement character, as a full decode would
    /// give), unless a stop string ended the text.
    mutating func flush(_ output: ArraySlice<Int32>) {
        guard !stopped, readOffset < output.count else { return }
        _ = advance(output, acceptIncomplete: true)
    }

    /// Decodes the window from `prefixOffset` with and without the tokens
    /// since `readOffset`, appends the difference to `bytes` and moves the
    /// offsets on; false (nothing changes) when there is no new text yet or
    /// it ends in an incomplete UTF-8 sequence (unless `acceptIncomplete`).
    private mutating func advance(_ output: ArraySlice<Int32>, acceptIncomplete: Bool) -> Bool {
        let base = output.startIndex
        let prefix = tokenizer.decode(Array(output[(base + prefixOffset)..<(base + readOffset)]), skipSpecialTokens: true)
        let full = tokenizer.decode(Array(output[(base + prefixOffset)...]), skipSpecialTokens: true)
        // Bytes, not Characters: a combining mark in the new text changes
        // the last grapheme of the old one, not its bytes.
        guard full.utf8.count > prefix.utf8.count, acceptIncomplete || full.unicodeScalars.last != "\u{FFFD}",
              full.utf8.starts(with: prefix.utf8) else {
            return false
        }
        bytes.append(contentsOf: full.utf8.dropFirst(prefix.utf8.count))
        prefixOffset = readOffset
        readOffset = output.count
        return true
    }

    /// The text not yet streamed (held back for a stop string that never came).
    mutating func finish() -> String { release(upTo: bytes.count) }

    private func firstStop(from start: Int) -> Int? {
        var best: Int?
        for s in stops where bytes.count >= s.count {
            var i = start
            while i + s.count <= bytes.count {
                if bytes[i] == s[0] && bytes[i..<(i + s.count)].elementsEqual(s) {
                    best = min(best ?? i, i)
                    break
                }
                i += 1
            }
        }
        return best
    }

    /// Releases `bytes[released..<end]`, never splitting a UTF-8 sequence.
    private mutating func release(upTo limit: Int) -> String {
        var end = min(limit, bytes.count)
        while end > released && end < bytes.count && bytes[end] & 0xC0 == 0x80 { end -= 1 }
        guard end > released else { return "" }
        defer { released = end }
        return String(decoding: bytes[released..<end], as: UTF8.self)
    }
}
