import Foundation
import ArgumentParser
import SwitchyardModel

/// `--gemm` and `--dtype`, on every command that runs the forward.
struct ComputeFlags: ParsableArguments {
    @Option(help: "Matrix-product backend: onednn (default; BF16 and Float32 matmul, ISA chosen by oneDNN) or openblas (Float32 sgemm on widened weights).")
    var gemm: String = "onednn"

    @Option(help: "Activation precision, as vLLM's --dtype: auto (bfloat16 for BF16/F16 checkpoints where the backend multiplies BF16 natively, else float32), bfloat16 (BF16 inputs to every product, Float32 accumulation) or float32 (exact products of the stored weights). `logits` defaults to float32.")
    var dtype: String?

    @Option(name: .customLong("expert-layout"), help: "Routed experts in bfloat16 mode on oneDNN: packed (default; reordered once at start-up into oneDNN's blocked BF16 layout, faster products, a few seconds of start-up) or stored (read as the checkpoint lays them out). Other modes always read them as stored.")
    var expertLayout: String = "packed"

    /// Resolves the flags for `model` and applies them; a missing library or
    /// an impossible precision is an error naming the flag and the alternative.
    func apply(to model: Transformer, defaultDType: String = "auto") throws {
        guard ["packed", "stored"].contains(expertLayout) else {
            throw CLIError("error: --expert-layout \"\(expertLayout)\" is not an expert layout; use packed or stored")
        }
        do {
            let options = try ComputeOptions.resolve(gemm: gemm, dtype: dtype ?? defaultDType,
                                                     checkpointDType: model.weights.embedding.dtype)
            let t0 = Date()
            try model.configure(compute: options, packingExperts: expertLayout == "packed")
            log.info("compute", metadata: ["gemm": "\(options.gemm.rawValue)", "dtype": "\(options.dtype.rawValue)",
                                           "library": "\(options.gemm == .onednn ? OneDNN.description : "OpenBLAS")",
                                           "experts": "\(model.expertsArePacked ? String(format: "packed for oneDNN in %.1f s", Date().timeIntervalSince(t0)) : "as stored")"])
        } catch let e as ComputeOptions.OptionError {
            throw CLIError("error: \(e.description)")
        } catch let e as PackedWeightStore.AllocationError {
            throw CLIError("error: \(e.description)")
        }
    }
}
