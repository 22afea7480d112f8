import CBLAS
import Foundation

/// The kernel benchmark behind `switchyard kernel-bench`: each kernel is
/// measured next to its ceiling in the same run (OpenBLAS peak sgemm for
/// compute, a plain streaming read for bandwidth), since absolute numbers on
/// a shared machine mean little.
public struct KernelBenchmark {
    public struct Options: Sendable {
        /// One expert projection: `[rows, cols]` BF16 (the `compare` preset's
        /// gate/up: moe_intermediate_size 512 x hidden 1024).
        public var expertRows = 512
        public var expertCols = 1024
        /// Bytes of distinct experts cycled through, so each call reads its
        /// weights from DRAM as a real MoE layer does.
        public var expertPoolBytes = 128 << 20
        public var tokenCounts = [1, 2, 4, 8, 16, 32, 64, 128, 256]
        public var matVecBytes = 256 << 20
        public var peakGemmSize = 1024
        /// Experts and tokens per expert of the prefill MoE layer measurement.
        public var prefillExperts = 64
        public var prefillTokensPerExpert = 64
        public var minSeconds = 0.5
        /// Skip the oneDNN columns (the library is not loaded).
        public var oneDNN = true
        public init() {}
    }

    public struct Result: Codable, Sendable {
        public var threads: Int
        public var oneDNN: String
        /// Token counts from which `Linear` leaves the direct kernel, per backend and dtype.
        public var gemmMinTokens: [String: Int]
        public var peakSgemmGflops: Double
        /// oneDNN on square in-cache matrices over all kernel threads: the
        /// compute ceilings the expert rows are compared with.
        public var peakOneDNNBF16Gflops: Double?
        public var peakOneDNNF32Gflops: Double?
        public var streamingReadGBs: Double
        /// BF16 matrix-vector product over a matrix far beyond the caches
        /// (float32 activations: the portable Swift kernel).
        public var bf16MatVecGBs: Double
        /// The same product in bfloat16 mode through the AVX512-BF16 kernel
        /// (nil where the CPU lacks it).
        public var bf16MatVecNativeGBs: Double?
        /// MXFP4 matrix-vector product (blocks and scales, gpt-oss's 2880
        /// columns) over as many bytes, bfloat16 mode, AVX512-BF16 kernel;
        /// nil where the CPU lacks it.
        public var mxfp4MatVecGBs: Double?
        public var expertProjection: [Row]
        /// The decode MoE path: `moeExperts` cold experts (gate, up, down), one
        /// token each, through the default `SharedPoolExecutor`; weight GB/s.
        public var moeDecodeExperts: Int
        public var moeDecodeGBs: Double
        /// A prefill MoE layer: `prefillExperts` cold experts with
        /// `prefillTokensPerExpert` tokens each (gate, up, SwiGLU, down), as
        /// the forward runs it with oneDNN BF16.
        public var moePrefillGflops: Double?
        /// The same layer on packed experts.
        public var moePrefillPackedGflops: Double?

        public struct Row: Codable, Sendable {
            public var tokens: Int
            /// The direct 16-bit kernel.
            public var directGflops: Double
            public var directWeightGBs: Double
            /// Widen to Float32 + OpenBLAS sgemm.
            public var sgemmGflops: Double
            public var sgemmWeightGBs: Double
            /// oneDNN Float32 matmul on widened tiles, and BF16 matmul on the weights as stored.
            public var onednnF32Gflops: Double?
            public var onednnBF16Gflops: Double?
            /// What `Linear` picks at this token count with oneDNN in bfloat16 mode.
            public var chosen: String
            /// bfloat16 mode's direct kernel (BF16 activations, AVX512-BF16)
            /// on the weights as stored and packed (`MatrixLayout.packedBF16`),
            /// rows split across the threads, and oneDNN's BF16 matmul on
            /// packed weights, whole experts one per thread; nil where the
            /// CPU or library lacks them.
            public var directBF16Gflops: Double?
            public var directBF16PackedGflops: Double?
            public var onednnBF16PackedGflops: Double?
            /// What `Linear` picks for packed weights.
            public var chosenPacked: String?
        }
    }

