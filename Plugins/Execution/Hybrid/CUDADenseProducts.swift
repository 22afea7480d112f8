import Foundation
import SwitchyardModel

/// A matrix on the device, row-major BF16 (address 0: not on the device).
struct DeviceMatrix {
    var address: UInt64 = 0
    var rows = 0, cols = 0
}

/// A SwiGLU MLP on the device: gate and up back to back, then down.
struct DeviceMLP {
    var address: UInt64 = 0
    var intermediate = 0, downOffset = 0
}

/// A layer's attention vectors on the device, Float32 (0: none): q/k/v
/// biases as one fused row (zeros where a part has none), the q and k norm
/// weights, `o_proj`'s bias, gpt-oss's sink logits, the layer's two norms; its sliding window (0:
/// none). `whole`: q/k/v and o are on the device too.
struct DeviceAttentionParts {
    var bias: UInt64 = 0, qNorm: UInt64 = 0, kNorm: UInt64 = 0, oBias: UInt64 = 0, sinks: UInt64 = 0
    /// The layer's input and post-attention RMSNorm weights (`moeLayerFront`).
    var inputNorm: UInt64 = 0, postNorm: UInt64 = 0
    var window = 0
    var whole = false
}

/// Latent attention's projections on the device (address 0: not there).
struct DeviceLatentProjections {
    var query = DeviceMatrix(), queryA = DeviceMatrix(), queryB = DeviceMatrix(), kvA = DeviceMatrix()
}

/// The dense weights `CUDAAccelerator` holds, indexed by layer (no lookups
/// by key on the forward's path), the scratch their products use, and what
/// they did.
struct DenseDeviceWeights {
    /// `[layer]`: q, k and v as one matrix (rows q then k then v).
    var qkv: [DeviceMatrix] = []
    var qRows = 0, kvRows = 0
    var output: [DeviceMatrix] = [], router: [DeviceMatrix] = []
    /// `[layer]`: latent attention's projections (q, or q_a and q_b; kv_a),
    /// and what it needs besides to run whole (`CUDALatentAttention.swift`);
    /// the model's latent attention shape (nil: it has none).
    var latent: [DeviceLatentProjections] = []
    var latentParts: [DeviceLatentParts] = []
    var latentShape: LatentAttentionConfig?
    var sharedMLP: [DeviceMLP] = [], denseMLP: [DeviceMLP] = []
    /// The LM head, and the final norm's weights after it (`finalNorm`:
    /// its address; 0 without the head).
    var lmHead = DeviceMatrix(), finalNorm: UInt64 = 0
    /// `[layer]`: what grouped-query attention needs besides its matrices
    /// to run whole on the device (`attentionLayer`); the model's q/k norm
    /// form, RMSNorm epsilon and `clip_qkv` (0: none).
    var attentionParts: [DeviceAttentionParts] = []
    var qkNorm = QKNorm.none
    var normEpsilon: Float = 0, clip: Float = 0
    var bytes = 0
    var weightAllocations: [UInt64] = []
    /// Scratch: inputs (BF16) and outputs (Float32), pinned on the host
    /// too, and the MLP's gate-up products and activations.
    var inputRows = DeviceScratch(), outputRows = DeviceScratch(), gateUpRows = DeviceScratch(), activationRows = DeviceScratch()
    /// The router's logits and the shared expert's output it started
    /// (pinned on the host too), and which layer and batch that was.
    var routerRows = DeviceScratch(), sharedRows = DeviceScratch()
    var pendingShared: (layer: Int, tokens: Int)?
    var scratch: [DeviceScratch] { [inputRows, outputRows, gateUpRows, activationRows, routerRows, sharedRows] }
    /// Products computed on the device, and the error that stopped it
    /// taking more (the CPU computes everything after).
    var products = 0
    var failure: String?
}

