import Foundation

public enum ForwardError: Error, CustomStringConvertible, Equatable {
    case tokenOutOfRange(token: Int, vocabSize: Int)
    case blockTableTooShort(sequence: Int, needed: Int, have: Int)
    case invalidBlock(sequence: Int, block: Int, numBlocks: Int)
    case invalidLayers(sequence: Int, reason: String)

    public var description: String {
        switch self {
        case let .tokenOutOfRange(token, vocab):
            return "token id \(token) is outside the vocabulary (0..<\(vocab))"
        case let .blockTableTooShort(seq, needed, have):
            return "sequence \(seq) needs \(needed) KV blocks but its block table has \(have)"
        case let .invalidBlock(seq, block, n):
            return "sequence \(seq) references KV block \(block); the cache has \(n)"
        case let .invalidLayers(seq, reason):
            return "sequence \(seq): \(reason)"
        }
    }
}

/// Logits rows of the last forward, in batch-sequence order (see
/// `LogitsSelection`). Valid until the next forward on the same `Transformer`.
public struct LogitsView: @unchecked Sendable {
    public let base: UnsafePointer<Float>
    public let rows: Int
    public let vocabSize: Int

    public func row(_ i: Int) -> UnsafeBufferPointer<Float> {
        UnsafeBufferPointer(start: base + i * vocabSize, count: vocabSize)
    }

    /// Row `i` for a logits processor to rewrite in place (the rows are the
    /// model's scratch, read by nobody else before the next forward).
    public func mutableRow(_ i: Int) -> UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: UnsafeMutablePointer(mutating: base + i * vocabSize), count: vocabSize)
    }

    public func toArrays() -> [[Float]] { (0..<rows).map { Array(row($0)) } }
}

/// The decoder-only MoE transformer: embedding, `numLayers` pre-norm decoder
/// layers (attention, then a dense or MoE SwiGLU feed-forward), final norm,
/// LM head. One instance owns its scratch buffers, so it runs one forward at
/// a time.
public final class Transformer: @unchecked Sendable {
    /// The weights the forward reads: as loaded, or with the routed experts
    /// packed for the products while bfloat16 mode runs on oneDNN
    /// (`configure(compute:)`).
    public private(set) var weights: ModelWeights
    /// The weights as loaded, kept while `weights` holds packed experts.
    private var storedWeights: ModelWeights?
    public let config: ModelConfig
    public let counters: ExpertLoadCounters
    let ws = Workspace()
    let rope: Rope
    /// Accumulated time per phase since the last `resetProfile()`.
    public internal(set) var profile = ForwardProfile()

    public func resetProfile() { profile = ForwardProfile() }

    /// Where MoE experts are computed (`SharedPoolExecutor` until an
    /// execution strategy installs another). Set before serving, never
    /// during a forward.
    public private(set) var experts: any ExpertExecutor

    /// Installs `executor` (nil: back to the default `SharedPoolExecutor`).
    public func install(experts executor: (any ExpertExecutor)?) {
        experts = executor ?? SharedPoolExecutor(weights: weights)
    }

    /// Where dense products go besides the CPU (nil: all on the CPU). Set
    /// before serving, never during a forward.
    public private(set) var dense: (any DenseOffload)?

    public func install(dense offload: (any DenseOffload)?) { dense = offload }

    /// The GEMM backend and activation precision of every matrix product
    /// (`ComputeOptions.exact` until configured).
    public var compute: ComputeOptions { ws.gemm.options }

    /// Sets the backend and precision; throws, changing nothing, when this
    /// machine cannot run them. Set before serving, never during a forward.
    ///
    /// bfloat16 mode on oneDNN packs the routed experts once
    /// (`ModelWeights.packingExperts`) unless `packingExperts` is false (the
    /// CLI's `--expert-layout stored`); other modes read them as the
    /// checkpoint stores them. Executors installed before keep the copies
    /// they made: every kernel reads both layouts.
    public func configure(compute options: ComputeOptions, packingExperts: Bool = true) throws {
        try options.check()
        let packs = options.gemm == .onednn && options.dtype == .bfloat16 && packingExperts
        if packs, storedWeights == nil, let packed = try weights.packingExperts() {
            storedWeights = weights
            weights = packed
        } else if !packs, let stored = storedWeights {
            weights = stored
            storedWeights = nil
        }
        ws.gemm.options = options
    }

