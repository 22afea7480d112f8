import Foundation
import SwitchyardModel

/// The residual stream kept on the GPU across layers
/// (`DenseOffload.keepsResidual`; a dense layer that runs whole keeps its
/// output the same way, `CUDAAttentionLayer.swift`). A layer front that keeps it leaves the
/// residual rows (after attention) on the device and sends back only what
/// the host needs: the normed rows for the CPU's experts, the logits, keys
/// and values. The GPU's experts sum their outputs per token there, a
/// shared expert stays there too, and the CPU's share of the layer output
/// comes over once (`keepLayerOutput`), added on the device in the order
/// the CPU adds (the summed experts, the CPU's share, the shared expert,
/// then into the residual). So the host waits once per MoE layer, at its
/// front, and the residual rows cross twice per pass (over at its first
/// layer, back after its last) instead of twice per layer.
/// `device_residual: false` is the A/B arm.
struct DeviceResidual {
    var enabled = true
    /// `[layer]`: its shared expert is gated per token on the host
    /// (Qwen2-MoE's `shared_expert_gate`), so its output cannot stay here.
    var sharedGated: [Bool] = []
    /// The layer and batch whose output the device holds (after
    /// `keepLayerOutput`), and the one whose front kept its rows and awaits
    /// its output; whether that layer's experts summed into
    /// `routes.sums` and its shared expert ran into `dense.sharedRows`.
    var held: (layer: Int, tokens: Int)?
    var keeping: (layer: Int, tokens: Int)?
    var expertSums = false, sharedKept = false
    /// The CPU's share of a kept layer's output, pinned on the host too.
    var share = DeviceScratch()
    /// Layers kept, and residual bytes that crossed (rows over and back,
    /// the CPU's shares over).
    var layersKept = 0, bytes = 0
    /// Kept layers whose CPU share was all zeros and did not cross.
    var emptyShares = 0
    /// Forwards whose logits came from the rows held after the last layer
    /// (`residualLogits`).
    var logitsFromHeldRows = 0
}

extension CUDAAccelerator {
    static let residualKernelSource = """

    // A kept MoE layer's output into the residual rows, in the CPU's order:
    // the summed experts, then the CPU's share, then the shared expert.
    // A share the host did not send (has_share 0) is zeros: adding it
    // would change no sum.
    extern "C" __global__ void add_layer_output(float* residual, const float* share, const float* sums, const float* shared, int has_share,
                                                int has_sums, int has_shared, long long count) {
        long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
        if (i >= count) return;
        float out = has_sums ? (has_share ? sums[i] + share[i] : sums[i]) : (has_share ? share[i] : 0.0f);
        if (has_shared) out += shared[i];
        residual[i] += out;
    }
    """

    /// Whether a front for `layer` may keep its residual rows: on, the
    /// experts' rows summed on the device (`device_combine`), and no
    /// per-token gate on its shared expert.
    func mayKeepResidual(layer: Int) -> Bool {
        residual.enabled && routes.enabled && !(layer < residual.sharedGated.count && residual.sharedGated[layer])
    }

    /// Whether the layer's experts sum into the kept output rather than
    /// sending rows or sums back.
    func keepsExpertSums(_ work: ExpertWork) -> Bool {
        guard let k = residual.keeping, let r = work.routes else { return false }
        return k == (work.layer, r.tokens)
    }

    /// After an MoE front: it kept the rows, awaiting the layer's output;
    /// after a dense layer: it holds the layer's output.
    public func keepsResidual(layer: Int, tokens: Int) -> Bool {
        (residual.keeping ?? residual.held).map { $0 == (layer, tokens) } ?? false
    }

    public func keepLayerOutput(layer: Int, tokens: Int, out: UnsafePointer<Float>, outIsZero: Bool) -> Bool {
        guard let k = residual.keeping, k == (layer, tokens) else { return false }
        residual.keeping = nil
        residual.held = nil
        guard dense.failure == nil else { return false }
        let n = tokens * hidden
        do {
            try makeCurrent()
            let rows = attention.buffers[DeviceAttention.Buffer.residual.rawValue].device
            if outIsZero {
                residual.emptyShares += 1
            } else {
                try grow(&residual.share, to: n * 4, pinned: true, "residual shares")
                residual.share.host!.assumingMemoryBound(to: Float.self).update(from: out, count: n)
                try check("cuMemcpyHtoDAsync (layer output share)", copyHtoD(residual.share.device, residual.share.host!, n * 4, compute))
                residual.bytes += n * 4
            }
            // Arguments not read stand in as valid addresses.
            try launch(.addLayerOutput, count: n, [.pointer(rows), .pointer(outIsZero ? rows : residual.share.device),
                                                   .pointer(residual.expertSums ? routes.sums.device : rows),
                                                   .pointer(residual.sharedKept ? dense.sharedRows.device : rows),
                                                   .int32(outIsZero ? 0 : 1), .int32(residual.expertSums ? 1 : 0),
                                                   .int32(residual.sharedKept ? 1 : 0)])
            residual.layersKept += 1
            residual.held = (layer, tokens)
            return true
        } catch {
            stopResidual(error)
            return false
        }
    }

