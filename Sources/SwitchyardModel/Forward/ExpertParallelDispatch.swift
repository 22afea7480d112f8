import Foundation

/// The expert step of an MoE layer under expert parallelism: every kernel
/// thread works for its own device, on that device's experts only, and all
/// devices run at once. Inside a device, its threads split the concatenated
/// gate/up rows of the device's active experts, meet at a barrier, apply
/// SwiGLU, meet again, and split the down rows, so a device with several
/// cores still reads each of its experts' weights once.
extension MoEBlock {
    struct ExpertGroups {
        let count: UnsafePointer<Int32>
        let offset: UnsafePointer<Int32>
        let gathered: UnsafePointer<Float>
        let gatheredBF16: UnsafePointer<UInt16>?
        let gate: UnsafeMutablePointer<Float>
        let up: UnsafeMutablePointer<Float>
        let activatedBF16: UnsafeMutablePointer<UInt16>?
        let down: UnsafeMutablePointer<Float>
        /// Per kernel thread: a weight tile, room to convert an input to
        /// BF16, and room to round a direct-kernel input through BF16.
        let tiles: UnsafeMutableRawPointer
        let inputs: UnsafeMutablePointer<UInt16>
        let inputStride: Int
        let rounded: UnsafeMutablePointer<Float>
        let roundedStride: Int
        let options: ComputeOptions
        let h: Int
        let inter: Int

        func scratch(part: Int) -> ThreadScratch {
            ThreadScratch(tile: tiles + part * GemmContext.tileBytes, input: inputs + part * inputStride,
                          rounded: rounded + part * roundedStride)
        }
    }

    struct ThreadScratch {
        let tile: UnsafeMutableRawPointer
        let input: UnsafeMutablePointer<UInt16>
        let rounded: UnsafeMutablePointer<Float>
    }

    static func runExpertParallel(_ ep: ExpertParallel, layer: Int, experts: [ExpertWeights], groups g: ExpertGroups) {
        let n = ep.numDevices
        let t0 = monotonicSeconds()
        var busiest = 0, total = 0
        for d in 0..<n {
            var sum = 0
            for i in ep.deviceOffsets[layer][d]..<ep.deviceOffsets[layer][d + 1] { sum += Int(g.count[Int(ep.deviceExperts[layer][i])]) }
            ep.tokens[layer * n + d] += sum
            busiest = max(busiest, sum)
            total += sum
        }
        // What this iteration's layer waits for: its busiest device's share.
        ep.busiestTokens[layer] += busiest
        ep.meanTokens[layer] += Double(total) / Double(n)
        let ran = Parallel.onEveryThread { part in
            ep.pinIfNeeded(part: part)
            let d = ep.threadDevice[part]
            runDevice(ep, layer: layer, device: d, local: part - ep.firstThread[d], threads: ep.threadsOfDevice[d],
                      barrier: ep.barriers[d], scratch: g.scratch(part: part), experts: experts, groups: g)
        }
        if !ran {
            // One thread (or the pool is taken): the devices run in turn.
            for d in 0..<n {
                runDevice(ep, layer: layer, device: d, local: 0, threads: 1, barrier: nil, scratch: g.scratch(part: 0), experts: experts, groups: g)
            }
        }
        ep.phase[layer] += monotonicSeconds() - t0
    }

