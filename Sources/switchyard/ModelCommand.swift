import ArgumentParser
import Foundation
import SwitchyardModel

struct ModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model",
        abstract: "Create and inspect checkpoints.",
        subcommands: [Create.self, Info.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a random-weight checkpoint in Hugging Face format from a preset in models/presets.")

        @Option(help: "Architecture: \(Architecture.allCases.map(\.rawValue).joined(separator: ", ")).")
        var arch: String

        @Option(help: "Preset name in models/presets (e.g. tiny, bench) or a path to a preset JSON file.")
        var preset: String

        @Option(help: "Output directory.")
        var out: String

        @Option(help: "Random seed for the weights.")
        var seed: UInt64 = 0

        @Option(help: "Weight dtype: bf16, f16 or f32.")
        var dtype: String = "bf16"

        @Flag(name: .customLong("mxfp4-experts"), help: "gpt_oss: store the experts as MXFP4 blocks and scales, as the published checkpoints do (other weights in --dtype).")
        var mxfp4Experts = false

        @Option(name: .customLong("router-skew"), help: "Scale router rows by 1 + s·rank/(E−1) (random rank per layer) for a skewed expert load; 0 keeps routing near uniform.")
        var routerSkew: Double = 0

        func run() throws {
            guard let architecture = Architecture(rawValue: arch) else {
                throw ValidationError("unknown --arch \"\(arch)\"; valid: \(Architecture.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            guard let dt = DType(name: dtype) else { throw ValidationError("unknown --dtype \"\(dtype)\"; valid: bf16, f16, f32") }
            do {
                let p = try ModelPreset.load(preset)
                let t0 = Date()
                guard routerSkew >= 0 else { throw ValidationError("--router-skew must be 0 or more") }
                try RandomCheckpoint.create(.init(architecture: architecture, preset: p, seed: seed, dtype: dt, routerSkew: routerSkew,
                                                   mxfp4Experts: mxfp4Experts),
                                            at: URL(fileURLWithPath: out))
                let ckpt = try Checkpoint(directory: out)
                let bytes = ckpt.tensors.values.reduce(0) { $0 + $1.byteCount }
                print(String(format: "wrote %@ (%@, %@, %.1f MiB of weights) in %.1f s", out, arch, preset,
                             Double(bytes) / 1048576, Date().timeIntervalSince(t0)))
            } catch let e as CheckpointError {
                throw CLIError("error: \(e.description)")
            }
        }
    }

    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Summarise a checkpoint's architecture and weight sizes.")

        @Option(help: "Checkpoint directory.")
        var model: String

        func run() throws {
            let t = try loadModel(model)
            let c = t.config
            let w = t.weights
            let expertBytes = w.routedExperts.bytes
            let perExpert = w.routedExpertsByLayer.last { !$0.isEmpty }?.first?.byteCount ?? 0
            let total = w.checkpoint.tensors.values.reduce(0) { $0 + $1.byteCount }
            let attention: String
            if let m = c.latentAttention {
                attention = "heads \(c.numHeads), multi-head latent attention: kv_lora_rank \(m.kvLoraRank), q_lora_rank \(m.qLoraRank.map(String.init) ?? "none"), qk_nope \(m.nopeDim), qk_rope \(m.ropeDim), v_head \(m.valueDim)"
            } else {
                attention = "heads \(c.numHeads)/\(c.numKVHeads) kv, head_dim \(c.headDim)"
            }
            var routing = "softmax top-\(c.numExpertsPerToken)"
            if c.routing.scoring == .sigmoid { routing = "sigmoid top-\(c.numExpertsPerToken)" }
            if c.routing.selectionBias { routing += " with selection bias" }
            if c.routing.isGroupLimited { routing += ", best \(c.routing.groupsKept) of \(c.routing.groupCount) groups" }
            if c.routing.scale != 1 { routing += ", scaled \(c.routing.scale)" }
            let shared = c.hasSharedExpert ? ", shared experts \(c.sharedExpertIntermediateSize)\(c.sharedExpertGated ? " (gated)" : "")" : ""
            print("""
            architecture: \(c.architecture.rawValue)
            layers: \(c.numLayers) (\(c.sparseLayers.filter { $0 }.count) MoE), hidden \(c.hiddenSize), \(attention)
            experts: \(c.numExperts) per layer, \(routing), intermediate \(c.moeIntermediateSize), norm_topk_prob \(c.normTopKProb)\(shared)
            KV cache per token: \(c.kvCacheBytesPerToken) bytes (Float32\(c.latentAttention != nil ? ", one latent row per layer" : ", \(c.kvCacheBytesPerToken(elementBytes: 2)) in BF16 with --dtype bfloat16"))
            vocab: \(c.vocabSize), tied embeddings: \(c.tieWordEmbeddings)
            weights: \(String(format: "%.1f", Double(total) / 1048576)) MiB total, \(String(format: "%.1f", Double(expertBytes) / 1048576)) MiB experts (\(String(format: "%.2f", Double(perExpert) / 1048576)) MiB each)
            active weight bytes per decode token: \(String(format: "%.1f", Double(ForwardBenchmark.activeBytesPerToken(w)) / 1048576)) MiB
            """)
        }
    }
}
