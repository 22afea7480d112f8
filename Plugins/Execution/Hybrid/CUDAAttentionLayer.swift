import Foundation
import SwitchyardModel

/// A layer's grouped-query attention whole on the GPU
/// (`DenseOffload.attentionLayer`), one round trip where the steps take
/// three: the normed rows and the batch's RoPE angles and index go over,
/// then on the compute stream the fused q/k/v product, the bias, q/k norms,
/// `clip_qkv` and RoPE on its Float32 rows, the split into BF16 q/k/v
/// (keys and values also kept in Float32 for the CPU's cache), the store
/// and attention of `CUDAAttention.swift`, the output narrowed to BF16,
/// `o_proj` and its bias; the keys, values and projected rows come back.
///
/// The steps follow the CPU's order and rounding points (`GroupedAttention`)
/// and take its RoPE angles rather than computing their own, so the two
/// differ by summation order only. A norm is one block per row, its sums
/// of squares added by a tree in shared memory; the other steps are one
/// thread per value. The gain aimed at is the round trips.
extension CUDAAccelerator {
    static let layerKernelSource = """

    __device__ unsigned short bf16_bits(float x) {
        unsigned int bits = __float_as_uint(x);
        bits += 0x7FFFu + ((bits >> 16) & 1u);
        return (unsigned short)(bits >> 16);
    }

    extern "C" __global__ void add_bias(float* x, const float* b, int n, long long count) {
        long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
        if (i >= count) return;
        x[i] += b[i % n];
    }

    // RMSNorm, one block per group of n values at x + t*ld + offset + g*n
    // (the residual add first, where there is one): each thread sums the
    // squares of every blockDim.x-th value, `block_reduce` adds the block's
    // sums (blockDim.x a power of two, at most 256), then each thread
    // scales and weights its values, in place or into out and out16 (rows
    // of groups*n).
    extern "C" __global__ void rms_norm_rows(float* x, const float* add, const float* w, float* out, unsigned short* out16, int ld,
                                             int offset, int n, int groups, float eps, int has_add, int to_out, long long count) {
        long long tg = blockIdx.x;
        if (tg >= count) return;
        long long t = tg / groups, base = t * ld + offset + (tg - t * groups) * (long long)n;
        __shared__ float sums[256];
        float ss = 0.0f;
        for (int e = threadIdx.x; e < n; e += blockDim.x) {
            float v = x[base + e];
            if (has_add) { v += add[base + e]; x[base + e] = v; }
            ss += v * v;
        }
        float scale = 1.0f / sqrtf(block_reduce(sums, ss, 0) / (float)n + eps);
        for (int e = threadIdx.x; e < n; e += blockDim.x) {
            float y = w[e] * (x[base + e] * scale);
            if (to_out) {
                out[tg * n + e] = y;
                out16[tg * n + e] = bf16_bits(y);
            } else {
                x[base + e] = y;
            }
        }
    }

    extern "C" __global__ void clamp_values(float* x, float limit, long long count) {
        long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
        if (i >= count) return;
        x[i] = fminf(fmaxf(x[i], -limit), limit);
    }

    extern "C" __global__ void rope_rotate(float* x, const float* cos_t, const float* sin_t, int ld, int kv_offset, int heads,
                                           int kv_heads, int d, int half, int interleaved, long long count) {
        long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
        if (i >= count) return;
        int per = (heads + kv_heads) * half;
        long long t = i / per;
        int r = (int)(i - t * per), head = r / half, j = r - head * half;
        float* v = x + t * ld + (head < heads ? (long long)head * d : kv_offset + (long long)(head - heads) * d);
        float c = cos_t[t * half + j], s = sin_t[t * half + j];
        int a = interleaved ? 2 * j : j, b = interleaved ? 2 * j + 1 : j + half;
        float x0 = v[a], x1 = v[b];
        v[a] = x0 * c - x1 * s;
        v[b] = x1 * c + x0 * s;
    }

    // `kv`: the keys and values in Float32 too, for a CPU whose cache keeps
    // Float32 (where it keeps BF16, the BF16 rows go back instead).
    extern "C" __global__ void split_qkv(const float* qkv, unsigned short* q16, unsigned short* k16, unsigned short* v16, float* kv,
                                         int qn, int kn, int has_kv, long long count) {
        long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
        if (i >= count) return;
        int row = qn + 2 * kn;
        long long t = i / row, tokens = count / row;
        int c = (int)(i - t * row);
        float x = qkv[i];
        unsigned short b = bf16_bits(x);
        if (c < qn) {
            q16[t * qn + c] = b;
        } else if (c < qn + kn) {
            k16[t * kn + c - qn] = b;
            if (has_kv) kv[t * kn + c - qn] = x;
        } else {
            v16[t * kn + c - qn - kn] = b;
            if (has_kv) kv[tokens * kn + t * kn + c - qn - kn] = x;
        }
    }

    extern "C" __global__ void round_bf16(const float* x, unsigned short* out, long long count) {
        long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
        if (i >= count) return;
        out[i] = bf16_bits(x[i]);
    }
    """