    /// Whether the routed experts are packed now.
    public var expertsArePacked: Bool { weights.packedExperts != nil }
    var layerSeconds = 0.0
    /// Rows of the whole batch while a layered sub-batch runs (route log stride).
    private var routeBatchTokens = 0
    /// Layered prefill, per layer: the sequences running it, as a sub-batch
    /// (kept across layers and forwards so nothing is allocated per layer).
    private var active: [Int] = []
    private var sub = ForwardBatch()

    public init(weights: ModelWeights) {
        self.weights = weights
        config = weights.config
        counters = ExpertLoadCounters(numLayers: config.numLayers, numExperts: config.numExperts)
        rope = Rope(config: config)
        experts = SharedPoolExecutor(weights: weights)
    }

    public convenience init(checkpoint: Checkpoint) throws {
        self.init(weights: try ModelWeights(checkpoint: checkpoint))
    }

    public convenience init(directory: String) throws {
        try self.init(checkpoint: Checkpoint(directory: directory))
    }

    /// Runs the whole model over `batch`, writing its keys and values into
    /// `cache`, and returns the logits rows the batch asked for.
    public func forward(_ batch: ForwardBatch, cache: PagedKVCache) throws -> LogitsView {
        try validate(batch, cache: cache)
        let t0 = monotonicSeconds()
        let hidden = ws.hidden.reserve(batch.tokenCount * config.hiddenSize)
        embed(batch, into: hidden)
        if counters.recordsPairs {
            _ = ws.routeLog.reserve(config.numLayers * batch.tokenCount * config.numExpertsPerToken)
        }
        // The first layer whose output only the dense offload holds, if it
        // kept the residual stream to the end.
        var heldFrom: Int?
        if batch.sequences.allSatisfy({ $0.layers == nil || $0.layers == 0..<config.numLayers }) {
            heldFrom = runLayers(0..<config.numLayers, batch: batch, cache: cache, hidden: hidden, leavingHeld: true)
        } else {
            runMixedLayers(batch: batch, cache: cache, hidden: hidden)
        }
        let t1 = monotonicSeconds()
        let out: LogitsView
        if heldFrom != nil, let view = logitsFromHeldRows(batch) {
            lastHidden = nil
            out = view
        } else {
            if let from = heldFrom { takeBackHeldRows(from: from, batch: batch, cache: cache, hidden: hidden) }
            lastHidden = UnsafePointer(hidden)
            out = logits(batch, hidden: hidden)
        }
        let t2 = monotonicSeconds()
        // After the logits: a device failure there recomputes the held layers, routes too.
        if counters.recordsPairs { recordRoutePairs(batch) }
        profile.lmHeadSeconds += t2 - t1
        profile.otherSeconds += (t1 - t0) - layerSeconds
        layerSeconds = 0
        profile.forwards += 1
        return out
    }

    /// Hidden states after the last forward, `[tokens, hiddenSize]` in batch
    /// order: where a sequence's rows stand after its last layer this forward
    /// (what layered prefill keeps for the next group). Valid until the next
    /// forward; nil after a forward whose rows stayed on a dense offload,
    /// which computed the logits from them (`DenseOffload.residualLogits`:
    /// only batches whose every sequence ran every layer).
    public private(set) var lastHidden: UnsafePointer<Float>?

    /// The top-k experts of batch row `row` at layer `l` in the last forward
    /// (route recording only).
    public func recordedRoute(layer l: Int, row: Int, tokens: Int) -> UnsafePointer<Int32> {
        UnsafePointer(ws.routeLog.pointer + (l * tokens + row) * config.numExpertsPerToken)
    }

    /// Counts each row's expert pairs between consecutive MoE layers it ran in
    /// this forward, and across its group boundary when routes were carried in.
    private func recordRoutePairs(_ batch: ForwardBatch) {
        let k = config.numExpertsPerToken, T = batch.tokenCount
        let all = 0..<config.numLayers
        for s in batch.sequences {
            let range = s.layers ?? all
            for i in 0..<s.tokenCount {
                let row = s.tokenStart + i
                if range.lowerBound > 0, let carried = s.inputRoutes, config.sparseLayers[range.lowerBound - 1],
                   config.sparseLayers[range.lowerBound] {
                    carried.withUnsafeBufferPointer { c in
                        counters.recordPair(layer: range.lowerBound - 1, from: c.baseAddress! + i * k,
                                            to: recordedRoute(layer: range.lowerBound, row: row, tokens: T), k: k)
                    }
                }
                for l in range.dropLast() where config.sparseLayers[l] && config.sparseLayers[l + 1] {
                    counters.recordPair(layer: l, from: recordedRoute(layer: l, row: row, tokens: T),
                                        to: recordedRoute(layer: l + 1, row: row, tokens: T), k: k)
                }
            }
        }
    }

