import Foundation
import SwitchyardModel

/// The device's copy of the paged KV cache (BF16, one allocation per layer,
/// as many blocks as the CPU's cache so block tables mean the same on both)
/// and the scratch attention uses.
struct DeviceAttention {
    /// The cache the copy mirrors; a batch of another cache starts a fresh copy.
    var cache: ObjectIdentifier?
    var numBlocks = 0, blockSize = 0
    /// `[layer]`: keys and values, `[block * blockSize + offset][kvHead][headDim]`.
    var keys: [UInt64] = [], values: [UInt64] = []
    /// Pinned host and device buffers, by `Buffer`.
    var buffers = [DeviceScratch](repeating: DeviceScratch(), count: Buffer.allCases.count)
    /// Whether attention may run here (`attention` option), the layers it
    /// computed (`wholeLayers` of them with their projections, in one round
    /// trip), and why it stopped (nil: it has not).
    var enabled = true
    /// Keys per piece of the values' sums: a thread's serial share (tests
    /// make it small, so rows span many pieces).
    var valuePiece = 128
    /// Threads of a softmax row's block (a power of two, at most 256; tests
    /// make it small, so each thread takes several keys).
    var softmaxThreads = 256
    /// Threads of a norm's block (a power of two, at most 256; tests make
    /// it small, so each thread takes several values).
    var normThreads = 256
    /// Bytes of scores and values' pieces per chunk of tokens (tests make
    /// it small, so a batch takes several chunks).
    var chunkBytes = 64 << 20
    var layers = 0, wholeLayers = 0
    var failure: String?
    /// A sequence with at least this many tokens in a batch takes the
    /// products of `CUDAAttentionGEMM.swift` (0: none does), and how many
    /// have; its keys and values gathered contiguous, the scores and their
    /// BF16 weights.
    var gemmMinTokens = 16, gemmSequences = 0
    /// The batch index and the sequences' cache slots as last copied to
    /// the device: every layer of a forward has the same, so only a
    /// forward's first layer copies them (`uploadOnce`).
    var index = UploadedInts(), sequenceSlotInts = UploadedInts()
    var sequenceKeys = DeviceScratch(), sequenceValues = DeviceScratch(), gemmScores = DeviceScratch(), weights16 = DeviceScratch()

    /// Int32s last copied into one of the buffers, into which allocation
    /// (its address and size: a buffer only grows, so a new one at a freed
    /// one's address still differs), and how many copies were made;
    /// `scratch` is where the next values are built for comparing.
    struct UploadedInts {
        var values: [Int32] = [], scratch: [Int32] = [], into = (device: UInt64(0), bytes: 0), copies = 0
    }

    enum Buffer: Int, CaseIterable {
        case queries, keys, values, index, output, scores, valuePieces
        /// `attentionLayer`'s: its input rows and RoPE angles, the fused
        /// q/k/v rows, keys and values back for the CPU, the attention
        /// output as BF16, and `o_proj`'s output.
        case layerInput, angles, qkvRows, keyValueRows, outputBF16, projected
        /// `moeLayerFront`'s: the residual rows and the normed rows.
        case residual, normedRows
        /// `latentAttentionLayer`'s: `q_a_proj`'s rows (Float32, BF16), the
        /// absorbed queries, the values per head (Float32, BF16).
        case latentQueryA, latentQueryA16, latentQueries, latentValues, latentValues16
        /// The products' cache slots, position by position, per sequence.
        case sequenceSlots
        /// `residualLogits`': the rows that get logits.
        case logitsRows

        /// Buffers the host never touches (`deviceBuffer`).
        var deviceOnly: Bool {
            switch self {
            case .scores, .valuePieces, .qkvRows, .outputBF16, .normedRows, .latentQueryA, .latentQueryA16, .latentQueries, .latentValues,
                 .latentValues16: true
            default: false
            }
        }
    }
}

