import Foundation
import SwitchyardModel

/// Replays a workload against an engine in real time: each request is
/// submitted at its arrival time and its tokens are timestamped as the
/// client receives them from the stream.
public struct BenchmarkRunner {
    public let engine: Engine
    public let workload: [WorkloadRequest]
    public var progress: (@Sendable (Int, Int) -> Void)?

    public init(engine: Engine, workload: [WorkloadRequest], progress: (@Sendable (Int, Int) -> Void)? = nil) {
        self.engine = engine
        self.workload = workload
        self.progress = progress
    }

    /// How arrival times are replayed.
    public enum ArrivalClock: Sendable, Equatable {
        /// In real time: each request is submitted when its arrival time has
        /// passed on the wall clock; latencies are the client's.
        case wall
        /// On the engine's iteration clock: arrival time t becomes arrival
        /// iteration ⌊t / secondsPerIteration⌋, every request is handed to the
        /// engine up front, and latencies are the engine's timestamps from
        /// admission. The schedule then depends on nothing but the workload,
        /// so every engine counter repeats exactly at any request rate.
        case iterations(secondsPerIteration: Double)
    }

    public func run(seed: UInt64 = 0, samplingTemperature: Float = 0, ignoreEOS: Bool = true,
                    clock: ArrivalClock = .wall) async -> (records: [ClientRecord], duration: Double) {
        let requests = workload.enumerated().map { i, w in
            GenerationRequest(id: "bench-\(i)", promptTokens: w.promptTokens,
                              sampling: SamplingParams(temperature: samplingTemperature, seed: seed &+ UInt64(i)),
                              maxTokens: w.maxTokens, ignoreEOS: ignoreEOS)
        }
        if case .iterations(let tau) = clock {
            return await runOnIterationClock(requests, arrivalIteration: workload.map { Int(($0.arrival / tau).rounded(.down)) })
        }
        // Requests due at t = 0 are queued before the loop starts, so its
        // first iteration sees all of them: with `--request-rate inf` the
        // schedule (and every engine counter) is the same on every run.
        let start = monotonicSeconds()
        var early: [Int: AsyncStream<RequestEvent>] = [:]
        for (i, w) in workload.enumerated() where w.arrival <= 0 { early[i] = engine.submit(requests[i]) }
        engine.start()
        let total = workload.count
        let done = ProgressCounter()
        let records = await withTaskGroup(of: (Int, ClientRecord).self) { group in
            for (i, w) in workload.enumerated() {
                let queued = early[i]
                let req = requests[i]
                group.addTask { [engine, progress] in
                    let wait = w.arrival - (monotonicSeconds() - start)
                    if wait > 0 { try? await Task.sleep(nanoseconds: UInt64(wait * 1e9)) }
                    let submitted = queued == nil ? monotonicSeconds() : start
                    var times: [Double] = []
                    var output: RequestOutput?
                    for await event in queued ?? engine.submit(req) {
                        switch event {
                        case .token: times.append(monotonicSeconds())
                        case .promptScored: break
                        case .finished(let o): output = o
                        }
                    }
                    let end = monotonicSeconds()
                    let ok = output?.error == nil && output?.finishReason != .abort && !times.isEmpty
                    progress?(done.increment(), total)
                    return (i, ClientRecord(promptTokens: w.promptTokens.count, outputTokens: times.count, success: ok,
                                            error: output?.error?.description ?? "",
                                            startTime: submitted - start, ttft: (times.first ?? end) - submitted,
                                            latency: end - submitted, itls: zip(times.dropFirst(), times).map { $0 - $1 }))
                }
            }
            var out = [ClientRecord?](repeating: nil, count: total)
            for await (i, r) in group { out[i] = r }
            return out.map { $0! }
        }
        return (records, monotonicSeconds() - start)
    }
}

extension BenchmarkRunner {
    func runOnIterationClock(_ requests: [GenerationRequest], arrivalIteration: [Int]) async -> (records: [ClientRecord], duration: Double) {
        let start = monotonicSeconds()
        let t0 = engine.now()
        let replay = IterationClockReplay(requests: requests, arrivalIteration: arrivalIteration)
        replay.attach(to: engine)
        defer { engine.observeIterations(nil) }
        let streams = replay.streams
        engine.start()
        let total = requests.count
        var records: [ClientRecord] = []
        for (i, stream) in streams.enumerated() {
            var output: RequestOutput?
            for await event in stream { if case .finished(let o) = event { output = o } }
            progress?(i + 1, total)
            guard let o = output else { continue }
            let ok = o.error == nil && o.finishReason != .abort && !o.tokenTimes.isEmpty
            records.append(ClientRecord(promptTokens: requests[i].promptTokens.count, outputTokens: o.tokenTimes.count, success: ok,
                                        error: o.error?.description ?? "", startTime: o.arrivalTime - t0,
                                        ttft: (o.firstTokenTime ?? o.finishTime) - o.arrivalTime, latency: o.finishTime - o.arrivalTime,
                                        itls: o.interTokenLatencies))
        }
        return (records, monotonicSeconds() - start)
    }
}

/// A thread-safe count of finished requests, for progress reports.
public final class ProgressCounter: @unchecked Sendable {
    public init() {}
    private let lock = NSLock()
    private var value = 0
    public func increment() -> Int {
        lock.lock(); defer { lock.unlock() }
        value += 1
        return value
    }
}
