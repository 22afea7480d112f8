import Foundation
import Dispatch

/// Fork-join over the machine's cores. Work is split into one contiguous
/// range per thread, so each call costs one dispatch round, not one per item.
public enum Parallel {
    /// Threads the kernels split work across. Defaults to the active cores;
    /// `SWITCHYARD_THREADS` overrides it (for scaling measurements).
    public static let threadCount: Int = {
        if let s = ProcessInfo.processInfo.environment["SWITCHYARD_THREADS"], let n = Int(s), n > 0 { return n }
        return max(1, ProcessInfo.processInfo.activeProcessorCount)
    }()

    static let pool = SpinPool(threads: threadCount)

    /// Calls `body` with disjoint ranges covering `0..<total`, in parallel when
    /// `total` is at least `2 * minChunk`.
    @inline(__always)
    public static func forRanges(_ total: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        forParts(total, minChunk: minChunk) { _, r in body(r) }
    }

    /// Like `forRanges`, also passing the part index (`0..<threadCount`), so a
    /// part can use its own slice of a preallocated scratch buffer.
    @inline(__always)
    public static func forParts(_ total: Int, minChunk: Int = 1, _ body: (Int, Range<Int>) -> Void) {
        guard total > 0 else { return }
        let parts = min(threadCount, max(1, total / max(1, minChunk)))
        if parts <= 1 {
            body(0, 0..<total)
            return
        }
        let ran = pool.run(parts: parts) { p in
            let lo = total * p / parts
            let hi = total * (p + 1) / parts
            if lo < hi { body(p, lo..<hi) }
        }
        if ran { return }
        // The pool is taken (another thread, or a nested call): fall back to
        // libdispatch. The closure never outlives this call.
        withoutActuallyEscaping(body) { b in
            nonisolated(unsafe) let work = b
            DispatchQueue.concurrentPerform(iterations: parts) { p in
                let lo = total * p / parts
                let hi = total * (p + 1) / parts
                if lo < hi { work(p, lo..<hi) }
            }
        }
    }

    /// Runs `body(p)` once on every kernel thread at the same time, part p
    /// always on the same thread (part 0 on the caller), which regions with
    /// their own barriers need. Returns false, running nothing, when the pool
    /// is taken or there is one thread; the caller then runs its serial path.
    public static func onEveryThread(_ body: (Int) -> Void) -> Bool {
        guard threadCount > 1 else { return false }
        return pool.run(parts: threadCount, body)
    }

    /// Runs `body(i)` for `i in 0..<count` spread over the threads.
    @inline(__always)
    public static func forEach(_ count: Int, _ body: (Int) -> Void) {
        forRanges(count) { r in for i in r { body(i) } }
    }

    /// Splits a range over `count` concatenated segments of equal length into per-segment row ranges.
    @inline(__always)
    static func forEachSegment(_ range: Range<Int>, segmentLength: Int, count: Int, _ body: (Int, Range<Int>) -> Void) {
        var i = range.lowerBound
        while i < range.upperBound {
            let s = i / segmentLength
            let lo = i - s * segmentLength
            let hi = min(segmentLength, range.upperBound - s * segmentLength)
            body(s, lo..<hi)
            i = s * segmentLength + hi
        }
    }
}