    public func attentionLayer(layer: Int, batch b: AttentionBatch, x: UnsafePointer<Float>, k: UnsafeMutablePointer<Float>,
                               v: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>) -> Bool {
        routes.frontRows = nil
        residual.keeping = nil
        guard attention.enabled, attention.failure == nil, dense.failure == nil, let rope = b.rope, b.tokens > 0,
              b.numHeads % b.numKVHeads == 0, layer < dense.attentionParts.count, dense.attentionParts[layer].whole else { return false }
        return attending(layer: layer, b, whole: true) { try attendWhole(layer: layer, b, rope: rope, x: x, k: k, v: v, out: out) }
    }

    public func moeLayerFront(layer: Int, batch b: AttentionBatch, hidden: UnsafeMutablePointer<Float>, k: UnsafeMutablePointer<Float>,
                              v: UnsafeMutablePointer<Float>, normed: UnsafeMutablePointer<Float>, logits: UnsafeMutablePointer<Float>)
        -> RouterOffload {
        moeLayerFront(layer: layer, batch: b, hidden: hidden, residualHeld: false, mayKeep: false, k: k, v: v, normed: normed, logits: logits)
    }

    /// Whether `layer` can run whole here from its norms on (attention
    /// grouped-query or latent, with its norms on the device) for batch
    /// `b`, starting from the rows the device holds where `residualHeld`.
    private func layerRunsWhole(_ layer: Int, _ b: AttentionBatch, residualHeld: Bool) -> Bool {
        let latent = runsLatentWhole(layer)
        return attention.enabled && attention.failure == nil && dense.failure == nil && b.rope != nil && b.tokens > 0
            && b.numHeads % b.numKVHeads == 0 && layer < dense.attentionParts.count && (dense.attentionParts[layer].whole || latent)
            && dense.attentionParts[layer].inputNorm != 0 && (!latent || b.numKVHeads == 1)
            && (!residualHeld || residual.held.map({ $0 == (layer - 1, b.tokens) }) == true)
    }

    /// A dense layer whole (`DenseOffload.denseLayer`): the layer top of
    /// `moeLayerFront`, then the MLP from the normed rows and its add into
    /// the residual rows, which stay here (`mayKeep`) or come back; keys
    /// and values (latent: rows) come back for the CPU's cache. One host
    /// wait where attention and the MLP took two.
    public func denseLayer(layer: Int, batch b: AttentionBatch, hidden: UnsafeMutablePointer<Float>, residualHeld: Bool, mayKeep: Bool,
                           k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>) -> Bool {
        routes.frontRows = nil
        routing.ready = nil
        residual.keeping = nil
        let keep = mayKeep && residual.enabled
        guard layerRunsWhole(layer, b, residualHeld: residualHeld), let rope = b.rope, layer < dense.denseMLP.count,
              dense.denseMLP[layer].address != 0 else { return false }
        let latent = runsLatentWhole(layer)
        do {
            try makeCurrent()
            try mirror(b, layers: residentLayers, latent: latent)
            guard layer < attention.keys.count else { return false }
            let t = b.tokens, h = self.hidden, mlp = dense.denseMLP[layer]
            try grow(&dense.inputRows, to: t * h * 2, pinned: true, "dense inputs")
            try grow(&dense.outputRows, to: t * h * 4, pinned: true, "dense outputs")
            try grow(&dense.gateUpRows, to: t * 2 * mlp.intermediate * 4, pinned: false, "dense gate-up products")
            try grow(&dense.activationRows, to: t * mlp.intermediate * 2, pinned: false, "dense activations")
            let top = try queueLayerTop(layer: layer, b, rope: rope, hidden: hidden, held: residualHeld)
            try swiglu(weights: mlp.address, intermediate: mlp.intermediate, down: mlp.downOffset, tokens: t, x: dense.inputRows.device,
                       gu: dense.gateUpRows.device, a: dense.activationRows.device, y: dense.outputRows.device)
            // residual += the MLP's output (as the share; no sums, no shared expert).
            try launch(.addLayerOutput, count: t * h, [.pointer(top.residual.device), .pointer(dense.outputRows.device),
                                                       .pointer(dense.outputRows.device), .pointer(dense.outputRows.device), .int32(1), .int32(0),
                                                       .int32(0)])
            try check("cuMemcpyDtoHAsync (keys and values)", copyDtoH(top.cached.host, top.cached.device, top.cachedBytes, compute))
            if !keep {
                try check("cuMemcpyDtoHAsync (residual rows)", copyDtoH(top.residual.host, top.residual.device, t * h * 4, compute))
            }
            try wait(compute)
            if keep {
                residual.held = (layer, t)
            } else {
                hidden.update(from: top.residual.host.assumingMemoryBound(to: Float.self), count: t * h)
                residual.bytes += t * h * 4
                residual.held = nil
            }
            unpackLayerTop(top, tokens: t, k: k, v: v)
            attention.layers += 1
            attention.wholeLayers += 1
            dense.products += 1
            return true
        } catch {
            stopResidual(error)
            return false
        }
    }

