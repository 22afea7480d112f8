/// A plain streaming read: the baseline that bandwidth-bound kernels are
/// compared against in the same run. Sums a buffer far larger than the last
/// level cache with all kernel threads.
public enum MemoryBandwidth {
    /// Bytes per second read by summing `bytes` of Float32 with SIMD loads.
    public static func streamingRead(bytes: Int, minSeconds: Double = 0.5) -> Double {
        let count = bytes / 4
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { buffer.deallocate() }
        // Touch every page (and give the data a value) before timing.
        for i in 0..<count { buffer[i] = Float(i & 7) }
        return streamingRead(UnsafeRawPointer(buffer), bytes: bytes, minSeconds: minSeconds)
    }

    /// The same read over existing memory (for example a model's mapped
    /// weights, so the baseline reads the very pages the kernels read).
    /// `minSeconds` 0: one pass, untimed warm-up included (a sample of the
    /// bandwidth at this moment).
    public static func streamingRead(_ base: UnsafeRawPointer, bytes: Int, minSeconds: Double = 0.5) -> Double {
        let count = bytes / 4
        nonisolated(unsafe) let b = base
        // One partial sum per thread, read after the run so the loads are not dead code.
        let partials = UnsafeMutablePointer<Float>.allocate(capacity: Parallel.threadCount)
        defer { partials.deallocate() }
        partials.initialize(repeating: 0, count: Parallel.threadCount)
        nonisolated(unsafe) let sums = partials
        let read = {
            // 256 bytes per step into eight independent accumulators, so the
            // adds never limit the loads.
            Parallel.forParts(count / 64, minChunk: 1024) { part, r in
                var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
                var a4 = SIMD8<Float>(), a5 = SIMD8<Float>(), a6 = SIMD8<Float>(), a7 = SIMD8<Float>()
                for i in r {
                    let p = b + i * 256
                    a0 += p.loadUnaligned(as: SIMD8<Float>.self)
                    a1 += (p + 32).loadUnaligned(as: SIMD8<Float>.self)
                    a2 += (p + 64).loadUnaligned(as: SIMD8<Float>.self)
                    a3 += (p + 96).loadUnaligned(as: SIMD8<Float>.self)
                    a4 += (p + 128).loadUnaligned(as: SIMD8<Float>.self)
                    a5 += (p + 160).loadUnaligned(as: SIMD8<Float>.self)
                    a6 += (p + 192).loadUnaligned(as: SIMD8<Float>.self)
                    a7 += (p + 224).loadUnaligned(as: SIMD8<Float>.self)
                }
                sums[part] += ((a0 + a1) + (a2 + a3) + (a4 + a5) + (a6 + a7)).sum()
            }
        }
        let seconds: Double
        if minSeconds > 0 {
            seconds = measure(minSeconds: minSeconds, read)
        } else {
            let t0 = monotonicSeconds()
            read()
            seconds = monotonicSeconds() - t0
        }
        if (0..<Parallel.threadCount).reduce(0, { $0 + partials[$1] }) == -1 { print("") }
        return Double(count / 64 * 256) / seconds
    }
}
