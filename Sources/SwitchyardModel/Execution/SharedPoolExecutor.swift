import Foundation

/// The default expert executor: one device, every kernel thread working on
/// every expert in turn, weights read where the checkpoint's mapping put
/// them.
///
/// Experts with enough tokens for the GEMM backend are "large": with many of
/// them (prefill, large batches) each kernel thread takes whole experts,
/// balanced by token count, and runs gate, up, SwiGLU and down on its own
/// (one fork-join per layer, full-width products); with few, each product is
/// split across the threads by output columns. The rest share one parallel
/// pass of the direct 16-bit kernel over all their gate/up rows, then one
/// over their down rows, so each small expert's weights are still read once.
public final class SharedPoolExecutor: ExpertExecutor, @unchecked Sendable {
    public let devices: [ExecutionDevice]
    public var expertDevice: [[Int]]? { nil }
    private let counters: ExpertExecutionCounters
    /// Expert ids of one layer: large ones from the front, with each large
    /// expert's thread in the second `numExperts` slots; small ones from the
    /// third. Sized once, so a layer allocates nothing.
    private let lists: UnsafeMutablePointer<Int32>
    private let numExperts: Int

    public convenience init(weights: ModelWeights) {
        let c = weights.config, routed = weights.routedExperts
        self.init(numLayers: c.numLayers, numExperts: c.numExperts, expertWeightBytes: routed.bytes, experts: routed.count)
    }

    /// For layers that are not a loaded model's (kernel benchmarks).
    init(numLayers: Int, numExperts: Int, expertWeightBytes: Int, experts: Int) {
        self.numExperts = numExperts
        devices = [ExecutionDevice(name: "cpu", kind: .cpuPool, expertWeightBytes: expertWeightBytes, experts: experts,
                                   detail: "\(Parallel.threadCount) kernel threads, every expert on all of them")]
        counters = ExpertExecutionCounters(numLayers: numLayers, numDevices: 1)
        lists = .allocate(capacity: max(1, 3 * numExperts))
    }

    deinit { lists.deallocate() }

    public var stats: ExpertExecutionStats { counters.stats }
    public func resetStats() { counters.reset() }

    public func run(_ work: ExpertWork) {
        let t0 = monotonicSeconds()
        let e = work.numExperts
        let minTokens = Linear.gemmMinTokens(work.options, layout: work.experts.first?.gate.layout ?? .rowMajor)
        precondition(e <= numExperts, "layer \(work.layer) has more experts than the model")
        let large = lists, small = lists + 2 * numExperts
        var largeCount = 0, smallCount = 0
        for j in 0..<e where work.tokenCount[j] > 0 {
            if Int(work.tokenCount[j]) >= minTokens || work.experts[j].gate.dtype == .f32 {
                large[largeCount] = Int32(j)
                largeCount += 1
            } else {
                small[smallCount] = Int32(j)
                smallCount += 1
            }
        }
        if largeCount > 0 { runLarge(work, list: large, count: largeCount) }
        if smallCount > 0 { runSmall(work, list: small, count: smallCount) }
        counters.recordSingleDevice(layer: work.layer, assignments: work.assignments, seconds: monotonicSeconds() - t0)
    }

    // MARK: - Large experts

    private func runLarge(_ w: ExpertWork, list: UnsafeMutablePointer<Int32>, count: Int) {
        let threads = Parallel.threadCount
        let options = w.options, h = w.hiddenSize, inter = w.intermediateSize
        if threads > 1 && count >= 2 * threads {
            let owner = list + numExperts
            assignToThreads(list, count: count, owner: owner, tokens: w.tokenCount, threads: threads)
            let scratch = w.compute.reserveThreadScratch(threads: threads, tokens: 0, cols: 0)
            nonisolated(unsafe) let ids = list, owners = owner
            Parallel.forParts(threads, minChunk: 1) { part, _ in
                let tile = scratch.thread(part).tile
                for i in 0..<count where Int(owners[i]) == part {
                    let j = Int(ids[i])
                    let e = w.experts[j]
                    let s = Int(w.rowOffset[j]), n = Int(w.tokenCount[j])
                    let x = w.input(expert: j)
                    Linear.gemmRows(e.gate, rows: 0..<inter, input: x, tokens: n, y: w.gate + s * inter, ldy: inter,
                                    options: options, tile: tile, convertedInput: nil)
                    Linear.gemmRows(e.up, rows: 0..<inter, input: x, tokens: n, y: w.up + s * inter, ldy: inter,
                                    options: options, tile: tile, convertedInput: nil)
                    w.activate(expert: j)
                    Linear.gemmRows(e.down, rows: 0..<h, input: w.activated(expert: j), tokens: n, y: w.output + s * h,
                                    ldy: h, options: options, tile: tile, convertedInput: nil)
                }
            }
            return
        }
        for i in 0..<count {
            let j = Int(list[i])
            let e = w.experts[j]
            let s = Int(w.rowOffset[j]), n = Int(w.tokenCount[j])
            let x = w.input(expert: j)
            Linear.gemm(e.gate, input: x, tokens: n, y: w.gate + s * inter, ldy: inter, ctx: w.compute)
            Linear.gemm(e.up, input: x, tokens: n, y: w.up + s * inter, ldy: inter, ctx: w.compute)
            w.activate(expert: j)
            Linear.gemm(e.down, input: w.activated(expert: j), tokens: n, y: w.output + s * h, ldy: h, ctx: w.compute)
        }
    }

