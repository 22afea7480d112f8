import Foundation
import SwitchyardModel

/// The expert step of an MoE layer under expert parallelism: every kernel
/// thread works for its own device, on that device's experts only, and all
/// devices run at once. Inside a device, its threads split the concatenated
/// gate/up rows of the device's active experts, meet at a barrier, apply
/// SwiGLU, meet again, and split the down rows, so a device with several
/// cores still reads each of its experts' weights once.
extension ExpertParallelExecutor {
    public func run(_ work: ExpertWork) {
        let layer = work.layer
        guard let experts = experts[layer] else {
            preconditionFailure("layer \(layer) is not an MoE layer of the model this executor was built for")
        }
        let n = numDevices
        let t0 = monotonicSeconds()
        var busiest = 0, total = 0
        for d in 0..<n {
            var sum = 0
            for i in deviceOffsets[layer][d]..<deviceOffsets[layer][d + 1] { sum += Int(work.tokenCount[Int(deviceExperts[layer][i])]) }
            counters.recordAssignments(layer: layer, device: d, tokens: sum)
            busiest = max(busiest, sum)
            total += sum
        }
        // What this iteration's layer waits for: its busiest device's share.
        counters.recordBalance(layer: layer, busiest: busiest, mean: Double(total) / Double(n))
        let threads = Parallel.threadCount
        let scratch = work.compute.reserveThreadScratch(threads: threads, tokens: work.assignments,
                                                        cols: max(work.hiddenSize, work.intermediateSize))
        let ran = Parallel.onEveryThread { part in
            pinIfNeeded(part: part)
            let d = threadDevice[part]
            runDevice(layer: layer, device: d, local: part - firstThread[d], threads: threadsOfDevice[d],
                      barrier: barriers[d], scratch: scratch.thread(part), experts: experts, work: work)
        }
        if !ran {
            // One thread (or the pool is taken): the devices run in turn.
            for d in 0..<n {
                runDevice(layer: layer, device: d, local: 0, threads: 1, barrier: nil, scratch: scratch.thread(0),
                          experts: experts, work: work)
            }
        }
        counters.recordPhase(layer: layer, seconds: monotonicSeconds() - t0)
    }

    private func runDevice(layer: Int, device d: Int, local: Int, threads m: Int, barrier: SpinBarrier?,
                           scratch: ThreadScratch, experts: [ExpertWeights], work g: ExpertWork) {
        let start = monotonicSeconds()
        let list = deviceExperts[layer]
        let lo = deviceOffsets[layer][d], hi = deviceOffsets[layer][d + 1]
        let h = g.hiddenSize, inter = g.intermediateSize, options = g.options
        var active = 0, elements = 0
        for i in lo..<hi {
            let c = Int(g.tokenCount[Int(list[i])])
            if c > 0 { active += 1; elements += c * inter }
        }
        // Gate and up: this thread's share of the active experts' rows.
        let unit = experts.first?.rowAlignment ?? 1
        Self.forEachShare(total: active * inter, segment: inter, local: local, threads: m, list: list, range: lo..<hi,
                          count: g.tokenCount, unit: unit) { j, rows in
            let c = Int(g.tokenCount[j]), s = Int(g.rowOffset[j])
            let w = experts[j]
            let x = g.input(expert: j)
            Linear.product(w.gate, rows: rows, input: x, tokens: c, y: g.gate + s * inter, ldy: inter, options: options, scratch: scratch)
            Linear.product(w.up, rows: rows, input: x, tokens: c, y: g.up + s * inter, ldy: inter, options: options, scratch: scratch)
        }
        barrier?.wait()
        // SwiGLU over this device's share of gate elements, expert by expert.
        let eLo = elements * local / m, eHi = elements * (local + 1) / m
        var at = 0
        for i in lo..<hi where at < eHi {
            let j = Int(list[i])
            let c = Int(g.tokenCount[j])
            guard c > 0 else { continue }
            let len = c * inter
            let a = max(eLo, at), b = min(eHi, at + len)
            if a < b { g.activate(expert: j, from: a - at, count: b - a) }
            at += len
        }
        barrier?.wait()
        Self.forEachShare(total: active * h, segment: h, local: local, threads: m, list: list, range: lo..<hi,
                          count: g.tokenCount, unit: unit) { j, rows in
            let c = Int(g.tokenCount[j]), s = Int(g.rowOffset[j])
            Linear.product(experts[j].down, rows: rows, input: g.activated(expert: j), tokens: c, y: g.output + s * h,
                           ldy: h, options: options, scratch: scratch)
        }
        barrier?.wait()
        // A device with no tokens in this layer only passed its barriers.
        if local == 0 && active > 0 { counters.recordBusy(layer: layer, device: d, seconds: monotonicSeconds() - start) }
    }

    /// Calls `body(expert, rows)` for the part of the concatenated rows
    /// (`segment` rows per active expert of `list[range]`) that thread
    /// `local` of `threads` owns.
    @inline(__always)
    private static func forEachShare(total: Int, segment: Int, local: Int, threads: Int, list: [Int32], range: Range<Int>,
                                     count: UnsafePointer<Int32>, unit: Int, _ body: (Int, Range<Int>) -> Void) {
        // Shares end on multiples of `unit` rows (a packed matrix's 64-row
        // blocks), so no block is read by two threads.
        let units = total / unit
        let from = units * local / threads * unit, to = local == threads - 1 ? total : units * (local + 1) / threads * unit
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
}
