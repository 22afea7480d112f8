import Foundation
import SwitchyardModel

/// What latent attention needs on the device to run a layer whole
/// (`DenseOffload.latentAttentionLayer`): besides the projections, the
/// Float32 bias and norm vectors (0: none) and `kv_b_proj`, whose rows per
/// head are `W_UK` (`nope` rows) then `W_UV` (`valueDim` rows), each
/// `rank` wide, as the checkpoint stores them.
struct DeviceLatentParts {
    var queryABias: UInt64 = 0, queryANorm: UInt64 = 0, kvABias: UInt64 = 0, kvANorm: UInt64 = 0, oBias: UInt64 = 0
    var kvB = DeviceMatrix()
    /// Every matrix of the layer is on the device.
    var whole = false
}

/// Multi-head latent attention whole on the GPU, one round trip: the
/// normed rows go over as BF16, back come the cached rows (the CPU keeps
/// its cache) and `o_proj`'s output. On the compute stream: the query and
/// the cached row as the CPU makes them (`LatentAttention.swift`: biases,
/// the two norms with their own epsilon, RoPE from the CPU's angles); the
/// absorbed query per head, `W_UKᵀ q_nope` as one strided-batched product
/// over heads, then the rotated `q_rope` after it; attention as one key
/// head whose rows are the cached rows and whose values are their latents
/// (`CUDAAttention.swift`, in Float32 as the CPU's latent cache is); each
/// head's latent output up through `W_UV` (strided-batched again), then
/// `o_proj`.
///
/// Every token takes the absorbed form, where the CPU expands long
/// prefills (`LatentAttentionConfig.prefersExpandedForm`): the same
/// attention, another order of products. What the absorbed form's extra
/// flops cost a long prefill on a GPU is not measured.
/// `queueLatentAttention` is also the attention of an MoE layer's front and
/// of a dense layer whole (`CUDAAttentionLayer.swift`).
extension CUDAAccelerator {
    static let latentKernelSource = """

    // Each head's rope part of the query, unrotated, after its absorbed
    // part: query[t][h][r + j] = q[t][h][nope + j].
    extern "C" __global__ void latent_query_rope(const float* q, float* query, int heads, int qhd, int nope, int rope, int width, int r,
                                                 long long count) {
        long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
        if (i >= count) return;
        long long th = i / rope;
        int j = (int)(i - th * rope);
        query[th * width + r + j] = q[th * qhd + nope + j];
    }
    """

    /// Whether `layer` has latent attention with every matrix on the device.
    func runsLatentWhole(_ layer: Int) -> Bool { layer < dense.latentParts.count && dense.latentParts[layer].whole }

    public func latentAttentionLayer(layer: Int, batch b: AttentionBatch, x: UnsafePointer<Float>, row: UnsafeMutablePointer<Float>,
                                     out: UnsafeMutablePointer<Float>) -> Bool {
        routes.frontRows = nil
        residual.keeping = nil
        guard attention.enabled, attention.failure == nil, dense.failure == nil, let rope = b.rope, b.tokens > 0, b.numKVHeads == 1,
              let m = dense.latentShape, runsLatentWhole(layer) else { return false }
        return attending(layer: layer, b, whole: true, latent: true) {
            try attendLatent(layer: layer, b, m, rope: rope, x: x, row: row, out: out)
        }
    }

    private func attendLatent(layer: Int, _ b: AttentionBatch, _ m: LatentAttentionConfig, rope: RopeAngles, x: UnsafePointer<Float>,
                              row: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>) throws {
        let t = b.tokens, hidden = dense.latent[layer].kvA.cols, width = m.cacheWidth
        let input = try buffer(.layerInput, bytes: t * hidden * 2)
        narrowToBF16(x, count: t * hidden, into: input.host.assumingMemoryBound(to: UInt16.self))
        try check("cuMemcpyHtoDAsync (latent attention inputs)", copyHtoD(input.device, input.host, t * hidden * 2, compute))
        let (rows, projected) = try queueLatentAttention(layer: layer, b, m, rope: rope, input: input.device)
        let outRows = dense.output[layer].rows
        try check("cuMemcpyDtoHAsync (latent cache rows)", copyDtoH(rows.host, rows.device, t * width * 4, compute))
        try check("cuMemcpyDtoHAsync (latent attention output)", copyDtoH(projected.host, projected.device, t * outRows * 4, compute))
        try wait(compute)
        row.update(from: rows.host.assumingMemoryBound(to: Float.self), count: t * width)
        out.update(from: projected.host.assumingMemoryBound(to: Float.self), count: t * outRows)
    }

