import CBLAS
import Foundation

/// The kernel benchmark behind `switchyard kernel-bench`: each kernel is
/// measured next to its ceiling in the same run (OpenBLAS peak sgemm for
/// compute, a plain streaming read for bandwidth), since absolute numbers on
/// a shared machine mean little.
public struct KernelBenchmark {
    public struct Options: Sendable {
        /// One expert projection: `[rows, cols]` BF16 (the `bench` preset's size).
        public var expertRows = 512
        public var expertCols = 512
        /// Bytes of distinct experts cycled through, so each call reads its
        /// weights from DRAM as a real MoE layer does.
        public var expertPoolBytes = 128 << 20
        public var tokenCounts = [1, 2, 4, 8, 16, 32, 64, 128, 256]
        public var matVecBytes = 256 << 20
        public var peakGemmSize = 1024
        public var minSeconds = 0.5
        public init() {}
    }

    public struct Result: Codable, Sendable {
        public var threads: Int
        public var gemmMinTokens: Int
        public var peakSgemmGflops: Double
        public var streamingReadGBs: Double
        /// BF16 matrix-vector product over a matrix far beyond the caches.
        public var bf16MatVecGBs: Double
        public var expertProjection: [Row]
        /// The decode MoE path: `moeExperts` cold experts (gate, up, down), one
        /// token each, through `MoEBlock.runSmallExperts`; weight GB/s.
        public var moeDecodeExperts: Int
        public var moeDecodeGBs: Double

        public struct Row: Codable, Sendable {
            public var tokens: Int
            /// The direct 16-bit kernel.
            public var directGflops: Double
            public var directWeightGBs: Double
            /// Widen to Float32 + OpenBLAS sgemm.
            public var sgemmGflops: Double
            public var sgemmWeightGBs: Double
            /// What `Linear` picks at this token count.
            public var chosen: String
        }
    }

    public static func run(_ o: Options) -> Result {
        let peak = peakSgemm(n: o.peakGemmSize, minSeconds: o.minSeconds)
        let stream = MemoryBandwidth.streamingRead(bytes: o.matVecBytes, minSeconds: o.minSeconds)
        let scratch = ScratchBuffer()

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
            Linear.apply(bm, x: xv, tokens: 1, y: yv, scratch: scratch)
        }

        // Expert projections, cycling through a pool of distinct experts.
        let perExpert = o.expertRows * o.expertCols
        let experts = max(1, o.expertPoolBytes / (perExpert * 2))
        let pool = randomBF16(count: experts * perExpert)
        defer { pool.deallocate() }
        var table: [Result.Row] = []
        let maxTokens = o.tokenCounts.max() ?? 1
        let x = UnsafeMutablePointer<Float>.allocate(capacity: maxTokens * o.expertCols)
        let y = UnsafeMutablePointer<Float>.allocate(capacity: maxTokens * o.expertRows)
        defer { x.deallocate(); y.deallocate() }
        x.initialize(repeating: 0.01, count: maxTokens * o.expertCols)
        for n in o.tokenCounts {
            var next = 0
            func expert() -> Matrix {
                next = (next + 1) % experts
                return Matrix(rows: o.expertRows, cols: o.expertCols, dtype: .bf16,
                              data: UnsafeRawPointer(pool + next * perExpert))
            }
            nonisolated(unsafe) let xs = x, ys = y
            // Time a batch of experts per sample so each sample is long enough to time.
            let batch = 16
            let direct = measure(minSeconds: o.minSeconds) {
                for _ in 0..<batch {
                    let m = expert()
                    Parallel.forRanges(m.rows, minChunk: 16) { r in
                        MatVec.compute(m, rows: r, x: xs, ldx: m.cols, tokens: n, y: ys, ldy: m.rows)
                    }
                }
            } / Double(batch)
            let viaSgemm = measure(minSeconds: o.minSeconds) {
                for _ in 0..<batch {
                    let m = expert()
                    Linear.applyWidenedGemm(m, x: xs, ldx: m.cols, tokens: n, y: ys, ldy: m.rows, scratch: scratch)
                }
            } / Double(batch)
            let flops = 2 * Double(n * perExpert)
            let bytes = Double(perExpert * 2)
            table.append(.init(tokens: n, directGflops: flops / direct / 1e9, directWeightGBs: bytes / direct / 1e9,
                               sgemmGflops: flops / viaSgemm / 1e9, sgemmWeightGBs: bytes / viaSgemm / 1e9,
                               chosen: n >= Linear.gemmMinTokens ? "sgemm" : "direct"))
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
        let gathered = UnsafeMutablePointer<Float>.allocate(capacity: k * o.expertCols)
        let gateOut = UnsafeMutablePointer<Float>.allocate(capacity: k * o.expertRows)
        let upOut = UnsafeMutablePointer<Float>.allocate(capacity: k * o.expertRows)
        let downOut = UnsafeMutablePointer<Float>.allocate(capacity: k * o.expertCols)
        defer { gathered.deallocate(); gateOut.deallocate(); upOut.deallocate(); downOut.deallocate() }
        gathered.initialize(repeating: 0.01, count: k * o.expertCols)
        let layers = 16
        let moeSeconds = measure(minSeconds: o.minSeconds) {
            for _ in 0..<layers {
                let ws = (0..<k).map { _ in expertWeights() }
                let moe = MoEWeights(router: ws[0].gate, experts: ws, shared: nil, sharedGate: nil)
                MoEBlock.runSmallExperts((0..<k).map { ($0, $0, 1) }, weights: moe, h: o.expertCols, inter: o.expertRows,
                                         gathered: gathered, gate: gateOut, up: upOut, down: downOut)
            }
        } / Double(layers)
        return Result(threads: Parallel.threadCount, gemmMinTokens: Linear.gemmMinTokens, peakSgemmGflops: peak,
                      streamingReadGBs: stream / 1e9, bf16MatVecGBs: Double(bm.byteCount) / mvSeconds / 1e9,
                      expertProjection: table, moeDecodeExperts: k,
                      moeDecodeGBs: Double(k * 3 * perExpert * 2) / moeSeconds / 1e9)
    }

    /// OpenBLAS sgemm on square Float32 matrices, split over the kernel
    /// threads exactly as `Linear` runs it: the compute ceiling.
    public static func peakSgemm(n: Int, minSeconds: Double) -> Double {
        let a = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
        let b = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
        let c = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
        defer { a.deallocate(); b.deallocate(); c.deallocate() }
        a.initialize(repeating: 0.5, count: n * n)
        b.initialize(repeating: 0.25, count: n * n)
        let m = Matrix(rows: n, cols: n, dtype: .f32, data: UnsafeRawPointer(b))
        let scratch = ScratchBuffer()
        let s = measure(minSeconds: minSeconds) {
            Linear.apply(m, x: a, tokens: n, y: c, scratch: scratch)
        }
        return 2 * Double(n * n * n) / s / 1e9
    }

    static func randomBF16(count: Int) -> UnsafeMutablePointer<UInt16> {
        let p = UnsafeMutablePointer<UInt16>.allocate(capacity: count)
        var rng = Xoshiro256(seed: 1)
        for i in 0..<count { p[i] = narrowToBF16(rng.nextUnitFloat() - 0.5) }
        return p
    }
}
