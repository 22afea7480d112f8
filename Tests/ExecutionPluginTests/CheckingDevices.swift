import Foundation
import HybridExecution
import SwitchyardCore
@testable import SwitchyardModel

/// Wraps an accelerator and, after each layer's share, recomputes every
/// expert it computed with the CPU kernels on the same input rows, keeping
/// the worst relative difference; the accelerator's rows are put back, so
/// the forward goes on from them. Comparing logits at the end would not do:
/// one BF16 rounding that falls the other way in an early layer can change
/// a later layer's routing, and with it a logit by far more than any
/// rounding (seen: one expert of layer 0 off by 2.9e-4 moved a logit by
/// 0.66).
final class CheckingAccelerator: ExpertAccelerator, @unchecked Sendable {
    let inner: any ExpertAccelerator
    private let cpu: SharedPoolExecutor
    private let counts: UnsafeMutablePointer<Int32>
    private var pending: (work: ExpertWork, experts: [Int])?
    private(set) var worstRelativeDifference: Float = 0
    private(set) var expertsChecked = 0
    /// Of those, experts the device summed per token (`ExpertRoutes`).
    private(set) var summedExperts = 0
    /// Experts whose sums the device kept for the layer output it holds
    /// (zeros in `combined`): `CheckingDenseOffload.keepLayerOutput`
    /// checks them with the whole layer.
    private(set) var keptExperts = 0

    var name: String { inner.name }
    var detail: String { inner.detail }
    var expertBudgetBytes: Int { inner.expertBudgetBytes }

    init(_ inner: any ExpertAccelerator, weights: ModelWeights) {
        self.inner = inner
        cpu = SharedPoolExecutor(weights: weights)
        counts = .allocate(capacity: max(1, weights.config.numExperts))
    }

    deinit { counts.deallocate() }

    func load(_ expert: ResidentExperts.Expert, weights: ExpertWeights) throws { try inner.load(expert, weights: weights) }
    func evict(_ expert: ResidentExperts.Expert) { inner.evict(expert) }

    /// Called after each `begin`, while the layer's products may still be
    /// queued on the device (tests swap experts there).
    var afterBegin: ((ExpertWork, _ experts: [Int], _ uploads: [Int]) throws -> Void)?

    func begin(_ work: ExpertWork, experts: [Int], uploads: [Int]) throws {
        try inner.begin(work, experts: experts, uploads: uploads)
        pending = (work, experts)
        try afterBegin?(work, experts, uploads)
    }

    func gathersRows(_ work: ExpertWork) -> Bool { inner.gathersRows(work) }

    func finish() throws {
        try inner.finish()
        guard let (work, experts) = pending else { return }
        pending = nil
        let h = work.hiddenSize
        func note(_ device: Float, _ cpu: Float) {
            let d = abs(device - cpu) / (1 + abs(cpu))
            // NaN (unwritten device memory reads as NaN) counts as the worst.
            if !(d <= worstRelativeDifference) { worstRelativeDifference = d.isNaN ? .infinity : d }
        }
        // The CPU's reference reads the rows: gather them where the device
        // took its own.
        let flags = UnsafeMutablePointer<Bool>.allocate(capacity: work.numExperts)
        defer { flags.deallocate() }
        for j in 0..<work.numExperts { flags[j] = experts.contains(j) }
        work.gatherRows(only: flags)
        let summed = experts.filter { work.routes?.combinedExperts[$0] == true }
        if let r = work.routes, !summed.isEmpty, UnsafeBufferPointer(start: r.combined, count: r.tokens * h).allSatisfy({ $0 == 0 }) {
            keptExperts += summed.count
            return
        }
        // The device summed these per token and left their rows alone.
        if let r = work.routes, !summed.isEmpty {
            for i in 0..<work.numExperts { counts[i] = summed.contains(i) ? work.tokenCount[i] : 0 }
            cpu.run(work.with(tokenCount: counts))
            for t in 0..<r.tokens {
                var sum = [Float](repeating: 0, count: h)
                for s in 0..<r.perToken {
                    let a = t * r.perToken + s
                    guard summed.contains(Int(r.expert[a])) else { continue }
                    let row = work.output + Int(r.row[a]) * h
                    for c in 0..<h { sum[c] += r.weight[a] * row[c] }
                }
                for c in 0..<h { note(r.combined[t * h + c], sum[c]) }
            }
            expertsChecked += summed.count
            summedExperts += summed.count
        }
        for j in experts where work.tokenCount[j] > 0 && !summed.contains(j) {
            let rows = Int(work.rowOffset[j]) * h..<Int(work.rowOffset[j] + work.tokenCount[j]) * h
            let device = Array(UnsafeBufferPointer(start: work.output + rows.lowerBound, count: rows.count))
            for i in 0..<work.numExperts { counts[i] = i == j ? work.tokenCount[i] : 0 }
            cpu.run(work.with(tokenCount: counts))
            for (i, r) in rows.enumerated() { note(device[i], work.output[r]) }
            (work.output + rows.lowerBound).update(from: device, count: rows.count)
            expertsChecked += 1
        }
    }
}