/// Attention on the GPU (`DenseOffload.attention`): the CPU stores every
/// key and value in its own cache first, so the device keeps a copy it
/// fills from the same rows, and the CPU can take over whenever the device
/// cannot (no room for the copy, a CUDA error): from then on it does,
/// for good, since the device's copy would miss what it skipped.
///
/// Kernels without shared memory or barriers (so the software device
/// runs them as they are): the batch's keys and values scattered into
/// their cache slots; one score per (token, head, earlier position); the
/// softmax one block per (token, head), its max and sum by reductions in
/// shared memory, each weight rounded to BF16 as the CPU rounds; the
/// outputs in two, per piece of `valuePiece` keys and then the pieces' sum
/// per (token, head, dimension), so no thread walks a whole context. Queries, keys and values travel as BF16. Tokens go in
/// chunks so the scores and the values' pieces fit 64 MiB.
extension CUDAAccelerator {
    /// The small kernels `launch` starts, in `kernels`' order:
    /// attention's here, `attentionLayer`'s steps before and after
    /// it (`CUDAAttentionLayer.swift`), the expert rows' gather and
    /// combine (`CUDAExpertRoutes.swift`), routing (`CUDARouting.swift`) and
    /// latent attention's query (`CUDALatentAttention.swift`).
    enum DeviceKernel: Int, CaseIterable {
        case kvStore, scores, softmax, valuesPieces, valuesSum, addBias, rmsNorm, clamp, rope, splitQKV,
             roundBF16, gatherRows, combineRows, routeTokens, latentQueryRope, addLayerOutput

        /// Each kernel's name in the source and the parameters it declares,
        /// the count last (checked against the PTX in the tests): a launch
        /// passing another number is refused, since a kernel would read a
        /// missing one as garbage. Made once: launches read it.
        private static let table: [(name: String, parameters: Int)] = [
            ("kv_store", 7), ("attn_scores", 17), ("attn_softmax_rows", 11), ("values_pieces", 18), ("values_sum", 8), ("add_bias", 4),
            ("rms_norm_rows", 13), ("clamp_values", 3), ("rope_rotate", 11), ("split_qkv", 9), ("round_bf16", 3), ("gather_rows_bf16", 5),
            ("combine_rows", 7), ("route_tokens", 13), ("latent_query_rope", 9), ("add_layer_output", 8),
        ]

        var name: String { Self.table[rawValue].name }
        var parameters: Int { Self.table[rawValue].parameters }
    }

    static let kernelNames = DeviceKernel.allCases.map(\.name)

