/// Counters of the engine loop, for benchmark results.
public struct EngineStats: Sendable, Codable {
    public var iterations = 0
    /// Sequences per iteration → number of iterations.
    public var batchSizeHistogram: [Int: Int] = [:]
    /// Tokens per iteration, summed (for the mean).
    public var scheduledTokens = 0
    /// LM-head rows computed, summed: one per sequence that samples in an
    /// iteration, plus the prompt rows of requests that asked for prompt
    /// log-probabilities (nobody else pays for those).
    public var logitsRows = 0
    public var preemptions = 0
    public var peakKVBlocksUsed = 0
    public var totalKVBlocks = 0
    /// KV cache bytes one token takes over all layers (MLA: one latent row a layer).
    public var kvCacheBytesPerToken = 0
    public var scheduleSeconds = 0.0
    public var forwardSeconds = 0.0
    /// Sampling, stop checks, streaming and bookkeeping.
    public var sampleSeconds = 0.0
    /// Iterations in which a running, unfinished decode produced no token.
    public var decodeStalls = 0
    public var rejectedRequests = 0
    /// Plan items the engine could not run (unknown or finished handle, a
    /// layered continuation that does not match, no tokens): a scheduler bug,
    /// logged at debug level with the reason.
    public var unrunnableItems = 0
    /// Forwards that failed; their requests ended with an `.engine` error.
    public var forwardErrors = 0
    /// Requests aborted through `Engine.cancel`.
    public var cancelledRequests = 0
    /// At the last published iteration: sequences running and waiting
    /// (queued, preempted or admitted but not yet scheduled), and KV blocks held.
    public var runningRequests = 0
    public var waitingRequests = 0
    public var usedKVBlocks = 0

    public init() {}

    public var peakKVUsage: Double { totalKVBlocks > 0 ? Double(peakKVBlocksUsed) / Double(totalKVBlocks) : 0 }
    public var engineOverheadShare: Double {
        let total = scheduleSeconds + forwardSeconds + sampleSeconds
        return total > 0 ? (scheduleSeconds + sampleSeconds) / total : 0
    }
}
