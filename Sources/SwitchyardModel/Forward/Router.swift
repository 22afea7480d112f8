/// A MoE layer's routing decision for one token: scores from the router
/// logits, the experts chosen, and their combine weights.
enum Router {
    /// Routes one token. `scores` holds its router logits and is overwritten
    /// with the scores; `choice` is `n` floats of scratch, used only when the
    /// selection scores differ from the scores (a selection bias or groups).
    @inline(__always)
    static func route(_ scores: UnsafeMutablePointer<Float>, n: Int, k: Int, config r: RouterConfig, normalize: Bool,
                      selectionBias: UnsafePointer<Float>?, choice: UnsafeMutablePointer<Float>,
                      experts: UnsafeMutablePointer<Int32>, weights: UnsafeMutablePointer<Float>) {
        switch r.scoring {
        case .softmax: Elementwise.softmax(scores, n: n)
        case .sigmoid: for i in 0..<n { scores[i] = Elementwise.sigmoid(scores[i]) }
        case .softmaxOfTopK: break  // the logits are chosen from; the softmax is over the k chosen
        }
        if r.scoring == .softmaxOfTopK {
            MoEBlock.selectTopK(scores, n: n, k: k, experts: experts, weights: weights)
            Elementwise.softmax(weights, n: k)
        } else if selectionBias == nil && !r.isGroupLimited {
            MoEBlock.selectTopK(scores, n: n, k: k, experts: experts, weights: weights)
        } else {
            for i in 0..<n { choice[i] = scores[i] + (selectionBias?[i] ?? 0) }
            if r.isGroupLimited { keepBestGroups(choice, n: n, config: r) }
            MoEBlock.selectTopK(choice, n: n, k: k, experts: experts, weights: weights)
            // Weights come from the scores, never from the biased choice.
            for j in 0..<k { weights[j] = scores[Int(experts[j])] }
        }
        if normalize {
            var s: Float = 0
            for j in 0..<k { s += weights[j] }
            s += 1e-20
            for j in 0..<k { weights[j] /= s }
        }
        if r.scale != 1 { for j in 0..<k { weights[j] *= r.scale } }
    }

    /// Ranks the groups of consecutive experts and sets the selection score
    /// of every expert outside the best `groupsKept` to -inf. On ties the
    /// lower group wins (as in top-k).
    @inline(__always)
    static func keepBestGroups(_ choice: UnsafeMutablePointer<Float>, n: Int, config r: RouterConfig) {
        let size = n / r.groupCount
        // Ranked by bitmask: configs allow at most RouterConfig.maxGroups.
        var kept: UInt64 = 0
        for _ in 0..<r.groupsKept {
            var best = -1
            var bestScore = -Float.infinity
            for g in 0..<r.groupCount where kept & (1 << UInt64(g)) == 0 {
                let s = groupScore(choice + g * size, size: size, r.groupScore)
                if best < 0 || s > bestScore { best = g; bestScore = s }
            }
            kept |= 1 << UInt64(best)
        }
        for g in 0..<r.groupCount where kept & (1 << UInt64(g)) == 0 {
            (choice + g * size).update(repeating: -.infinity, count: size)
        }
    }

    @inline(__always)
    static func groupScore(_ x: UnsafePointer<Float>, size: Int, _ kind: RouterConfig.GroupScore) -> Float {
        var first = -Float.infinity, second = -Float.infinity
        for i in 0..<size {
            let v = x[i]
            if v > first { second = first; first = v } else if v > second { second = v }
        }
        switch kind {
        case .max: return first
        case .topTwoSum: return first + second
        }
    }
}
