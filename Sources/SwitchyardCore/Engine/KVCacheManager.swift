import SwitchyardModel

/// Owns the KV blocks and the sequences holding them, and keeps the one
/// invariant the rest of the engine relies on: every unfinished sequence is
/// in exactly one of `waiting` and `running` (and in `sequences`); a
/// finished one is in none of them and holds no blocks.
final class KVCacheManager {
    private(set) var allocator: BlockAllocator
    private var sequences: [Int: SequenceState] = [:]
    /// Preempted sequences first, then by arrival.
    private(set) var waiting: [SequenceState] = []
    /// In admission order.
    private(set) var running: [SequenceState] = []
    private var nextAdmission = 0
    private(set) var preemptions = 0
    /// Called with each sequence preempted or removed, so state kept
    /// elsewhere for it (a layered carry) goes too.
    var onRelease: (SequenceState) -> Void = { _ in }

    init(numBlocks: Int, blockSize: Int) {
        allocator = BlockAllocator(numBlocks: numBlocks, blockSize: blockSize)
    }

    var isIdle: Bool { waiting.isEmpty && running.isEmpty }

    func add(_ seq: SequenceState) {
        sequences[seq.handle] = seq
        waiting.append(seq)
    }

    func sequence(requestId: String) -> SequenceState? {
        sequences.values.first { $0.request.id == requestId }
    }

    func context(numLayers: Int, now: Double) -> SchedulingContext {
        SchedulingContext(waiting: waiting.map { $0.snapshot() }, running: running.map { $0.snapshot() },
                          freeBlocks: allocator.freeBlocks, totalBlocks: allocator.numBlocks, blockSize: allocator.blockSize,
                          numLayers: numLayers, now: now)
    }

    /// One sequence's share of the iteration, with its blocks allocated.
    struct Scheduled {
        let seq: SequenceState
        let tokens: Int
        let layers: Range<Int>
    }

    /// A plan item the engine could not run, and why.
    struct Unrunnable {
        let work: ScheduledWork
        let reason: String
    }

    /// Allocates blocks for the plan's items in order. On a shortage the most
    /// recently admitted running sequence not yet placed in this batch is
    /// preempted (by recompute); a sequence that still does not fit waits.
    func allocate(_ plan: IterationPlan, numLayers: Int) -> (scheduled: [Scheduled], unrunnable: [Unrunnable]) {
        var placed: [Scheduled] = []
        var unrunnable: [Unrunnable] = []
        var placedHandles = Set<Int>()
        placed.reserveCapacity(plan.work.count)
        for item in plan.work {
            guard let seq = sequences[item.handle] else {
                unrunnable.append(.init(work: item, reason: "no unfinished sequence has handle \(item.handle)"))
                continue
            }
            guard !placedHandles.contains(seq.handle) else {
                unrunnable.append(.init(work: item, reason: "sequence \(item.handle) is already in this plan"))
                continue
            }
            guard item.tokens > 0 else {
                unrunnable.append(.init(work: item, reason: "asks for \(item.tokens) tokens"))
                continue
            }
            let layers = item.layers ?? 0..<numLayers
            guard !layers.isEmpty, layers.lowerBound >= 0, layers.upperBound <= numLayers else {
                unrunnable.append(.init(work: item, reason: "layer range \(layers) is outside 0..<\(numLayers)"))
                continue
            }
            if layers.lowerBound > 0 || seq.nextLayer > 0 {
                // Continuing a chunk part-way through the layers: it must pick
                // up exactly where it stopped, with the same tokens (its blocks
                // are already allocated).
                guard seq.status == .running, seq.nextLayer == layers.lowerBound, seq.inFlightTokens == item.tokens else {
                    unrunnable.append(.init(work: item, reason: "sequence \(item.handle) has \(seq.inFlightTokens) tokens waiting at layer \(seq.nextLayer), the plan continues \(item.tokens) from layer \(layers.lowerBound)"))
                    continue
                }
                placed.append(Scheduled(seq: seq, tokens: item.tokens, layers: layers))
                placedHandles.insert(seq.handle)
                continue
            }
            let tokens = min(item.tokens, seq.tokens.count - seq.computedTokens)
            guard tokens > 0 else {
                unrunnable.append(.init(work: item, reason: "sequence \(item.handle) has no tokens left to compute"))
                continue
            }
            var ok = allocator.ensure(&seq.blockTable, coveringTokens: seq.computedTokens + tokens)
            while !ok {
                guard let victim = running.last(where: { !placedHandles.contains($0.handle) && $0 !== seq }) else { break }
                preempt(victim)
                ok = allocator.ensure(&seq.blockTable, coveringTokens: seq.computedTokens + tokens)
            }
            if !ok {
                if seq.status == .running { preempt(seq) }
                continue
            }
            if seq.status == .waiting {
                waiting.removeAll { $0 === seq }
                seq.status = .running
                seq.admissionOrder = nextAdmission
                nextAdmission += 1
                running.append(seq)
            }
            placed.append(Scheduled(seq: seq, tokens: tokens, layers: layers))
            placedHandles.insert(seq.handle)
        }
        return (placed, unrunnable)
    }

    /// Frees `seq`'s blocks and puts it first in the waiting queue, to be
    /// recomputed from its first token.
    func preempt(_ seq: SequenceState) {
        allocator.release(&seq.blockTable)
        seq.computedTokens = 0
        seq.nextLayer = 0
        seq.inFlightTokens = 0
        seq.status = .waiting
        seq.preemptions += 1
        preemptions += 1
        running.removeAll { $0 === seq }
        waiting.insert(seq, at: 0)
        onRelease(seq)
    }

    /// Removes a finished (or failed, or cancelled) sequence from every list
    /// and frees its blocks, so it can never be scheduled or preempted again.
    func remove(_ seq: SequenceState) {
        allocator.release(&seq.blockTable)
        seq.status = .finished
        sequences[seq.handle] = nil
        running.removeAll { $0 === seq }
        waiting.removeAll { $0 === seq }
        onRelease(seq)
    }

    /// Every unfinished sequence, running first.
    var all: [SequenceState] { running + waiting }
}
