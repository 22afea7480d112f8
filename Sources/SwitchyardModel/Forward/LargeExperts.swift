/// Experts with enough tokens for the GEMM backend. With many such experts
/// (prefill, large batches) each kernel thread takes whole experts, balanced
/// by token count, and runs gate, up, SwiGLU and down for them on its own:
/// one fork-join per layer, full-width products, and every expert's
/// activations converted once. With few, each product is split across the
/// threads by output columns instead.
extension MoEBlock {
    struct ExpertBatch: @unchecked Sendable {
        let experts: [ExpertWeights]
        /// `count` expert ids; the buffer has room for `2 * experts.count`
        /// (the second half holds each listed expert's thread).
        let list: UnsafeMutablePointer<Int32>
        let count: Int
        let tokens: UnsafePointer<Int32>
        let offset: UnsafePointer<Int32>
        let gathered: UnsafePointer<Float>
        let gatheredBF16: UnsafePointer<UInt16>?
        let gate: UnsafeMutablePointer<Float>
        let up: UnsafeMutablePointer<Float>
        let activatedBF16: UnsafeMutablePointer<UInt16>?
        let down: UnsafeMutablePointer<Float>
        let h: Int
        let inter: Int

        func input(expert j: Int) -> GemmInput {
            let s = Int(offset[j])
            return GemmInput(f32: gathered + s * h, ld: h, bf16: gatheredBF16.map { $0 + s * h }, ldBF16: h)
        }

        /// SwiGLU over an expert's rows, then (bfloat16 mode) the result
        /// rounded through BF16 and kept as BF16 for the down product.
        func activate(expert j: Int, options: ComputeOptions) -> GemmInput {
            let s = Int(offset[j]), n = Int(tokens[j])
            let g = gate + s * inter
            Elementwise.swiglu(gate: g, up: up + s * inter, n: n * inter)
            if options.dtype == .bfloat16 {
                Linear.roundInPlace(g, count: n * inter)
                if let a = activatedBF16 { narrowToBF16(g, count: n * inter, into: a + s * inter) }
            }
            return GemmInput(f32: g, ld: inter, bf16: activatedBF16.map { UnsafePointer($0 + s * inter) }, ldBF16: inter)
        }
    }

    static func runLargeExperts(_ b: ExpertBatch, ctx: GemmContext) {
        let threads = Parallel.threadCount
        let options = ctx.options
        if threads > 1 && b.count >= 2 * threads {
            assignToThreads(b, threads: threads)
            let scratch = ctx.reservePerThread(threads: threads, inputElements: 0)
            nonisolated(unsafe) let tiles = scratch.tiles
            Parallel.forParts(threads, minChunk: 1) { part, _ in
                let tile = tiles + part * GemmContext.tileBytes
                for i in 0..<b.count where Int(b.list[b.experts.count + i]) == part {
                    let j = Int(b.list[i])
                    let w = b.experts[j]
                    let s = Int(b.offset[j]), n = Int(b.tokens[j])
                    let x = b.input(expert: j)
                    Linear.gemmRows(w.gate, rows: 0..<b.inter, input: x, tokens: n, y: b.gate + s * b.inter, ldy: b.inter,
                                    options: options, tile: tile, convertedInput: nil)
                    Linear.gemmRows(w.up, rows: 0..<b.inter, input: x, tokens: n, y: b.up + s * b.inter, ldy: b.inter,
                                    options: options, tile: tile, convertedInput: nil)
                    let a = b.activate(expert: j, options: options)
                    Linear.gemmRows(w.down, rows: 0..<b.h, input: a, tokens: n, y: b.down + s * b.h, ldy: b.h,
                                    options: options, tile: tile, convertedInput: nil)
                }
            }
            return
        }
        for i in 0..<b.count {
            let j = Int(b.list[i])
            let w = b.experts[j]
            let s = Int(b.offset[j]), n = Int(b.tokens[j])
            let x = b.input(expert: j)
            Linear.gemm(w.gate, input: x, tokens: n, y: b.gate + s * b.inter, ldy: b.inter, ctx: ctx)
            Linear.gemm(w.up, input: x, tokens: n, y: b.up + s * b.inter, ldy: b.inter, ctx: ctx)
            let a = b.activate(expert: j, options: options)
            Linear.gemm(w.down, input: a, tokens: n, y: b.down + s * b.h, ldy: b.h, ctx: ctx)
        }
    }

    /// Longest-processing-time assignment: experts by descending token
    /// count, each to the thread with the least work so far. Writes each
    /// listed expert's thread into the second half of `list`.
    private static func assignToThreads(_ b: ExpertBatch, threads: Int) {
        var ids = UnsafeMutableBufferPointer(start: b.list, count: b.count)
        let tokens = b.tokens
        ids.sort { (i: Int32, j: Int32) -> Bool in
            let a = tokens[Int(i)], c = tokens[Int(j)]
            return a != c ? a > c : i < j
        }
        withUnsafeTemporaryAllocation(of: Int.self, capacity: threads) { load in
            load.initialize(repeating: 0)
            for i in 0..<b.count {
                var best = 0
                for p in 1..<threads where load[p] < load[best] { best = p }
                load[best] += Int(b.tokens[Int(b.list[i])])
                b.list[b.experts.count + i] = Int32(best)
            }
        }
    }
}