    public func moeLayerFront(layer: Int, batch b: AttentionBatch, hidden: UnsafeMutablePointer<Float>, residualHeld: Bool, mayKeep: Bool,
                              k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, normed: UnsafeMutablePointer<Float>,
                              logits: UnsafeMutablePointer<Float>) -> RouterOffload {
        routes.frontRows = nil
        routing.ready = nil
        let keep = mayKeep && mayKeepResidual(layer: layer)
        residual.keeping = nil
        let latent = runsLatentWhole(layer)
        guard layerRunsWhole(layer, b, residualHeld: residualHeld), let rope = b.rope, dense.router[layer].address != 0 else { return .notHeld }
        dense.pendingShared = nil
        do {
            try makeCurrent()
            try mirror(b, layers: residentLayers, latent: latent)
            guard layer < attention.keys.count else { return .notHeld }
            let routed = try frontWhole(layer: layer, b, rope: rope, hidden: hidden, held: residualHeld, keep: keep, k: k, v: v, normed: normed,
                                        logits: logits)
            attention.layers += 1
            attention.wholeLayers += 1
            dense.products += 1
            return routed
        } catch {
            // The device's cache copy may hold part of this batch: attention
            // (and with it this path) goes back to the CPU for good.
            dense.pendingShared = nil
            residual.keeping = nil
            stopAttention(error)
            return .notHeld
        }
    }

    /// The residual rows go over as Float32 (unless `held`: the device's
    /// are the input) and stay there for the layer: input norm, attention,
    /// residual add and post-attention norm in one kernel, the router and
    /// the shared expert from the normed rows; back come the new residual
    /// rows (unless `keep`: they stay, `CUDAResidual.swift`), the normed
    /// rows as BF16 (the CPU's experts take them), the logits, keys and values (a
    /// latent attention layer's cached rows into `k`,
    /// `CUDALatentAttention.swift`).
    private func frontWhole(layer: Int, _ b: AttentionBatch, rope: RopeAngles, hidden: UnsafeMutablePointer<Float>, held: Bool, keep: Bool,
                            k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, normed: UnsafeMutablePointer<Float>,
                            logits: UnsafeMutablePointer<Float>) throws -> RouterOffload {
        let t = b.tokens, h = self.hidden, router = dense.router[layer], shared = dense.sharedMLP[layer]
        guard dense.output[layer].rows == h, router.cols == h else {
            throw HybridSetupError("layer \(layer)'s o_proj or router on the device does not match the hidden size \(h)")
        }
        try reserveRouterScratch(tokens: t, logits: router.rows, shared: shared)
        let top = try queueLayerTop(layer: layer, b, rope: rope, hidden: hidden, held: held), residual = top.residual
        try gemm(rows: router.rows, tokens: t, k: h, weights: router.address, input: dense.inputRows.device, output: dense.routerRows.device)
        let routed = try queueRoutes(layer: layer, tokens: t, experts: router.rows)
        var copies = [(dense.routerRows.host!, dense.routerRows.device, t * router.rows * 4, "router logits"),
                      (dense.inputRows.host!, dense.inputRows.device, t * h * 2, "normed rows"),
                      (top.cached.host, top.cached.device, top.cachedBytes, "keys and values")]
        if !keep { copies.append((residual.host, residual.device, t * h * 4, "residual rows")) }
        for (host, device, bytes, what) in copies {
            try check("cuMemcpyDtoHAsync (\(what))", copyDtoH(host, device, bytes, compute))
        }
        try check("cuEventRecord", eventRecord(routerDone, compute))
        try startSharedExpert(shared, layer: layer, tokens: t, keep: keep)
        try wait(event: routerDone, "layer front")
        if keep {
            self.residual.keeping = (layer, t)
            self.residual.expertSums = false
            self.residual.sharedKept = shared.address != 0
        } else {
            hidden.update(from: residual.host.assumingMemoryBound(to: Float.self), count: t * h)
            self.residual.bytes += t * h * 4
        }
        // As BF16, half the bytes: every product the CPU feeds them to takes
        // its inputs rounded to BF16, so nothing it computes changes.
        convertToFloat(dense.inputRows.host!, dtype: .bf16, count: t * h, into: normed)
        logits.update(from: dense.routerRows.host!.assumingMemoryBound(to: Float.self), count: t * router.rows)
        unpackLayerTop(top, tokens: t, k: k, v: v)
        // The normed rows stay in dense.inputRows as BF16 for the experts.
        routes.frontRows = (layer, t)
        if routed { routing.ready = (layer, t) }
        if keep && shared.address != 0 { return .sharedExpertKept }
        return dense.pendingShared == nil ? .computed : .sharedExpertStarted
    }