    /// Layered prefill: each layer runs over the rows of the sequences whose
    /// layer range contains it (decodes: every layer; a prompt cohort: its
    /// group), gathered into one sub-batch so they share each expert's GEMM.
    /// Consecutive layers with the same sequences run as one `runLayers`
    /// call (a cohort's whole group, the decodes' layers around it), so the
    /// sub-batch is gathered once per run and a dense offload that holds the
    /// residual stream keeps it across the run.
    private func runMixedLayers(batch: ForwardBatch, cache: PagedKVCache, hidden: UnsafeMutablePointer<Float>) {
        let h = config.hiddenSize
        let all = 0..<config.numLayers
        func runs(_ i: Int, _ l: Int) -> Bool { (batch.sequences[i].layers ?? all).contains(l) }
        var l = 0
        while l < config.numLayers {
            active.removeAll(keepingCapacity: true)
            for i in batch.sequences.indices where runs(i, l) { active.append(i) }
            var end = l + 1
            while end < config.numLayers && batch.sequences.indices.allSatisfy({ runs($0, end) == active.contains($0) }) { end += 1 }
            defer { l = end }
            if active.isEmpty { continue }
            if active.count == batch.sequences.count {
                runLayers(l..<end, batch: batch, cache: cache, hidden: hidden)
                continue
            }
            sub.tokens.removeAll(keepingCapacity: true)
            sub.sequences.removeAll(keepingCapacity: true)
            for i in active {
                let s = batch.sequences[i]
                sub.append(tokens: batch.tokens[s.tokenStart..<(s.tokenStart + s.tokenCount)], startPosition: s.startPosition,
                           blockTable: s.blockTable, logits: .none)
            }
            let rows = ws.subHidden.reserve(sub.tokenCount * h)
            for (j, i) in active.enumerated() {
                let s = batch.sequences[i]
                (rows + sub.sequences[j].tokenStart * h).update(from: hidden + s.tokenStart * h, count: s.tokenCount * h)
            }
            if counters.recordsPairs {
                let map = ws.rowMap.reserve(sub.tokenCount)
                for (j, i) in active.enumerated() {
                    for t in 0..<sub.sequences[j].tokenCount {
                        map[sub.sequences[j].tokenStart + t] = Int32(batch.sequences[i].tokenStart + t)
                    }
                }
                ws.rowMapActive = true
            }
            routeBatchTokens = batch.tokenCount
            runLayers(l..<end, batch: sub, cache: cache, hidden: rows)
            ws.rowMapActive = false
            for (j, i) in active.enumerated() {
                let s = batch.sequences[i]
                (hidden + s.tokenStart * h).update(from: rows + sub.sequences[j].tokenStart * h, count: s.tokenCount * h)
            }
        }
    }

    /// Checks token ids and block tables, so bad input is an error, not a crash.
    public func validate(_ batch: ForwardBatch, cache: PagedKVCache) throws {
        for t in batch.tokens where t < 0 || Int(t) >= config.vocabSize {
            throw ForwardError.tokenOutOfRange(token: Int(t), vocabSize: config.vocabSize)
        }
        for (i, s) in batch.sequences.enumerated() {
            let needed = (s.startPosition + s.tokenCount + cache.blockSize - 1) / cache.blockSize
            if s.blockTable.count < needed {
                throw ForwardError.blockTableTooShort(sequence: i, needed: needed, have: s.blockTable.count)
            }
            for b in s.blockTable.prefix(needed) where b < 0 || Int(b) >= cache.numBlocks {
                throw ForwardError.invalidBlock(sequence: i, block: Int(b), numBlocks: cache.numBlocks)
            }
            if let layers = s.layers {
                if layers.isEmpty || layers.lowerBound < 0 || layers.upperBound > config.numLayers {
                    throw ForwardError.invalidLayers(sequence: i, reason: "layer range \(layers) is outside 0..<\(config.numLayers)")
                }
                if layers.lowerBound > 0 && s.inputHidden?.count != s.tokenCount * config.hiddenSize {
                    throw ForwardError.invalidLayers(sequence: i, reason: "starts at layer \(layers.lowerBound) without its \(s.tokenCount)×\(config.hiddenSize) input hidden states")
                }
                if layers.upperBound < config.numLayers && s.logits != .none {
                    throw ForwardError.invalidLayers(sequence: i, reason: "asks for logits but stops before the last layer")
                }
            }
        }
    }

