import Foundation
import Logging
import Synchronization
import SwitchyardModel

/// The serving engine: continuous batching over a paged KV cache.
///
/// Requests arrive through `submit` from any thread or task; one dedicated
/// thread runs the loop, and each iteration (`step`) is four calls: the
/// scheduler plans, the `KVCacheManager` allocates blocks (preempting by
/// recompute when they run out), the `ModelRunner` runs one ragged forward,
/// and the `OutputProcessor` samples, streams and stops.
public final class Engine: @unchecked Sendable {
    public let model: Transformer
    public let config: EngineConfig
    public let scheduler: any Scheduler
    public let tokenizer: (any Tokenizer)?
    /// The rules every request meets before it runs (shared with the server).
    public let validator: RequestValidator
    let cache: PagedKVCache
    let eosTokens: [Int32]
    private let log = Logger(label: "switchyard.engine")

    // Loop-thread state.
    private let kv: KVCacheManager
    let runner: ModelRunner
    private let outputs: OutputProcessor
    private var loopStats = EngineStats()
    /// Final outputs, delivered after the iteration's stats are published so
    /// a client that sees `.finished` also sees that iteration in `stats`.
    private var finishedOutputs: [(AsyncStream<RequestEvent>.Continuation, RequestOutput)] = []
    /// Whether the last iteration ran nothing (an empty plan): the loop then
    /// waits for a submission, a cancellation or a short timeout before
    /// asking the scheduler again, instead of spinning.
    private var lastPlanEmpty = false

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
        var isEmpty: Bool { pending.isEmpty && cancels.isEmpty && tasks.isEmpty && !stopping }
    }
    private let inbox = Mutex(Inbox())
    private let wake = NSCondition()
    private var thread: Thread?
    private let clockStart = monotonicSeconds()
    private let observer = Mutex<(@Sendable (_ iterations: Int, _ idle: Bool) -> Void)?>(nil)

    public init(model: Transformer, config: EngineConfig, scheduler: any Scheduler, tokenizer: (any Tokenizer)? = nil) {
        self.model = model
        self.config = config
        self.scheduler = scheduler
        self.tokenizer = tokenizer
        cache = PagedKVCache(config: model.config, numBlocks: config.numKVBlocks, blockSize: config.blockSize, compute: model.compute)
        kv = KVCacheManager(numBlocks: config.numKVBlocks, blockSize: config.blockSize)
        runner = ModelRunner(model: model, cache: cache)
        outputs = OutputProcessor(maxModelLen: config.maxModelLen)
        validator = RequestValidator(maxModelLen: config.maxModelLen, vocabSize: model.config.vocabSize,
                                     kvBlocks: config.numKVBlocks, blockSize: config.blockSize)
        var eos = Set(model.config.eosTokenIds.map(Int32.init))
        if let e = tokenizer?.eosTokenId { eos.insert(e) }
        eosTokens = eos.sorted()
        loopStats.totalKVBlocks = config.numKVBlocks
        loopStats.kvCacheBytesPerToken = model.config.kvCacheBytesPerToken(elementBytes: cache.storesBF16 ? 2 : 4)
        let runner = runner
        kv.onRelease = { runner.release(handle: $0.handle) }
    }

    /// Seconds since the engine was created (the clock of all timestamps).
    public func now() -> Double { monotonicSeconds() - clockStart }

    /// Queues a request; its tokens and final output arrive on the stream.
    public func submit(_ request: GenerationRequest) -> AsyncStream<RequestEvent> {
        let (stream, continuation) = AsyncStream<RequestEvent>.makeStream(bufferingPolicy: .unbounded)
        submit(request, into: continuation)
        return stream
    }

    /// Queues a request whose events go to a continuation the caller made
    /// (replay tools create every stream up front and submit later).
    public func submit(_ request: GenerationRequest, into continuation: AsyncStream<RequestEvent>.Continuation) {
        let t = now()
        inbox.withLock { $0.pending.append((request, continuation, t)) }
        signal()
    }

    /// Aborts the request with this id wherever it is (queued, waiting or
    /// running): on the loop thread, before the next iteration, its KV blocks
    /// are freed and its stream ends with `.finished` (reason `abort`). An id
    /// that is unknown or already finished is ignored.
    public func cancel(requestId: String) {
        inbox.withLock { $0.cancels.append(requestId) }
        signal()
    }

    /// Calls `body(iterationsRun, idle)` on the loop thread before every
    /// pass of the loop (`idle`: nothing running, waiting or submitted), so
    /// a replay tool can submit requests on the iteration clock. nil removes it.
    public func observeIterations(_ body: (@Sendable (_ iterations: Int, _ idle: Bool) -> Void)?) {
        observer.withLock { $0 = body }
        signal()
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
                signal()
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
        freeBlocksSnapshot.withLock { $0 = kv.allocator.freeBlocks }
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
        signal()
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

    private func signal() {
        wake.lock(); wake.signal(); wake.unlock()
    }

    // MARK: - The loop

    private func loop() {
        while true {
            if let observe = observer.withLock({ $0 }) {
                observe(loopStats.iterations, kv.isIdle && inbox.withLock { $0.pending.isEmpty })
            }
            let (newRequests, stopping, cancels, tasks) = inbox.withLock { box in
                let p = box.pending, c = box.cancels, t = box.tasks
                box.pending.removeAll()
                box.cancels.removeAll()
                box.tasks.removeAll()
                return (p, box.stopping, c, t)
            }
            for task in tasks { task() }
            if stopping { abortAll(); break }
            for (req, cont, t) in newRequests { admit(req, cont, arrival: t) }
            for id in cancels { abort(requestId: id) }
            if !newRequests.isEmpty || !cancels.isEmpty { lastPlanEmpty = false }
            if kv.isIdle || lastPlanEmpty {
                publish()
                // Nothing to run (or the scheduler chose to run nothing): wait
                // for a submission or cancellation, re-asking after a while in
                // case the scheduler's own conditions (time) have changed.
                wake.lock()
                if inbox.withLock({ $0.isEmpty }) {
                    _ = wake.wait(until: Date().addingTimeInterval(kv.isIdle ? 0.05 : 0.005))
                }
                wake.unlock()
                if kv.isIdle { continue }
            }
            lastPlanEmpty = !step()
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

    /// One iteration: plan, allocate, forward, process outputs. Returns
    /// whether anything ran.
    private func step() -> Bool {
        let numLayers = model.config.numLayers
        let t0 = monotonicSeconds()
        let plan = scheduler.schedule(kv.context(numLayers: numLayers, now: now()))
        let (scheduled, unrunnable) = kv.allocate(plan, numLayers: numLayers)
        reportUnrunnable(unrunnable)
        loopStats.peakKVBlocksUsed = max(loopStats.peakKVBlocksUsed, kv.allocator.usedBlocks)
        let t1 = monotonicSeconds()
        loopStats.scheduleSeconds += t1 - t0
        guard !scheduled.isEmpty else { return false }

        let logits: LogitsView
        do {
            logits = try runner.forward(scheduled)
        } catch {
            // Inputs were validated on admission, so this is a bug: fail the
            // batch's requests with the message, keep serving the others.
            log.error("forward failed; failing this iteration's requests", metadata: [
                "error": "\(error)", "requests": "\(scheduled.map(\.seq.request.id))"])
            loopStats.forwardErrors += 1
            for s in scheduled {
                finish(s.seq, reason: .abort, error: .engine(id: s.seq.request.id, message: "\(error)"))
            }
            return true
        }
        let t2 = monotonicSeconds()
        loopStats.forwardSeconds += t2 - t1
        loopStats.logitsRows += logits.rows
        process(scheduled, logits: logits)
        loopStats.iterations += 1
        loopStats.batchSizeHistogram[scheduled.count, default: 0] += 1
        loopStats.scheduledTokens += scheduled.reduce(0) { $0 + $1.tokens }
        loopStats.sampleSeconds += monotonicSeconds() - t2
        return true
    }

    /// After the forward: layered chunks advance a group; sequences whose
    /// tokens are all computed sample their next token.
    private func process(_ scheduled: [KVCacheManager.Scheduled], logits: LogitsView) {
        let numLayers = model.config.numLayers
        let time = now()
        let iteration = loopStats.iterations
        for (i, s) in scheduled.enumerated() {
            let seq = s.seq
            seq.lastIteration = iteration
            if s.layers.upperBound < numLayers {
                seq.nextLayer = s.layers.upperBound
                seq.inFlightTokens = s.tokens
                continue
            }
            let rows = runner.rowCount[i], first = runner.firstRow[i]
            if seq.request.promptLogprobs != nil && rows > 0 {
                outputs.scorePrompt(seq, logits: logits, firstRow: first, start: seq.computedTokens, rows: rows)
            }
            seq.nextLayer = 0
            seq.inFlightTokens = 0
            seq.computedTokens += s.tokens
            guard seq.computedTokens == seq.tokens.count else { continue }
            if seq.request.maxTokens == 0 {
                // Scoring only: the prompt is computed, nothing to sample.
                finish(seq, reason: .length, error: nil)
                continue
            }
            let reason = outputs.append(seq, logits: logits.mutableRow(first + rows - 1), time: time)
            if let reason { finish(seq, reason: reason, error: nil) }
        }
        // A decode that was running but got no token this iteration stalled.
        if kv.running.contains(where: { $0.outputCount > 0 && $0.lastIteration != iteration }) {
            loopStats.decodeStalls += 1
        }
    }

    private func reportUnrunnable(_ items: [KVCacheManager.Unrunnable]) {
        guard !items.isEmpty else { return }
        loopStats.unrunnableItems += items.count
        for item in items {
            log.debug("scheduler planned work the engine cannot run", metadata: [
                "handle": "\(item.work.handle)", "tokens": "\(item.work.tokens)", "reason": "\(item.reason)"])
        }
    }

    private func publish() {
        loopStats.runningRequests = kv.running.count
        loopStats.waitingRequests = kv.waiting.count
        loopStats.usedKVBlocks = kv.allocator.usedBlocks
        loopStats.preemptions = kv.preemptions
        let s = loopStats, f = kv.allocator.freeBlocks
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
        let seq = SequenceState(handle: handle, request: req, arrivalTime: arrival, eosTokens: eosTokens, continuation: cont,
                                tokenizer: tokenizer)
        if let error = validator.validate(req) {
            loopStats.rejectedRequests += 1
            finish(seq, reason: .abort, error: error)
            return
        }
        kv.add(seq)
    }

    private func finish(_ seq: SequenceState, reason: FinishReason, error: RequestError?) {
        kv.remove(seq)
        let out = outputs.output(seq, reason: reason, error: error, time: now())
        if let c = seq.continuation { finishedOutputs.append((c, out)) }
        seq.continuation = nil
    }

    private func abort(requestId: String) {
        guard let seq = kv.sequence(requestId: requestId) else { return }
        loopStats.cancelledRequests += 1
        finish(seq, reason: .abort, error: nil)
    }

    private func abortAll() {
        for seq in kv.all { finish(seq, reason: .abort, error: nil) }
    }
}