    static let attentionKernelSource = """

    __device__ float bf16_value(unsigned short x) { return __uint_as_float(((unsigned int)x) << 16); }

    // A query, key or value element: BF16, or (f32: latent attention's
    // rows, which the CPU keeps in Float32) a float stored as two halves.
    __device__ float element(const unsigned short* p, long long i, int f32) {
        return f32 ? ((const float*)p)[i] : bf16_value(p[i]);
    }

    __device__ int first_key(int p, int window) { return window > 0 && p - window + 1 > 0 ? p - window + 1 : 0; }

    extern "C" __global__ void kv_store(const unsigned short* k, const unsigned short* v, const int* slots, unsigned short* ck,
                                        unsigned short* cv, int row, long long count) {
        long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
        if (i >= count) return;
        long long t = i / row, e = i - t * row;
        long long dst = (long long)slots[t] * row + e;
        ck[dst] = k[i];
        // Latent attention's cache is its keys alone (values: the same rows).
        if (cv != ck) cv[dst] = v[i];
    }

    extern "C" __global__ void attn_scores(const unsigned short* q, const unsigned short* ck, const int* seq_of, const int* pos_of,
                                           const int* tables, const int* table_start, float* scores, int heads, int kv_heads,
                                           int d, int bs, int max_ctx, float scale, int t0, int window, int f32, long long count) {
        long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
        if (i >= count) return;
        long long th = i / max_ctx;
        int j = (int)(i - th * max_ctx), h = (int)(th % heads), t = t0 + (int)(th / heads);
        if (j > pos_of[t] || j < first_key(pos_of[t], window)) return;
        long long slot = (long long)tables[table_start[seq_of[t]] + j / bs] * bs + j % bs;
        long long kr = (slot * kv_heads + h / (heads / kv_heads)) * d, qr = ((long long)t * heads + h) * d;
        float s = 0.0f;
        for (int e = 0; e < d; e++) s += element(q, qr + e, f32) * element(ck, kr + e, f32);
        scores[i] = s * scale;
    }

    __device__ float minus_infinity() { return __uint_as_float(0xFF800000u); }

    // A tree over the block's values in `red` (blockDim.x a power of two):
    // the max, or the sum; every thread gets the result. The softmax below
    // and the norm of CUDAAttentionLayer.swift (compiled after this) use it.
    __device__ float block_reduce(float* red, float v, int is_max) {
        red[threadIdx.x] = v;
        __syncthreads();
        for (int half = blockDim.x / 2; half > 0; half /= 2) {
            if (threadIdx.x < half) red[threadIdx.x] = is_max ? fmaxf(red[threadIdx.x], red[threadIdx.x + half])
                                                                : red[threadIdx.x] + red[threadIdx.x + half];
            __syncthreads();
        }
        float result = red[0];
        __syncthreads();  // all have read it before `red` is used again
        return result;
    }

    // One block per (token, head): the row's max and sum of exponentials
    // by block reductions (with the head's sink), then each weight, rounded
    // to BF16 as the CPU rounds; with `clear`, zeros outside the token's
    // keys (the row then feeds a product over the whole row).
    extern "C" __global__ void attn_softmax_rows(float* scores, const int* pos_of, const float* sinks, int heads, int max_ctx, int t0,
                                                 int round_bf16, int window, int has_sinks, int clear, long long count) {
        long long th = blockIdx.x;
        if (th >= count) return;
        __shared__ float red[256];
        int p = pos_of[t0 + (int)(th / heads)], lo = first_key(p, window);
        float* s = scores + th * max_ctx;
        float m = minus_infinity();
        for (int j = lo + threadIdx.x; j <= p; j += blockDim.x) m = fmaxf(m, s[j]);
        m = block_reduce(red, m, 1);
        float sink = has_sinks ? sinks[th % heads] : 0.0f;
        if (has_sinks) m = fmaxf(m, sink);
        float sum = 0.0f;
        for (int j = lo + threadIdx.x; j <= p; j += blockDim.x) { float e = expf(s[j] - m); s[j] = e; sum += e; }
        sum = block_reduce(red, sum, 0) + (has_sinks ? expf(sink - m) : 0.0f);
        float inv = 1.0f / sum;
        for (int j = lo + threadIdx.x; j <= p; j += blockDim.x) {
            float w = s[j] * inv;
            if (round_bf16) {
                unsigned int bits = __float_as_uint(w);
                bits += 0x7FFFu + ((bits >> 16) & 1u);
                w = __uint_as_float(bits & 0xFFFF0000u);
            }
            s[j] = w;
        }
        if (clear) {
            for (int j = threadIdx.x; j < lo; j += blockDim.x) s[j] = 0.0f;
            for (int j = p + 1 + threadIdx.x; j < max_ctx; j += blockDim.x) s[j] = 0.0f;
        }
    }

    // The weighted values in two kernels, so no thread walks a whole
    // context: per (token, head, piece of `chunk` keys, dimension) the
    // piece's sum, then per (token, head, dimension) the pieces' sum in order.
    // A value is the first `vd` of a cached row's `d` elements (latent
    // attention's values are its rows' latents).
    extern "C" __global__ void values_pieces(const float* scores, const unsigned short* cv, const int* seq_of, const int* pos_of,
                                             const int* tables, const int* table_start, float* pieces, int heads, int kv_heads, int d,
                                             int vd, int bs, int max_ctx, int t0, int window, int chunk, int f32, long long count) {
        long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
        if (i >= count) return;
        int per = (max_ctx + chunk - 1) / chunk;
        long long thc = i / vd, th = thc / per;
        int e = (int)(i - thc * vd), c = (int)(thc - th * per), h = (int)(th % heads), t = t0 + (int)(th / heads);
        int p = pos_of[t], a = first_key(p, window) + c * chunk;
        int b = a + chunk - 1 < p ? a + chunk - 1 : p;
        const float* w = scores + th * max_ctx;
        const int* table = tables + table_start[seq_of[t]];
        int g = h / (heads / kv_heads);
        float acc = 0.0f;
        for (int j = a; j <= b; j++) {
            long long slot = (long long)table[j / bs] * bs + j % bs;
            acc += w[j] * element(cv, (slot * kv_heads + g) * d + e, f32);
        }
        pieces[i] = acc;
    }

    extern "C" __global__ void values_sum(const float* pieces, float* out, int heads, int d, int max_ctx, int t0, int chunk,
                                          long long count) {
        long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
        if (i >= count) return;
        int per = (max_ctx + chunk - 1) / chunk;
        long long th = i / d;
        int e = (int)(i - th * d);
        float acc = 0.0f;
        for (int c = 0; c < per; c++) acc += pieces[(th * per + c) * d + e];
        out[((long long)t0 * heads) * d + i] = acc;
    }
    """