    /// Embedding lookup for every batch token into `hidden` (`[T, hiddenSize]`).
    public func embed(_ batch: ForwardBatch, into hidden: UnsafeMutablePointer<Float>) {
        let h = config.hiddenSize
        for s in batch.sequences {
            if let input = s.inputHidden, (s.layers?.lowerBound ?? 0) > 0 {
                input.withUnsafeBufferPointer { (hidden + s.tokenStart * h).update(from: $0.baseAddress!, count: s.tokenCount * h) }
                continue
            }
            for t in s.tokenStart..<(s.tokenStart + s.tokenCount) {
                weights.embedding.copyRow(Int(batch.tokens[t]), into: hidden + t * h)
            }
        }
    }

    /// Runs decoder layers `layers` over the batch's hidden states in place.
    /// Layered prefill runs a prompt through a few layers per iteration, keeping
    /// its hidden states in between.
    ///
    /// A dense offload may hold the residual stream across MoE layers
    /// (`DenseOffload.keepsResidual`): `hidden` then stays the input of the
    /// first layer it kept until the rows come back (`residualRows`), at the
    /// end or before a layer it does not front. If they cannot come back
    /// (a device error), the layers from that one are computed again
    /// without it keeping any, so a failing device never fails the batch;
    /// those layers' expert loads are then counted twice.
    ///
    /// `leavingHeld`: rows the offload still holds after the last layer stay
    /// there, and the first layer it kept is returned (the caller then takes
    /// them back with `takeBackHeldRows`, or has the offload compute the
    /// logits from them). `keeping`: whether the offload may keep any.
    @discardableResult
    public func runLayers(_ layers: Range<Int>, batch: ForwardBatch, cache: PagedKVCache,
                          hidden: UnsafeMutablePointer<Float>, leavingHeld: Bool = false, keeping: Bool = true) -> Int? {
        let tokens = batch.tokenCount
        guard tokens > 0 else { return nil }
        prepareTokenIndex(batch)
        var l = layers.lowerBound, mayKeep = keeping
        // The first layer whose output only the offload holds.
        var heldFrom: Int?
        func takeBack() -> Bool {
            defer { heldFrom = nil }
            guard heldFrom != nil else { return true }
            if dense?.residualRows(tokens: tokens, into: hidden) == true { return true }
            profile.layersRecomputed += l - heldFrom!
            l = heldFrom!
            mayKeep = false
            return false
        }
        while l < layers.upperBound || (heldFrom != nil && !leavingHeld) {
            if l == layers.upperBound { _ = takeBack(); continue }
            let front = moeLayerFront(layer: l, batch: batch, cache: cache, hidden: hidden, residualHeld: heldFrom != nil, mayKeep: mayKeep)
            if front == nil, denseLayerWhole(layer: l, batch: batch, cache: cache, hidden: hidden, residualHeld: heldFrom != nil,
                                             mayKeep: mayKeep) {
                // The whole layer ran on the offload, its output kept there or in `hidden`.
                heldFrom = mayKeep && dense?.keepsResidual(layer: l, tokens: tokens) == true ? heldFrom ?? l : nil
                l += 1
                continue
            }
            if front == nil, heldFrom != nil, !takeBack() { continue }
            let keeps = mayKeep && front != nil && dense?.keepsResidual(layer: l, tokens: tokens) == true
            if front == nil { attentionBlock(layer: l, batch: batch, cache: cache, hidden: hidden) }
            let t = monotonicSeconds()
            let kept = feedForwardBlock(layer: l, tokens: tokens, hidden: hidden, front: front, keeps: keeps)
            let dt = monotonicSeconds() - t
            profile.feedForwardSeconds += dt
            layerSeconds += dt
            if keeps && !kept {
                // The offload lost the rows it kept: again from the host's.
                profile.layersRecomputed += l + 1 - (heldFrom ?? l)
                l = heldFrom ?? l
                heldFrom = nil
                mayKeep = false
                continue
            }
            heldFrom = keeps ? heldFrom ?? l : nil
            l += 1
        }
        return heldFrom
    }

