import SwitchyardCore

/// vLLM v0's first-come-first-served scheduling: when a waiting prompt fits,
/// an iteration prefills waiting prompts whole (in arrival order, up to the
/// token budget) and nothing else, so running decodes stall; otherwise every
/// running sequence decodes one token.
public final class FCFSScheduler: Scheduler, @unchecked Sendable {
    public struct Config: Sendable, Equatable {
        public var maxNumBatchedTokens: Int
        public var maxNumSeqs: Int
        public init(maxNumBatchedTokens: Int = 2048, maxNumSeqs: Int = 256) {
            self.maxNumBatchedTokens = maxNumBatchedTokens
            self.maxNumSeqs = maxNumSeqs
        }
    }

    public let config: Config

    public init(_ config: Config = Config()) {
        self.config = config
    }

    public static let options = [
        StrategyOption("max_num_batched_tokens", type: "int", default: "2048",
                       help: "prompt tokens one prefill iteration may take (a longer prompt runs alone)"),
        StrategyOption("max_num_seqs", type: "int", default: "256", help: "most sequences per iteration"),
    ]

    public static func register(in registry: StrategyRegistry) {
        registry.registerScheduler("fcfs", summary: "whole prefills first, in iterations of their own (vLLM v0); decodes stall meanwhile",
                                   options: options) { config, _ in
            FCFSScheduler(Config(maxNumBatchedTokens: try config.int("max_num_batched_tokens", default: 2048),
                                 maxNumSeqs: try config.int("max_num_seqs", default: 256)))
        }
    }

    public func schedule(_ ctx: SchedulingContext) -> IterationPlan {
        var plan = IterationPlan()
        var budget = config.maxNumBatchedTokens
        var freeBlocks = ctx.freeBlocks
        var seqs = ctx.running.count
        // Prefill phase: whole prompts (including preempted sequences' recompute).
        for s in ctx.waiting where seqs < config.maxNumSeqs {
            let n = s.pendingTokens
            let need = ctx.blocksNeeded(s, tokens: n)
            // A prompt longer than the budget still runs, alone, rather than starve.
            guard (n <= budget || plan.work.isEmpty), need <= freeBlocks else { break }
            plan.work.append(ScheduledWork(handle: s.handle, tokens: n))
            budget -= n
            freeBlocks -= need
            seqs += 1
            if budget <= 0 { break }
        }
        if !plan.work.isEmpty { return plan }
        // Decode phase.
        for s in ctx.running.prefix(config.maxNumSeqs) {
            plan.work.append(ScheduledWork(handle: s.handle, tokens: s.pendingTokens))
        }
        return plan
    }
}
