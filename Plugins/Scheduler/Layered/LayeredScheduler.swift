import SwitchyardCore

/// Layered prefill (Lee et al., "From Tokens to Layers", arXiv 2510.08055).
///
/// Decodes run every layer every iteration. Admitted prompts form a cohort
/// that advances through one contiguous group of layers per iteration (its
/// hidden states kept by the engine in between) and samples its first token
/// after the last group. Chunked prefill pushes every chunk through all
/// layers, so an expert chosen by several chunks is read once per chunk; here
/// the whole cohort passes each layer once, so each expert's weights are read
/// once per cohort, while the per-iteration prefill work (cohort tokens ×
/// layers in the group) stays near a chunked iteration's.
public final class LayeredScheduler: Scheduler, @unchecked Sendable {
    public struct Config: Sendable, Equatable {
        /// Most prompt tokens in one cohort (longer prompts are chunked into
        /// cohorts of this size). The reference uses 8192 on GPUs; on the CPU
        /// bench preset 2048 measured lower mean TTFT (a bigger cohort makes
        /// every member wait for up to 16 groups) at the same expert savings
        /// (docs/strategies.md).
        public var maxCohortTokens: Int
        /// Target prompt tokens per layer group: G = next power of two of
        /// cohort tokens / this, as the reference implementation does.
        public var tokensPerGroup: Int
        public var maxGroups: Int
        public var maxNumSeqs: Int
        public init(maxCohortTokens: Int = 2048, tokensPerGroup: Int = 512, maxGroups: Int = 16, maxNumSeqs: Int = 256) {
            self.maxCohortTokens = maxCohortTokens
            self.tokensPerGroup = tokensPerGroup
            self.maxGroups = maxGroups
            self.maxNumSeqs = maxNumSeqs
        }
    }

    public let config: Config
    public let numLayers: Int

    public init(_ config: Config = Config(), numLayers: Int) {
        self.config = config
        self.numLayers = numLayers
    }

    public static let options = [
        StrategyOption("max_cohort_tokens", type: "int", default: "2048", help: "most prompt tokens admitted together as one cohort"),
        StrategyOption("tokens_per_group", type: "int", default: "512", help: "groups G = next power of two of cohort tokens / this"),
        StrategyOption("max_groups", type: "int", default: "16", help: "upper bound on G (and never more than the layers)"),
        StrategyOption("max_num_seqs", type: "int", default: "256", help: "most sequences per iteration"),
    ]

    public static func register(in registry: StrategyRegistry) {
        registry.registerScheduler("layered", summary: "layered prefill: a prompt cohort advances one layer group per iteration while decodes run every layer",
                                   options: options) { config, env in
            LayeredScheduler(Config(maxCohortTokens: try config.int("max_cohort_tokens", default: 2048),
                                    tokensPerGroup: try config.int("tokens_per_group", default: 512),
                                    maxGroups: try config.int("max_groups", default: 16),
                                    maxNumSeqs: try config.int("max_num_seqs", default: 256)),
                             numLayers: env.numLayers)
        }
    }

    /// Number of layer groups for a cohort of `tokens` prompt tokens.
    public func groupCount(tokens: Int) -> Int {
        var g = 1
        while g * config.tokensPerGroup < tokens && g < config.maxGroups { g *= 2 }
        return max(1, min(g, numLayers))
    }

    /// `numLayers` split into `g` contiguous, near-equal groups (the first
    /// `numLayers % g` one layer longer), like numpy's `array_split`.
    public func groups(_ g: Int) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var start = 0
        for i in 0..<g {
            let size = numLayers / g + (i < numLayers % g ? 1 : 0)
            out.append(start..<(start + size))
            start += size
        }
        return out
    }

    public func schedule(_ ctx: SchedulingContext) -> IterationPlan {
        // Decodes: every layer, every iteration.
        var b = PlanBuilder(ctx, maxSequences: config.maxNumSeqs)
        b.addDecodes()
        var plan = b.plan
        var seqs = plan.work.count
        var freeBlocks = b.freeBlocks
        // A cohort in flight takes its next group.
        let inFlight = ctx.running.filter { $0.nextLayer > 0 }
        if !inFlight.isEmpty {
            let g = groupCount(tokens: inFlight.reduce(0) { $0 + $1.inFlightTokens })
            let next = inFlight[0].nextLayer
            // If a member was preempted the cohort's size (so G) changed and no
            // group may start here: finish the remaining layers in one step.
            let group = groups(g).first { $0.lowerBound == next } ?? next..<numLayers
            for s in inFlight where s.nextLayer == next {
                plan.work.append(ScheduledWork(handle: s.handle, tokens: s.inFlightTokens, layers: group))
            }
            return plan
        }
        // Otherwise form a new cohort: unfinished prefills first (chunks of
        // long prompts), then waiting requests in arrival order.
        var cohort: [(SequenceSnapshot, Int)] = []
        var budget = config.maxCohortTokens
        let candidates = ctx.running.filter { $0.pendingTokens > 1 } + ctx.waiting
        for s in candidates where budget > 0 && seqs < config.maxNumSeqs {
            let n = min(s.pendingTokens, budget)
            let need = ctx.blocksNeeded(s, tokens: n)
            if need > freeBlocks { break }
            cohort.append((s, n))
            freeBlocks -= need
            budget -= n
            seqs += 1
        }
        guard !cohort.isEmpty else { return plan }
        let first = groups(groupCount(tokens: cohort.reduce(0) { $0 + $1.1 }))[0]
        for (s, n) in cohort {
            plan.work.append(ScheduledWork(handle: s.handle, tokens: n, layers: first))
        }
        return plan
    }
}