/// Wraps a dense offload and recomputes every product it takes with the
/// CPU kernels (`Linear.apply`, the model's precision) from the model's
/// own weights, keeping the worst relative difference; the offload's
/// output is what the forward goes on with. For the same reason as
/// `CheckingAccelerator`, per product and not at the logits.
final class CheckingDenseOffload: DenseOffload, @unchecked Sendable {
    let inner: any DenseOffload
    private let weights: ModelWeights
    private let ctx: GemmContext
    private(set) var worstRelativeDifference: Float = 0
    private(set) var productsChecked = 0

    private let cpu: SharedPoolExecutor

    init(_ inner: any DenseOffload, weights: ModelWeights, compute: ComputeOptions) {
        self.inner = inner
        self.weights = weights
        ctx = GemmContext(options: compute)
        cpu = SharedPoolExecutor(weights: weights)
    }

    /// Rows the device sent back as BF16 (widened): each must be a BF16 value
    /// within one BF16 step of the Float32 reference (the device's own sums
    /// may round it to either neighbour).
    private func compareBF16(_ device: UnsafePointer<Float>, _ reference: [Float], count: Int) {
        for i in 0..<count {
            let d = device[i], r = reference[i]
            let step = Float(bitPattern: r.bitPattern & 0x7F80_0000) / 128
            let bf16 = d.bitPattern & 0xFFFF == 0
            if !(bf16 && abs(d - r) <= step) { worstRelativeDifference = max(worstRelativeDifference, bf16 ? abs(d - r) / (1 + abs(r)) : .infinity) }
        }
    }

    /// `counts`: a product (`productsChecked`), not part of attention.
    private func compare(_ device: UnsafePointer<Float>, count: Int, counts: Bool = true, _ cpu: (UnsafeMutablePointer<Float>) -> Void) {
        let mine = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { mine.deallocate() }
        cpu(mine)
        for i in 0..<count {
            let d = abs(device[i] - mine[i]) / (1 + abs(mine[i]))
            if !(d <= worstRelativeDifference) { worstRelativeDifference = d.isNaN ? .infinity : d }
        }
        if counts { productsChecked += 1 }
    }

    func attentionProjections(layer: Int, x: UnsafePointer<Float>, tokens: Int, q: UnsafeMutablePointer<Float>,
                              k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>) -> Bool {
        guard inner.attentionProjections(layer: layer, x: x, tokens: tokens, q: q, k: k, v: v) else { return false }
        guard case .grouped(let a) = weights.layers[layer].attention else { return true }
        compare(q, count: tokens * a.q.rows) { Linear.apply(a.q, x: x, tokens: tokens, y: $0, ctx: ctx) }
        compare(k, count: tokens * a.k.rows) { Linear.apply(a.k, x: x, tokens: tokens, y: $0, ctx: ctx) }
        compare(v, count: tokens * a.v.rows) { Linear.apply(a.v, x: x, tokens: tokens, y: $0, ctx: ctx) }
        return true
    }

    func product(_ product: DenseProduct, layer: Int, x: UnsafePointer<Float>, tokens: Int, y: UnsafeMutablePointer<Float>) -> Bool {
        guard inner.product(product, layer: layer, x: x, tokens: tokens, y: y) else { return false }
        let w: Matrix
        switch (product, weights.layers[min(layer, weights.layers.count - 1)].attention, weights.layers[min(layer, weights.layers.count - 1)].feedForward) {
        case (.lmHead, _, _): w = weights.lmHead
        case (.attentionOutput, .grouped(let a), _): w = a.o
        case (.attentionOutput, .latent(let a), _): w = a.o
        case (.router, _, .moe(let moe)): w = moe.router
        case (.latentQuery, .latent(let a), _) where a.q != nil: w = a.q!
        case (.latentQueryA, .latent(let a), _) where a.qA != nil: w = a.qA!
        case (.latentQueryB, .latent(let a), _) where a.qB != nil: w = a.qB!
        case (.latentKVA, .latent(let a), _): w = a.kvA
        default:
            // A product the layer does not have: wrong whatever it holds.
            worstRelativeDifference = .infinity
            return true
        }
        compare(y, count: tokens * w.rows) { Linear.apply(w, x: x, tokens: tokens, y: $0, ctx: ctx) }
        return true
    }

    func mlp(layer: Int, shared: Bool, x: UnsafePointer<Float>, tokens: Int, out: UnsafeMutablePointer<Float>) -> Bool {
        guard inner.mlp(layer: layer, shared: shared, x: x, tokens: tokens, out: out) else { return false }
        let e: ExpertWeights
        switch weights.layers[layer].feedForward {
        case .dense(let mlp) where !shared: e = mlp
        case .moe(let moe) where shared && moe.shared != nil: e = moe.shared!
        default: return true
        }
        checkMLP(e, x: x, tokens: tokens, out: out)
        return true
    }

    /// The rows a shared expert started with the router was given, kept
    /// until it is collected.
    private var sharedInput: (layer: Int, rows: [Float])?
    private(set) var sharedExpertsStarted = 0
    /// The logits the offload gave last, for checking its routes.
    private var lastLogits: (layer: Int, values: [Float])?
    /// Layers whose routes the offload chose; each checked against the
    /// CPU's routing of the same logits (experts exactly, weights within
    /// the tolerance).
    private(set) var routesChecked = 0