    public static func run(_ o: Options) -> Result {
        let peak = peakGemm(n: o.peakGemmSize, options: .exact, minSeconds: o.minSeconds)
        let useDNNL = o.oneDNN && OneDNN.isLoaded
        let bf16Options = ComputeOptions(gemm: .onednn, dtype: .bfloat16)
        let f32Options = ComputeOptions(gemm: .onednn, dtype: .float32)
        let peakBF16 = useDNNL && OneDNN.hasNativeBF16 ? peakGemm(n: o.peakGemmSize, options: bf16Options, minSeconds: o.minSeconds) : nil
        let peakF32 = useDNNL ? peakGemm(n: o.peakGemmSize, options: f32Options, minSeconds: o.minSeconds) : nil
        let stream = MemoryBandwidth.streamingRead(bytes: o.matVecBytes, minSeconds: o.minSeconds)
        let ctx = GemmContext()

        // BF16 matrix-vector over 256 MiB: the bandwidth-bound decode case.
        let cols = o.expertCols
        let rows = o.matVecBytes / (2 * cols)
        let big = randomBF16(count: rows * cols)
        defer { big.deallocate() }
        let bm = Matrix(rows: rows, cols: cols, dtype: .bf16, data: UnsafeRawPointer(big))
        let xv = UnsafeMutablePointer<Float>.allocate(capacity: cols)
        let yv = UnsafeMutablePointer<Float>.allocate(capacity: rows)
        defer { xv.deallocate(); yv.deallocate() }
        xv.initialize(repeating: 0.01, count: cols)
        let mvSeconds = measure(minSeconds: o.minSeconds) {
            Linear.apply(bm, x: xv, tokens: 1, y: yv, ctx: ctx)
        }
        var nativeSeconds: Double?
        if MatVec.nativeBF16 && useDNNL && OneDNN.hasNativeBF16 {
            let bctx = GemmContext(options: bf16Options)
            nativeSeconds = measure(minSeconds: o.minSeconds) { Linear.apply(bm, x: xv, tokens: 1, y: yv, ctx: bctx) }
        }
        let mxfp4GBs = MatVec.nativeBF16 && useDNNL && OneDNN.hasNativeBF16
            ? mxfp4MatVec(bytes: o.matVecBytes, cols: 2880, options: bf16Options, minSeconds: o.minSeconds) : nil

        // Expert projections, cycling through a pool of distinct experts.
        let perExpert = o.expertRows * o.expertCols
        let experts = max(1, o.expertPoolBytes / (perExpert * 2))
        let pool = randomBF16(count: experts * perExpert)
        defer { pool.deallocate() }
        var table: [Result.Row] = []
        let maxTokens = max(o.tokenCounts.max() ?? 1, o.prefillExperts * o.prefillTokensPerExpert)
        let x = UnsafeMutablePointer<Float>.allocate(capacity: maxTokens * o.expertCols)
        let y = UnsafeMutablePointer<Float>.allocate(capacity: maxTokens * max(o.expertRows, o.expertCols))
        let y2 = UnsafeMutablePointer<Float>.allocate(capacity: maxTokens * o.expertRows)
        defer { x.deallocate(); y.deallocate(); y2.deallocate() }
        x.initialize(repeating: 0.01, count: maxTokens * o.expertCols)
        // The same experts packed, where bfloat16 mode would pack them.
        let packs = MatVec.nativeBF16 && useDNNL && OneDNN.hasNativeBF16 && o.expertRows % 64 == 0 && o.expertCols % 64 == 0
        let packedPool = packs ? UnsafeMutablePointer<UInt16>.allocate(capacity: experts * perExpert) : nil
        defer { packedPool?.deallocate() }
        if let packedPool {
            for e in 0..<experts {
                _ = Matrix(rows: o.expertRows, cols: o.expertCols, dtype: .bf16, data: UnsafeRawPointer(pool + e * perExpert))
                    .packed(into: packedPool + e * perExpert)
            }
        }
        var next = 0
        func expert() -> Matrix {
            next = (next + 1) % experts
            return Matrix(rows: o.expertRows, cols: o.expertCols, dtype: .bf16, data: UnsafeRawPointer(pool + next * perExpert))
        }
        func packedExpert() -> Matrix {
            next = (next + 1) % experts
            return Matrix(rows: o.expertRows, cols: o.expertCols, dtype: .bf16, data: UnsafeRawPointer(packedPool! + next * perExpert),
                          layout: .packedBF16)
        }
        let xBF16 = UnsafeMutablePointer<UInt16>.allocate(capacity: maxTokens * o.expertCols)
        defer { xBF16.deallocate() }
        narrowToBF16(x, count: maxTokens * o.expertCols, into: xBF16)
        for n in o.tokenCounts {
            nonisolated(unsafe) let xs = x, ys = y
            // Time a batch of experts per sample so each sample is long enough to time.
            let batch = 16
            func timed(packed: Bool = false, _ body: (Matrix) -> Void) -> Double {
                measure(minSeconds: o.minSeconds) { for _ in 0..<batch { body(packed ? packedExpert() : expert()) } } / Double(batch)
            }
            nonisolated(unsafe) let xb = UnsafePointer(xBF16)
            let directBF16 = { (packed: Bool) -> Double in
                timed(packed: packed) { m in
                    Linear.forRowRanges(m, minChunk: 16) { r in
                        MatVec.computeBF16(m, rows: r, x: xb, ldx: m.cols, tokens: n, y: ys, ldy: m.rows)
                    }
                }
            }
            let direct = timed { m in
                Parallel.forRanges(m.rows, minChunk: 16) { r in
                    MatVec.compute(m, rows: r, x: xs, ldx: m.cols, tokens: n, y: ys, ldy: m.rows)
                }
            }
            let gemm = { (options: ComputeOptions) -> Double in
                ctx.options = options
                return timed { m in
                    Linear.gemm(m, input: Linear.prepare(xs, ld: m.cols, tokens: n, cols: m.cols, ctx: ctx), tokens: n,
                                y: ys, ldy: m.rows, ctx: ctx)
                }
            }
            let viaSgemm = gemm(.exact)
            let viaF32 = useDNNL ? gemm(f32Options) : nil
            let viaBF16 = useDNNL && OneDNN.hasNativeBF16 ? gemm(bf16Options) : nil
            // oneDNN on packed weights as the forward gives it them: whole
            // experts, one per thread at a time (a thread's slice of rows
            // goes to the direct kernel instead; `Linear.packedRows`).
            let viaBF16Packed: Double? = packs ? {
                ctx.options = bf16Options
                let threads = Parallel.threadCount
                let scratch = ctx.reserveThreadScratch(threads: threads, tokens: 0, cols: 0)
                let input = Linear.prepare(xs, ld: o.expertCols, tokens: n, cols: o.expertCols, ctx: ctx)
                let out = UnsafeMutablePointer<Float>.allocate(capacity: threads * n * o.expertRows)
                defer { out.deallocate() }
                nonisolated(unsafe) let outs = out
                let rounds = max(1, batch / threads)
                return measure(minSeconds: o.minSeconds) {
                    for _ in 0..<rounds {
                        let ms = (0..<threads).map { _ in packedExpert() }
                        Parallel.forParts(threads, minChunk: 1) { p, _ in
                            Linear.gemmRows(ms[p], rows: 0..<ms[p].rows, input: input, tokens: n, y: outs + p * n * o.expertRows,
                                            ldy: o.expertRows, options: bf16Options, tile: scratch.thread(p).tile, convertedInput: nil)
                        }
                    }
                } / Double(rounds * threads)
            }() : nil
            let flops = 2 * Double(n * perExpert)
            let bytes = Double(perExpert * 2)
            table.append(.init(tokens: n, directGflops: flops / direct / 1e9, directWeightGBs: bytes / direct / 1e9,
                               sgemmGflops: flops / viaSgemm / 1e9, sgemmWeightGBs: bytes / viaSgemm / 1e9,
                               onednnF32Gflops: viaF32.map { flops / $0 / 1e9 }, onednnBF16Gflops: viaBF16.map { flops / $0 / 1e9 },
                               chosen: n >= Linear.gemmMinTokens(bf16Options) ? "onednn" : "direct",
                               directBF16Gflops: MatVec.nativeBF16 ? flops / directBF16(false) / 1e9 : nil,
                               directBF16PackedGflops: packs ? flops / directBF16(true) / 1e9 : nil,
                               onednnBF16PackedGflops: viaBF16Packed.map { flops / $0 / 1e9 },
                               chosenPacked: packs ? (n >= Linear.gemmMinTokens(bf16Options, layout: .packedBF16) ? "onednn" : "direct") : nil))
        }
        // A decode MoE layer: k experts of [rows, cols] gate/up and [cols, rows] down, from the pool.
        let k = 4
        let experts3 = max(1, experts / 3)
        var nextExpert = 0
        func expertWeights() -> ExpertWeights {
            nextExpert = (nextExpert + 1) % experts3
            let base = pool + nextExpert * 3 * perExpert
            return ExpertWeights(gate: Matrix(rows: o.expertRows, cols: o.expertCols, dtype: .bf16, data: UnsafeRawPointer(base)),
                                 up: Matrix(rows: o.expertRows, cols: o.expertCols, dtype: .bf16, data: UnsafeRawPointer(base + perExpert)),
                                 down: Matrix(rows: o.expertCols, cols: o.expertRows, dtype: .bf16, data: UnsafeRawPointer(base + 2 * perExpert)))
        }
        let gathered = UnsafeMutablePointer<Float>.allocate(capacity: maxTokens * o.expertCols)
        let down = UnsafeMutablePointer<Float>.allocate(capacity: maxTokens * o.expertCols)
        defer { gathered.deallocate(); down.deallocate() }
        gathered.initialize(repeating: 0.01, count: maxTokens * o.expertCols)
        let layers = 16
        // The default executor, as the forward calls it: k experts of one token each.
        let maxExperts = max(k, o.prefillExperts)
        let executor = SharedPoolExecutor(numLayers: 1, numExperts: maxExperts, expertWeightBytes: 0, experts: 0)
        let counts = UnsafeMutablePointer<Int32>.allocate(capacity: maxExperts)
        let offsets = UnsafeMutablePointer<Int32>.allocate(capacity: maxExperts + 1)
        defer { counts.deallocate(); offsets.deallocate() }
        for j in 0..<k { counts[j] = 1; offsets[j] = Int32(j) }
        let exact = GemmContext(options: .exact)
        let moeSeconds = measure(minSeconds: o.minSeconds) {
            for _ in 0..<layers {
                executor.run(ExpertWork(layer: 0, experts: (0..<k).map { _ in expertWeights() }, hiddenSize: o.expertCols,
                                        intermediateSize: o.expertRows, assignments: k, tokenCount: counts, rowOffset: offsets,
                                        input: gathered, inputBF16: nil, output: down, gate: y, up: y2, activatedBF16: nil,
                                        compute: exact))
            }
        } / Double(layers)

        // A prefill MoE layer through oneDNN BF16, as the forward runs it.
        var prefill: Double?, prefillPacked: Double?
        if useDNNL && OneDNN.hasNativeBF16 {
            ctx.options = bf16Options
            let e = min(o.prefillExperts, experts3), t = o.prefillTokensPerExpert
            let gb = UnsafeMutablePointer<UInt16>.allocate(capacity: e * t * o.expertCols)
            let ab = UnsafeMutablePointer<UInt16>.allocate(capacity: e * t * o.expertRows)
            defer { gb.deallocate(); ab.deallocate() }
            narrowToBF16(gathered, count: e * t * o.expertCols, into: gb)
            for j in 0..<e { counts[j] = Int32(t); offsets[j] = Int32(j * t) }
            offsets[e] = Int32(e * t)
            let seconds = measure(minSeconds: o.minSeconds) {
                executor.run(ExpertWork(layer: 0, experts: (0..<e).map { _ in expertWeights() }, hiddenSize: o.expertCols,
                                        intermediateSize: o.expertRows, assignments: e * t, tokenCount: counts, rowOffset: offsets,
                                        input: gathered, inputBF16: gb, output: down, gate: y, up: y2, activatedBF16: ab,
                                        compute: ctx))
            }
            prefill = 3 * 2 * Double(e * t * perExpert) / seconds / 1e9
            if let packedPool {
                let packedExperts = (0..<e).map { j -> ExpertWeights in
                    let base = packedPool + (j % experts3) * 3 * perExpert
                    return ExpertWeights(
                        gate: Matrix(rows: o.expertRows, cols: o.expertCols, dtype: .bf16, data: UnsafeRawPointer(base), layout: .packedBF16),
                        up: Matrix(rows: o.expertRows, cols: o.expertCols, dtype: .bf16, data: UnsafeRawPointer(base + perExpert), layout: .packedBF16),
                        down: Matrix(rows: o.expertCols, cols: o.expertRows, dtype: .bf16, data: UnsafeRawPointer(base + 2 * perExpert),
                                     layout: .packedBF16))
                }
                let packedSeconds = measure(minSeconds: o.minSeconds) {
                    executor.run(ExpertWork(layer: 0, experts: packedExperts, hiddenSize: o.expertCols,
                                            intermediateSize: o.expertRows, assignments: e * t, tokenCount: counts, rowOffset: offsets,
                                            input: gathered, inputBF16: gb, output: down, gate: y, up: y2, activatedBF16: ab,
                                            compute: ctx))
                }
                prefillPacked = 3 * 2 * Double(e * t * perExpert) / packedSeconds / 1e9
            }
        }
        var minTokens: [String: Int] = [:]
        for g in ComputeOptions.Backend.allCases {
            for d in ComputeOptions.Precision.allCases { minTokens["\(g.rawValue)/\(d.rawValue)"] = Linear.gemmMinTokens(.init(gemm: g, dtype: d)) }
        }
        minTokens["onednn/bfloat16/packed"] = Linear.gemmMinTokens(bf16Options, layout: .packedBF16)
        return Result(threads: Parallel.threadCount, oneDNN: OneDNN.description, gemmMinTokens: minTokens, peakSgemmGflops: peak,
                      peakOneDNNBF16Gflops: peakBF16, peakOneDNNF32Gflops: peakF32,
                      streamingReadGBs: stream / 1e9, bf16MatVecGBs: Double(bm.byteCount) / mvSeconds / 1e9,
                      bf16MatVecNativeGBs: nativeSeconds.map { Double(bm.byteCount) / $0 / 1e9 },
                      mxfp4MatVecGBs: mxfp4GBs,
                      expertProjection: table, moeDecodeExperts: k,
                      moeDecodeGBs: Double(k * 3 * perExpert * 2) / moeSeconds / 1e9, moePrefillGflops: prefill,
                      moePrefillPackedGflops: prefillPacked)
    }

