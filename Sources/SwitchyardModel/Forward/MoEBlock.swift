import Foundation

/// The sparse MoE feed-forward: route, group tokens by expert, run each
/// active expert once over its whole token group, combine.
///
/// Grouping is a counting sort over the batch's (token, slot) assignments, so
/// an expert's weights are read once per layer per forward however many
/// tokens picked it. Where the experts run is the `ExpertExecutor`'s choice
/// (`SharedPoolExecutor` by default); this block only routes, groups and
/// combines.
enum MoEBlock {
    /// Returns whether `out` holds nothing but zeros because every part of
    /// the layer ran elsewhere: each picked expert summed on the executor's
    /// device, no down biases, the shared expert kept (or none).
    @discardableResult
    static func forward(layer: Int, weights: MoEWeights, config c: ModelConfig,
                        x: UnsafePointer<Float>, tokens: Int, out: UnsafeMutablePointer<Float>,
                        ws: Workspace, counters: ExpertLoadCounters?, executor: any ExpertExecutor,
                        dense: (any DenseOffload)?, routed front: RouterOffload? = nil) -> Bool {
        let h = c.hiddenSize, e = c.numExperts, k = c.numExpertsPerToken, inter = c.moeIntermediateSize
        let assignments = tokens * k

        // 1. Router: scores in fp32, top-k (group-limited or biased where the
        // model says so), optional renormalisation and scale.
        // With `front` the layer's front already left the logits here.
        let logits = ws.routerLogits.reserve(tokens * e)
        let routed = front ?? dense?.router(layer: layer, x: x, tokens: tokens, logits: logits) ?? .notHeld
        if routed == .notHeld {
            Linear.apply(weights.router, x: x, tokens: tokens, y: logits, ctx: ws.gemm)
        }
        let topE = ws.topExperts.reserve(assignments)
        let topW = ws.topWeights.reserve(assignments)
        // Where the logits were computed, the routes may have been chosen too.
        if routed == .notHeld || dense?.routes(layer: layer, tokens: tokens, experts: topE, weights: topW) != true {
            if let b = weights.routerBias {
                for t in 0..<tokens { for j in 0..<e { logits[t * e + j] += b[j] } }
            }
            let choice = ws.routerChoice.reserve(e)
            func routeAll(_ bias: UnsafePointer<Float>?) {
                for t in 0..<tokens {
                    Router.route(logits + t * e, n: e, k: k, config: c.routing, normalize: c.normTopKProb,
                                 selectionBias: bias, choice: choice, experts: topE + t * k, weights: topW + t * k)
                }
            }
            if let bias = weights.selectionBias { bias.withUnsafeBufferPointer { routeAll($0.baseAddress) } } else { routeAll(nil) }
        }

        // 2. Counting sort of assignments by expert.
        let count = ws.expertCount.reserve(e)
        let offset = ws.expertOffset.reserve(e + 1)
        count.initialize(repeating: 0, count: e)
        for a in 0..<assignments { count[Int(topE[a])] += 1 }
        offset[0] = 0
        for j in 0..<e { offset[j + 1] = offset[j] + count[j] }
        let rowOf = ws.assignmentRow.reserve(assignments)
        count.initialize(repeating: 0, count: e)
        for a in 0..<assignments {
            let j = Int(topE[a])
            rowOf[a] = offset[j] + count[j]
            count[j] += 1
        }

        // 3. The layer's grouped work; each assignment's input row gathered
        // into its expert's group (`ExpertWork.gatherRows`), except where
        // the executor says it has the rows elsewhere (a device that
        // gathers them from rows it already holds).
        let options = ws.gemm.options
        let gatheredBF16 = options.gemm == .onednn && options.dtype == .bfloat16
            ? ws.gatheredBF16.reserve(assignments * h * 2).assumingMemoryBound(to: UInt16.self) : nil
        let down = ws.downOut.reserve(assignments * h)
        let combined = ws.combinedOut.reserve(tokens * h)
        let marked = ws.combinedExperts.reserve(e).bindMemory(to: Bool.self, capacity: e)
        marked.initialize(repeating: false, count: e)
        let work = ExpertWork(
            layer: layer, experts: weights.experts, hiddenSize: h, intermediateSize: inter, assignments: assignments,
            tokenCount: count, rowOffset: offset, input: ws.gathered.reserve(assignments * h), inputBF16: gatheredBF16, output: down,
            gate: ws.gateOut.reserve(assignments * inter), up: ws.upOut.reserve(assignments * inter),
            activatedBF16: gatheredBF16 == nil ? nil
                : ws.activatedBF16.reserve(assignments * inter * 2).assumingMemoryBound(to: UInt16.self),
            compute: ws.gemm,
            routes: ExpertRoutes(tokens: tokens, perToken: k, expert: topE, weight: topW, row: rowOf, source: x, combined: combined,
                                 combinedExperts: marked))
        let gather = ws.gatherExperts.reserve(e).bindMemory(to: Bool.self, capacity: e)
        gather.initialize(repeating: true, count: e)
        executor.selectRowsToGather(work, gather: gather)
        work.gatherRows(only: gather)

        // 4. Experts, wherever the executor in force computes them.
        for j in 0..<e where count[j] > 0 {
            counters?.record(layer: layer, expert: j, tokenCount: Int(count[j]), bytes: weights.experts[j].byteCount)
        }
        executor.run(work)

        let elsewhere = (0..<e).contains { marked[$0] }
        combine(tokens: tokens, k: k, h: h, rows: rowOf, down: down, topW: topW, out: out,
                combinedElsewhere: elsewhere ? (UnsafePointer(combined), UnsafePointer(marked), UnsafePointer(topE)) : nil)
        if weights.experts.first?.downBias != nil {
            // gpt-oss: each expert's down bias, weighted like its output.
            for a in 0..<assignments {
                if let b = weights.experts[Int(topE[a])].downBias {
                    b.withUnsafeBufferPointer { Elementwise.axpy(topW[a], $0.baseAddress!, out + (a / k) * h, n: h) }
                }
            }
        }
        if routed != .sharedExpertKept {
            addSharedExpert(layer: layer, weights: weights, x: x, tokens: tokens, h: h, out: out, ws: ws, dense: dense,
                            started: routed == .sharedExpertStarted)
        }
        if let shared = weights.shared, tokens > 0 {
            counters?.recordShared(bytes: shared.byteCount + (weights.sharedGate?.byteCount ?? 0))
        }
        return (0..<e).allSatisfy { count[$0] == 0 || marked[$0] } && weights.experts.first?.downBias == nil
            && (routed == .sharedExpertKept || weights.shared == nil)
    }

