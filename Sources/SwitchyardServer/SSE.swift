/// Server-Sent Events framing as OpenAI streams it: one `data: JSON` event
/// per chunk, each followed by a blank line, and `data: [DONE]` at the end.
public enum SSE {
    public static func event(_ json: String) -> String { "data: " + json + "\n\n" }
    public static let done = "data: [DONE]\n\n"

    /// Splits a byte stream into the payloads of its `data:` lines. Feed
    /// chunks as they arrive; complete events come back, partial ones wait.
    public struct Parser: Sendable {
        private var buffer: [UInt8] = []
        public init() {}

        public mutating func feed(_ bytes: some Sequence<UInt8>) -> [String] {
            buffer.append(contentsOf: bytes)
            var payloads: [String] = []
            var start = 0
            var i = 0
            while i < buffer.count {
                if buffer[i] == UInt8(ascii: "\n") {
                    var line = buffer[start..<i]
                    if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
                    if line.starts(with: Array("data:".utf8)) {
                        var payload = line.dropFirst(5)
                        if payload.first == UInt8(ascii: " ") { payload = payload.dropFirst() }
                        payloads.append(String(decoding: payload, as: UTF8.self))
                    }
                    start = i + 1
                }
                i += 1
            }
            buffer.removeFirst(start)
            return payloads
        }
    }
}