    /// An `n`-cubed product over the kernel threads exactly as `Linear` runs
    /// it, on in-cache weights: OpenBLAS sgemm on Float32 weights (`.exact`),
    /// or oneDNN on Float32 or BF16 weights. The compute ceilings.
    public static func peakGemm(n: Int, options: ComputeOptions, minSeconds: Double) -> Double {
        let a = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
        let b = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
        let b16 = UnsafeMutablePointer<UInt16>.allocate(capacity: n * n)
        let c = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
        defer { a.deallocate(); b.deallocate(); b16.deallocate(); c.deallocate() }
        a.initialize(repeating: 0.5, count: n * n)
        b.initialize(repeating: 0.25, count: n * n)
        narrowToBF16(b, count: n * n, into: b16)
        let m = options.dtype == .bfloat16
            ? Matrix(rows: n, cols: n, dtype: .bf16, data: UnsafeRawPointer(b16))
            : Matrix(rows: n, cols: n, dtype: .f32, data: UnsafeRawPointer(b))
        let ctx = GemmContext(options: options)
        let s = measure(minSeconds: minSeconds) {
            Linear.apply(m, x: a, tokens: n, y: c, ctx: ctx)
        }
        return 2 * Double(n * n * n) / s / 1e9
    }

    /// Weight GB/s of one token through an MXFP4 matrix of about `bytes`
    /// (random codes, scales around 2^-4 as in gpt-oss's experts).
    static func mxfp4MatVec(bytes: Int, cols: Int, options: ComputeOptions, minSeconds: Double) -> Double {
        let rows = bytes / (cols / 2 + cols / 32)
        let blocks = UnsafeMutablePointer<UInt8>.allocate(capacity: rows * cols / 2)
        let scales = UnsafeMutablePointer<UInt8>.allocate(capacity: rows * cols / 32)
        let x = UnsafeMutablePointer<Float>.allocate(capacity: cols)
        let y = UnsafeMutablePointer<Float>.allocate(capacity: rows)
        defer { blocks.deallocate(); scales.deallocate(); x.deallocate(); y.deallocate() }
        var rng = Xoshiro256(seed: 2)
        for i in 0..<(rows * cols / 2) { blocks[i] = UInt8(truncatingIfNeeded: rng.next()) }
        for i in 0..<(rows * cols / 32) { scales[i] = UInt8(118 + rng.next() % 8) }
        x.initialize(repeating: 0.01, count: cols)
        let m = Matrix(rows: rows, cols: cols, dtype: .mxfp4, data: UnsafeRawPointer(blocks), scales: UnsafeRawPointer(scales))
        let ctx = GemmContext(options: options)
        let seconds = measure(minSeconds: minSeconds) { Linear.apply(m, x: x, tokens: 1, y: y, ctx: ctx) }
        return Double(m.byteCount) / seconds / 1e9
    }

    static func randomBF16(count: Int) -> UnsafeMutablePointer<UInt16> {
        let p = UnsafeMutablePointer<UInt16>.allocate(capacity: count)
        var rng = Xoshiro256(seed: 1)
        for i in 0..<count { p[i] = narrowToBF16(rng.nextUnitFloat() - 0.5) }
        return p
    }
}