    func routes(layer: Int, tokens: Int, experts: UnsafeMutablePointer<Int32>, weights: UnsafeMutablePointer<Float>) -> Bool {
        guard inner.routes(layer: layer, tokens: tokens, experts: experts, weights: weights) else { return false }
        guard let (logged, values) = lastLogits, logged == layer, case .moe(let moe) = self.weights.layers[layer].feedForward else {
            worstRelativeDifference = .infinity
            return true
        }
        lastLogits = nil
        let c = self.weights.config, n = moe.router.rows, k = c.numExpertsPerToken
        var logits = values, choice = [Float](repeating: 0, count: n)
        var mine = [Int32](repeating: 0, count: k), mineWeights = [Float](repeating: 0, count: k)
        for t in 0..<tokens {
            if let b = moe.routerBias { for j in 0..<n { logits[t * n + j] += b[j] } }
            logits.withUnsafeMutableBufferPointer { l in
                (moe.selectionBias ?? []).withUnsafeBufferPointer { bias in
                    Router.route(l.baseAddress! + t * n, n: n, k: k, config: c.routing, normalize: c.normTopKProb,
                                 selectionBias: moe.selectionBias == nil ? nil : bias.baseAddress, choice: &choice,
                                 experts: &mine, weights: &mineWeights)
                }
            }
            for j in 0..<k {
                guard experts[t * k + j] == mine[j] else {
                    worstRelativeDifference = .infinity
                    return true
                }
                let d = abs(weights[t * k + j] - mineWeights[j]) / (1 + abs(mineWeights[j]))
                if !(d <= worstRelativeDifference) { worstRelativeDifference = d.isNaN ? .infinity : d }
            }
        }
        routesChecked += 1
        return true
    }

    func router(layer: Int, x: UnsafePointer<Float>, tokens: Int, logits: UnsafeMutablePointer<Float>) -> RouterOffload {
        let routed = inner.router(layer: layer, x: x, tokens: tokens, logits: logits)
        guard routed != .notHeld, case .moe(let moe) = weights.layers[layer].feedForward else { return routed }
        compare(logits, count: tokens * moe.router.rows) { Linear.apply(moe.router, x: x, tokens: tokens, y: $0, ctx: ctx) }
        lastLogits = (layer, Array(UnsafeBufferPointer(start: logits, count: tokens * moe.router.rows)))
        if routed == .sharedExpertStarted {
            sharedInput = (layer, Array(UnsafeBufferPointer(start: x, count: tokens * weights.config.hiddenSize)))
            sharedExpertsStarted += 1
        }
        return routed
    }

    func sharedExpert(layer: Int, tokens: Int, out: UnsafeMutablePointer<Float>) -> Bool {
        guard inner.sharedExpert(layer: layer, tokens: tokens, out: out) else { return false }
        guard let (started, rows) = sharedInput, started == layer, case .moe(let moe) = weights.layers[layer].feedForward,
              let shared = moe.shared else {
            // Collected without having been started here: wrong whatever it holds.
            worstRelativeDifference = .infinity
            return true
        }
        sharedInput = nil
        checkMLP(shared, x: rows, tokens: tokens, out: out)
        return true
    }

    private func checkMLP(_ e: ExpertWeights, x: UnsafePointer<Float>, tokens: Int, out: UnsafePointer<Float>) {
        let inter = e.gate.rows
        let g = UnsafeMutablePointer<Float>.allocate(capacity: tokens * inter), u = UnsafeMutablePointer<Float>.allocate(capacity: tokens * inter)
        defer { g.deallocate(); u.deallocate() }
        compare(out, count: tokens * e.down.rows) { y in
            Linear.apply(e.gate, x: x, tokens: tokens, y: g, ctx: ctx)
            Linear.apply(e.up, x: x, tokens: tokens, y: u, ctx: ctx)
            Elementwise.swiglu(gate: g, up: u, n: tokens * inter)
            Linear.apply(e.down, x: g, tokens: tokens, y: y, ctx: ctx)
        }
    }

    /// Attention, checked against a plain reference computed here from the
    /// keys and values every call brings (kept per layer and cache slot):
    /// BF16 queries, keys and values, softmax weights rounded to BF16 in
    /// bfloat16 mode, as the CPU computes it.
    private var keys: [Int: [Int: [Float]]] = [:], values: [Int: [Int: [Float]]] = [:]
    private var cache: ObjectIdentifier?
    private(set) var attentionChecked = 0

    func attention(layer: Int, batch b: AttentionBatch, q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                   out: UnsafeMutablePointer<Float>) -> Bool {
        guard inner.attention(layer: layer, batch: b, q: q, k: k, v: v, out: out) else { return false }
        let reference = referenceAttention(layer: layer, b, q: q, k: k, v: v)
        compare(out, count: reference.count, counts: false) { $0.update(from: reference, count: reference.count) }
        attentionChecked += 1
        return true
    }