    /// What a whole layer's top left queued: the residual rows (after
    /// attention), the keys and values (latent: the cached rows) and their
    /// bytes to copy back.
    struct LayerTop {
        var residual: (host: UnsafeMutableRawPointer, device: UInt64)
        var cached: (host: UnsafeMutableRawPointer, device: UInt64)
        var cachedBytes: Int, width: Int, latent: Bool
        /// Keys and values came back as BF16.
        var narrow: Bool
    }

    /// Queues a layer's top from its residual rows (copied over unless
    /// `held`: the device's are the input): the input norm, the layer's
    /// attention (grouped-query or latent), the residual add and the
    /// post-attention norm into `dense.inputRows` (BF16) and the normed
    /// rows (Float32).
    private func queueLayerTop(layer: Int, _ b: AttentionBatch, rope: RopeAngles, hidden: UnsafeMutablePointer<Float>, held: Bool) throws
        -> LayerTop {
        let t = b.tokens, h = self.hidden, parts = dense.attentionParts[layer]
        guard dense.output[layer].rows == h else {
            throw HybridSetupError("layer \(layer)'s o_proj on the device does not match the hidden size \(h)")
        }
        let residual = try buffer(.residual, bytes: t * h * 4), normedRows = try deviceBuffer(.normedRows, bytes: t * h * 4)
        let input = try buffer(.layerInput, bytes: t * h * 2)
        if !held {
            residual.host.assumingMemoryBound(to: Float.self).update(from: hidden, count: t * h)
            try check("cuMemcpyHtoDAsync (residual rows)", copyHtoD(residual.device, residual.host, t * h * 4, compute))
            self.residual.bytes += t * h * 4
        }
        func norm(_ weights: UInt64, adding: UInt64?, into rows16: UInt64) throws {
            try rmsNorm(residual.device, tokens: t, ld: h, offset: 0, width: h, groups: 1, weights: weights, adding: adding,
                        into: (normedRows, rows16))
        }
        try norm(parts.inputNorm, adding: nil, into: input.device)
        let kn = b.numKVHeads * b.headDim
        let cached: (host: UnsafeMutableRawPointer, device: UInt64), projected: (host: UnsafeMutableRawPointer, device: UInt64)
        let latent = runsLatentWhole(layer) ? dense.latentShape : nil
        if let latent {
            (cached, projected) = try queueLatentAttention(layer: layer, b, latent, rope: rope, input: input.device)
        } else {
            (cached, projected) = try queueWholeAttention(layer: layer, b, rope: rope, input: input.device)
        }
        try norm(parts.postNorm, adding: projected.device, into: dense.inputRows.device)
        let narrow = latent == nil && b.roundsToBF16
        return LayerTop(residual: residual, cached: cached, cachedBytes: latent == nil ? 2 * t * kn * (narrow ? 2 : 4) : t * kn * 4, width: kn,
                        latent: latent != nil, narrow: narrow)
    }

