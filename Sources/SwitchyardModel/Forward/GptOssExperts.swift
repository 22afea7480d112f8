/// Loading gpt-oss's experts. transformers keeps them fused: `gate_up_proj`
/// `[E, hidden, 2·inter]` with gate and up in alternate columns (column
/// `2i` is gate `i`, `2i+1` is up `i`), `down_proj` `[E, inter, hidden]`,
/// both input-major, with `gate_up_proj_bias` `[E, 2·inter]` (also
/// alternating) and `down_proj_bias` `[E, hidden]`. The published
/// checkpoints store the products as MXFP4 instead: `*_blocks` `[E, out,
/// in/32, 16]` bytes and `*_scales` `[E, out, in/32]`, output-major, with
/// gate and up in alternate rows.
extension ModelWeights {
    static func gptOssExperts(_ p: String, _ c: ModelConfig, _ oss: GptOssSpecifics, _ ckpt: Checkpoint) throws -> MoEWeights {
        let h = c.hiddenSize, inter = c.moeIntermediateSize, e = c.numExperts
        let router = try ckpt.matrix(p + "router.weight", rows: e, cols: h)
        let routerBias = try ckpt.vector(p + "router.bias", count: e)
        let x = p + "experts."
        let gateUpBias = try ckpt.vectors(x + "gate_up_proj_bias", count: e, length: 2 * inter)
        let downBias = try ckpt.vectors(x + "down_proj_bias", count: e, length: h)
        let experts: [ExpertWeights] = try (0..<e).map { j in
            var w: ExpertWeights
            if oss.mxfp4Experts {
                let gateUp = try ckpt.mxfp4(x + "gate_up_proj", expert: j, of: e, rows: 2 * inter, cols: h)
                w = ExpertWeights(gate: gateUp.interleavedRows(phase: 0), up: gateUp.interleavedRows(phase: 1),
                                  down: try ckpt.mxfp4(x + "down_proj", expert: j, of: e, rows: h, cols: inter))
            } else {
                let name = x + "gate_up_proj"
                w = ExpertWeights(
                    gate: try ckpt.transposedExpertSlab(name, expert: j, of: e, inputs: h, outputs: 2 * inter, first: 0, stride: 2),
                    up: try ckpt.transposedExpertSlab(name, expert: j, of: e, inputs: h, outputs: 2 * inter, first: 1, stride: 2),
                    down: try ckpt.transposedExpertSlab(x + "down_proj", expert: j, of: e, inputs: inter, outputs: h, first: 0, stride: 1))
            }
            w.gateBias = stride(from: 0, to: 2 * inter, by: 2).map { gateUpBias[j][$0] }
            w.upBias = stride(from: 1, to: 2 * inter, by: 2).map { gateUpBias[j][$0] }
            w.downBias = downBias[j]
            w.activation = .clampedSwiGLU(alpha: oss.swigluAlpha, limit: oss.swigluLimit)
            return w
        }
        var moe = MoEWeights(router: router, experts: experts, shared: nil, sharedGate: nil, selectionBias: nil)
        moe.routerBias = routerBias
        return moe
    }
}