    private func referenceAttention(layer: Int, _ b: AttentionBatch, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                                    v: UnsafePointer<Float>) -> [Float] {
        if cache != b.cache { keys = [:]; values = [:]; cache = b.cache }
        let h = b.numHeads, kvh = b.numKVHeads, d = b.headDim, bs = b.blockSize, row = kvh * d
        func rounded(_ p: UnsafePointer<Float>, _ n: Int) -> [Float] { (0..<n).map { Float(bitPattern: UInt32(narrowToBF16(p[$0])) << 16) } }
        func slot(_ s: Int, _ p: Int) -> Int { Int(b.tables[Int(b.tableStart[s]) + p / bs]) * bs + p % bs }
        for t in 0..<b.tokens {
            let at = slot(Int(b.tokenSequence[t]), Int(b.tokenPosition[t]))
            keys[layer, default: [:]][at] = rounded(k + t * row, row)
            values[layer, default: [:]][at] = rounded(v + t * row, row)
        }
        // gpt-oss: a sliding window on some layers, a sink logit per head.
        let window = weights.config.attentionWindow(layer: layer)
        var sinks: [Float]?
        if case .grouped(let a) = weights.layers[layer].attention { sinks = a.sinks }
        var out = [Float](repeating: 0, count: b.tokens * h * d)
        for t in 0..<b.tokens {
            let s = Int(b.tokenSequence[t]), p = Int(b.tokenPosition[t])
            let seen = (window > 0 ? max(0, p - window + 1) : 0)...p
            for head in 0..<h {
                let g = head / (h / kvh)
                let qh = rounded(q + (t * h + head) * d, d)
                var scores = seen.map { j -> Float in
                    let kr = keys[layer]![slot(s, j)]!
                    return (0..<d).reduce(Float(0)) { $0 + qh[$1] * kr[g * d + $1] } * b.scale
                }
                let m = max(scores.max()!, sinks?[head] ?? -.infinity)
                scores = scores.map { exp($0 - m) }
                let sum = scores.reduce(0, +) + (sinks.map { exp($0[head] - m) } ?? 0)
                scores = scores.map { b.roundsToBF16 ? Float(bitPattern: UInt32(narrowToBF16($0 / sum)) << 16) : $0 / sum }
                for e in 0..<d {
                    var acc: Float = 0
                    for (i, j) in seen.enumerated() { acc += scores[i] * values[layer]![slot(s, j)]![g * d + e] }
                    out[(t * h + head) * d + e] = acc
                }
            }
        }
        return out
    }

    /// Whether `attentionLayer` is passed on (false: the forward takes the
    /// steps, so those are what gets checked).
    var offersWholeLayers = true
    private(set) var wholeLayersChecked = 0

    /// A whole attention layer: its keys and values against q/k/v computed
    /// here from the model's weights (biases, q/k norms, clip, RoPE from the
    /// batch's angles, written out plainly rather than by the forward's
    /// code), its output against attention over the device's keys and
    /// values and `o_proj`.
    func attentionLayer(layer: Int, batch b: AttentionBatch, x: UnsafePointer<Float>, k: UnsafeMutablePointer<Float>,
                        v: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>) -> Bool {
        guard offersWholeLayers, inner.attentionLayer(layer: layer, batch: b, x: x, k: k, v: v, out: out) else { return false }
        checkWholeAttention(layer: layer, b, x: x, k: k, v: v, out: out)
        return true
    }

    /// Whether `moeLayerFront` is passed on (false: attention and the router
    /// are asked apart).
    var offersLayerFronts = true
    private(set) var frontsChecked = 0

    /// An MoE layer's front: the residual rows it left unchanged if it did
    /// nothing; else its attention checked as `attentionLayer`'s (from the
    /// input norm of the rows it was given, its output read off the new
    /// residual rows), its normed rows against the post-attention norm of
    /// its residual rows, its logits against the router on its normed rows.
    /// A front that keeps the residual rows must leave `hidden` as it was;
    /// its rows after attention are read back from the offload
    /// (`residualRows`) and checked as `hidden` would be, and kept for
    /// checking the layer's output (`keepLayerOutput`).
    private(set) var frontsKept = 0, sharedExpertsKept = 0
    private var keptRows: (layer: Int, afterAttention: [Float], normed: [Float])?