    /// The rows a dense offload kept from layer `from` to the last, back
    /// into `hidden`; if they cannot come back (a device error), those
    /// layers computed again without it keeping any.
    private func takeBackHeldRows(from: Int, batch: ForwardBatch, cache: PagedKVCache, hidden: UnsafeMutablePointer<Float>) {
        if dense?.residualRows(tokens: batch.tokenCount, into: hidden) == true { return }
        profile.layersRecomputed += config.numLayers - from
        runLayers(from..<config.numLayers, batch: batch, cache: cache, hidden: hidden, keeping: false)
    }

    /// Which batch rows get logits, in order, into `ws.logitsRows`; their count.
    private func selectLogitsRows(_ batch: ForwardBatch) -> Int {
        let rows = ws.logitsRows.reserve(max(batch.logitsRowCount, 1))
        var r = 0
        for s in batch.sequences {
            let range: Range<Int>
            switch s.logits {
            case .none: continue
            case .last: range = (s.tokenStart + s.tokenCount - 1)..<(s.tokenStart + s.tokenCount)
            case .all: range = s.tokenStart..<(s.tokenStart + s.tokenCount)
            }
            for t in range {
                rows[r] = Int32(t)
                r += 1
            }
        }
        return r
    }

    /// The logits from the rows the dense offload kept after the last layer
    /// (final norm and LM head there: one round trip instead of the rows'
    /// and the LM head's); nil if it could not.
    private func logitsFromHeldRows(_ batch: ForwardBatch) -> LogitsView? {
        let rows = selectLogitsRows(batch), v = config.vocabSize
        let out = ws.logits.reserve(max(rows, 1) * v)
        let selected = UnsafeBufferPointer(start: UnsafePointer(ws.logitsRows.pointer), count: rows)
        guard dense?.residualLogits(tokens: batch.tokenCount, rows: selected, logits: out) == true else { return nil }
        return LogitsView(base: out, rows: rows, vocabSize: v)
    }

    /// Final norm and LM head for the rows the batch selected.
    public func logits(_ batch: ForwardBatch, hidden: UnsafePointer<Float>) -> LogitsView {
        let h = config.hiddenSize, v = config.vocabSize
        let rows = selectLogitsRows(batch), selected = ws.logitsRows.pointer
        let input = ws.logitsInput.reserve(max(rows, 1) * h)
        for r in 0..<rows {
            Elementwise.rmsNorm(hidden + Int(selected[r]) * h, weight: weights.finalNorm, eps: config.rmsNormEps, n: h, out: input + r * h)
        }
        let out = ws.logits.reserve(max(rows, 1) * v)
        if dense?.product(.lmHead, layer: config.numLayers, x: input, tokens: rows, y: out) != true {
            Linear.apply(weights.lmHead, x: input, tokens: rows, y: out, ctx: ws.gemm)
        }
        return LogitsView(base: out, rows: rows, vocabSize: v)
    }

    private func prepareTokenIndex(_ batch: ForwardBatch) {
        let seqOf = ws.tokenSequence.reserve(batch.tokenCount)
        let posOf = ws.tokenPosition.reserve(batch.tokenCount)
        let half = rope.headDim / 2
        let cosT = ws.ropeCos.reserve(batch.tokenCount * half)
        let sinT = ws.ropeSin.reserve(batch.tokenCount * half)
        let starts = ws.blockTableStart.reserve(batch.sequences.count)
        var total = 0
        for (i, s) in batch.sequences.enumerated() {
            starts[i] = Int32(total)
            total += s.blockTable.count
        }
        let tables = ws.blockTables.reserve(max(total, 1))
        for (i, s) in batch.sequences.enumerated() {
            s.blockTable.withUnsafeBufferPointer { (tables + Int(starts[i])).update(from: $0.baseAddress!, count: $0.count) }
        }
        for (i, s) in batch.sequences.enumerated() {
            for j in 0..<s.tokenCount {
                let t = s.tokenStart + j
                seqOf[t] = Int32(i)
                posOf[t] = Int32(s.startPosition + j)
                rope.angles(position: s.startPosition + j, cos: cosT + t * half, sin: sinT + t * half)
            }
        }
    }

    /// The flat batch index `prepareTokenIndex` filled, for attention tasks.
    var attentionIndex: PagedAttention.BatchIndex {
        PagedAttention.BatchIndex(tokenSequence: ws.tokenSequence.pointer, tokenPosition: ws.tokenPosition.pointer,
                                  tables: ws.blockTables.pointer, tableStart: ws.blockTableStart.pointer)
    }