    public func attention(layer: Int, batch b: AttentionBatch, q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                          out: UnsafeMutablePointer<Float>) -> Bool {
        guard attention.enabled, attention.failure == nil, b.tokens > 0, b.numHeads % b.numKVHeads == 0 else { return false }
        return attending(layer: layer, b, whole: false) { try attend(layer: layer, b, q: q, k: k, v: v, out: out) }
    }

    /// What every attention call shares: the device's copy of `b`'s cache
    /// (`latent`: keys-only Float32 rows), `body`, the layer counted
    /// (`whole`: with its projections); after an error, attention on the
    /// CPU for good.
    func attending(layer: Int, _ b: AttentionBatch, whole: Bool, latent: Bool = false, _ body: () throws -> Void) -> Bool {
        do {
            try makeCurrent()
            try mirror(b, layers: residentLayers, latent: latent)
            guard layer < attention.keys.count else { return false }
            try body()
            attention.layers += 1
            if whole { attention.wholeLayers += 1 }
            return true
        } catch {
            stopAttention(error)
            return false
        }
    }

    /// After a CUDA error (or no room for the cache copy) attention runs on
    /// the CPU from then on: the device's copy may miss keys.
    func stopAttention(_ error: any Error) {
        attention.failure = "\(name): \(error)"
        CUDAAccelerator.warn("attention goes back to the CPU for good: \(attention.failure!)")
    }

    /// The device's copy of `b`'s cache: kept while the batches come from
    /// the same cache, else allocated afresh for every layer at once (so
    /// running out of room shows before any layer depends on it). `latent`:
    /// one Float32 row per token and layer, no values (`keys` only).
    func mirror(_ b: AttentionBatch, layers: Int, latent: Bool = false) throws {
        guard attention.cache != b.cache || attention.numBlocks != b.numBlocks || attention.blockSize != b.blockSize else { return }
        try wait(compute)
        for p in attention.keys + attention.values { _ = memFree(p) }
        attention.keys = []
        attention.values = []
        attention.cache = nil
        let bytes = b.numBlocks * b.blockSize * b.numKVHeads * b.headDim * (latent ? 4 : 2), tensors = latent ? 1 : 2
        for _ in 0..<layers {
            var kp: UInt64 = 0, vp: UInt64 = 0
            let kc = memAlloc(&kp, bytes), vc = kc == 0 && !latent ? memAlloc(&vp, bytes) : kc
            if kp != 0 { attention.keys.append(kp) }
            if vp != 0 { attention.values.append(vp) }
            guard kc == 0, vc == 0 else {
                throw HybridSetupError("the KV cache copy (\(HybridExecution.size(tensors * bytes * layers)) for \(layers) layers) does not fit "
                                       + "the GPU beside the budget: lower --kv-cache-memory or gpu_memory")
            }
        }
        attention.cache = b.cache
        attention.numBlocks = b.numBlocks
        attention.blockSize = b.blockSize
    }

    private func attend(layer: Int, _ b: AttentionBatch, q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                        out: UnsafeMutablePointer<Float>) throws {
        let qElems = b.tokens * b.numHeads * b.headDim, kvElems = b.tokens * b.numKVHeads * b.headDim
        // Rows as BF16, as the cache and the CPU's products hold them.
        let q16 = try buffer(.queries, bytes: qElems * 2), k16 = try buffer(.keys, bytes: kvElems * 2), v16 = try buffer(.values, bytes: kvElems * 2)
        narrowToBF16(q, count: qElems, into: q16.host.assumingMemoryBound(to: UInt16.self))
        narrowToBF16(k, count: kvElems, into: k16.host.assumingMemoryBound(to: UInt16.self))
        narrowToBF16(v, count: kvElems, into: v16.host.assumingMemoryBound(to: UInt16.self))
        for (buffer, bytes) in [(q16, qElems * 2), (k16, kvElems * 2), (v16, kvElems * 2)] {
            try check("cuMemcpyHtoDAsync (attention inputs)", copyHtoD(buffer.device, buffer.host, bytes, compute))
        }
        let output = try buffer(.output, bytes: qElems * 4)
        try queueAttention(layer: layer, b, index: try uploadIndex(b), q16: q16.device, k16: k16.device, v16: v16.device, output: output.device)
        try check("cuMemcpyDtoHAsync (attention output)", copyDtoH(output.host, output.device, qElems * 4, compute))
        try wait(compute)
        out.update(from: output.host.assumingMemoryBound(to: Float.self), count: qElems)
    }

