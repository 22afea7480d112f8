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
    /// The request's `max_tokens` (output tokens it may still produce:
    /// `remainingOutputTokens`).
    public let maxTokens: Int
    /// The request's priority (lower first, as vLLM's); 0 unless the client set it.
    public let priority: Int

    public init(handle: Int, requestId: String, arrivalTime: Double, promptLength: Int, totalTokens: Int,
                computedTokens: Int, outputTokens: Int, allocatedBlocks: Int, admissionOrder: Int,
                nextLayer: Int = 0, inFlightTokens: Int = 0, maxTokens: Int = .max, priority: Int = 0) {
        self.maxTokens = maxTokens
        self.priority = priority
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
    /// Output tokens this request may still produce.
    public var remainingOutputTokens: Int { max(0, maxTokens - outputTokens) }
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
///
/// Plan items the engine cannot run (an unknown handle, a layered
/// continuation that does not match) are skipped, counted in
/// `EngineStats.unrunnableItems` and logged at debug level. An empty plan is
/// allowed: the engine then waits for a new request (or a few milliseconds)
/// before asking again, so a scheduler that holds work back need not sleep.
public protocol Scheduler: AnyObject, Sendable {
    func schedule(_ context: SchedulingContext) -> IterationPlan
}

/// Fills an iteration under a token and sequence budget, keeping the free
/// block count current: the loop stall-free schedulers share (decodes, then
/// running partial prefills, then admissions while blocks last).
public struct PlanBuilder {
    public let context: SchedulingContext
    public private(set) var plan = IterationPlan()
    /// Tokens and sequences still allowed this iteration.
    public private(set) var tokenBudget: Int
    public private(set) var sequenceBudget: Int
    /// Blocks still free after what the plan holds so far.
    public private(set) var freeBlocks: Int

    public init(_ context: SchedulingContext, maxTokens: Int = .max, maxSequences: Int = .max) {
        self.context = context
        tokenBudget = maxTokens
        sequenceBudget = maxSequences
        freeBlocks = context.freeBlocks
    }

    public var hasRoom: Bool { tokenBudget > 0 && sequenceBudget > 0 }

    /// Adds `tokens` of `s` (through `layers`, nil: all), charging the budgets.
    public mutating func add(_ s: SequenceSnapshot, tokens: Int, layers: Range<Int>? = nil) {
        plan.work.append(ScheduledWork(handle: s.handle, tokens: tokens, layers: layers))
        freeBlocks -= context.blocksNeeded(s, tokens: tokens)
        tokenBudget -= tokens
        sequenceBudget -= 1
    }

    /// Every running decode (one pending token), while there is room.
    public mutating func addDecodes() {
        for s in context.running where s.pendingTokens == 1 && s.nextLayer == 0 && hasRoom { add(s, tokens: 1) }
    }

    /// Running sequences still in prefill, each chunked to what is left of the budget.
    public mutating func addPartialPrefills() {
        for s in context.running where s.pendingTokens > 1 && s.nextLayer == 0 && hasRoom {
            add(s, tokens: min(s.pendingTokens, tokenBudget))
        }
    }

    /// Decodes first, then partial prefills (Sarathi-Serve's order).
    public mutating func addRunning() {
        addDecodes()
        addPartialPrefills()
    }

    /// Admits `candidates` in order, chunked to the budget, stopping at the
    /// first whose blocks are not free (so order is kept, nobody jumps it).
    public mutating func admit(_ candidates: some Sequence<SequenceSnapshot>) {
        for s in candidates where hasRoom {
            let n = min(s.pendingTokens, tokenBudget)
            if context.blocksNeeded(s, tokens: n) > freeBlocks { break }
            add(s, tokens: n)
        }
    }
}