/// `DenseOffload` on the GPU: the products whose weights `loadDense` put in
/// device memory run as `cublasGemmEx` (BF16 in, Float32 accumulate, as
/// the CPU's bfloat16 mode rounds), synchronously: input rows narrowed to
/// BF16 and copied over, the product, output rows copied back. The host
/// needs the routes (it sizes each expert's products), so every product
/// costs a round trip of its rows (attention's three take one as a whole layer, and an MoE layer's
/// norms, attention and router one together, `CUDAAttentionLayer.swift`);
/// at decode that is a few KiB against the megabytes of weights the CPU
/// would otherwise stream.
extension CUDAAccelerator: DenseOffload {
    /// Dense products and attention layers computed on the GPU, its dense
    /// weight bytes, the times the host waited for the device (expert
    /// layers included: the round trips whose latency a step pays), and
    /// whether a CUDA error (or no room for the KV cache copy) stopped
    /// either (1).
    public var counters: [String: Double] {
        ["hybrid_gpu_dense_products": Double(dense.products), "hybrid_gpu_dense_weight_bytes": Double(dense.bytes),
         "hybrid_gpu_dense_failed": dense.failure == nil ? 0 : 1,
         "hybrid_gpu_attention_layers": Double(attention.layers),
         "hybrid_gpu_attention_whole_layers": Double(attention.wholeLayers),
         "hybrid_gpu_attention_gemm_sequences": Double(attention.gemmSequences), "hybrid_gpu_host_waits": Double(hostWaits),
         "hybrid_gpu_attention_index_uploads": Double(attention.index.copies),
         "hybrid_gpu_attention_slot_uploads": Double(attention.sequenceSlotInts.copies),
         "hybrid_gpu_host_wait_seconds": hostWaitSeconds,
         "hybrid_gpu_attention_failed": attention.failure == nil ? 0 : 1,
         "hybrid_gpu_expert_row_bytes_in": Double(routes.bytesIn), "hybrid_gpu_expert_row_bytes_out": Double(routes.bytesOut),
         "hybrid_gpu_expert_rows_gathered": Double(routes.rowsGathered), "hybrid_gpu_expert_layers_summed": Double(routes.layersCombined),
         "hybrid_gpu_layers_routed": Double(routing.layersRouted),
         "hybrid_gpu_residual_layers_kept": Double(residual.layersKept), "hybrid_gpu_residual_bytes": Double(residual.bytes),
         "hybrid_gpu_logits_from_held_rows": Double(residual.logitsFromHeldRows),
         "hybrid_gpu_residual_empty_shares": Double(residual.emptyShares)]
    }

    public func resetCounters() {
        dense.products = 0
        attention.layers = 0
        attention.wholeLayers = 0
        attention.gemmSequences = 0
        hostWaits = 0
        hostWaitSeconds = 0
        routes.bytesIn = 0
        routes.bytesOut = 0
        routes.rowsGathered = 0
        routes.layersCombined = 0
        routing.layersRouted = 0
        residual.layersKept = 0
        residual.bytes = 0
        residual.logitsFromHeldRows = 0
        residual.emptyShares = 0
    }

    /// Why attention went back to the CPU for good (nil: it has not).
    public var attentionFailure: String? { attention.failure }

    /// Once per cause, on standard error (a plug-in has no logger of the
    /// engine's): serving goes on, on the CPU, and the counters say so too.
    static func warn(_ message: String) {
        FileHandle.standardError.write(Data("warning: hybrid: \(message)\n".utf8))
    }

    /// Why the GPU stopped taking dense products (nil: it has not).
    public var denseFailure: String? { dense.failure }

    /// BF16 row-major matrices go to the device; others (Float32 fixture
    /// weights, MXFP4) stay on the CPU.
    static func fitsDevice(_ m: Matrix) -> Bool { m.dtype == .bf16 && m.layout == .rowMajor && m.rowStride == 1 }

    static func fitsDevice(_ e: ExpertWeights) -> Bool {
        fitsDevice(e.gate) && fitsDevice(e.up) && fitsDevice(e.down) && e.activation == .swiglu
            && e.gateBias == nil && e.upBias == nil && e.downBias == nil
    }