    /// The keys and values (latent: the cached rows, into `k`) a layer top
    /// copied back, into the CPU's rows.
    private func unpackLayerTop(_ top: LayerTop, tokens: Int, k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>) {
        if top.latent {
            k.update(from: top.cached.host.assumingMemoryBound(to: Float.self), count: tokens * top.width)
        } else {
            unpackKeyValues(top.cached.host, tokens: tokens, width: top.width, narrow: top.narrow, k: k, v: v)
        }
    }

    /// Keys then values, `tokens` rows of `width` each, as the device
    /// copies them back (`narrow`: BF16, widened exactly), into the CPU's rows.
    private func unpackKeyValues(_ host: UnsafeMutableRawPointer, tokens: Int, width: Int, narrow: Bool, k: UnsafeMutablePointer<Float>,
                                 v: UnsafeMutablePointer<Float>) {
        let n = tokens * width
        if narrow {
            let rows = host.assumingMemoryBound(to: UInt16.self)
            for i in 0..<n {
                k[i] = Float(bitPattern: UInt32(rows[i]) << 16)
                v[i] = Float(bitPattern: UInt32(rows[n + i]) << 16)
            }
        } else {
            let rows = host.assumingMemoryBound(to: Float.self)
            k.update(from: rows, count: n)
            v.update(from: rows + n, count: n)
        }
    }

    private func attendWhole(layer: Int, _ b: AttentionBatch, rope: RopeAngles, x: UnsafePointer<Float>, k: UnsafeMutablePointer<Float>,
                             v: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>) throws {
        let t = b.tokens, cols = dense.qkv[layer].cols
        // The rows as BF16, as the CPU's products take them.
        let input = try buffer(.layerInput, bytes: t * cols * 2)
        narrowToBF16(x, count: t * cols, into: input.host.assumingMemoryBound(to: UInt16.self))
        try check("cuMemcpyHtoDAsync (attention layer inputs)", copyHtoD(input.device, input.host, t * cols * 2, compute))
        let (keyValues, projected) = try queueWholeAttention(layer: layer, b, rope: rope, input: input.device)
        let kn = b.numKVHeads * b.headDim, rows = dense.output[layer].rows, narrow = b.roundsToBF16
        try check("cuMemcpyDtoHAsync (keys and values)", copyDtoH(keyValues.host, keyValues.device, 2 * t * kn * (narrow ? 2 : 4), compute))
        try check("cuMemcpyDtoHAsync (attention layer output)", copyDtoH(projected.host, projected.device, t * rows * 4, compute))
        try wait(compute)
        unpackKeyValues(keyValues.host, tokens: t, width: kn, narrow: narrow, k: k, v: v)
        out.update(from: projected.host.assumingMemoryBound(to: Float.self), count: t * rows)
    }