    /// 5. Combine in slot order, so the sum is the same however the batch was
    /// grouped. `combinedElsewhere`: the executor already summed the
    /// flagged experts' share per token (`ExpertRoutes`); each sum starts
    /// from it and adds the other slots.
    static func combine(tokens: Int, k: Int, h: Int, rows rowOf: UnsafeMutablePointer<Int32>, down: UnsafeMutablePointer<Float>,
                        topW: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>,
                        combinedElsewhere: (sums: UnsafePointer<Float>, experts: UnsafePointer<Bool>, expertOf: UnsafePointer<Int32>)? = nil) {
        nonisolated(unsafe) let os = out, ds = UnsafePointer(down), ws_ = UnsafePointer(topW), rows = UnsafePointer(rowOf)
        nonisolated(unsafe) let elsewhere = combinedElsewhere
        Parallel.forRanges(tokens, minChunk: 16) { r in
            for t in r {
                let o = os + t * h
                if let elsewhere { o.update(from: elsewhere.sums + t * h, count: h) } else { o.initialize(repeating: 0, count: h) }
                for j in 0..<k {
                    let a = t * k + j
                    if let elsewhere, elsewhere.experts[Int(elsewhere.expertOf[a])] { continue }
                    Elementwise.axpy(ws_[a], ds + Int(rows[a]) * h, o, n: h)
                }
            }
        }
    }

    /// 6. Shared experts: Qwen2-MoE's, gated per token by a sigmoid;
    /// DeepSeek's, added as they are. `started`: the dense offload began it
    /// with the router.
    static func addSharedExpert(layer: Int, weights: MoEWeights, x: UnsafePointer<Float>, tokens: Int, h: Int,
                                out: UnsafeMutablePointer<Float>, ws: Workspace, dense: (any DenseOffload)?, started: Bool) {
        guard let shared = weights.shared else { return }
        let sharedOut = ws.sharedOut.reserve(tokens * h)
        if started, dense?.sharedExpert(layer: layer, tokens: tokens, out: sharedOut) == true {
            // Computed beside the routed experts.
        } else if dense?.mlp(layer: layer, shared: true, x: x, tokens: tokens, out: sharedOut) != true {
            DenseMLP.forward(shared, x: x, tokens: tokens, out: sharedOut, ws: ws)
        }
        guard let sharedGate = weights.sharedGate else {
            Elementwise.axpy(1, sharedOut, out, n: tokens * h)
            return
        }
        let g = ws.sharedGate.reserve(tokens)
        Linear.apply(sharedGate, x: x, tokens: tokens, y: g, ctx: ws.gemm)
        for t in 0..<tokens {
            Elementwise.axpy(Elementwise.sigmoid(g[t]), sharedOut + t * h, out + t * h, n: h)
        }
    }

    /// Picks the `k` largest of `n` probabilities, largest first; on ties the
    /// lower expert index wins.
    @inline(__always)
    static func selectTopK(_ p: UnsafePointer<Float>, n: Int, k: Int,
                           experts: UnsafeMutablePointer<Int32>, weights: UnsafeMutablePointer<Float>) {
        for j in 0..<k {
            var best = -1
            var bestValue = -Float.infinity
            for i in 0..<n {
                var taken = false
                for q in 0..<j where experts[q] == Int32(i) { taken = true; break }
                if !taken && (best < 0 || p[i] > bestValue) { best = i; bestValue = p[i] }
            }
            experts[j] = Int32(best)
            weights[j] = bestValue
        }
    }
}

/// A dense SwiGLU MLP over all tokens (dense layers, shared experts).
enum DenseMLP {
    static func forward(_ w: ExpertWeights, x: UnsafePointer<Float>, tokens: Int,
                        out: UnsafeMutablePointer<Float>, ws: Workspace) {
        let inter = w.gate.rows
        let g = ws.gateOut.reserve(tokens * inter)
        let u = ws.upOut.reserve(tokens * inter)
        Linear.apply(w.gate, x: x, tokens: tokens, y: g, ctx: ws.gemm)
        Linear.apply(w.up, x: x, tokens: tokens, y: u, ctx: ws.gemm)
        Elementwise.swiglu(gate: g, up: u, n: tokens * inter)
        Linear.apply(w.down, x: g, tokens: tokens, y: out, ctx: ws.gemm)
    }
}