    /// What `loadDense` would put on the device for `weights`, in bytes.
    public static func denseBytes(_ weights: ModelWeights) -> Int {
        var bytes = fitsDevice(weights.lmHead) ? weights.lmHead.byteCount + 4 * weights.finalNorm.count : 0
        for layer in weights.layers {
            if case .grouped(let a) = layer.attention {
                let qkv = [a.q, a.k, a.v].allSatisfy(fitsDevice) && a.k.cols == a.q.cols && a.v.cols == a.q.cols
                if qkv { bytes += a.q.byteCount + a.k.byteCount + a.v.byteCount }
                if fitsDevice(a.o) { bytes += a.o.byteCount }
                if qkv && fitsDevice(a.o) { bytes += 4 * (attentionVectors(a).reduce(0) { $0 + $1.count } + 2 * weights.config.hiddenSize) }
            } else if case .latent(let a) = layer.attention {
                bytes += ([a.q, a.qA, a.qB, a.kvA, a.o] as [Matrix?]).reduce(0) { $0 + ($1.map { fitsDevice($0) ? $0.byteCount : 0 } ?? 0) }
                if latentRunsWhole(a) {
                    bytes += a.kvB.byteCount + 4 * (latentVectors(a).reduce(0) { $0 + $1.count } + 2 * weights.config.hiddenSize)
                }
            }
            switch layer.feedForward {
            case .dense(let mlp): if fitsDevice(mlp) { bytes += mlp.byteCount }
            case .moe(let moe):
                if fitsDevice(moe.router) {
                    // With its biases for routing there (`loadRouting`).
                    bytes += moe.router.byteCount + 4 * ((moe.routerBias?.count ?? 0) + (moe.selectionBias?.count ?? 0))
                }
                if let shared = moe.shared, fitsDevice(shared) { bytes += shared.byteCount }
            }
        }
        return bytes
    }

    /// The vectors `attentionLayer` needs on the device for `a`: the fused
    /// q/k/v bias (if any part has one), the q and k norms, o's bias, the
    /// sinks.
    static func attentionVectors(_ a: AttentionWeights) -> [[Float]] {
        var vectors: [[Float]] = []
        if a.qBias != nil || a.kBias != nil || a.vBias != nil {
            vectors.append((a.qBias ?? .init(repeating: 0, count: a.q.rows)) + (a.kBias ?? .init(repeating: 0, count: a.k.rows))
                           + (a.vBias ?? .init(repeating: 0, count: a.v.rows)))
        }
        return vectors + [a.qNorm, a.kNorm, a.oBias, a.sinks].compactMap { $0 }
    }

    /// Whether every matrix of a latent attention layer fits the device, so
    /// it can run there whole.
    static func latentRunsWhole(_ a: LatentAttentionWeights) -> Bool {
        let query = a.q.map(fitsDevice) ?? (a.qA.map(fitsDevice) == true && a.qB.map(fitsDevice) == true)
        return query && fitsDevice(a.kvA) && fitsDevice(a.kvB) && fitsDevice(a.o)
    }

    /// The vectors a whole latent layer needs on the device: `q_a_proj`'s
    /// bias and norm, `kv_a_proj_with_mqa`'s bias, the latent's norm, o's bias.
    static func latentVectors(_ a: LatentAttentionWeights) -> [[Float]] {
        [a.qABias, a.qANorm, a.kvABias, a.kvANorm, a.oBias].compactMap { $0 }
    }