    /// Where `uploadIndex` put each part of a batch's index on the device,
    /// and the longest context of its tokens.
    struct DeviceBatchIndex {
        var slots: UInt64, sequenceOf: UInt64, positionOf: UInt64, tables: UInt64, tableStart: UInt64
        var maxContext: Int
    }

    /// Queues the copy of `b`'s int32 index: per token its cache slot,
    /// sequence and position, then the block tables and each sequence's
    /// start in them.
    func uploadIndex(_ b: AttentionBatch) throws -> DeviceBatchIndex {
        let t = b.tokens, bs = b.blockSize
        var maxContext = 1
        for i in 0..<t { maxContext = max(maxContext, Int(b.tokenPosition[i]) + 1) }
        let indexCount = 3 * t + b.tableEntries + b.sequences
        let slots = try uploadOnce(.index, \.index, count: indexCount) { ints in
            for i in 0..<t {
                let s = Int(b.tokenSequence[i]), p = Int(b.tokenPosition[i])
                ints.append(b.tables[Int(b.tableStart[s]) + p / bs] * Int32(bs) + Int32(p % bs))
            }
            for i in 0..<t { ints.append(b.tokenSequence[i]) }
            for i in 0..<t { ints.append(b.tokenPosition[i]) }
            ints.append(contentsOf: UnsafeBufferPointer(start: b.tables, count: b.tableEntries))
            ints.append(contentsOf: UnsafeBufferPointer(start: b.tableStart, count: b.sequences))
        }
        let tables = slots + UInt64(12 * t)
        return DeviceBatchIndex(slots: slots, sequenceOf: slots + UInt64(4 * t), positionOf: slots + UInt64(8 * t), tables: tables,
                                tableStart: tables + UInt64(4 * b.tableEntries), maxContext: maxContext)
    }

    /// Queues the store of the batch's keys and values (BF16 rows on the
    /// device) into `layer`'s copy of the cache, then attention over it
    /// into `output` (Float32): over the last `window` positions (0: all),
    /// with one sink logit per head from `sinks` (0: none) in the softmax.
    /// `latentValues`: latent attention's cache, one Float32 row per token
    /// (`k16` and the queries Float32 too, `v16` unused), whose first
    /// `latentValues` elements are the values.
    func queueAttention(layer: Int, _ b: AttentionBatch, index x: DeviceBatchIndex, q16: UInt64, k16: UInt64, v16: UInt64,
                        output: UInt64, window: Int = 0, sinks: UInt64 = 0, latentValues: Int? = nil) throws {
        let t = b.tokens, kvh = b.numKVHeads, d = b.headDim
        let vd = latentValues ?? d, f32: Int32 = latentValues == nil ? 0 : 1
        let values = latentValues == nil ? attention.values[layer] : attention.keys[layer]
        // The store copies 16-bit words: a Float32 row is twice as many.
        let words = (latentValues == nil ? 1 : 2) * kvh * d
        try launch(.kvStore, count: t * words, [.pointer(k16), .pointer(latentValues == nil ? v16 : k16), .pointer(x.slots),
                                                .pointer(attention.keys[layer]), .pointer(values), .int32(Int32(words))])
        // Long prompts' tokens through cuBLAS (`CUDAAttentionGEMM.swift`),
        // the rest through the kernels below; grouped-query prompts only
        // where the CPU rounds attention weights to BF16, as the second
        // product takes them.
        let gemm = latentValues != nil || b.roundsToBF16 ? gemmSequences(b) : []
        if !gemm.isEmpty { try uploadSequenceSlots(gemm, b) }
        var start = 0
        for s in gemm + [GemmSequence(tokens: t..<t, context: 0, slotsOffset: 0)] {
            if start < s.tokens.lowerBound {
                try queueKernelAttention(layer: layer, b, index: x, tokens: start..<s.tokens.lowerBound, q16: q16, values: values,
                                         output: output, window: window, sinks: sinks, vd: vd, f32: f32)
            }
            if !s.tokens.isEmpty {
                try queueGemmAttention(layer: layer, b, s, positionOf: x.positionOf, q16: q16, output: output, window: window, sinks: sinks,
                                       latentValues: latentValues)
            }
            start = s.tokens.upperBound
        }
    }

