import Foundation
import Synchronization

/// A fork-join pool whose workers spin between jobs before they sleep.
///
/// A decode step is a chain of short parallel regions (a 0.5 MiB projection
/// takes ~20 µs) separated by serial work; with libdispatch the workers park
/// in between and waking them costs about as much as the work. Here the
/// caller runs part 0 itself and `threads - 1` workers, spinning on a
/// generation counter, pick up the rest within nanoseconds. After ~1 ms
/// without work they sleep on a condition variable, so an idle engine burns
/// no CPU.
final class SpinPool: @unchecked Sendable {
    let threads: Int
    private let generation = Atomic<Int>(0)
    private let pending = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let busy = Atomic<Bool>(false)
    private let condition = NSCondition()
    // Written by the caller before publishing a generation, read by workers after.
    nonisolated(unsafe) private var job: ((Int) -> Void)?
    nonisolated(unsafe) private var parts = 0

    /// Spin iterations (each a relaxed load) before a worker sleeps.
    private static let spinLimit = 1 << 20

    init(threads: Int) {
        self.threads = max(1, threads)
        for index in 1..<self.threads {
            let t = Thread { [unowned self] in self.worker(index) }
            t.name = "switchyard-kernel-\(index)"
            t.start()
        }
    }

    /// Runs `body(p)` for `p in 0..<parts` (parts ≤ threads), the caller
    /// taking part 0. Returns false, running nothing, if another caller holds
    /// the pool (nested or concurrent use); the caller then falls back.
    func run(parts: Int, _ body: (Int) -> Void) -> Bool {
        precondition(parts <= threads)
        guard threads > 1, busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            return false
        }
        withoutActuallyEscaping(body) { b in
            job = b
            self.parts = parts
            // Every worker acknowledges every generation, needed or not, so
            // the next job cannot be published while one is still reading this.
            pending.store(threads - 1, ordering: .relaxed)
            generation.add(1, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                condition.lock()
                condition.broadcast()
                condition.unlock()
            }
            b(0)
            while pending.load(ordering: .acquiring) > 0 {}
            job = nil
        }
        busy.store(false, ordering: .releasing)
        return true
    }

    private func worker(_ index: Int) {
        // Not a load: a worker may start after the first job is published.
        var seen = 0
        while true {
            var spins = 0
            var current = generation.load(ordering: .acquiring)
            while current == seen {
                spins += 1
                if spins >= SpinPool.spinLimit {
                    condition.lock()
                    sleepers.add(1, ordering: .sequentiallyConsistent)
                    while generation.load(ordering: .sequentiallyConsistent) == seen { condition.wait() }
                    sleepers.subtract(1, ordering: .sequentiallyConsistent)
                    condition.unlock()
                    spins = 0
                }
                current = generation.load(ordering: .acquiring)
            }
            seen = current
            if index < parts, let job { job(index) }
            pending.subtract(1, ordering: .releasing)
        }
    }
}