    /// Copies every dense matrix that fits the device (`fitsDevice`) into
    /// device memory, once, before serving.
    public func loadDense(_ weights: ModelWeights) throws {
        try makeCurrent()
        let layers = weights.layers.count
        dense.qkv = .init(repeating: DeviceMatrix(), count: layers)
        dense.output = dense.qkv
        dense.router = dense.qkv
        dense.sharedMLP = .init(repeating: DeviceMLP(), count: layers)
        dense.denseMLP = dense.sharedMLP
        dense.attentionParts = .init(repeating: DeviceAttentionParts(), count: layers)
        dense.latent = .init(repeating: DeviceLatentProjections(), count: layers)
        dense.latentParts = .init(repeating: DeviceLatentParts(), count: layers)
        dense.latentShape = weights.config.latentAttention
        residual.sharedGated = weights.layers.map { layer in
            if case .moe(let moe) = layer.feedForward { return moe.sharedGate != nil }
            return false
        }
        dense.qkNorm = weights.config.qkNorm
        dense.normEpsilon = weights.config.rmsNormEps
        dense.clip = weights.config.clipQKV ?? 0
        func upload(_ matrices: [Matrix]) throws -> UInt64 {
            try upload(matrices.map { ($0.data, $0.byteCount) })
        }
        func upload(_ vector: [Float]) throws -> UInt64 {
            try vector.withUnsafeBytes { try upload([($0.baseAddress!, $0.count)]) }
        }
        func upload(_ parts: [(data: UnsafeRawPointer, bytes: Int)]) throws -> UInt64 {
            let bytes = parts.reduce(0) { $0 + $1.bytes }
            var p: UInt64 = 0
            try check("cuMemAlloc (dense weights)", memAlloc(&p, bytes))
            dense.weightAllocations.append(p)
            var offset = 0
            for part in parts {
                // From the mapped checkpoint: the driver stages pageable
                // memory before the call returns.
                try check("cuMemcpyHtoDAsync (dense weights)", copyHtoD(p + UInt64(offset), part.data, part.bytes, copy))
                offset += part.bytes
            }
            try wait(copy)
            dense.bytes += bytes
            return p
        }
        func mlp(_ e: ExpertWeights) throws -> DeviceMLP {
            DeviceMLP(address: try upload([e.gate, e.up, e.down]), intermediate: e.gate.rows, downOffset: e.gate.byteCount + e.up.byteCount)
        }
        for (l, layer) in weights.layers.enumerated() {
            if case .grouped(let a) = layer.attention {
                if [a.q, a.k, a.v].allSatisfy(Self.fitsDevice) && a.k.cols == a.q.cols && a.v.cols == a.q.cols {
                    dense.qkv[l] = DeviceMatrix(address: try upload([a.q, a.k, a.v]), rows: a.q.rows + a.k.rows + a.v.rows, cols: a.q.cols)
                    dense.qRows = a.q.rows
                    dense.kvRows = a.k.rows
                }
                if Self.fitsDevice(a.o) { dense.output[l] = DeviceMatrix(address: try upload([a.o]), rows: a.o.rows, cols: a.o.cols) }
                if dense.qkv[l].address != 0 && dense.output[l].address != 0 {
                    var parts = DeviceAttentionParts(whole: true)
                    if let bias = Self.attentionVectors(a).first, a.qBias != nil || a.kBias != nil || a.vBias != nil {
                        parts.bias = try upload(bias)
                    }
                    if let n = a.qNorm { parts.qNorm = try upload(n) }
                    if let n = a.kNorm { parts.kNorm = try upload(n) }
                    if let b = a.oBias { parts.oBias = try upload(b) }
                    if let sinks = a.sinks { parts.sinks = try upload(sinks) }
                    parts.inputNorm = try upload(layer.inputNorm)
                    parts.postNorm = try upload(layer.postAttentionNorm)
                    parts.window = weights.config.attentionWindow(layer: l)
                    dense.attentionParts[l] = parts
                }
            }
            if case .latent(let a) = layer.attention {
                func matrix(_ m: Matrix?) throws -> DeviceMatrix {
                    guard let m, Self.fitsDevice(m) else { return DeviceMatrix() }
                    return DeviceMatrix(address: try upload([m]), rows: m.rows, cols: m.cols)
                }
                dense.latent[l] = DeviceLatentProjections(query: try matrix(a.q), queryA: try matrix(a.qA), queryB: try matrix(a.qB),
                                                          kvA: try matrix(a.kvA))
                dense.output[l] = try matrix(a.o)
                if Self.latentRunsWhole(a) {
                    // The layer's norms, for its MoE front (`moeLayerFront`).
                    dense.attentionParts[l].inputNorm = try upload(layer.inputNorm)
                    dense.attentionParts[l].postNorm = try upload(layer.postAttentionNorm)
                    var parts = DeviceLatentParts(kvB: try matrix(a.kvB), whole: true)
                    if let v = a.qABias { parts.queryABias = try upload(v) }
                    if let v = a.qANorm { parts.queryANorm = try upload(v) }
                    if let v = a.kvABias { parts.kvABias = try upload(v) }
                    parts.kvANorm = try upload(a.kvANorm)
                    if let v = a.oBias { parts.oBias = try upload(v) }
                    dense.latentParts[l] = parts
                }
            }
            switch layer.feedForward {
            case .dense(let e): if Self.fitsDevice(e) { dense.denseMLP[l] = try mlp(e) }
            case .moe(let moe):
                if Self.fitsDevice(moe.router) {
                    dense.router[l] = DeviceMatrix(address: try upload([moe.router]), rows: moe.router.rows, cols: moe.router.cols)
                }
                if let shared = moe.shared, Self.fitsDevice(shared) { dense.sharedMLP[l] = try mlp(shared) }
            }
        }
        try loadRouting(weights, upload: upload)
        let head = weights.lmHead
        if Self.fitsDevice(head) {
            let address = try weights.finalNorm.withUnsafeBytes { try upload([(head.data, head.byteCount), ($0.baseAddress!, $0.count)]) }
            dense.lmHead = DeviceMatrix(address: address, rows: head.rows, cols: head.cols)
            dense.finalNorm = address + UInt64(head.byteCount)
        }
    }