    /// Queues a whole attention layer on BF16 input rows already on the
    /// device (`input`): the angles and index go over, then everything up
    /// to `o_proj`'s output with its bias. Returns where the keys and values
    /// (Float32, keys first) and that output are, for the caller to copy back.
    private func queueWholeAttention(layer: Int, _ b: AttentionBatch, rope: RopeAngles, input: UInt64) throws
        -> (keyValues: (host: UnsafeMutableRawPointer, device: UInt64), projected: (host: UnsafeMutableRawPointer, device: UInt64)) {
        let w = dense.qkv[layer], o = dense.output[layer], parts = dense.attentionParts[layer]
        let t = b.tokens, h = b.numHeads, kvh = b.numKVHeads, d = b.headDim, half = rope.half
        let qn = h * d, kn = kvh * d, row = qn + 2 * kn
        guard w.rows == row, o.cols == qn else {
            throw HybridSetupError("attention of layer \(layer) is \(w.rows) q/k/v rows and \(o.cols) o columns on the device, "
                                   + "but the batch asks for \(row) and \(qn)")
        }
        let angles = try buffer(.angles, bytes: 2 * t * half * 4)
        let hostAngles = angles.host.assumingMemoryBound(to: Float.self)
        hostAngles.update(from: rope.cos, count: t * half)
        (hostAngles + t * half).update(from: rope.sin, count: t * half)
        try check("cuMemcpyHtoDAsync (RoPE angles)", copyHtoD(angles.device, angles.host, 2 * t * half * 4, compute))
        let index = try uploadIndex(b)
        // q/k/v in Float32, then what the CPU does to them, in its order.
        let qkv = try deviceBuffer(.qkvRows, bytes: t * row * 4)
        try gemm(rows: row, tokens: t, k: w.cols, weights: w.address, input: input, output: qkv)
        if parts.bias != 0 { try launch(.addBias, count: t * row, [.pointer(qkv), .pointer(parts.bias), .int32(Int32(row))]) }
        func norm(_ weights: UInt64, offset: Int, width: Int, groups: Int) throws {
            try rmsNorm(qkv, tokens: t, ld: row, offset: offset, width: width, groups: groups, weights: weights)
        }
        switch dense.qkNorm {
        case .none: break
        case .perHead:
            try norm(parts.qNorm, offset: 0, width: d, groups: h)
            try norm(parts.kNorm, offset: qn, width: d, groups: kvh)
        case .wholeProjection:
            try norm(parts.qNorm, offset: 0, width: qn, groups: 1)
            try norm(parts.kNorm, offset: qn, width: kn, groups: 1)
        }
        if dense.clip > 0 { try launch(.clamp, count: t * row, [.pointer(qkv), .float(dense.clip)]) }
        try launch(.rope, count: t * (h + kvh) * half, [.pointer(qkv), .pointer(angles.device), .pointer(angles.device + UInt64(t * half * 4)),
                                                        .int32(Int32(row)), .int32(Int32(qn)), .int32(Int32(h)), .int32(Int32(kvh)),
                                                        .int32(Int32(d)), .int32(Int32(half)), .int32(rope.interleaved ? 1 : 0)])
        // Keys and values go back for the CPU's cache: as BF16 where it keeps
        // BF16 (bfloat16 mode), half the bytes and the same cache; the
        // attention below reads those same rows.
        let narrow = b.roundsToBF16
        let q16 = try buffer(.queries, bytes: t * qn * 2).device
        let keyValues = try buffer(.keyValueRows, bytes: 2 * t * kn * (narrow ? 2 : 4))
        let k16 = narrow ? keyValues.device : try buffer(.keys, bytes: t * kn * 2).device
        let v16 = narrow ? keyValues.device + UInt64(t * kn * 2) : try buffer(.values, bytes: t * kn * 2).device
        try launch(.splitQKV, count: t * row, [.pointer(qkv), .pointer(q16), .pointer(k16), .pointer(v16), .pointer(keyValues.device),
                                               .int32(Int32(qn)), .int32(Int32(kn)), .int32(narrow ? 0 : 1)])
        // Attention, then o_proj from its output rounded as the CPU rounds it.
        let attended = try buffer(.output, bytes: t * qn * 4).device
        try queueAttention(layer: layer, b, index: index, q16: q16, k16: k16, v16: v16, output: attended, window: parts.window,
                           sinks: parts.sinks)
        let attended16 = try deviceBuffer(.outputBF16, bytes: t * qn * 2)
        try launch(.roundBF16, count: t * qn, [.pointer(attended), .pointer(attended16)])
        let projected = try buffer(.projected, bytes: t * o.rows * 4)
        try gemm(rows: o.rows, tokens: t, k: o.cols, weights: o.address, input: attended16, output: projected.device)
        if parts.oBias != 0 { try launch(.addBias, count: t * o.rows, [.pointer(projected.device), .pointer(parts.oBias), .int32(Int32(o.rows))]) }
        return (keyValues, projected)
    }

    /// RMSNorm over `groups` groups of `width` values from `offset` of each
    /// of `tokens` rows `ld` apart, one block per group (`rms_norm_rows`),
    /// after adding `adding`'s rows where given; in place, or into `into`'s
    /// Float32 and BF16 rows. `epsilon`: the model's RMSNorm epsilon unless given.
    func rmsNorm(_ x: UInt64, tokens: Int, ld: Int, offset: Int, width: Int, groups: Int, weights: UInt64, adding: UInt64? = nil,
                 into: (rows: UInt64, rows16: UInt64)? = nil, epsilon: Float? = nil) throws {
        // A power of two, no wider than the group needs.
        var threads = 1
        while threads < min(width, attention.normThreads) { threads *= 2 }
        // Arguments not read stand in as valid addresses.
        try launch(.rmsNorm, blocks: tokens * groups, threads: threads,
                   [.pointer(x), .pointer(adding ?? x), .pointer(weights), .pointer(into?.rows ?? x), .pointer(into?.rows16 ?? x),
                    .int32(Int32(ld)), .int32(Int32(offset)), .int32(Int32(width)), .int32(Int32(groups)), .float(epsilon ?? dense.normEpsilon),
                    .int32(adding == nil ? 0 : 1), .int32(into == nil ? 0 : 1)])
    }
}
