import Foundation
import Synchronization
import SwitchyardModel

/// The serving engine: continuous batching over a paged KV cache.
///
/// Requests arrive through `submit` from any thread or task; one dedicated
/// thread runs the iteration loop: the scheduler plans a batch, the engine
/// allocates KV blocks (preempting by recompute when they run out), the model
/// runs one ragged forward, tokens are sampled and streamed to each request's
/// `AsyncStream`.
public final class Engine: @unchecked Sendable {
    public let model: Transformer
    public let config: EngineConfig
    public let scheduler: any Scheduler
    public let tokenizer: (any Tokenizer)?
    let cache: PagedKVCache
    let eosTokens: [Int32]

    // Loop-thread state.
    private var allocator: BlockAllocator
    private var sequences: [Int: SequenceState] = [:]
    private var waiting: [SequenceState] = []
    private var running: [SequenceState] = []
    private var nextAdmission = 0
    /// The iteration clock of `GenerationRequest.arrivalIteration`: iterations
    /// run, plus the idle stretches skipped to the next deferred arrival.
    private var iterationClock = 0
    /// Requests submitted ahead of their arrival iteration, in arrival order.
    private var deferred: [(GenerationRequest, AsyncStream<RequestEvent>.Continuation)] = []
    private var loopStats = EngineStats()
    /// Final outputs, delivered after the iteration's stats are published so
    /// a client that sees `.finished` also sees that iteration in `stats`.
    private var finishedOutputs: [(AsyncStream<RequestEvent>.Continuation, RequestOutput)] = []

    // Shared with submitters.
    private struct Inbox {
        var pending: [(GenerationRequest, AsyncStream<RequestEvent>.Continuation, Double)] = []
        var nextHandle = 0
        var stopping = false
        var stats = EngineStats()
        /// Request ids to abort (`cancel`).
        var cancels: [String] = []
        /// Work to run on the loop thread between iterations (`onLoopThread`).
        var tasks: [@Sendable () -> Void] = []
        /// Set when the loop has exited; tasks then run on the caller.
        var loopExited = false
        var started = false
    }
    private let inbox = Mutex(Inbox())
    private let wake = NSCondition()
    private var thread: Thread?
    private let clockStart = monotonicSeconds()

    public init(model: Transformer, config: EngineConfig, scheduler: any Scheduler, tokenizer: (any Tokenizer)? = nil) {
        self.model = model
        self.config = config
        self.scheduler = scheduler
        self.tokenizer = tokenizer
        cache = PagedKVCache(config: model.config, numBlocks: config.numKVBlocks, blockSize: config.blockSize)
        allocator = BlockAllocator(numBlocks: config.numKVBlocks, blockSize: config.blockSize)
        var eos = Set(model.config.eosTokenIds.map(Int32.init))
        if let e = tokenizer?.eosTokenId { eos.insert(e) }
        eosTokens = eos.sorted()
        loopStats.totalKVBlocks = config.numKVBlocks
    }

    /// Seconds since the engine was created (the clock of all timestamps).
    public func now() -> Double { monotonicSeconds() - clockStart }

    /// Queues a request; its tokens and final output arrive on the stream.
    public func submit(_ request: GenerationRequest) -> AsyncStream<RequestEvent> {
        let (stream, continuation) = AsyncStream<RequestEvent>.makeStream(bufferingPolicy: .unbounded)
        let t = now()
        inbox.withLock { $0.pending.append((request, continuation, t)) }
        wake.lock(); wake.signal(); wake.unlock()
        return stream
    }

    /// Aborts the request with this id wherever it is (queued, waiting or
    /// running): on the loop thread, before the next iteration, its KV blocks
    /// are freed and its stream ends with `.finished` (reason `abort`). An id
    /// that is unknown or already finished is ignored.
    public func cancel(requestId: String) {
        inbox.withLock { $0.cancels.append(requestId) }
        wake.lock(); wake.signal(); wake.unlock()
    }

