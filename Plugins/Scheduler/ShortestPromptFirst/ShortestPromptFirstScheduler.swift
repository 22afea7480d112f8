import SwitchyardCore

/// The example of docs/writing-a-strategy.md: stall-free batching like
/// `chunked`, but waiting requests are admitted shortest prompt first, which
/// lowers mean TTFT when short and long prompts queue together (at the risk
/// of starving long prompts under sustained load; `max_wait_ms` bounds that).
public final class ShortestPromptFirstScheduler: Scheduler, @unchecked Sendable {
    public struct Config: Sendable, Equatable {
        public var maxNumBatchedTokens = 512
        public var maxNumSeqs = 256
        /// A request waiting longer than this is admitted before shorter ones.
        public var maxWaitMs = 5000
        public init() {}
    }

    public let config: Config

    public init(_ config: Config = Config()) {
        self.config = config
    }

    public static func register(in registry: StrategyRegistry) {
        registry.registerScheduler(
            "spf", summary: "shortest prompt first: like chunked, but admits the shortest waiting prompts first",
            options: [
                StrategyOption("max_num_batched_tokens", type: "int", default: "512", help: "token budget per iteration"),
                StrategyOption("max_num_seqs", type: "int", default: "256", help: "most sequences per iteration"),
                StrategyOption("max_wait_ms", type: "int", default: "5000", help: "after this wait a request goes first regardless of length"),
            ]) { options, _ in
            var c = Config()
            c.maxNumBatchedTokens = try options.int("max_num_batched_tokens", default: 512)
            c.maxNumSeqs = try options.int("max_num_seqs", default: 256)
            c.maxWaitMs = try options.int("max_wait_ms", default: 5000, in: 0...Int.max)
            return ShortestPromptFirstScheduler(c)
        }
    }

    public func schedule(_ ctx: SchedulingContext) -> IterationPlan {
        var b = PlanBuilder(ctx, maxTokens: config.maxNumBatchedTokens, maxSequences: config.maxNumSeqs)
        // Running sequences exactly as chunked does: decodes, then partial prefills.
        b.addRunning()
        // Waiting: overdue requests first (oldest first), then shortest prompt first.
        let deadline = ctx.now - Double(config.maxWaitMs) / 1000
        let overdue = ctx.waiting.filter { $0.arrivalTime <= deadline }
        let rest = ctx.waiting.filter { $0.arrivalTime > deadline }
            .sorted { ($0.pendingTokens, $0.arrivalTime) < ($1.pendingTokens, $1.arrivalTime) }
        b.admit(overdue + rest)
        return b.plan
    }
}
