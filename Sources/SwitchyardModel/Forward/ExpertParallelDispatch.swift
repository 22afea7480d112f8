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
        let gate: UnsafeMutablePointer<Float>
        let up: UnsafeMutablePointer<Float>
        let down: UnsafeMutablePointer<Float>
        let tile: UnsafeMutablePointer<Float>
        let tileRows: Int
        let h: Int
        let inter: Int
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
                      barrier: ep.barriers[d], tile: g.tile + part * g.tileRows * max(g.h, g.inter), experts: experts, groups: g)
        }
        if !ran {
            // One thread (or the pool is taken): the devices run in turn.
            for d in 0..<n {
                runDevice(ep, layer: layer, device: d, local: 0, threads: 1, barrier: nil, tile: g.tile, experts: experts, groups: g)
            }
        }
        ep.phase[layer] += monotonicSeconds() - t0
    }

    private static func runDevice(_ ep: ExpertParallel, layer: Int, device d: Int, local: Int, threads m: Int,
                                  barrier: SpinBarrier?, tile: UnsafeMutablePointer<Float>,
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
            rowsProduct(w.gate, rows: rows, x: g.gathered + s * g.h, tokens: c, y: g.gate + s * g.inter, ldy: g.inter, tile: tile, tileRows: g.tileRows)
            rowsProduct(w.up, rows: rows, x: g.gathered + s * g.h, tokens: c, y: g.up + s * g.inter, ldy: g.inter, tile: tile, tileRows: g.tileRows)
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
            }
            at += len
        }
        barrier?.wait()
        forEachShare(total: active * g.h, segment: g.h, local: local, threads: m, list: list, range: lo..<hi, count: g.count) { j, rows in
            let c = Int(g.count[j]), s = Int(g.offset[j])
            rowsProduct(experts[j].down, rows: rows, x: g.gate + s * g.inter, tokens: c, y: g.down + s * g.h, ldy: g.h, tile: tile, tileRows: g.tileRows)
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

    /// `y[t, r] = W[r] · x[t]` for `rows` of `w`, on the calling thread: the
    /// 16-bit kernel for few tokens, widened tiles through sgemm for many.
    @inline(__always)
    static func rowsProduct(_ w: Matrix, rows: Range<Int>, x: UnsafePointer<Float>, tokens: Int,
                            y: UnsafeMutablePointer<Float>, ldy: Int, tile: UnsafeMutablePointer<Float>, tileRows: Int) {
        if w.dtype == .f32 {
            let base = w.data.assumingMemoryBound(to: Float.self) + rows.lowerBound * w.cols
            Linear.sgemm(tokens: tokens, x: x, ldx: w.cols, weights: base, rows: rows.count, cols: w.cols, y: y + rows.lowerBound, ldy: ldy)
        } else if tokens < Linear.gemmMinTokens {
            MatVec.compute(w, rows: rows, x: x, ldx: w.cols, tokens: tokens, y: y, ldy: ldy)
        } else {
            var r0 = rows.lowerBound
            while r0 < rows.upperBound {
                let k = min(tileRows, rows.upperBound - r0)
                let src = w.rows(r0..<(r0 + k))
                convertToFloat(src.data, dtype: src.dtype, count: k * src.cols, into: tile)
                Linear.sgemm(tokens: tokens, x: x, ldx: w.cols, weights: tile, rows: k, cols: w.cols, y: y + r0, ldy: ldy)
                r0 += k
            }
        }
    }
}