    /// After a front that kept them and before its output came: the rows
    /// after attention.
    public func residualRows(tokens: Int, into hidden: UnsafeMutablePointer<Float>) -> Bool {
        guard let held = residual.keeping ?? residual.held, held.tokens == tokens else { return false }
        let rows = attention.buffers[DeviceAttention.Buffer.residual.rawValue], n = tokens * self.hidden
        do {
            try makeCurrent()
            try check("cuMemcpyDtoHAsync (residual rows)", copyDtoH(rows.host!, rows.device, n * 4, compute))
            try wait(compute)
            hidden.update(from: rows.host!.assumingMemoryBound(to: Float.self), count: n)
            residual.bytes += n * 4
            return true
        } catch {
            stopResidual(error)
            return false
        }
    }

    /// After the last layer: the final norm and the LM head of the held
    /// rows `rows` (Float32 rows gathered as pairs of halves by the BF16
    /// gather, then normed in place and narrowed to BF16 as the host
    /// narrows the LM head's input), the logits back. One host wait, where
    /// taking the rows back and the LM head as a product take two.
    public func residualLogits(tokens: Int, rows: UnsafeBufferPointer<Int32>, logits: UnsafeMutablePointer<Float>) -> Bool {
        guard let held = residual.held, held == (dense.attentionParts.count - 1, tokens), dense.lmHead.address != 0, dense.failure == nil
        else { return false }
        let n = rows.count, h = hidden, vocab = dense.lmHead.rows
        guard n > 0 else { return true }
        do {
            try makeCurrent()
            let index = try buffer(.logitsRows, bytes: n * 4), gathered = try deviceBuffer(.normedRows, bytes: n * h * 4)
            try grow(&dense.inputRows, to: n * h * 2, pinned: true, "dense inputs")
            try grow(&dense.outputRows, to: n * vocab * 4, pinned: true, "dense outputs")
            index.host.assumingMemoryBound(to: Int32.self).update(from: rows.baseAddress!, count: n)
            try check("cuMemcpyHtoDAsync (logits rows)", copyHtoD(index.device, index.host, n * 4, compute))
            let residualRows = attention.buffers[DeviceAttention.Buffer.residual.rawValue].device
            try launch(.gatherRows, count: n * 2 * h, [.pointer(residualRows), .pointer(index.device), .pointer(gathered),
                                                       .int32(Int32(2 * h))])
            try rmsNorm(gathered, tokens: n, ld: h, offset: 0, width: h, groups: 1, weights: dense.finalNorm,
                        into: (gathered, dense.inputRows.device))
            try gemm(rows: vocab, tokens: n, k: h, weights: dense.lmHead.address, input: dense.inputRows.device,
                     output: dense.outputRows.device)
            try check("cuMemcpyDtoHAsync (logits)", copyDtoH(dense.outputRows.host!, dense.outputRows.device, n * vocab * 4, compute))
            try wait(compute)
            logits.update(from: dense.outputRows.host!.assumingMemoryBound(to: Float.self), count: n * vocab)
            dense.products += 1
            residual.logitsFromHeldRows += 1
            return true
        } catch {
            stopResidual(error)
            return false
        }
    }

    /// After a CUDA error while the device held the residual rows: it takes
    /// no more dense work or attention (the forward computes again from the
    /// host's rows).
    func stopResidual(_ error: any Error) {
        residual.held = nil
        residual.keeping = nil
        if attention.failure == nil { stopAttention(error) }
        if dense.failure == nil {
            dense.failure = "\(name): \(error)"
            dense.pendingShared = nil
            CUDAAccelerator.warn("dense products go back to the CPU for good: \(dense.failure!)")
        }
    }
}