    func moeLayerFront(layer: Int, batch b: AttentionBatch, hidden: UnsafeMutablePointer<Float>, residualHeld: Bool, mayKeep: Bool,
                       k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, normed: UnsafeMutablePointer<Float>,
                       logits: UnsafeMutablePointer<Float>) -> RouterOffload {
        guard offersLayerFronts else { return .notHeld }
        let h = weights.config.hiddenSize, n = b.tokens * h
        let (untouched, before) = layerInput(hidden: hidden, tokens: b.tokens, held: residualHeld)
        let routed = inner.moeLayerFront(layer: layer, batch: b, hidden: hidden, residualHeld: residualHeld, mayKeep: mayKeep, k: k, v: v,
                                         normed: normed, logits: logits)
        guard routed != .notHeld else {
            if !untouched.elementsEqual(UnsafeBufferPointer(start: hidden, count: n)) { worstRelativeDifference = .infinity }
            return routed
        }
        let keeps = inner.keepsResidual(layer: layer, tokens: b.tokens)
        if keeps { frontsKept += 1 }
        // The rows after attention.
        let after = layerOutput(hidden: hidden, tokens: b.tokens, untouched: untouched, keeps: keeps, mayKeep: mayKeep)
        let w = weights.layers[layer]
        guard case .moe(let moe) = w.feedForward else {
            worstRelativeDifference = .infinity
            return routed
        }
        let x = before.withUnsafeBufferPointer { rmsNorm($0.baseAddress!, w.inputNorm, tokens: b.tokens) }
        // The residual rows as the forward goes on with them; attention's
        // output alone is not read back off them (hidden' − hidden), since
        // residual streams hold outliers in the thousands whose rounding
        // would swamp it.
        let attended = checkAttention(layer: layer, b, x: x, k: k, v: v)
        compare(after, count: n, counts: false) { y in for i in 0..<n { y[i] = before[i] + attended[i] } }
        // The normed rows come back as BF16 (all the CPU's products take).
        compareBF16(normed, rmsNorm(after, w.postAttentionNorm, tokens: b.tokens), count: n)
        compare(logits, count: b.tokens * moe.router.rows) { Linear.apply(moe.router, x: normed, tokens: b.tokens, y: $0, ctx: ctx) }
        lastLogits = (layer, Array(UnsafeBufferPointer(start: logits, count: b.tokens * moe.router.rows)))
        if routed == .sharedExpertStarted {
            sharedInput = (layer, Array(UnsafeBufferPointer(start: normed, count: n)))
            sharedExpertsStarted += 1
        }
        if routed == .sharedExpertKept { sharedExpertsKept += 1 }
        keptRows = keeps ? (layer, after, Array(UnsafeBufferPointer(start: normed, count: n))) : nil
        frontsChecked += 1
        return routed
    }

    func keepsResidual(layer: Int, tokens: Int) -> Bool { inner.keepsResidual(layer: layer, tokens: tokens) }

    /// A dense layer whole: its output rows (from `hidden`, or read back
    /// from the offload where it keeps them) against the layer computed
    /// here from its input rows: attention checked as a front's, the
    /// residual add, the post-attention norm, the CPU's MLP, its add. The
    /// MLP counts as a product.
    private(set) var denseLayersChecked = 0

    func denseLayer(layer: Int, batch b: AttentionBatch, hidden: UnsafeMutablePointer<Float>, residualHeld: Bool, mayKeep: Bool,
                    k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>) -> Bool {
        guard offersLayerFronts else { return false }
        let h = weights.config.hiddenSize, n = b.tokens * h
        let (untouched, before) = layerInput(hidden: hidden, tokens: b.tokens, held: residualHeld)
        guard inner.denseLayer(layer: layer, batch: b, hidden: hidden, residualHeld: residualHeld, mayKeep: mayKeep, k: k, v: v) else {
            if !untouched.elementsEqual(UnsafeBufferPointer(start: hidden, count: n)) { worstRelativeDifference = .infinity }
            return false
        }
        let after = layerOutput(hidden: hidden, tokens: b.tokens, untouched: untouched,
                                keeps: inner.keepsResidual(layer: layer, tokens: b.tokens), mayKeep: mayKeep)
        let w = weights.layers[layer]
        guard case .dense(let mlp) = w.feedForward else {
            worstRelativeDifference = .infinity
            return true
        }
        let x = before.withUnsafeBufferPointer { rmsNorm($0.baseAddress!, w.inputNorm, tokens: b.tokens) }
        let attended = checkAttention(layer: layer, b, x: x, k: k, v: v)
        let mid = (0..<n).map { before[$0] + attended[$0] }
        var post = mid.withUnsafeBufferPointer { rmsNorm($0.baseAddress!, w.postAttentionNorm, tokens: b.tokens) }
        var mlpOut = [Float](repeating: 0, count: n)
        let ws = Workspace()
        ws.gemm.options = ctx.options
        DenseMLP.forward(mlp, x: &post, tokens: b.tokens, out: &mlpOut, ws: ws)
        compare(after, count: n) { y in for i in 0..<n { y[i] = mid[i] + mlpOut[i] } }
        denseLayersChecked += 1
        return true
    }

    /// A whole-layer call's input rows (`hidden`, or where `held` the
    /// offload's), and `hidden` as it was before the call.
    private func layerInput(hidden: UnsafePointer<Float>, tokens: Int, held: Bool) -> (untouched: [Float], before: [Float]) {
        let untouched = Array(UnsafeBufferPointer(start: hidden, count: tokens * weights.config.hiddenSize))
        var before = untouched
        if held, !before.withUnsafeMutableBufferPointer({ inner.residualRows(tokens: tokens, into: $0.baseAddress!) }) {
            worstRelativeDifference = .infinity
        }
        return (untouched, before)
    }