    public func attentionProjections(layer: Int, x: UnsafePointer<Float>, tokens: Int, q: UnsafeMutablePointer<Float>,
                                     k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>) -> Bool {
        guard layer < dense.qkv.count, dense.qkv[layer].address != 0 else { return false }
        let w = dense.qkv[layer], qn = dense.qRows, kn = dense.kvRows
        return run(tokens: tokens, inCols: w.cols, outCols: w.rows, x: x) {
            try gemm(rows: w.rows, tokens: tokens, k: w.cols, weights: w.address, input: dense.inputRows.device, output: dense.outputRows.device)
        } unpack: { out in
            // Row t of the fused product is q, k, v of token t.
            for t in 0..<tokens {
                let row = out + t * w.rows
                (q + t * qn).update(from: row, count: qn)
                (k + t * kn).update(from: row + qn, count: kn)
                (v + t * kn).update(from: row + qn + kn, count: kn)
            }
        }
    }

    public func product(_ product: DenseProduct, layer: Int, x: UnsafePointer<Float>, tokens: Int, y: UnsafeMutablePointer<Float>) -> Bool {
        let w: DeviceMatrix
        switch product {
        case .attentionOutput: w = layer < dense.output.count ? dense.output[layer] : DeviceMatrix()
        case .router: w = layer < dense.router.count ? dense.router[layer] : DeviceMatrix()
        case .lmHead: w = dense.lmHead
        case .latentQuery: w = layer < dense.latent.count ? dense.latent[layer].query : DeviceMatrix()
        case .latentQueryA: w = layer < dense.latent.count ? dense.latent[layer].queryA : DeviceMatrix()
        case .latentQueryB: w = layer < dense.latent.count ? dense.latent[layer].queryB : DeviceMatrix()
        case .latentKVA: w = layer < dense.latent.count ? dense.latent[layer].kvA : DeviceMatrix()
        }
        guard w.address != 0 else { return false }
        return run(tokens: tokens, inCols: w.cols, outCols: w.rows, x: x) {
            try gemm(rows: w.rows, tokens: tokens, k: w.cols, weights: w.address, input: dense.inputRows.device, output: dense.outputRows.device)
        } unpack: { out in
            y.update(from: out, count: tokens * w.rows)
        }
    }