    /// Queues a whole latent attention layer on BF16 input rows already on
    /// the device (`input`): the angles and index go over, then everything
    /// up to `o_proj`'s output with its bias. Returns where the cached rows
    /// (Float32) and that output are, for the caller to copy back.
    func queueLatentAttention(layer: Int, _ b: AttentionBatch, _ m: LatentAttentionConfig, rope: RopeAngles, input: UInt64) throws
        -> (rows: (host: UnsafeMutableRawPointer, device: UInt64), projected: (host: UnsafeMutableRawPointer, device: UInt64)) {
        let projections = dense.latent[layer], parts = dense.latentParts[layer], o = dense.output[layer]
        let t = b.tokens, heads = b.numHeads, width = m.cacheWidth, r = m.kvLoraRank, hidden = projections.kvA.cols
        let qhd = m.queryHeadDim, nope = m.nopeDim, dv = m.valueDim, perHead = nope + dv, half = rope.half
        guard b.headDim == width, 2 * half == m.ropeDim, projections.kvA.rows == width, parts.kvB.rows == heads * perHead,
              parts.kvB.cols == r, o.cols == heads * dv else {
            throw HybridSetupError("latent attention of layer \(layer) on the device does not match the batch: "
                                   + "cached rows \(b.headDim) wide (the model's \(width)), RoPE over \(2 * half) (\(m.ropeDim))")
        }
        let eps = Transformer.latentNormEps
        let angles = try buffer(.angles, bytes: 2 * t * half * 4)
        let hostAngles = angles.host.assumingMemoryBound(to: Float.self)
        hostAngles.update(from: rope.cos, count: t * half)
        (hostAngles + t * half).update(from: rope.sin, count: t * half)
        try check("cuMemcpyHtoDAsync (RoPE angles)", copyHtoD(angles.device, angles.host, 2 * t * half * 4, compute))
        let cos = angles.device, sin = angles.device + UInt64(t * half * 4)
        let index = try uploadIndex(b)
        // The query, per head [nope | rope], in Float32.
        let query = try deviceBuffer(.qkvRows, bytes: t * heads * qhd * 4)
        if projections.query.address != 0 {
            try gemm(rows: heads * qhd, tokens: t, k: hidden, weights: projections.query.address, input: input, output: query)
        } else {
            let rank = projections.queryA.rows
            let qa = try deviceBuffer(.latentQueryA, bytes: t * rank * 4), qa16 = try deviceBuffer(.latentQueryA16, bytes: t * rank * 2)
            try gemm(rows: rank, tokens: t, k: hidden, weights: projections.queryA.address, input: input, output: qa)
            if parts.queryABias != 0 { try launch(.addBias, count: t * rank, [.pointer(qa), .pointer(parts.queryABias), .int32(Int32(rank))]) }
            try rmsNorm(qa, tokens: t, ld: rank, offset: 0, width: rank, groups: 1, weights: parts.queryANorm, epsilon: eps)
            try launch(.roundBF16, count: t * rank, [.pointer(qa), .pointer(qa16)])
            try gemm(rows: heads * qhd, tokens: t, k: rank, weights: projections.queryB.address, input: qa16, output: query)
        }
        // The cached row: the normed latent, then the rotated shared key.
        let rows = try buffer(.keyValueRows, bytes: t * width * 4)
        try gemm(rows: width, tokens: t, k: hidden, weights: projections.kvA.address, input: input, output: rows.device)
        if parts.kvABias != 0 { try launch(.addBias, count: t * width, [.pointer(rows.device), .pointer(parts.kvABias), .int32(Int32(width))]) }
        try rmsNorm(rows.device, tokens: t, ld: width, offset: 0, width: r, groups: 1, weights: parts.kvANorm, epsilon: eps)
        try rotate(rows.device + UInt64(r * 4), tokens: t, ld: width, heads: 1, headStride: width, half: half, cos: cos, sin: sin,
                   interleaved: rope.interleaved)
        // The absorbed query per head: W_UKᵀ·q_nope (kv_b_proj's first
        // `nope` rows of the head, read as the column-major r × nope
        // matrix their storage is), then the rotated rope part.
        let query16 = try buffer(.queries, bytes: t * heads * qhd * 2).device
        try launch(.roundBF16, count: t * heads * qhd, [.pointer(query), .pointer(query16)])
        let absorbed = try deviceBuffer(.latentQueries, bytes: t * heads * width * 4)
        try stridedGemm(transposingA: false, m: r, n: t, k: nope, a: parts.kvB.address, lda: r, strideA: perHead * r,
                        b: query16, ldb: heads * qhd, strideB: qhd, c: absorbed, ldc: heads * width, strideC: width, batch: heads)
        try launch(.latentQueryRope, count: t * heads * m.ropeDim, [.pointer(query), .pointer(absorbed), .int32(Int32(heads)),
                                                                    .int32(Int32(qhd)), .int32(Int32(nope)), .int32(Int32(m.ropeDim)),
                                                                    .int32(Int32(width)), .int32(Int32(r))])
        try rotate(absorbed + UInt64(r * 4), tokens: t, ld: heads * width, heads: heads, headStride: width, half: half, cos: cos, sin: sin,
                   interleaved: rope.interleaved)
        // Attention over the cached rows, values their latents.
        let latentOut = try buffer(.output, bytes: t * heads * r * 4).device
        try queueAttention(layer: layer, b, index: index, q16: absorbed, k16: rows.device, v16: 0, output: latentOut, latentValues: r)
        // Each head's latent output up through W_UV (the head's last
        // `valueDim` rows of kv_b_proj), then o_proj.
        let latentOut16 = try deviceBuffer(.outputBF16, bytes: t * heads * r * 2)
        try launch(.roundBF16, count: t * heads * r, [.pointer(latentOut), .pointer(latentOut16)])
        let values = try deviceBuffer(.latentValues, bytes: t * heads * dv * 4)
        try stridedGemm(transposingA: true, m: dv, n: t, k: r, a: parts.kvB.address + UInt64(nope * r * 2), lda: r, strideA: perHead * r,
                        b: latentOut16, ldb: heads * r, strideB: r, c: values, ldc: heads * dv, strideC: dv, batch: heads)
        let values16 = try deviceBuffer(.latentValues16, bytes: t * heads * dv * 2)
        try launch(.roundBF16, count: t * heads * dv, [.pointer(values), .pointer(values16)])
        let projected = try buffer(.projected, bytes: t * o.rows * 4)
        try gemm(rows: o.rows, tokens: t, k: o.cols, weights: o.address, input: values16, output: projected.device)
        if parts.oBias != 0 { try launch(.addBias, count: t * o.rows, [.pointer(projected.device), .pointer(parts.oBias), .int32(Int32(o.rows))]) }
        return (rows, projected)
    }

    /// RoPE on `heads` groups per token starting at `x`, `headStride`
    /// apart, rows `ld` apart (`rope_rotate` with no key heads).
    private func rotate(_ x: UInt64, tokens: Int, ld: Int, heads: Int, headStride: Int, half: Int, cos: UInt64, sin: UInt64,
                        interleaved: Bool) throws {
        try launch(.rope, count: tokens * heads * half, [.pointer(x), .pointer(cos), .pointer(sin), .int32(Int32(ld)), .int32(0),
                                                         .int32(Int32(heads)), .int32(0), .int32(Int32(headStride)), .int32(Int32(half)),
                                                         .int32(interleaved ? 1 : 0)])
    }
}