    /// A whole-layer call's output rows: `hidden`, or where it keeps them
    /// the offload's (it may only if allowed, and must leave `hidden` as
    /// it was).
    private func layerOutput(hidden: UnsafePointer<Float>, tokens: Int, untouched: [Float], keeps: Bool, mayKeep: Bool) -> [Float] {
        var after = Array(UnsafeBufferPointer(start: hidden, count: tokens * weights.config.hiddenSize))
        guard keeps else { return after }
        if !mayKeep || !untouched.elementsEqual(after) { worstRelativeDifference = .infinity }
        if !after.withUnsafeMutableBufferPointer({ inner.residualRows(tokens: tokens, into: $0.baseAddress!) }) {
            worstRelativeDifference = .infinity
        }
        return after
    }

    /// A whole layer's attention checked in its form; the reference output.
    private func checkAttention(layer: Int, _ b: AttentionBatch, x: UnsafePointer<Float>, k: UnsafePointer<Float>,
                                v: UnsafePointer<Float>) -> [Float] {
        if case .latent = weights.layers[layer].attention { return checkLatentAttention(layer: layer, b, x: x, row: k, out: nil) }
        return checkWholeAttention(layer: layer, b, x: x, k: k, v: v, out: nil)
    }

    /// RMSNorm of `tokens` rows with the model's epsilon.
    private func rmsNorm(_ rows: UnsafePointer<Float>, _ weight: [Float], tokens: Int) -> [Float] {
        let h = weights.config.hiddenSize
        var out = [Float](repeating: 0, count: tokens * h)
        for r in 0..<tokens {
            let row = UnsafeBufferPointer(start: rows + r * h, count: h)
            let scale = 1 / (row.reduce(0) { $0 + $1 * $1 } / Float(h) + weights.config.rmsNormEps).squareRoot()
            for e in 0..<h { out[r * h + e] = weight[e] * (row[e] * scale) }
        }
        return out
    }

    /// The kept layer's output: the offload's rows after it against the
    /// rows after attention plus the whole MoE layer computed here by the
    /// CPU's own block from the front's normed rows (routing, every expert,
    /// the shared expert), whatever share of it the device computed.
    private(set) var layerOutputsChecked = 0

    /// Layers whose CPU share was said to be all zeros (and checked to be).
    private(set) var emptySharesChecked = 0

    func keepLayerOutput(layer: Int, tokens: Int, out: UnsafePointer<Float>, outIsZero: Bool) -> Bool {
        let h = weights.config.hiddenSize, n = tokens * h
        if outIsZero {
            if UnsafeBufferPointer(start: out, count: n).contains(where: { $0 != 0 }) { worstRelativeDifference = .infinity }
            emptySharesChecked += 1
        }
        guard inner.keepLayerOutput(layer: layer, tokens: tokens, out: out, outIsZero: outIsZero) else { return false }
        guard let kept = keptRows, kept.layer == layer, case .moe(let moe) = weights.layers[layer].feedForward else {
            worstRelativeDifference = .infinity
            return true
        }
        keptRows = nil
        var rows = [Float](repeating: 0, count: n)
        guard rows.withUnsafeMutableBufferPointer({ inner.residualRows(tokens: tokens, into: $0.baseAddress!) }) else {
            worstRelativeDifference = .infinity
            return true
        }
        let ws = Workspace()
        ws.gemm.options = ctx.options
        var moeOut = [Float](repeating: 0, count: n)
        kept.normed.withUnsafeBufferPointer { x in
            moeOut.withUnsafeMutableBufferPointer { o in
                MoEBlock.forward(layer: layer, weights: moe, config: weights.config, x: x.baseAddress!, tokens: tokens, out: o.baseAddress!,
                                 ws: ws, counters: nil, executor: cpu, dense: nil)
            }
        }
        compare(rows, count: n, counts: false) { y in for i in 0..<n { y[i] = kept.afterAttention[i] + moeOut[i] } }
        layerOutputsChecked += 1
        return true
    }

    func residualRows(tokens: Int, into hidden: UnsafeMutablePointer<Float>) -> Bool { inner.residualRows(tokens: tokens, into: hidden) }

    /// Logits from the rows the offload held after the last layer: against
    /// the final norm and the LM head computed here from those rows, read
    /// back from the offload (it still holds them), for the rows selected.
    private(set) var logitsFromHeldRowsChecked = 0

    func residualLogits(tokens: Int, rows: UnsafeBufferPointer<Int32>, logits: UnsafeMutablePointer<Float>) -> Bool {
        guard inner.residualLogits(tokens: tokens, rows: rows, logits: logits) else { return false }
        let h = weights.config.hiddenSize
        var held = [Float](repeating: 0, count: tokens * h)
        guard held.withUnsafeMutableBufferPointer({ inner.residualRows(tokens: tokens, into: $0.baseAddress!) }) else {
            worstRelativeDifference = .infinity
            return true
        }
        let selected = rows.flatMap { held[Int($0) * h..<(Int($0) + 1) * h] }
        let normed = selected.withUnsafeBufferPointer { rmsNorm($0.baseAddress!, weights.finalNorm, tokens: rows.count) }
        compare(logits, count: rows.count * weights.lmHead.rows) { y in
            normed.withUnsafeBufferPointer { Linear.apply(weights.lmHead, x: $0.baseAddress!, tokens: rows.count, y: y, ctx: ctx) }
        }
        logitsFromHeldRowsChecked += 1
        return true
    }

