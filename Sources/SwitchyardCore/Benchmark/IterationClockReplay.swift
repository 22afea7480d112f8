import Foundation

/// Replays a workload's arrivals on the engine's iteration clock: request i
/// is submitted just before the engine's iteration `arrivalIteration[i]`,
/// and while the engine has nothing to do the clock jumps to the next
/// arrival, as if the idle iterations had run. The schedule then depends on
/// nothing but the workload, so every engine counter repeats exactly.
final class IterationClockReplay: @unchecked Sendable {
    private let requests: [GenerationRequest]
    private let arrivalIteration: [Int]
    /// Request indices by arrival iteration (stable: ties keep workload order).
    private let order: [Int]
    let streams: [AsyncStream<RequestEvent>]
    private let continuations: [AsyncStream<RequestEvent>.Continuation]
    private let lock = NSLock()
    private var next = 0
    /// Idle iterations skipped so far.
    private var skipped = 0

    init(requests: [GenerationRequest], arrivalIteration: [Int]) {
        self.requests = requests
        self.arrivalIteration = arrivalIteration
        order = requests.indices.sorted { (arrivalIteration[$0], $0) < (arrivalIteration[$1], $1) }
        let pairs = requests.map { _ in AsyncStream<RequestEvent>.makeStream(bufferingPolicy: .unbounded) }
        streams = pairs.map(\.stream)
        continuations = pairs.map(\.continuation)
    }

    /// Starts the replay: the engine calls back before every loop pass.
    func attach(to engine: Engine) {
        engine.observeIterations { [self] iterations, idle in submitDue(engine, iterations: iterations, idle: idle) }
    }

    private func submitDue(_ engine: Engine, iterations: Int, idle: Bool) {
        lock.lock(); defer { lock.unlock() }
        guard next < order.count else { return }
        var clock = iterations + skipped
        let upcoming = arrivalIteration[order[next]]
        if idle && upcoming > clock {
            skipped += upcoming - clock
            clock = upcoming
        }
        while next < order.count, arrivalIteration[order[next]] <= clock {
            let i = order[next]
            engine.submit(requests[i], into: continuations[i])
            next += 1
        }
    }
}
