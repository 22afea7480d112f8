import Foundation

/// Whole-model speed behind `switchyard forward-bench`: decode tokens/s at
/// several batch sizes and prefill tokens/s, next to the decode roofline
/// (bytes one batch-1 decode token reads — active weights plus the KV cache
/// of its context — ÷ streaming read bandwidth measured in the same run).
public struct ForwardBenchmark {
    public struct Options: Sendable {
        public var batchSizes = [1, 16]
        public var context = 64
        public var decodeSteps = 32
        public var prefillLength = 512
        public var seed: UInt64 = 0
        public var bandwidthBytes = 256 << 20
        public init() {}
    }

    public struct Result: Codable, Sendable {
        public var threads: Int
        /// The model's `ComputeOptions` during the run.
        public var gemm: String
        public var dtype: String
        public var streamingReadGBs: Double
        /// Weight bytes one decode token reads at batch 1 (attention, router,
        /// its top-k experts, shared/dense MLPs, LM head row-set).
        public var activeWeightBytesPerToken: Int
        /// KV cache bytes per cached token (all layers), and what a batch-1
        /// decode step reads from the cache on average over the timed steps.
        public var kvCacheBytesPerToken: Int
        public var kvCacheBytesPerDecodeToken: Int
        public var rooflineDecodeTokensPerSecond: Double
        public var decode: [Row]
        public var prefillTokens: Int
        public var prefillTokensPerSecond: Double
        public var expertWeightBytesPerPrefillToken: Double
        /// Time by phase of the timed prefill.
        public var prefillProfile: ForwardProfile

        public struct Row: Codable, Sendable {
            public var batch: Int
            public var tokensPerSecond: Double
            public var msPerIteration: Double
            /// Against the best streaming read sampled in the run (before and
            /// after the decodes): a lower bound unless the bandwidth during
            /// the decode beat every sample.
            public var fractionOfRoofline: Double?
            /// Batch 1: each decode step against a one-pass streaming read
            /// taken right after it (the roofline time of every step summed
            /// over the steps' time), so a step is judged by the bandwidth
            /// the machine had at that moment.
            public var fractionOfPairedRoofline: Double?
            public var expertWeightBytesPerToken: Double
            /// Shared experts' bytes per token, apart from the routed ones.
            public var sharedExpertWeightBytesPerToken: Double
            /// Time per phase over the timed iterations.
            public var profile: ForwardProfile
        }
    }

    /// Active weight bytes of one decode token at batch 1.
    public static func activeBytesPerToken(_ w: ModelWeights) -> Int {
        var bytes = w.lmHead.byteCount + w.embedding.cols * w.embedding.dtype.byteSize
        for l in w.layers {
            bytes += l.attention.byteCount
            switch l.feedForward {
            case .dense(let mlp): bytes += mlp.byteCount
            case .moe(let moe):
                bytes += moe.router.byteCount
                // Mean expert size times k (experts of one layer are equal-sized).
                bytes += (moe.experts.first?.byteCount ?? 0) * w.config.numExpertsPerToken
                if let s = moe.shared { bytes += s.byteCount + (moe.sharedGate?.byteCount ?? 0) }
            }
        }
        return bytes
    }

    /// Streaming-read bandwidth over the model's own mapped weights (`file`,
    /// the largest safetensors file, up to `bytes`).
    static func weightStream(_ file: MappedFile, bytes: Int, minSeconds: Double = 0.3) -> Double {
        MemoryBandwidth.streamingRead(file.base, bytes: min(bytes, file.size) & ~255, minSeconds: minSeconds)
    }

    /// Reads every mapped weight file once, so no timed step is the first to
    /// touch a page (after a build or another large job the kernel may have
    /// dropped them, and a page fault to disk is not a decode's cost).
    static func touchWeights(_ model: Transformer) {
        var seen = Set<ObjectIdentifier>()
        for file in model.weights.checkpoint.tensors.values.map(\.file) where seen.insert(ObjectIdentifier(file)).inserted {
            _ = MemoryBandwidth.streamingRead(file.base, bytes: file.size & ~255, minSeconds: 0)
        }
    }