    /// A whole latent attention layer: its cached rows against the row
    /// made here from the model's weights (kv_a, bias, the latent's norm,
    /// RoPE on the shared key from the batch's angles), its output against
    /// attention in the absorbed form written out plainly over the rows it
    /// returned (kept per layer and cache slot, so decodes read what
    /// earlier forwards stored): `W_UKᵀ` applied to each head's BF16
    /// `q_nope` element by element, Float32 scores and softmax as the
    /// CPU's latent cache is Float32, `W_UV` and `o_proj` from BF16 inputs.
    private var latentRows: [Int: [Int: [Float]]] = [:]
    private(set) var latentLayersChecked = 0

    func latentAttentionLayer(layer: Int, batch b: AttentionBatch, x: UnsafePointer<Float>, row: UnsafeMutablePointer<Float>,
                              out: UnsafeMutablePointer<Float>) -> Bool {
        guard offersWholeLayers, inner.latentAttentionLayer(layer: layer, batch: b, x: x, row: row, out: out) else { return false }
        checkLatentAttention(layer: layer, b, x: x, row: row, out: out)
        return true
    }

    /// Checks the cached rows, and `out` if given; returns the reference output.
    @discardableResult
    private func checkLatentAttention(layer: Int, _ b: AttentionBatch, x: UnsafePointer<Float>, row: UnsafePointer<Float>,
                                      out: UnsafePointer<Float>?) -> [Float] {
        guard case .latent(let a) = weights.layers[layer].attention, let m = weights.config.latentAttention, let angles = b.rope else {
            worstRelativeDifference = .infinity
            return []
        }
        let t = b.tokens, heads = b.numHeads, width = m.cacheWidth, r = m.kvLoraRank, nope = m.nopeDim, dv = m.valueDim
        let qhd = m.queryHeadDim, perHead = nope + dv, eps = Transformer.latentNormEps
        func bf16(_ v: Float) -> Float { Float(bitPattern: UInt32(narrowToBF16(v)) << 16) }
        func product(_ w: Matrix, _ input: [Float]) -> [Float] {
            var y = [Float](repeating: 0, count: t * w.rows), input = input
            Linear.apply(w, x: &input, tokens: t, y: &y, ctx: ctx)
            return y
        }
        func norm(_ v: inout [Float], rows: Int, ld: Int, width n: Int, weight: [Float]) {
            for i in 0..<rows {
                let scale = 1 / ((0..<n).reduce(Float(0)) { $0 + v[i * ld + $1] * v[i * ld + $1] } / Float(n) + eps).squareRoot()
                for e in 0..<n { v[i * ld + e] = weight[e] * (v[i * ld + e] * scale) }
            }
        }
        func rotate(_ v: inout [Float], at base: Int, token: Int) {
            for j in 0..<angles.half {
                let (i0, i1) = angles.interleaved ? (2 * j, 2 * j + 1) : (j, j + angles.half)
                let x0 = v[base + i0], x1 = v[base + i1]
                let cos = angles.cos[token * angles.half + j], sin = angles.sin[token * angles.half + j]
                v[base + i0] = x0 * cos - x1 * sin
                v[base + i1] = x1 * cos + x0 * sin
            }
        }
        let input = Array(UnsafeBufferPointer(start: x, count: t * a.kvA.cols))
        var query: [Float]
        if let q = a.q {
            query = product(q, input)
        } else {
            var qa = product(a.qA!, input)
            if let bias = a.qABias { for i in qa.indices { qa[i] += bias[i % bias.count] } }
            norm(&qa, rows: t, ld: a.qA!.rows, width: a.qA!.rows, weight: a.qANorm!)
            query = product(a.qB!, qa)
        }
        var rows = product(a.kvA, input)
        if let bias = a.kvABias { for i in rows.indices { rows[i] += bias[i % bias.count] } }
        norm(&rows, rows: t, ld: width, width: r, weight: a.kvANorm)
        for token in 0..<t { rotate(&rows, at: token * width + r, token: token) }
        compare(row, count: t * width, counts: false) { $0.update(from: rows, count: rows.count) }
        // kv_b_proj as Float32: per head W_UK (`nope` rows), then W_UV.
        var kvB = [Float](repeating: 0, count: a.kvB.rows * r)
        kvB.withUnsafeMutableBufferPointer { a.kvB.widenRows(0, count: a.kvB.rows, into: $0.baseAddress!) }
        if cache != b.cache { keys = [:]; values = [:]; latentRows = [:]; cache = b.cache }
        let bs = b.blockSize
        func slot(_ s: Int, _ p: Int) -> Int { Int(b.tables[Int(b.tableStart[s]) + p / bs]) * bs + p % bs }
        for token in 0..<t {
            latentRows[layer, default: [:]][slot(Int(b.tokenSequence[token]), Int(b.tokenPosition[token]))] =
                Array(UnsafeBufferPointer(start: row + token * width, count: width))
        }
        var valuesRows = [Float](repeating: 0, count: t * heads * dv)
        for token in 0..<t {
            let s = Int(b.tokenSequence[token]), p = Int(b.tokenPosition[token])
            for h in 0..<heads {
                var absorbed = [Float](repeating: 0, count: width)
                for c in 0..<r {
                    for n in 0..<nope { absorbed[c] += kvB[(h * perHead + n) * r + c] * bf16(query[token * heads * qhd + h * qhd + n]) }
                }
                for j in 0..<m.ropeDim { absorbed[r + j] = query[token * heads * qhd + h * qhd + nope + j] }
                rotate(&absorbed, at: r, token: token)
                var scores = (0...p).map { j -> Float in
                    let kr = latentRows[layer]![slot(s, j)]!
                    return (0..<width).reduce(Float(0)) { $0 + absorbed[$1] * kr[$1] } * b.scale
                }
                let top = scores.max()!
                scores = scores.map { exp($0 - top) }
                let sum = scores.reduce(0, +)
                var latent = [Float](repeating: 0, count: r)
                for (i, j) in (0...p).enumerated() {
                    let kr = latentRows[layer]![slot(s, j)]!
                    for c in 0..<r { latent[c] += scores[i] / sum * kr[c] }
                }
                for e in 0..<dv {
                    valuesRows[(token * heads + h) * dv + e] = (0..<r).reduce(Float(0)) { $0 + kvB[(h * perHead + nope + e) * r + $1] * bf16(latent[$1]) }
                }
            }
        }
        var reference = product(a.o, valuesRows)
        if let bias = a.oBias { for i in reference.indices { reference[i] += bias[i % bias.count] } }
        if let out { compare(out, count: reference.count, counts: false) { $0.update(from: reference, count: reference.count) } }
        latentLayersChecked += 1
        return reference
    }