    /// Runs `body` on the loop thread between iterations, where loop-owned
    /// state such as `model.counters` may be read or reset, and returns its
    /// result. Before `start` or after `shutdown` it runs on the caller.
    public func onLoopThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { (c: CheckedContinuation<T, Never>) in
            let queued = inbox.withLock { box -> Bool in
                guard box.started, !box.loopExited else { return false }
                box.tasks.append { c.resume(returning: body()) }
                return true
            }
            if queued {
                wake.lock(); wake.signal(); wake.unlock()
            } else {
                c.resume(returning: body())
            }
        }
    }

    /// A snapshot of the loop's counters.
    public var stats: EngineStats { inbox.withLock { $0.stats } }
    public var freeKVBlocks: Int { freeBlocksSnapshot.withLock { $0 } }
    private let freeBlocksSnapshot = Mutex(0)

    public func start() {
        guard thread == nil else { return }
        freeBlocksSnapshot.withLock { $0 = allocator.freeBlocks }
        inbox.withLock { $0.started = true }
        let t = Thread { [self] in loop() }
        t.name = "switchyard-engine"
        t.stackSize = 8 << 20
        thread = t
        t.start()
    }

    /// Stops the loop after the current iteration; unfinished requests are aborted.
    public func shutdown() {
        inbox.withLock { $0.stopping = true }
        wake.lock(); wake.signal(); wake.unlock()
        while thread != nil && !doneFlag.withLock({ $0 }) { usleep(1000) }
    }
    private let doneFlag = Mutex(false)

    /// Offline API: runs `requests` to completion and returns their outputs in order.
    public func generate(_ requests: [GenerationRequest]) async -> [RequestOutput] {
        start()
        let streams = requests.map { submit($0) }
        var outputs: [RequestOutput] = []
        for s in streams {
            for await event in s {
                if case .finished(let out) = event { outputs.append(out) }
            }
        }
        return outputs
    }

    // MARK: - The loop

    private func loop() {
        while true {
            let (newRequests, stopping, cancels, tasks) = inbox.withLock { box in
                let p = box.pending, c = box.cancels, t = box.tasks
                box.pending.removeAll()
                box.cancels.removeAll()
                box.tasks.removeAll()
                return (p, box.stopping, c, t)
            }
            for task in tasks { task() }
            if stopping { abortAll(); break }
            for (req, cont, t) in newRequests {
                if let due = req.arrivalIteration, due > iterationClock {
                    // Stable: equal arrival iterations keep submission order.
                    let at = deferred.firstIndex { ($0.0.arrivalIteration ?? 0) > due } ?? deferred.endIndex
                    deferred.insert((req, cont), at: at)
                } else {
                    admit(req, cont, arrival: t)
                }
            }
            if waiting.isEmpty && running.isEmpty, let next = deferred.first?.0.arrivalIteration, next > iterationClock {
                // Nothing to run until the next arrival: skip the idle stretch.
                iterationClock = next
            }
            while let first = deferred.first, (first.0.arrivalIteration ?? 0) <= iterationClock {
                deferred.removeFirst()
                admit(first.0, first.1, arrival: now())
            }
            for id in cancels { abort(requestId: id) }
            if waiting.isEmpty && running.isEmpty {
                publish()
                wake.lock()
                if inbox.withLock({ $0.pending.isEmpty && $0.cancels.isEmpty && $0.tasks.isEmpty && !$0.stopping }) {
                    _ = wake.wait(until: Date().addingTimeInterval(0.05))
                }
                wake.unlock()
                continue
            }
            step()
            publish()
        }
        publish()
        let late = inbox.withLock { box -> [@Sendable () -> Void] in
            box.loopExited = true
            let t = box.tasks
            box.tasks.removeAll()
            return t
        }
        for task in late { task() }
        doneFlag.withLock { $0 = true }
    }

    private func publish() {
        loopStats.runningRequests = running.count
        loopStats.waitingRequests = waiting.count
        loopStats.usedKVBlocks = allocator.usedBlocks
        let s = loopStats, f = allocator.freeBlocks
        inbox.withLock { $0.stats = s }
        freeBlocksSnapshot.withLock { $0 = f }
        for (continuation, output) in finishedOutputs {
            continuation.yield(.finished(output))
            continuation.finish()
        }
        finishedOutputs.removeAll()
    }

    private func admit(_ req: GenerationRequest, _ cont: AsyncStream<RequestEvent>.Continuation, arrival: Double) {
        let handle = inbox.withLock { box -> Int in box.nextHandle += 1; return box.nextHandle }
        let seq = SequenceState(handle: handle, request: req, arrivalTime: arrival, eosTokens: eosTokens, continuation: cont)
        if let error = validate(req) {
            loopStats.rejectedRequests += 1
            finish(seq, reason: .abort, error: error)
            return
        }
        sequences[handle] = seq
        waiting.append(seq)
    }

    private func validate(_ r: GenerationRequest) -> RequestError? {
        if r.promptTokens.isEmpty { return .emptyPrompt(id: r.id) }
        if r.maxTokens < 1 { return .invalidMaxTokens(id: r.id, value: r.maxTokens) }
        if r.promptTokens.count >= config.maxModelLen {
            return .promptTooLong(id: r.id, promptTokens: r.promptTokens.count, maxModelLen: config.maxModelLen)
        }
        if let bad = r.promptTokens.first(where: { $0 < 0 || Int($0) >= model.config.vocabSize }) {
            return .tokenOutOfRange(id: r.id, token: bad, vocabSize: model.config.vocabSize)
        }
        do { try r.sampling.validate() } catch { return .invalidSampling(id: r.id, reason: "\(error)") }
        let need = min(r.promptTokens.count + r.maxTokens, config.maxModelLen)
        if allocator.blocks(forTokens: need) > allocator.numBlocks {
            return .exceedsKVCapacity(id: r.id, tokensNeeded: need, capacity: allocator.numBlocks * allocator.blockSize)
        }
        return nil
    }

    private func step() {
        iterationClock += 1
        let t0 = monotonicSeconds()
        let context = SchedulingContext(
            waiting: waiting.map { $0.snapshot() }, running: running.map { $0.snapshot() },
            freeBlocks: allocator.freeBlocks, totalBlocks: allocator.numBlocks, blockSize: allocator.blockSize,
            numLayers: model.config.numLayers, now: now())
        let plan = scheduler.schedule(context)

        // Allocate blocks in plan order; on shortage preempt the most recently
        // admitted running sequence not yet placed in this batch.
        let numLayers = model.config.numLayers
        var placed: [(SequenceState, Int, Range<Int>)] = []
        var placedHandles = Set<Int>()
        for item in plan.work {
            guard let seq = sequences[item.handle], seq.status != .finished, item.tokens > 0 else { continue }
            let layers = item.layers ?? 0..<numLayers
            guard !layers.isEmpty, layers.lowerBound >= 0, layers.upperBound <= numLayers else { continue }
            if layers.lowerBound > 0 || seq.nextLayer > 0 {
                // Continuing a chunk part-way through the layers: it must pick
                // up exactly where it stopped, with the same tokens (its blocks
                // are already allocated).
                guard seq.status == .running, seq.nextLayer == layers.lowerBound, seq.inFlightTokens == item.tokens else { continue }
                placed.append((seq, item.tokens, layers))
                placedHandles.insert(seq.handle)
                continue
            }
            let tokens = min(item.tokens, seq.tokens.count - seq.computedTokens)
            guard tokens > 0 else { continue }
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
            placed.append((seq, tokens, layers))
            placedHandles.insert(seq.handle)
        }
        loopStats.peakKVBlocksUsed = max(loopStats.peakKVBlocksUsed, allocator.usedBlocks)
        let t1 = monotonicSeconds()
        loopStats.scheduleSeconds += t1 - t0
        guard !placed.isEmpty else { return }

        var batch = ForwardBatch()
        for (seq, tokens, layers) in placed {
            let end = seq.computedTokens + tokens
            let last = layers.upperBound == numLayers
            batch.append(tokens: seq.tokens[seq.computedTokens..<end], startPosition: seq.computedTokens,
                         blockTable: seq.blockTable, logits: last && end == seq.tokens.count ? .last : .none,
                         layers: layers == 0..<numLayers ? nil : layers,
                         inputHidden: layers.lowerBound > 0 ? seq.carriedHidden : nil,
                         inputRoutes: layers.lowerBound > 0 ? seq.carriedRoutes : nil)
        }
        let logits: LogitsView
        do {
            logits = try model.forward(batch, cache: cache)
        } catch {
            // Inputs were validated on admission; a failure here is a bug, so
            // fail these requests rather than the whole engine.
            for (seq, _, _) in placed { finish(seq, reason: .abort, error: nil) }
            return
        }
        let t2 = monotonicSeconds()
        loopStats.forwardSeconds += t2 - t1

        let time = now()
        var row = 0
        let h = model.config.hiddenSize
        for (i, (seq, tokens, layers)) in placed.enumerated() {
            if layers.upperBound < numLayers {
                // Keep this chunk's hidden states for its next layer group.
                let start = batch.sequences[i].tokenStart
                seq.carriedHidden = Array(UnsafeBufferPointer(start: model.lastHidden! + start * h, count: tokens * h))
                if model.counters.recordsPairs {
                    let k = model.config.numExpertsPerToken
                    seq.carriedRoutes = Array(UnsafeBufferPointer(
                        start: model.recordedRoute(layer: layers.upperBound - 1, row: start, tokens: batch.tokenCount), count: tokens * k))
                }
                seq.nextLayer = layers.upperBound
                seq.inFlightTokens = tokens
                continue
            }
            seq.carriedHidden = nil
            seq.carriedRoutes = nil
            seq.nextLayer = 0
            seq.inFlightTokens = 0
            seq.computedTokens += tokens
            guard seq.computedTokens == seq.tokens.count else { continue }
            let token = Int32(seq.sampler.sample(logits.row(row)))
            row += 1
            seq.tokens.append(token)
            if seq.firstTokenTime == nil { seq.firstTokenTime = time }
            seq.tokenTimes.append(time)
            seq.continuation?.yield(.token(token, time: time))
            if let reason = stopReason(seq, last: token) { finish(seq, reason: reason, error: nil) }
        }
        // A decode that was running but got no token this iteration stalled.
        for seq in running where seq.status == .running && seq.outputCount > 0 && !placedHandles.contains(seq.handle) {
            loopStats.decodeStalls += 1
            break
        }
        running.removeAll { $0.status == .finished }
        loopStats.iterations += 1
        loopStats.batchSizeHistogram[placed.count, default: 0] += 1
        loopStats.scheduledTokens += batch.tokenCount
        loopStats.sampleSeconds += monotonicSeconds() - t2
    }

    private func stopReason(_ seq: SequenceState, last token: Int32) -> FinishReason? {
        if seq.stopTokens.contains(token) { return .stop }
        if !seq.request.stopStrings.isEmpty, let tok = tokenizer {
            let text = tok.decode(Array(seq.outputTokens), skipSpecialTokens: true)
            for s in seq.request.stopStrings where !s.isEmpty {
                if let r = text.range(of: s) {
                    seq.text = String(text[..<r.lowerBound])
                    return .stop
                }
            }
        }
        if seq.outputCount >= seq.request.maxTokens { return .length }
        if seq.tokens.count >= config.maxModelLen { return .length }
        return nil
    }

    private func preempt(_ seq: SequenceState) {
        allocator.release(&seq.blockTable)
        seq.computedTokens = 0
        seq.carriedHidden = nil
        seq.carriedRoutes = nil
        seq.nextLayer = 0
        seq.inFlightTokens = 0
        seq.status = .waiting
        seq.preemptions += 1
        loopStats.preemptions += 1
        running.removeAll { $0 === seq }
        waiting.insert(seq, at: 0)
    }

    private func finish(_ seq: SequenceState, reason: FinishReason, error: RequestError?) {
        allocator.release(&seq.blockTable)
        seq.status = .finished
        sequences[seq.handle] = nil
        waiting.removeAll { $0 === seq }
        var text = seq.text
        if text == nil, let tok = tokenizer { text = tok.decode(Array(seq.outputTokens), skipSpecialTokens: true) }
        let out = RequestOutput(id: seq.request.id, promptTokens: seq.request.promptTokens.count,
                                outputTokens: Array(seq.outputTokens), text: text, finishReason: reason, error: error,
                                arrivalTime: seq.arrivalTime, firstTokenTime: seq.firstTokenTime, finishTime: now(),
                                tokenTimes: seq.tokenTimes, preemptions: seq.preemptions)
        if let c = seq.continuation { finishedOutputs.append((c, out)) }
        seq.continuation = nil
    }

    private func abort(requestId: String) {
        if let i = deferred.firstIndex(where: { $0.0.id == requestId }) {
            // Not arrived yet: admit it now so it ends like any other.
            let (req, cont) = deferred.remove(at: i)
            admit(req, cont, arrival: now())
        }
        guard let seq = sequences.values.first(where: { $0.request.id == requestId }) else { return }
        loopStats.cancelledRequests += 1
        finish(seq, reason: .abort, error: nil)
        running.removeAll { $0 === seq }
    }

    private func abortAll() {
        for (req, cont) in deferred {
            admit(req, cont, arrival: now())
        }
        deferred.removeAll()
        for seq in running + waiting { finish(seq, reason: .abort, error: nil) }
        running.removeAll()
        waiting.removeAll()
    }
}