    /// Attention's kernels for the batch's tokens `range`.
    private func queueKernelAttention(layer: Int, _ b: AttentionBatch, index x: DeviceBatchIndex, tokens range: Range<Int>, q16: UInt64,
                                      values: UInt64, output: UInt64, window: Int, sinks: UInt64, vd: Int, f32: Int32) throws {
        let h = b.numHeads, kvh = b.numKVHeads, d = b.headDim, bs = b.blockSize, maxContext = x.maxContext
        // Per (token, head): its scores, and the values' sums per piece.
        let per = (maxContext + attention.valuePiece - 1) / attention.valuePiece
        let chunk = max(1, min(range.count, attention.chunkBytes / (4 * h * (maxContext + per * vd))))
        let scores = try deviceBuffer(.scores, bytes: chunk * h * maxContext * 4)
        let valuePieces = try deviceBuffer(.valuePieces, bytes: chunk * h * per * vd * 4)
        var t0 = range.lowerBound
        while t0 < range.upperBound {
            let n = min(chunk, range.upperBound - t0)
            try launch(.scores, count: n * h * maxContext, [.pointer(q16), .pointer(attention.keys[layer]), .pointer(x.sequenceOf),
                                                            .pointer(x.positionOf), .pointer(x.tables), .pointer(x.tableStart),
                                                            .pointer(scores), .int32(Int32(h)), .int32(Int32(kvh)), .int32(Int32(d)),
                                                            .int32(Int32(bs)), .int32(Int32(maxContext)), .float(b.scale), .int32(Int32(t0)),
                                                            .int32(Int32(window)), .int32(f32)])
            var threads = 1
            while threads < min(maxContext, attention.softmaxThreads) { threads *= 2 }
            // Without sinks any valid address stands in (not read).
            try launch(.softmax, blocks: n * h, threads: threads,
                       [.pointer(scores), .pointer(x.positionOf), .pointer(sinks != 0 ? sinks : scores), .int32(Int32(h)),
                        .int32(Int32(maxContext)), .int32(Int32(t0)), .int32(b.roundsToBF16 ? 1 : 0), .int32(Int32(window)),
                        .int32(sinks != 0 ? 1 : 0), .int32(0)])
            try launch(.valuesPieces, count: n * h * per * vd, [.pointer(scores), .pointer(values),
                                                                .pointer(x.sequenceOf), .pointer(x.positionOf), .pointer(x.tables),
                                                                .pointer(x.tableStart), .pointer(valuePieces), .int32(Int32(h)),
                                                                .int32(Int32(kvh)), .int32(Int32(d)), .int32(Int32(vd)), .int32(Int32(bs)),
                                                                .int32(Int32(maxContext)), .int32(Int32(t0)), .int32(Int32(window)),
                                                                .int32(Int32(attention.valuePiece)), .int32(f32)])
            try launch(.valuesSum, count: n * h * vd, [.pointer(valuePieces), .pointer(output), .int32(Int32(h)), .int32(Int32(vd)),
                                                      .int32(Int32(maxContext)), .int32(Int32(t0)), .int32(Int32(attention.valuePiece))])
            t0 += n
        }
    }

    /// One kernel argument, passed by address as cuLaunchKernel takes them.
    enum KernelArgument {
        case pointer(UInt64), int32(Int32), float(Float)
    }

    /// `kernel` over `count` threads; its arguments are `arguments` then
    /// the thread count (every kernel here ends with `long long count`).
    func launch(_ kernel: DeviceKernel, count: Int, _ arguments: [KernelArgument]) throws {
        try launch(kernel, blocks: (count + 255) / 256, threads: 256, arguments, count: count)
    }

    /// `kernel` over `blocks` blocks of `threads` (one block per row, for
    /// kernels whose threads meet at barriers); the last argument, `count`,
    /// is the block count.
    func launch(_ kernel: DeviceKernel, blocks: Int, threads: Int, _ arguments: [KernelArgument]) throws {
        try launch(kernel, blocks: blocks, threads: threads, arguments, count: blocks)
    }

    private func launch(_ kernel: DeviceKernel, blocks: Int, threads: Int, _ arguments: [KernelArgument], count: Int) throws {
        guard arguments.count + 1 == kernel.parameters else {
            throw HybridSetupError("\(kernel.name) takes \(kernel.parameters) parameters; a launch passed \(arguments.count + 1)")
        }
        try launch(function: kernels[kernel.rawValue], name: kernel.name, blocks: blocks, threads: threads, arguments, count: count)
    }

