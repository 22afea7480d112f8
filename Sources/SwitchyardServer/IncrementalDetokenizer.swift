import SwitchyardModel

/// Streams a request's text as its tokens arrive. Each step decodes the
/// output so far and releases the part not yet sent, except a tail that may
/// still be cut: a partial UTF-8 sequence (decoded as U+FFFD), everything
/// from a stop string on (the engine ends the request at that token and cuts
/// the text there), and the last `holdBack` characters while a stop string
/// could still start there. The concatenation of every delta plus `finish`
/// is the engine's final text.
struct IncrementalDetokenizer {
    let tokenizer: any Tokenizer
    let stopStrings: [String]
    let holdBack: Int
    private var tokens: [Int32] = []
    private(set) var sent = ""
    private var sentCount = 0

    init(tokenizer: any Tokenizer, stopStrings: [String]) {
        self.tokenizer = tokenizer
        self.stopStrings = stopStrings.filter { !$0.isEmpty }
        holdBack = max(0, (stopStrings.map(\.count).max() ?? 0) - 1)
    }

    mutating func push(_ token: Int32) -> String {
        tokens.append(token)
        let text = tokenizer.decode(tokens, skipSpecialTokens: true)
        if text.hasSuffix("\u{FFFD}") { return "" }
        var safe = holdBack > 0 ? text.dropLast(holdBack) : Substring(text)
        for stop in stopStrings {
            if let r = text.range(of: stop), r.lowerBound < safe.endIndex { safe = text[..<r.lowerBound] }
        }
        return release(safe)
    }

    /// The rest of `final` (the engine's text, stop string removed).
    mutating func finish(_ final: String) -> String { release(Substring(final)) }

    private mutating func release(_ safe: Substring) -> String {
        let n = safe.count
        guard n > sentCount, safe.hasPrefix(sent) else { return "" }
        let delta = String(safe.dropFirst(sentCount))
        sent += delta
        sentCount = n
        return delta
    }
}