    public static func run(model: Transformer, _ o: Options) throws -> Result {
        let c = model.config
        let kvElement = PagedKVCache.elementBytes(config: c, compute: model.compute)
        touchWeights(model)
        let largest = model.weights.checkpoint.tensors.values.map(\.file).max { $0.size < $1.size }!
        // The machine's bandwidth drifts (a shared VM): sample it before,
        // between and after the decode runs and keep the best, so the
        // fraction of roofline is a lower bound unless a decode ran faster
        // than every sample; the paired fraction follows the drift.
        var stream = weightStream(largest, bytes: o.bandwidthBytes)
        let active = activeBytesPerToken(model.weights)
        var rng = Xoshiro256(seed: o.seed)
        func randomTokens(_ n: Int) -> [Int32] { (0..<n).map { _ in Int32(rng.next() % UInt64(c.vocabSize)) } }
        let blockSize = 16
        var rows: [Result.Row] = []
        for b in o.batchSizes {
            let perSeq = (o.context + o.decodeSteps + 1 + blockSize - 1) / blockSize
            let cache = PagedKVCache(config: c, numBlocks: perSeq * b, blockSize: blockSize, compute: model.compute)
            let tables = (0..<b).map { s in (0..<perSeq).map { Int32(s * perSeq + $0) } }
            var prefill = ForwardBatch()
            for s in 0..<b { prefill.append(tokens: randomTokens(o.context), startPosition: 0, blockTable: tables[s], logits: .last) }
            _ = try model.forward(prefill, cache: cache)
            var next = randomTokens(b)
            model.counters.reset()
            model.resetProfile()
            var seconds = 0.0, rooflineSeconds = 0.0
            for step in 0..<o.decodeSteps {
                var batch = ForwardBatch()
                for s in 0..<b { batch.append(tokens: [next[s]], startPosition: o.context + step, blockTable: tables[s], logits: .last) }
                let t0 = monotonicSeconds()
                let logits = try model.forward(batch, cache: cache)
                for s in 0..<b { next[s] = Int32(Sampler.argmax(logits.row(s))) }
                seconds += monotonicSeconds() - t0
                if b == 1 {
                    let now = weightStream(largest, bytes: o.bandwidthBytes, minSeconds: 0)
                    rooflineSeconds += Double(active + c.kvCacheBytesRead(position: o.context + step, elementBytes: kvElement)) / now
                }
            }
            stream = max(stream, weightStream(largest, bytes: o.bandwidthBytes))
            let tps = Double(b * o.decodeSteps) / seconds
            rows.append(.init(batch: b, tokensPerSecond: tps, msPerIteration: seconds / Double(o.decodeSteps) * 1000,
                              fractionOfRoofline: b == 1 ? tps / (stream / Double(active)) : nil,
                              fractionOfPairedRoofline: b == 1 ? rooflineSeconds / seconds : nil,
                              expertWeightBytesPerToken: Double(model.counters.expertWeightBytesRead) / Double(b * o.decodeSteps),
                              sharedExpertWeightBytesPerToken: Double(model.counters.sharedExpertWeightBytesRead) / Double(b * o.decodeSteps),
                              profile: model.profile))
        }
        let blocks = (o.prefillLength + blockSize - 1) / blockSize
        let cache = PagedKVCache(config: c, numBlocks: blocks, blockSize: blockSize, compute: model.compute)
        var batch = ForwardBatch()
        batch.append(tokens: randomTokens(o.prefillLength), startPosition: 0,
                     blockTable: (0..<Int32(blocks)).map { $0 }, logits: .last)
        // A decode step at position p reads the cache of positions 0...p
        // (sliding-window layers: the window), averaged over the timed steps.
        let kvRead = (0..<o.decodeSteps).reduce(0) { $0 + c.kvCacheBytesRead(position: o.context + $1, elementBytes: kvElement) } / max(1, o.decodeSteps)
        // One untimed prefill first: it builds the GEMM backend's primitives
        // for these shapes, as a server's first requests would.
        _ = try model.forward(batch, cache: cache)
        model.counters.reset()
        model.resetProfile()
        let t0 = monotonicSeconds()
        _ = try model.forward(batch, cache: cache)
        let prefillSeconds = monotonicSeconds() - t0
        let prefillProfile = model.profile
        stream = max(stream, weightStream(largest, bytes: o.bandwidthBytes))
        // Recompute batch-1 fractions against the best bandwidth seen.
        let roofline = stream / Double(active + kvRead)
        for i in rows.indices where rows[i].batch == 1 { rows[i].fractionOfRoofline = rows[i].tokensPerSecond / roofline }
        return Result(threads: Parallel.threadCount, gemm: model.compute.gemm.rawValue, dtype: model.compute.dtype.rawValue, streamingReadGBs: stream / 1e9, activeWeightBytesPerToken: active,
                      kvCacheBytesPerToken: c.kvCacheBytesPerToken(elementBytes: kvElement), kvCacheBytesPerDecodeToken: kvRead,
                      rooflineDecodeTokensPerSecond: roofline, decode: rows, prefillTokens: o.prefillLength,
                      prefillTokensPerSecond: Double(o.prefillLength) / prefillSeconds,
                      expertWeightBytesPerPrefillToken: Double(model.counters.expertWeightBytesRead) / Double(o.prefillLength),
                      prefillProfile: prefillProfile)
    }
}
