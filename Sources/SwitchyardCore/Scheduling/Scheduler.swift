/// A read-only view of one sequence, as a scheduler sees it.
public struct SequenceSnapshot: Sendable {
    /// The engine's handle for this sequence; plans refer to it.
    public let handle: Int
    public let requestId: String
    public let arrivalTime: Double
    public let promptLength: Int
    /// Prompt plus generated tokens: all must be in the KV cache before the next sample.
    public let totalTokens: Int
    /// Tokens whose keys and values are in the KV cache.
    public let computedTokens: Int
    public let outputTokens: Int
    public let allocatedBlocks: Int
    /// Order of admission to the running set (later admitted = larger).
    public let admissionOrder: Int
    /// Layered prefill in flight: the layer its chunk continues from (0 when
    /// no chunk is part-way through the layers) and that chunk's tokens.
    public let nextLayer: Int
    public let inFlightTokens: Int

    public init(handle: Int, requestId: String, arrivalTime: Double, promptLength: Int, totalTokens: Int,
                computedTokens: Int, outputTokens: Int, allocatedBlocks: Int, admissionOrder: Int,
                nextLayer: Int = 0, inFlightTokens: Int = 0) {
        self.handle = handle
        self.requestId = requestId
        self.arrivalTime = arrivalTime
        self.promptLength = promptLength
        self.totalTokens = totalTokens
        self.computedTokens = computedTokens
        self.outputTokens = outputTokens
        self.allocatedBlocks = allocatedBlocks
        self.admissionOrder = admissionOrder
        self.nextLayer = nextLayer
        self.inFlightTokens = inFlightTokens
    }

    /// Tokens still to run before this sequence can sample: 1 for a decode.
    public var pendingTokens: Int { totalTokens - computedTokens }
    public var isDecoding: Bool { pendingTokens == 1 && outputTokens > 0 }
}

/// Everything a scheduler may look at to plan an iteration.
public struct SchedulingContext: Sendable {
    /// Waiting sequences, preempted ones first, then by arrival.
    public let waiting: [SequenceSnapshot]
    /// Running sequences in admission order.
    public let running: [SequenceSnapshot]
    public let freeBlocks: Int
    public let totalBlocks: Int
    public let blockSize: Int
    public let numLayers: Int
    public let now: Double

    /// New blocks `sequence` needs to run `tokens` more tokens.
    public func blocksNeeded(_ s: SequenceSnapshot, tokens: Int) -> Int {
        max(0, (s.computedTokens + tokens + blockSize - 1) / blockSize - s.allocatedBlocks)
    }
}

/// One sequence's share of an iteration: its next `tokens` tokens, through
/// `layers` (nil: all). A chunk that stops before the last layer keeps its
/// hidden states in the engine and must continue, with the same token count,
/// from exactly that layer in a later iteration.
public struct ScheduledWork: Sendable, Equatable {
    public var handle: Int
    public var tokens: Int
    public var layers: Range<Int>?
    public init(handle: Int, tokens: Int, layers: Range<Int>? = nil) {
        self.handle = handle
        self.tokens = tokens
        self.layers = layers
    }
}

/// What runs in the next iteration. Waiting sequences named here are admitted.
public struct IterationPlan: Sendable {
    public var work: [ScheduledWork]
    public init(work: [ScheduledWork] = []) { self.work = work }
    public var tokenCount: Int { work.reduce(0) { $0 + $1.tokens } }
}

/// A scheduler decides what runs in the next iteration. The engine executes
/// the plan: it allocates KV blocks (preempting the most recently admitted
/// running sequence by recompute when blocks run out), runs one forward,
/// samples, and streams tokens.
public protocol Scheduler: AnyObject, Sendable {
    func schedule(_ context: SchedulingContext) -> IterationPlan
}
