import Foundation
import Testing
@testable import SwitchyardModel

/// Prefill-chunk attention (the GEMM path) against a Double reference and
/// against the per-token path on the same tokens: paged keys in a shuffled
/// block table, earlier context in the cache, two query blocks, grouped
/// heads, and a sliding window with sinks.
@Suite struct PagedAttentionTests {
    struct Case: CustomStringConvertible, Sendable {
        let window: Int
        let sinks: Bool
        var heads = 8, kvHeads = 2, d = 64
        var description: String { "\(heads)/\(kvHeads) heads of \(d), window \(window)\(sinks ? ", sinks" : "")" }
    }

    /// The last case has six query heads per kv head and 80-wide heads: the
    /// vector kernel's second group of heads and a partial 64-column chunk.
    static let cases = [Case(window: 0, sinks: false), Case(window: 40, sinks: true),
                        Case(window: 0, sinks: true, heads: 12, kvHeads: 2, d: 80)]
    static let blockSize = 16
    static let past = 10, count = 150

    /// Runs one layer of attention for `count` new tokens after `past` cached
    /// ones, by the chunk path (`compute`) and by the per-token path, and the
    /// Double reference on the values the products see (queries, keys and
    /// values as rounded in bfloat16 mode). Returns (chunk, perToken, reference).
    func run(_ c: Case, bf16: Bool, bf16Cache: Bool = false, vectorKernel: Bool = PagedAttention.vectorKernel)
        -> (chunk: [Float], perToken: [Float], reference: [Double]) {
        let (h, kvh, d, bs) = (c.heads, c.kvHeads, c.d, Self.blockSize)
        let total = Self.past + Self.count
        let blocks = (total + bs - 1) / bs
        let cache = PagedKVCache(numLayers: 1, numBlocks: blocks + 2, blockSize: bs, numKVHeads: kvh, headDim: d,
                                 storesBF16: bf16Cache)
        let table = (0..<Int32(blocks)).reversed().map { $0 + 2 }
        var rng = Xoshiro256(seed: 11)
        func random(_ n: Int, _ scale: Float) -> [Float] { (0..<n).map { _ in (rng.nextUnitFloat() * 2 - 1) * scale } }
        let k = random(total * kvh * d, 1), v = random(total * kvh * d, 1)
        var q = random(Self.count * h * d, 1)
        let sinkValues = random(h, 2)
        // The earlier context, then the chunk, stored as a forward stores them.
        var pastBatch = ForwardBatch()
        pastBatch.append(tokens: [Int32](repeating: 0, count: Self.past), startPosition: 0, blockTable: table, logits: .none)
        PagedAttention.store(cache: cache, layer: 0, batch: pastBatch, k: k, v: v, roundingToBF16: bf16)
        var batch = ForwardBatch()
        batch.append(tokens: [Int32](repeating: 0, count: Self.count), startPosition: Self.past, blockTable: table, logits: .none)
        let rowSize = kvh * d
        k.withUnsafeBufferPointer { kp in
            v.withUnsafeBufferPointer { vp in
                PagedAttention.store(cache: cache, layer: 0, batch: batch, k: kp.baseAddress! + Self.past * rowSize,
                                     v: vp.baseAddress! + Self.past * rowSize, roundingToBF16: bf16)
            }
        }
        let positions = (0..<Self.count).map { Int32(Self.past + $0) }
        let sequences = [Int32](repeating: 0, count: Self.count), starts: [Int32] = [0]
        let tokens = (0..<Int32(Self.count)).map { $0 }
        var chunk = [Float](repeating: .nan, count: Self.count * h * d)
        var perToken = chunk
        sinkValues.withUnsafeBufferPointer { sp in
            var shape = PagedAttention.Shape(numHeads: h, valueDim: d, scale: 1 / Float(d).squareRoot(), window: c.window,
                                             roundsToBF16: bf16)
            if c.sinks { shape.sinks = sp.baseAddress }
            positions.withUnsafeBufferPointer { pp in
                sequences.withUnsafeBufferPointer { sq in
                    table.withUnsafeBufferPointer { tp in
                        starts.withUnsafeBufferPointer { st in
                            let index = PagedAttention.BatchIndex(tokenSequence: sq.baseAddress!, tokenPosition: pp.baseAddress!,
                                                                  tables: tp.baseAddress!, tableStart: st.baseAddress!)
                            PagedAttention.compute(cache: cache, layer: 0, batch: batch, shape: shape, q: &q, out: &chunk,
                                                   index: index, scratch: ScratchBuffer(), tokenList: IndexBuffer())
                            // `compute` rounded q in place in bfloat16 mode, as the forward does.
                            PagedAttention.computePerToken(cache: cache, layer: 0, batch: batch, shape: shape, q: q, out: &perToken,
                                                           index: index, tokens: tokens, count: Self.count, scratch: ScratchBuffer(),
                                                           useVectorKernel: vectorKernel)
                        }
                    }
                }
            }
        }
        // The reference reads the cache, so it sees the keys and values as stored.
        var reference = [Double](repeating: 0, count: Self.count * h * d)
        let scale = 1 / Double(d).squareRoot()
        for t in 0..<Self.count {
            let position = Self.past + t
            let first = c.window > 0 ? max(0, position - c.window + 1) : 0
            for head in 0..<h {
                let g = head / (h / kvh)
                func cached(_ values: Bool, _ j: Int, _ i: Int) -> Double {
                    var x: Float = 0
                    cache.read(values: values, offset: cache.offset(layer: 0, block: Int(table[j / bs]), head: g) + (j % bs) * d + i,
                               count: 1, into: &x)
                    return Double(x)
                }
                var scores = (first...position).map { j in
                    (0..<d).reduce(0.0) { $0 + Double(q[(t * h + head) * d + $1]) * cached(false, j, $1) } * scale
                }
                let m = max(scores.max()!, c.sinks ? Double(sinkValues[head]) : -.infinity)
                scores = scores.map { exp($0 - m) }
                let sum = scores.reduce(0, +) + (c.sinks ? exp(Double(sinkValues[head]) - m) : 0)
                for (n, j) in (first...position).enumerated() {
                    for i in 0..<d { reference[(t * h + head) * d + i] += scores[n] / sum * cached(true, j, i) }
                }
            }
        }
        return (chunk, perToken, reference)
    }