    /// Checks keys and values, and `out` if given; returns the reference output.
    @discardableResult
    private func checkWholeAttention(layer: Int, _ b: AttentionBatch, x: UnsafePointer<Float>, k: UnsafePointer<Float>,
                                     v: UnsafePointer<Float>, out: UnsafePointer<Float>?) -> [Float] {
        guard case .grouped(let a) = weights.layers[layer].attention, let angles = b.rope else {
            worstRelativeDifference = .infinity
            return []
        }
        let c = weights.config, t = b.tokens, d = b.headDim
        var parts = [a.q, a.k, a.v].map { m -> [Float] in
            var y = [Float](repeating: 0, count: t * m.rows)
            Linear.apply(m, x: x, tokens: t, y: &y, ctx: ctx)
            return y
        }
        for (p, bias) in [a.qBias, a.kBias, a.vBias].enumerated() {
            guard let bias else { continue }
            for i in parts[p].indices { parts[p][i] += bias[i % bias.count] }
        }
        for (p, norm) in [a.qNorm, a.kNorm].enumerated() {
            guard let norm, c.qkNorm != .none else { continue }
            let width = c.qkNorm == .perHead ? d : parts[p].count / t
            for r in 0..<(parts[p].count / width) {
                let row = parts[p][(r * width)..<((r + 1) * width)]
                let scale = 1 / (row.reduce(0) { $0 + $1 * $1 } / Float(width) + c.rmsNormEps).squareRoot()
                for (e, value) in row.enumerated() { parts[p][r * width + e] = norm[e] * (value * scale) }
            }
        }
        if let clip = c.clipQKV { parts = parts.map { $0.map { min(max($0, -clip), clip) } } }
        for p in 0..<2 {
            let heads = parts[p].count / (t * d)
            for token in 0..<t {
                for head in 0..<heads {
                    for j in 0..<angles.half {
                        let (i0, i1) = angles.interleaved ? (2 * j, 2 * j + 1) : (j, j + angles.half)
                        let base = (token * heads + head) * d
                        let x0 = parts[p][base + i0], x1 = parts[p][base + i1]
                        let cos = angles.cos[token * angles.half + j], sin = angles.sin[token * angles.half + j]
                        parts[p][base + i0] = x0 * cos - x1 * sin
                        parts[p][base + i1] = x1 * cos + x0 * sin
                    }
                }
            }
        }
        // Back as BF16 where the CPU's cache keeps BF16 (it would round them so).
        if b.roundsToBF16 {
            compareBF16(k, parts[1], count: parts[1].count)
            compareBF16(v, parts[2], count: parts[2].count)
        } else {
            compare(k, count: parts[1].count, counts: false) { $0.update(from: parts[1], count: parts[1].count) }
            compare(v, count: parts[2].count, counts: false) { $0.update(from: parts[2], count: parts[2].count) }
        }
        var attended = referenceAttention(layer: layer, b, q: parts[0], k: k, v: v)
        var reference = [Float](repeating: 0, count: t * a.o.rows)
        Linear.apply(a.o, x: &attended, tokens: t, y: &reference, ctx: ctx)
        if let bias = a.oBias { for i in reference.indices { reference[i] += bias[i % bias.count] } }
        if let out { compare(out, count: reference.count, counts: false) { $0.update(from: reference, count: reference.count) } }
        wholeLayersChecked += 1
        return reference
    }
}
