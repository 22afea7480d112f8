/// Which positions of a sequence need vocabulary logits after the forward.
public enum LogitsSelection: Sendable, Equatable {
    case none
    case last
    case all
}

/// One sequence's slice of a ragged batch: `tokenCount` new tokens at
/// positions `startPosition ..< startPosition + tokenCount`, stored at rows
/// `tokenStart ..< tokenStart + tokenCount` of the batch.
public struct BatchSequence: Sendable {
    public var tokenStart: Int
    public var tokenCount: Int
    /// Tokens of this sequence already in the KV cache.
    public var startPosition: Int
    /// KV blocks covering at least `startPosition + tokenCount` positions.
    public var blockTable: [Int32]
    public var logits: LogitsSelection
    /// Decoder layers these tokens run this forward; nil means all. Layered
    /// prefill runs a prompt through one group of layers per iteration.
    public var layers: Range<Int>?
    /// Hidden states (`tokenCount × hiddenSize`) entering `layers.lowerBound`
    /// when it is above 0: what the previous group produced.
    public var inputHidden: [Float]?
    /// With route recording: the top-k experts (`tokenCount × k`) these tokens
    /// chose at layer `layers.lowerBound − 1`, so the pair across the layer
    /// group boundary is counted.
    public var inputRoutes: [Int32]?

    public init(tokenStart: Int, tokenCount: Int, startPosition: Int, blockTable: [Int32], logits: LogitsSelection,
                layers: Range<Int>? = nil, inputHidden: [Float]? = nil, inputRoutes: [Int32]? = nil) {
        self.tokenStart = tokenStart
        self.tokenCount = tokenCount
        self.startPosition = startPosition
        self.blockTable = blockTable
        self.logits = logits
        self.layers = layers
        self.inputHidden = inputHidden
        self.inputRoutes = inputRoutes
    }
}

/// A flat, ragged batch: tokens from several sequences at different positions
/// (prefill chunks and decodes together), run as one forward.
public struct ForwardBatch: Sendable {
    public var tokens: [Int32]
    public var sequences: [BatchSequence]

    public init(tokens: [Int32] = [], sequences: [BatchSequence] = []) {
        self.tokens = tokens
        self.sequences = sequences
    }

    /// Appends a sequence's new tokens.
    public mutating func append(tokens newTokens: some Collection<Int32>, startPosition: Int,
                                blockTable: [Int32], logits: LogitsSelection,
                                layers: Range<Int>? = nil, inputHidden: [Float]? = nil, inputRoutes: [Int32]? = nil) {
        sequences.append(BatchSequence(tokenStart: tokens.count, tokenCount: newTokens.count,
                                       startPosition: startPosition, blockTable: blockTable, logits: logits,
                                       layers: layers, inputHidden: inputHidden, inputRoutes: inputRoutes))
        tokens.append(contentsOf: newTokens)
    }

    public var tokenCount: Int { tokens.count }

    /// Number of logits rows the forward will produce, in sequence order.
    public var logitsRowCount: Int {
        sequences.reduce(0) { n, s in
            switch s.logits {
            case .none: n
            case .last: n + 1
            case .all: n + s.tokenCount
            }
        }
    }
}