    func worst(_ a: [Float], _ b: [Double]) -> Double {
        zip(a, b).map { abs(Double($0) - $1) }.max() ?? .infinity
    }

    @Test(arguments: PagedAttentionTests.cases)
    func float32ChunkAndPerTokenPathsMatchTheReference(_ c: Case) {
        let (chunk, perToken, reference) = run(c, bf16: false)
        #expect(worst(chunk, reference) < 1e-5, "chunk path")
        #expect(worst(perToken, reference) < 1e-5, "per-token path")
    }

    /// In bfloat16 mode the chunk path multiplies through oneDNN's BF16
    /// matmul: it must agree with the per-token path (same rounded values;
    /// summation order can move a weight across a BF16 rounding boundary,
    /// one step of 2^-8 of a weight of at most ~1/40 here times |v| <= 1:
    /// measured 6e-5) and with the Double reference within what rounding
    /// the attention weights to BF16 costs (2^-9 relative each).
    @Test(.enabled(if: OneDNN.hasNativeBF16, "no native BF16 matmul on this CPU"), arguments: PagedAttentionTests.cases)
    func bfloat16ChunkPathUsesOneDNNAndAgreesWithThePerTokenPath(_ c: Case) {
        let failures = OneDNN.failureCount
        let (chunk, perToken, reference) = run(c, bf16: true)
        #expect(OneDNN.failureCount == failures, "the chunk took the Float32 fallback")
        let paths = zip(chunk, perToken).map { abs($0 - $1) }.max()!
        #expect(paths < 3e-4, "chunk vs per-token path: \(paths)")
        let error = worst(chunk, reference)
        #expect(error < 4e-3, "vs reference: \(error)")
        #expect(error > 0)
    }

    /// bfloat16 mode's BF16 KV cache holds the values a Float32 cache holds
    /// in that mode (keys and values rounded to BF16), so both paths give
    /// the same bits from either storage.
    @Test(.enabled(if: OneDNN.hasNativeBF16, "no native BF16 matmul on this CPU"), arguments: PagedAttentionTests.cases)
    func bf16CacheGivesTheFloat32CachesResultsBitForBit(_ c: Case) {
        let wide = run(c, bf16: true, bf16Cache: false)
        let narrow = run(c, bf16: true, bf16Cache: true)
        #expect(wide.chunk == narrow.chunk)
        #expect(wide.perToken == narrow.perToken)
        #expect(wide.reference == narrow.reference)
    }

    @Test func bf16CacheTakesHalfTheMemory() {
        let wide = PagedKVCache(numLayers: 2, numBlocks: 3, blockSize: 4, numKVHeads: 2, headDim: 8)
        let narrow = PagedKVCache(numLayers: 2, numBlocks: 3, blockSize: 4, numKVHeads: 2, headDim: 8, storesBF16: true)
        #expect(wide.totalBytes == 2 * 2 * 3 * 4 * 2 * 8 * 4)
        #expect(narrow.totalBytes * 2 == wide.totalBytes)
    }

    /// The AVX-512 decode kernel against the portable loops it replaces:
    /// the same values, only the score dot products summed in another order.
    @Test(.enabled(if: PagedAttention.vectorKernel, "no AVX-512 on this CPU"), arguments: PagedAttentionTests.cases)
    func vectorDecodeKernelMatchesThePortableLoops(_ c: Case) {
        for bf16 in [false, true] where !bf16 || OneDNN.hasNativeBF16 {
            let kernel = run(c, bf16: bf16, bf16Cache: bf16, vectorKernel: true).perToken
            let portable = run(c, bf16: bf16, bf16Cache: bf16, vectorKernel: false).perToken
            let worst = zip(kernel, portable).map { abs($0 - $1) }.max()!
            // bfloat16 mode rounds the attention weights, so an order change
            // can move one across a rounding boundary (see above).
            #expect(worst < (bf16 ? 3e-4 : 1e-6), "bf16 \(bf16): \(worst)")
        }
    }
}
