import Foundation

/// Monotonic seconds.
@inline(__always)
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Runs `body` until at least `minSeconds` have passed (and at least
/// `minRuns` times, after one warm-up run) and returns the median seconds per
/// run: the median resists the noise of a shared machine.
public func measure(minSeconds: Double = 0.5, minRuns: Int = 3, _ body: () -> Void) -> Double {
    body()
    var samples: [Double] = []
    let start = monotonicSeconds()
    while samples.count < minRuns || monotonicSeconds() - start < minSeconds {
        let t0 = monotonicSeconds()
        body()
        samples.append(monotonicSeconds() - t0)
        if samples.count > 10_000 { break }
    }
    samples.sort()
    return samples[samples.count / 2]
}