    /// A compiled kernel with its arguments and then `count`.
    func launch(function: OpaquePointer?, name: @autoclosure () -> String, blocks: Int, threads: Int, _ arguments: [KernelArgument],
                count: Int) throws {
        guard count > 0 else { return }
        let slots = kernelArguments
        guard arguments.count < KernelArgumentSlots.capacity else {
            throw HybridSetupError("\(name()): \(arguments.count) kernel arguments, more than the \(KernelArgumentSlots.capacity - 1) a launch holds")
        }
        for (i, a) in arguments.enumerated() {
            switch a {
            case .pointer(let p): slots.values[i] = p
            case .int32(let v): slots.values[i] = UInt64(UInt32(bitPattern: v))
            case .float(let f): slots.values[i] = UInt64(f.bitPattern)
            }
        }
        slots.values[arguments.count] = UInt64(count)
        try check("cuLaunchKernel (\(name()))",
                  launch(function, UInt32(blocks), 1, 1, UInt32(threads), 1, 1, 0, compute, slots.addresses, nil))
    }

    /// `count` Int32s, as `fill` appends them, in `which`'s device buffer:
    /// copied over (queued on the compute stream) unless the same values
    /// are already in the same allocation, as for every layer of a forward
    /// after its first. Returns the device address.
    func uploadOnce(_ which: DeviceAttention.Buffer, _ uploaded: WritableKeyPath<DeviceAttention, DeviceAttention.UploadedInts>, count: Int,
                    _ fill: (inout [Int32]) -> Void) throws -> UInt64 {
        var ints = attention[keyPath: uploaded].scratch
        attention[keyPath: uploaded].scratch = []
        ints.removeAll(keepingCapacity: true)
        ints.reserveCapacity(count)
        fill(&ints)
        let buffer = try buffer(which, bytes: count * 4)
        let into = (device: buffer.device, bytes: attention.buffers[which.rawValue].bytes)
        if ints != attention[keyPath: uploaded].values || into != attention[keyPath: uploaded].into {
            ints.withUnsafeBytes { buffer.host.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            try check("cuMemcpyHtoDAsync (attention \(which))", copyHtoD(buffer.device, buffer.host, count * 4, compute))
            swap(&ints, &attention[keyPath: uploaded].values)
            attention[keyPath: uploaded].into = into
            attention[keyPath: uploaded].copies += 1
        }
        attention[keyPath: uploaded].scratch = ints
        return buffer.device
    }

    /// One pair of pinned host and device buffers of at least `bytes`.
    func buffer(_ which: DeviceAttention.Buffer, bytes: Int) throws -> (host: UnsafeMutableRawPointer, device: UInt64) {
        precondition(!which.deviceOnly, "attention \(which) has no host buffer")
        try grow(&attention.buffers[which.rawValue], to: bytes, pinned: true, "attention \(which)")
        let b = attention.buffers[which.rawValue]
        return (b.host!, b.device)
    }

    /// A device buffer of at least `bytes` the host never reads or writes
    /// (no pinned twin: pinned memory is the host's to lose).
    func deviceBuffer(_ which: DeviceAttention.Buffer, bytes: Int) throws -> UInt64 {
        precondition(which.deviceOnly, "attention \(which) has a host buffer")
        try grow(&attention.buffers[which.rawValue], to: bytes, pinned: false, "attention \(which)")
        return attention.buffers[which.rawValue].device
    }
}

/// cuLaunchKernel's argument list: each argument in its own 8 bytes
/// (little-endian, so a 4-byte argument reads its value there too) and
/// the addresses of those slots, which the driver reads during the call.
final class KernelArgumentSlots: @unchecked Sendable {
    /// More than the longest list a kernel here takes (17 and the count).
    static let capacity = 32
    let values = UnsafeMutablePointer<UInt64>.allocate(capacity: capacity)
    let addresses = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: capacity)

    init() {
        values.initialize(repeating: 0, count: Self.capacity)
        for i in 0..<Self.capacity { (addresses + i).initialize(to: UnsafeMutableRawPointer(values + i)) }
    }

    deinit {
        values.deallocate()
        addresses.deallocate()
    }
}