    /// RMSNorm, the layer's attention (grouped-query or latent, each in its
    /// own file), then the residual add.
    private func attentionBlock(layer l: Int, batch: ForwardBatch, cache: PagedKVCache, hidden: UnsafeMutablePointer<Float>) {
        let h = config.hiddenSize, tokens = batch.tokenCount
        let w = weights.layers[l]
        let normed = ws.normed.reserve(tokens * h)
        rmsNormRows(hidden, weight: w.inputNorm, n: h, rows: tokens, out: normed)
        let projected = ws.projected.reserve(tokens * h)
        let seconds: (projection: Double, attention: Double, output: Double)
        switch w.attention {
        case .grouped(let a):
            seconds = groupedAttention(a, layer: l, batch: batch, cache: cache, normed: normed, out: projected)
        case .latent(let a):
            seconds = latentAttention(a, layer: l, batch: batch, cache: cache, normed: normed, out: projected)
        }
        addInPlace(hidden, projected, count: tokens * h)
        profile.qkvSeconds += seconds.projection
        profile.attentionSeconds += seconds.attention
        profile.outputProjectionSeconds += seconds.output
        layerSeconds += seconds.projection + seconds.attention + seconds.output
    }

    /// `front`: `moeLayerFront` has normed the rows into `ws.normed` and
    /// put the router's logits in `ws.routerLogits`. `keeps`: the offload
    /// holds the residual rows, and the output goes to it
    /// (`keepLayerOutput`); returns whether it took it.
    @discardableResult
    private func feedForwardBlock(layer l: Int, tokens: Int, hidden: UnsafeMutablePointer<Float>, front: RouterOffload?,
                                  keeps: Bool = false) -> Bool {
        let h = config.hiddenSize
        let w = weights.layers[l]
        let normed = ws.normed.reserve(tokens * h)
        if front == nil { rmsNormRows(hidden, weight: w.postAttentionNorm, n: h, rows: tokens, out: normed) }
        let out = ws.projected.reserve(tokens * h)
        var outIsZero = false
        switch w.feedForward {
        case .dense(let mlp):
            if dense?.mlp(layer: l, shared: false, x: normed, tokens: tokens, out: out) != true {
                DenseMLP.forward(mlp, x: normed, tokens: tokens, out: out, ws: ws)
            }
        case .moe(let moe):
            outIsZero = MoEBlock.forward(layer: l, weights: moe, config: config, x: normed, tokens: tokens, out: out,
                                         ws: ws, counters: counters, executor: experts, dense: dense, routed: front)
            if counters.recordsPairs {
                // MoEBlock left this layer's top-k in ws.topExperts, by (sub-)batch row.
                let k = config.numExpertsPerToken
                let T = ws.rowMapActive ? routeBatchTokens : tokens
                for t in 0..<tokens {
                    let row = ws.rowMapActive ? Int(ws.rowMap.pointer[t]) : t
                    (ws.routeLog.pointer + (l * T + row) * k).update(from: ws.topExperts.pointer + t * k, count: k)
                }
            }
        }
        if keeps { return dense?.keepLayerOutput(layer: l, tokens: tokens, out: out, outIsZero: outIsZero) == true }
        addInPlace(hidden, out, count: tokens * h)
        return false
    }

    func rmsNormRows(_ x: UnsafeMutablePointer<Float>, weight: [Float], n: Int, rows: Int, out: UnsafeMutablePointer<Float>) {
        let eps = config.rmsNormEps
        weight.withUnsafeBufferPointer { wb in
            nonisolated(unsafe) let xs = x, os = out, ws = wb.baseAddress!
            Parallel.forRanges(rows, minChunk: max(1, 32768 / max(n, 1))) { r in
                for i in r { Elementwise.rmsNorm(xs + i * n, weight: ws, eps: eps, n: n, out: os + i * n) }
            }
        }
    }

    func addBias(_ x: UnsafeMutablePointer<Float>, _ b: [Float], rows: Int) {
        let n = b.count
        for r in 0..<rows { for i in 0..<n { x[r * n + i] += b[i] } }
    }

    func clamp(_ x: UnsafeMutablePointer<Float>, _ n: Int, _ limit: Float) {
        for i in 0..<n { x[i] = min(max(x[i], -limit), limit) }
    }

    func addInPlace(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
        Elementwise.axpy(1, x, y, n: count)
    }
}