    public func mlp(layer: Int, shared: Bool, x: UnsafePointer<Float>, tokens: Int, out: UnsafeMutablePointer<Float>) -> Bool {
        let table = shared ? dense.sharedMLP : dense.denseMLP
        guard layer < table.count, table[layer].address != 0 else { return false }
        let w = table[layer], h = hidden
        return run(tokens: tokens, inCols: h, outCols: h, intermediate: w.intermediate, x: x) {
            try swiglu(weights: w.address, intermediate: w.intermediate, down: w.downOffset, tokens: tokens, x: dense.inputRows.device,
                       gu: dense.gateUpRows.device, a: dense.activationRows.device, y: dense.outputRows.device)
        } unpack: { result in
            out.update(from: result, count: tokens * h)
        }
    }

    /// The router's logits, and the layer's shared expert from the same
    /// uploaded rows: queued behind the logits' copy on the compute stream,
    /// so the routed experts' products queue behind it and the CPU's run
    /// while it does; `sharedExpert` waits for it.
    public func router(layer: Int, x: UnsafePointer<Float>, tokens: Int, logits: UnsafeMutablePointer<Float>) -> RouterOffload {
        routes.frontRows = nil
        residual.keeping = nil
        routing.ready = nil
        guard dense.failure == nil, layer < dense.router.count, dense.router[layer].address != 0 else { return .notHeld }
        guard tokens > 0 else { return .computed }
        let w = dense.router[layer], h = hidden
        let shared = dense.sharedMLP[layer]
        dense.pendingShared = nil
        do {
            try makeCurrent()
            try reserveRouterScratch(tokens: tokens, logits: w.rows, shared: shared)
            narrowToBF16(x, count: tokens * h, into: dense.inputRows.host!.assumingMemoryBound(to: UInt16.self))
            try check("cuMemcpyHtoDAsync (router inputs)", copyHtoD(dense.inputRows.device, dense.inputRows.host!, tokens * h * 2, compute))
            try gemm(rows: w.rows, tokens: tokens, k: w.cols, weights: w.address, input: dense.inputRows.device, output: dense.routerRows.device)
            let routed = try queueRoutes(layer: layer, tokens: tokens, experts: w.rows)
            try check("cuMemcpyDtoHAsync (router logits)", copyDtoH(dense.routerRows.host!, dense.routerRows.device, tokens * w.rows * 4, compute))
            try check("cuEventRecord", eventRecord(routerDone, compute))
            try startSharedExpert(shared, layer: layer, tokens: tokens)
            try wait(event: routerDone, "router logits")
            if routed { routing.ready = (layer, tokens) }
            logits.update(from: dense.routerRows.host!.assumingMemoryBound(to: Float.self), count: tokens * w.rows)
            dense.products += 1
            return dense.pendingShared == nil ? .computed : .sharedExpertStarted
        } catch {
            stopDenseProducts(error)
            return .notHeld
        }
    }

    /// The router's scratch for `tokens` rows (BF16 inputs, `logits`
    /// Float32 logits per row) and, where the layer has one, its shared
    /// expert's.
    func reserveRouterScratch(tokens: Int, logits: Int, shared: DeviceMLP) throws {
        try grow(&dense.inputRows, to: tokens * hidden * 2, pinned: true, "dense inputs")
        try grow(&dense.routerRows, to: tokens * logits * 4, pinned: true, "router logits")
        guard shared.address != 0 else { return }
        try grow(&dense.gateUpRows, to: tokens * 2 * shared.intermediate * 4, pinned: false, "dense gate-up products")
        try grow(&dense.activationRows, to: tokens * shared.intermediate * 2, pinned: false, "dense activations")
        try grow(&dense.sharedRows, to: tokens * hidden * 4, pinned: true, "shared expert outputs")
    }

