import SwitchyardCore

/// Sarathi-Serve's stall-free batching: every iteration gets a token budget,
/// filled by running decodes first, then ongoing partial prefills, then new
/// requests in arrival order, chunking prompts to fit what is left.
public final class ChunkedScheduler: Scheduler, @unchecked Sendable {
    public struct Config: Sendable, Codable, Equatable {
        public var maxNumBatchedTokens: Int
        public var maxNumSeqs: Int
        public init(maxNumBatchedTokens: Int = 512, maxNumSeqs: Int = 256) {
            self.maxNumBatchedTokens = maxNumBatchedTokens
            self.maxNumSeqs = maxNumSeqs
        }
        enum CodingKeys: String, CodingKey {
            case maxNumBatchedTokens = "max_num_batched_tokens"
            case maxNumSeqs = "max_num_seqs"
        }
    }

    public let config: Config

    public init(_ config: Config = Config()) {
        self.config = config
    }

    public static let options = [
        StrategyOption("max_num_batched_tokens", type: "int", default: "512", help: "token budget per iteration"),
        StrategyOption("max_num_seqs", type: "int", default: "256", help: "most sequences per iteration"),
    ]

    public static func register(in registry: StrategyRegistry) {
        registry.registerScheduler("chunked", summary: "Sarathi-Serve stall-free batching: decodes first, then prefill chunks under a token budget",
                                   options: options) { config, _ in
            ChunkedScheduler(Config(maxNumBatchedTokens: try config.int("max_num_batched_tokens", default: 512),
                                    maxNumSeqs: try config.int("max_num_seqs", default: 256)))
        }
    }

    public func schedule(_ ctx: SchedulingContext) -> IterationPlan {
        var b = PlanBuilder(ctx, maxTokens: config.maxNumBatchedTokens, maxSequences: config.maxNumSeqs)
        // Running decodes, then running (chunked) prefills, then new or
        // preempted requests in order while blocks are free for them.
        b.addRunning()
        b.admit(ctx.waiting)
        return b.plan
    }
}