    /// Longest-processing-time assignment: experts by descending token
    /// count, each to the thread with the least work so far.
    private func assignToThreads(_ list: UnsafeMutablePointer<Int32>, count: Int, owner: UnsafeMutablePointer<Int32>,
                                 tokens: UnsafePointer<Int32>, threads: Int) {
        var ids = UnsafeMutableBufferPointer(start: list, count: count)
        ids.sort { (i: Int32, j: Int32) -> Bool in
            let a = tokens[Int(i)], c = tokens[Int(j)]
            return a != c ? a > c : i < j
        }
        withUnsafeTemporaryAllocation(of: Int.self, capacity: threads) { load in
            load.initialize(repeating: 0)
            for i in 0..<count {
                var best = 0
                for p in 1..<threads where load[p] < load[best] { best = p }
                load[best] += Int(tokens[Int(list[i])])
                owner[i] = Int32(best)
            }
        }
    }

    // MARK: - Small experts

    /// Few tokens per expert: row ranges of every expert's gate and up, then
    /// of every down, spread over the threads through the direct kernels.
    /// In bfloat16 mode on an AVX512-BF16 CPU they read the BF16 copies of
    /// the inputs and activations (`MatVec.computeBF16`).
    private func runSmall(_ w: ExpertWork, list: UnsafeMutablePointer<Int32>, count: Int) {
        let h = w.hiddenSize, inter = w.intermediateSize
        let bf16 = w.options.dtype == .bfloat16 && w.inputBF16 != nil && w.activatedBF16 != nil
            && (0..<count).allSatisfy { i in
                let e = w.experts[Int(list[i])]
                return MatVec.takesBF16Inputs(e.gate) && MatVec.takesBF16Inputs(e.up) && MatVec.takesBF16Inputs(e.down)
            }
        nonisolated(unsafe) let ids = list
        let xb = bf16 ? w.inputBF16 : nil, ab = bf16 ? w.activatedBF16.map { UnsafePointer($0) } : nil
        // Packed experts are split at their 64-row blocks, so no block is
        // read by two threads.
        let unit = w.experts[Int(list[0])].rowAlignment
        Parallel.forRanges(count * inter / unit, minChunk: max(1, 32 / unit)) { range in
            Parallel.forEachSegment(range, segmentLength: inter / unit, count: count) { i, units in
                let rows = (units.lowerBound * unit)..<(units.upperBound * unit)
                let j = Int(ids[i])
                let e = w.experts[j], start = Int(w.rowOffset[j]), n = Int(w.tokenCount[j])
                let gate = w.gate + start * inter, up = w.up + start * inter
                guard let xb else {
                    MatVec.compute(e.gate, rows: rows, x: w.input + start * h, ldx: h, tokens: n, y: gate, ldy: inter)
                    MatVec.compute(e.up, rows: rows, x: w.input + start * h, ldx: h, tokens: n, y: up, ldy: inter)
                    return
                }
                if MatVec.areInterleavedPair(e.gate, e.up) {
                    MatVec.computePairsBF16(gate: e.gate, rows: rows, x: xb + start * h, ldx: h, tokens: n,
                                            yGate: gate, yUp: up, ldy: inter)
                } else {
                    MatVec.computeBF16(e.gate, rows: rows, x: xb + start * h, ldx: h, tokens: n, y: gate, ldy: inter)
                    MatVec.computeBF16(e.up, rows: rows, x: xb + start * h, ldx: h, tokens: n, y: up, ldy: inter)
                }
            }
        }
        for i in 0..<count { w.activate(expert: Int(list[i]), keepBF16: bf16) }
        Parallel.forRanges(count * h / unit, minChunk: max(1, 32 / unit)) { range in
            Parallel.forEachSegment(range, segmentLength: h / unit, count: count) { i, units in
                let rows = (units.lowerBound * unit)..<(units.upperBound * unit)
                let j = Int(ids[i])
                let start = Int(w.rowOffset[j]), n = Int(w.tokenCount[j])
                if let ab {
                    MatVec.computeBF16(w.experts[j].down, rows: rows, x: ab + start * inter, ldx: inter, tokens: n,
                                       y: w.output + start * h, ldy: h)
                } else {
                    MatVec.compute(w.experts[j].down, rows: rows, x: w.gate + start * inter, ldx: inter, tokens: n,
                                   y: w.output + start * h, ldy: h)
                }
            }
        }
    }

}