    private static func runDevice(_ ep: ExpertParallel, layer: Int, device d: Int, local: Int, threads m: Int,
                                  barrier: SpinBarrier?, scratch: ThreadScratch,
                                  experts: [ExpertWeights], groups g: ExpertGroups) {
        let start = monotonicSeconds()
        let list = ep.deviceExperts[layer]
        let lo = ep.deviceOffsets[layer][d], hi = ep.deviceOffsets[layer][d + 1]
        var active = 0, elements = 0
        for i in lo..<hi {
            let c = Int(g.count[Int(list[i])])
            if c > 0 { active += 1; elements += c * g.inter }
        }
        // Gate and up: this thread's share of the active experts' rows.
        forEachShare(total: active * g.inter, segment: g.inter, local: local, threads: m, list: list, range: lo..<hi, count: g.count) { j, rows in
            let c = Int(g.count[j]), s = Int(g.offset[j])
            let w = experts[j]
            let x = GemmInput(f32: g.gathered + s * g.h, ld: g.h, bf16: g.gatheredBF16.map { $0 + s * g.h }, ldBF16: g.h)
            rowsProduct(w.gate, rows: rows, input: x, tokens: c, y: g.gate + s * g.inter, ldy: g.inter, options: g.options, scratch: scratch)
            rowsProduct(w.up, rows: rows, input: x, tokens: c, y: g.up + s * g.inter, ldy: g.inter, options: g.options, scratch: scratch)
        }
        barrier?.wait()
        // SwiGLU over this device's share of gate elements, expert by expert.
        let eLo = elements * local / m, eHi = elements * (local + 1) / m
        var at = 0
        for i in lo..<hi where at < eHi {
            let j = Int(list[i])
            let c = Int(g.count[j])
            guard c > 0 else { continue }
            let len = c * g.inter
            let a = max(eLo, at), b = min(eHi, at + len)
            if a < b {
                let base = Int(g.offset[j]) * g.inter + (a - at)
                Elementwise.swiglu(gate: g.gate + base, up: g.up + base, n: b - a)
                if g.options.dtype == .bfloat16 {
                    Linear.roundInPlace(g.gate + base, count: b - a)
                    if let act = g.activatedBF16 { narrowToBF16(g.gate + base, count: b - a, into: act + base) }
                }
            }
            at += len
        }
        barrier?.wait()
        forEachShare(total: active * g.h, segment: g.h, local: local, threads: m, list: list, range: lo..<hi, count: g.count) { j, rows in
            let c = Int(g.count[j]), s = Int(g.offset[j])
            let x = GemmInput(f32: g.gate + s * g.inter, ld: g.inter,
                              bf16: g.activatedBF16.map { UnsafePointer($0 + s * g.inter) }, ldBF16: g.inter)
            rowsProduct(experts[j].down, rows: rows, input: x, tokens: c, y: g.down + s * g.h, ldy: g.h, options: g.options, scratch: scratch)
        }
        barrier?.wait()
        // A device with no tokens in this layer only passed its barriers.
        if local == 0 && active > 0 { ep.busy[layer * ep.numDevices + d] += monotonicSeconds() - start }
    }

    /// Calls `body(expert, rows)` for the part of the concatenated rows
    /// (`segment` rows per active expert of `list[range]`) that thread
    /// `local` of `threads` owns.
    @inline(__always)
    private static func forEachShare(total: Int, segment: Int, local: Int, threads: Int, list: [Int32], range: Range<Int>,
                                     count: UnsafePointer<Int32>, _ body: (Int, Range<Int>) -> Void) {
        let from = total * local / threads, to = total * (local + 1) / threads
        guard from < to else { return }
        var at = 0
        for i in range where at < to {
            let j = Int(list[i])
            guard count[j] > 0 else { continue }
            let a = max(from, at), b = min(to, at + segment)
            if a < b { body(j, (a - at)..<(b - at)) }
            at += segment
        }
    }

    /// `y[t, r] = W[r] · x[t]` for `rows` of `w`, on the calling thread,
    /// through the same kernels and backend as the rest of the forward.
    @inline(__always)
    static func rowsProduct(_ w: Matrix, rows: Range<Int>, input: GemmInput, tokens: Int,
                            y: UnsafeMutablePointer<Float>, ldy: Int, options: ComputeOptions, scratch: ThreadScratch) {
        Linear.product(w, rows: rows, input: input, tokens: tokens, y: y, ldy: ldy, options: options, tile: scratch.tile,
                       convertedInput: scratch.input, rounded: scratch.rounded)
    }
}