    /// Queues the layer's shared expert (if it has one on the device) on the
    /// router's BF16 input rows, after whatever is queued, with its copy
    /// back and `sharedExpertDone`; `sharedExpert` collects it. `keep`: its
    /// output stays on the device for the kept layer output.
    func startSharedExpert(_ shared: DeviceMLP, layer: Int, tokens: Int, keep: Bool = false) throws {
        guard shared.address != 0 else { return }
        try swiglu(weights: shared.address, intermediate: shared.intermediate, down: shared.downOffset, tokens: tokens,
                   x: dense.inputRows.device, gu: dense.gateUpRows.device, a: dense.activationRows.device, y: dense.sharedRows.device)
        guard !keep else { return }
        try check("cuMemcpyDtoHAsync (shared expert outputs)", copyDtoH(dense.sharedRows.host!, dense.sharedRows.device, tokens * hidden * 4, compute))
        try check("cuEventRecord", eventRecord(sharedExpertDone, compute))
        dense.pendingShared = (layer, tokens)
    }

    public func sharedExpert(layer: Int, tokens: Int, out: UnsafeMutablePointer<Float>) -> Bool {
        guard dense.failure == nil, let pending = dense.pendingShared, pending == (layer, tokens) else { return false }
        dense.pendingShared = nil
        do {
            try makeCurrent()
            try wait(event: sharedExpertDone, "shared expert")
            out.update(from: dense.sharedRows.host!.assumingMemoryBound(to: Float.self), count: tokens * hidden)
            dense.products += 1
            return true
        } catch {
            stopDenseProducts(error)
            return false
        }
    }

    /// After a CUDA error the device takes no more dense products: the CPU
    /// computes this one and every later one.
    private func stopDenseProducts(_ error: any Error) {
        dense.failure = "\(name): \(error)"
        dense.pendingShared = nil
        CUDAAccelerator.warn("dense products go back to the CPU for good: \(dense.failure!)")
    }

    /// One dense product's round trip: `x` narrowed to BF16 into pinned
    /// memory and copied over, `body` queued on the compute stream, the
    /// Float32 output rows copied back and handed to `unpack`. On any CUDA
    /// error the device takes no more dense products and the CPU computes
    /// this one.
    private func run(tokens: Int, inCols: Int, outCols: Int, intermediate: Int = 0, x: UnsafePointer<Float>,
                     _ body: () throws -> Void, unpack: (UnsafePointer<Float>) -> Void) -> Bool {
        routes.frontRows = nil
        guard dense.failure == nil else { return false }
        guard tokens > 0 else { return true }
        do {
            try makeCurrent()
            try grow(&dense.inputRows, to: tokens * inCols * 2, pinned: true, "dense inputs")
            try grow(&dense.outputRows, to: tokens * outCols * 4, pinned: true, "dense outputs")
            try grow(&dense.gateUpRows, to: tokens * 2 * intermediate * 4, pinned: false, "dense gate-up products")
            try grow(&dense.activationRows, to: tokens * intermediate * 2, pinned: false, "dense activations")
            narrowToBF16(x, count: tokens * inCols, into: dense.inputRows.host!.assumingMemoryBound(to: UInt16.self))
            try check("cuMemcpyHtoDAsync (dense inputs)", copyHtoD(dense.inputRows.device, dense.inputRows.host!, tokens * inCols * 2, compute))
            try body()
            try check("cuMemcpyDtoHAsync (dense outputs)", copyDtoH(dense.outputRows.host!, dense.outputRows.device, tokens * outCols * 4, compute))
            try wait(compute)
            unpack(UnsafePointer(dense.outputRows.host!.assumingMemoryBound(to: Float.self)))
            dense.products += 1
            return true
        } catch {
            stopDenseProducts(error)
            return false
        }
    }
}
