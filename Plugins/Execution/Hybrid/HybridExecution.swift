import Foundation
import SwitchyardCore
import SwitchyardModel

/// `--execution hybrid`: hot experts resident on a CUDA GPU, the rest on
/// the CPU or uploaded where that is cheaper this iteration
/// (`HybridExecutor`); with `dense` (the default) the dense products too
/// (q/k/v and o projections, router, shared experts, dense MLPs, LM head:
/// `DenseOffload`), their weights resident first and the experts filling
/// the rest of the budget; with `attention` (the default) attention too,
/// over a GPU copy of the KV cache when it fits, with an MoE layer's norms
/// and routing beside it. Without a usable GPU it fails at start-up naming
/// what it looked for and where.
public struct HybridExecution: ExecutionStrategy {
    public struct Options: Sendable {
        /// Bytes of GPU memory for dense weights and resident experts
        /// ("8GiB", "512MiB"), or a fraction of the device's free memory
        /// ("0.8"); the KV cache copy and scratch come from what is left.
        public var gpuMemory = "0.8"
        public var device = 0
        /// llama.cpp's static forms: every routed expert on the CPU, or
        /// those of the first N layers.
        public var cpuMoE = false
        public var nCPUMoE = 0
        /// Upload every non-resident expert with tokens instead of deciding
        /// by the measured costs (the comparison arm).
        public var uploadAll = false
        public var maxSwapsPerStep = 2
        public var uploadSlots = 4
        /// Directories searched for the CUDA libraries before the usual
        /// places (`CUDALibraries.defaultSearchPath`), colon-separated.
        public var cudaLibraryPath = ""
        /// Dense products on the GPU (llama.cpp's `-ngl` with `--cpu-moe`'s
        /// split, here with hot experts beside them).
        public var dense = true
        /// With `dense`: attention too, over a copy of the KV cache on the
        /// GPU (when it fits beside the budget; else it stays on the CPU).
        public var attention = true
        /// The GPU's experts take their input rows from the layer front's
        /// rows on the device and sum their outputs per token there
        /// (off: rows cross one per assignment both ways; the A/B arm).
        public var deviceCombine = true
        /// Each token's experts chosen on the GPU where its logits are
        /// (off: the CPU routes from the logits).
        public var deviceRouting = true
        /// The residual stream kept on the GPU across MoE layers whose
        /// fronts run there (off: it crosses over and back each layer).
        public var deviceResidual = true
        /// A sequence with at least this many tokens in a batch has its
        /// attention through cuBLAS's products (0: the kernels always).
        public var attentionGemmMinTokens = 16
        public init() {}

        var searchPath: [String] {
            cudaLibraryPath.split(separator: ":").map(String.init).filter { !$0.isEmpty } + CUDALibraries.defaultSearchPath()
        }
    }

    public let options: Options
    public init(_ options: Options = Options()) { self.options = options }

    /// What `--execution hybrid` would hold on a GPU for `weights`: dense
    /// weights first (with `dense`), then as many experts as the budget
    /// leaves after the upload ring. Without `freeBytes` (no GPU found) the
    /// sizes, and what a `gpu_memory` given as a size would hold; for
    /// `switchyard topology --model [--gpu-memory]`.
    public static func sizing(_ weights: ModelWeights, freeBytes: Int?, options: Options = Options()) -> [String] {
        let experts = weights.routedExperts
        guard let sample = weights.routedExpertsByLayer.lazy.compactMap(\.first).first else {
            return ["hybrid: this model has no routed experts"]
        }
        let denseBytes = options.dense ? CUDAAccelerator.denseBytes(weights) : 0
        var lines = ["hybrid sizing: dense weights on the GPU \(size(denseBytes))\(options.dense ? "" : " (dense: false)"); "
                     + "\(experts.count) routed experts of \(size(sample.byteCount)) (\(size(experts.bytes))); "
                     + "upload ring \(options.uploadSlots) x \(size(sample.byteCount)) pinned on the host and on the GPU"]
        guard let free = freeBytes else {
            // A size needs no GPU to say what it holds (a fraction does).
            if !isFraction(options.gpuMemory), let budget = try? budget(options.gpuMemory, freeBytes: 0) {
                lines.append("  gpu_memory \(options.gpuMemory) = \(size(budget)) (no GPU here to check it against): "
                             + holding(budget: budget, denseBytes: denseBytes, expertBytes: sample.byteCount, experts: experts.count))
            }
            return lines
        }
        let split = try? MemorySplit(freeBytes: free, expertBytes: sample.byteCount, denseBytes: denseBytes, options: options)
        guard let split, split.usable > 0 else {
            lines.append("  gpu_memory \(options.gpuMemory): the upload ring alone does not fit \(size(free)) free")
            return lines
        }
        lines.append("  gpu_memory \(options.gpuMemory) of \(size(split.usable)) (free less the ring) = \(size(split.budget)): "
                     + holding(budget: split.budget, denseBytes: denseBytes, expertBytes: sample.byteCount, experts: experts.count))
        return lines
    }

    private static func holding(budget: Int, denseBytes: Int, expertBytes: Int, experts: Int) -> String {
        guard denseBytes < budget else { return "the dense weights alone exceed it" }
        let resident = min(experts, (budget - denseBytes) / expertBytes)
        return "\(resident) experts resident (\(String(format: "%.1f", 100 * Double(resident) / Double(experts)))% of routed)"
    }

    /// Whether `gpu_memory` is a fraction of free memory (0.8, 1) rather than a size.
    static func isFraction(_ text: String) -> Bool {
        let t = text.trimmingCharacters(in: .whitespaces)
        guard let f = Double(t) else { return false }
        return f > 0 && f <= 1 && (t.contains(".") || f == 1)
    }

    /// How a GPU's free memory is shared: the upload ring first, then
    /// `gpu_memory` (a size, or a fraction of what the ring leaves), in
    /// which the dense weights come first and the experts take the rest.
    struct MemorySplit {
        let usable: Int, budget: Int, denseBytes: Int
        var expertBudget: Int { budget - denseBytes }

        init(freeBytes: Int, expertBytes: Int, denseBytes: Int, options: Options) throws {
            usable = freeBytes - options.uploadSlots * expertBytes
            budget = usable > 0 ? try HybridExecution.budget(options.gpuMemory, freeBytes: usable) : 0
            self.denseBytes = denseBytes
        }
    }

    /// Bytes as a message should say them: GiB, MiB below a GiB, KiB below a MiB.
    static func size(_ bytes: Int) -> String {
        bytes >= 1 << 30 ? String(format: "%.2f GiB", Double(bytes) / 1073741824)
            : bytes >= 1 << 20 ? String(format: "%.1f MiB", Double(bytes) / 1048576) : String(format: "%.0f KiB", Double(bytes) / 1024)
    }

    /// "8GiB" / "512MiB" / "1.5GB" / plain bytes, or a fraction in (0, 1] of `free`.
    public static func budget(_ text: String, freeBytes: Int) throws -> Int {
        let t = text.trimmingCharacters(in: .whitespaces)
        if isFraction(t) { return Int(Double(t)! * Double(freeBytes)) }
        let units: [(String, Double)] = [("GiB", 1_073_741_824), ("MiB", 1_048_576), ("KiB", 1024), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("B", 1)]
        for (suffix, scale) in units where t.hasSuffix(suffix) {
            if let v = Double(t.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), v > 0 { return Int(v * scale) }
        }
        if let v = Int(t), v > 1 { return v }
        throw ExecutionError.setup("gpu_memory \"\(text)\" is neither a size (8GiB, 512MiB) nor a fraction of free GPU memory (0.8)")
    }

    public func prepare(_ context: ExecutionContext) throws -> ExecutionSummary {
        let model = context.model, weights = model.weights
        guard model.compute.dtype == .bfloat16 else {
            throw ExecutionError.setup("hybrid computes experts in bfloat16 (BF16 at every product's inputs, as on the CPU): pass --dtype bfloat16 or auto")
        }
        guard let sample = weights.routedExpertsByLayer.lazy.compactMap(\.first).first else { throw ExecutionError.setup(HybridError.noRoutedExperts.description) }
        let heat = try Self.heat(from: context.profile, weights: weights)
        let probe = CUDALibraries.probe(searchPath: options.searchPath)
        let devices: CUDADriver.Devices
        switch probe.driver {
        case .success(let d): devices = d
        case .failure(let e): throw ExecutionError.setup("hybrid needs a CUDA GPU: \(e.description)")
        }
        guard options.device < devices.list.count else {
            throw ExecutionError.setup("device \(options.device) requested, the driver reports \(devices.list.count)")
        }
        let free = devices.list[options.device].freeBytes
        guard free - options.uploadSlots * sample.byteCount > sample.byteCount else {
            throw ExecutionError.setup("hybrid: \(devices.list[options.device].name) has \(Self.size(free)) free, "
                                       + "not enough for \(options.uploadSlots) upload slots of \(Self.size(sample.byteCount)) and one resident expert; lower upload_slots or free the GPU")
        }
        let split = try MemorySplit(freeBytes: free, expertBytes: sample.byteCount,
                                    denseBytes: options.dense ? CUDAAccelerator.denseBytes(weights) : 0, options: options)
        let budget = split.budget, denseBytes = split.denseBytes
        // With cpu_moe no expert is resident: the dense weights may take it all.
        let expertBudget = options.cpuMoE ? 0 : budget - denseBytes
        guard options.cpuMoE ? denseBytes <= budget : denseBytes < budget else {
            throw ExecutionError.setup("hybrid: the dense weights need \(Self.size(denseBytes)) of the \(Self.size(budget)) gpu_memory budget, "
                                       + (options.cpuMoE ? "more than it holds: raise gpu_memory" : "leaving none for experts: raise gpu_memory or pass \"dense\": false"))
        }
        let gpu: CUDAAccelerator
        do {
            gpu = try CUDAAccelerator(config: model.config, sampleExpert: sample, deviceIndex: options.device, budgetBytes: expertBudget,
                                      uploadSlots: options.uploadSlots, denseBytes: denseBytes, searchPath: options.searchPath)
            if options.dense { try gpu.loadDense(weights) }
            gpu.attention.enabled = options.dense && options.attention
            gpu.routes.enabled = options.deviceCombine
            gpu.routing.enabled = options.deviceRouting
            gpu.residual.enabled = options.deviceResidual
            gpu.attention.gemmMinTokens = options.attentionGemmMinTokens
        } catch let e as CUDAError {
            throw ExecutionError.setup("hybrid: \(e.description)")
        } catch let e as HybridSetupError {
            throw ExecutionError.setup("hybrid: \(e.description)")
        }
        // Experts the GPU cannot compute stay on the CPU (cpu_moe), so the
        // upload-against-compute figures would go unused: not measured.
        let cost = gpu.expertsFitDevice ? try measuredCost(model: model, sample: sample, gpu: gpu)
            : HybridCostModel(cpuFlopsPerSecond: [], cpuReadBytesPerSecond: 0, hostToDeviceBytesPerSecond: 0, gpuFlopsPerSecond: 0,
                              gpuLaunchSeconds: 0, measuredOn: nil)
        let mode: HybridPlanner.Mode = options.cpuMoE ? .allExpertsOnCPU
            : options.nCPUMoE > 0 ? .firstLayersOnCPU(options.nCPUMoE) : options.uploadAll ? .uploadEveryExpert : .measured
        let executor: HybridExecutor
        do {
            executor = try HybridExecutor(weights: weights, accelerator: gpu, cost: cost, mode: mode, profile: heat,
                                          maxSwapsPerStep: options.maxSwapsPerStep, uploadSlots: options.uploadSlots)
        } catch {
            throw ExecutionError.setup("hybrid: \(error)")
        }
        model.install(experts: executor)
        if options.dense { model.install(dense: gpu) }
        let crossover = gpu.expertsFitDevice ? cost.crossoverTokens(bytes: sample.byteCount, flopsPerToken: sample.flopsPerToken) : nil
        return ExecutionSummary(strategy: "hybrid", devices: executor.devices, map: nil, notes: [
            "\(executor.resident.resident.count) experts resident in \(expertBudget >> 20) MiB on \(gpu.detail)",
            options.dense ? "dense products on the GPU: \(gpu.dense.bytes >> 20) MiB of weights" : "dense products on the CPU (dense: false)",
            gpu.expertsFitDevice ? "crossover: uploading a cold expert pays from \(crossover.map(String.init) ?? "never") tokens"
                : "experts: all on the CPU (the GPU path computes plain BF16 SwiGLU experts only)",
            "the GPU path has been tested on a software CUDA device only: compare with --execution cpu (scripts/gpu-check.sh)",
        ])
    }

    /// The resident experts' starting heat from a routing profile
    /// (`--placement-profile`): its tokens per expert, for the layers with
    /// routed experts; nil without a profile (residency then starts from
    /// the live counts).
    static func heat(from profile: RoutingProfile?, weights: ModelWeights) throws -> [[Double]]? {
        guard let p = profile else { return nil }
        let c = weights.config
        guard p.numLayers == c.numLayers, p.numExperts == c.numExperts, p.expertTokens.count == c.numLayers,
              p.expertTokens.allSatisfy({ $0.count == c.numExperts }) else {
            throw ExecutionError.setup("hybrid: the routing profile (--placement-profile) has \(p.numLayers) layers x \(p.numExperts) experts, "
                                       + "the model \(c.numLayers) x \(c.numExperts): record one for this model with switchyard bench --record-routing")
        }
        return weights.routedExpertsByLayer.enumerated().map { l, experts in experts.isEmpty ? [] : p.expertTokens[l].map(Double.init) }
    }

    /// The cached figures beside the model if they were measured on this
    /// GPU with this CPU setting, else measured now and cached.
    private func measuredCost(model: Transformer, sample: ExpertWeights, gpu: CUDAAccelerator) throws -> HybridCostModel {
        let path = HybridCostModel.cachePath(model: model.weights.checkpoint.directory.path)
        let machine = "\(gpu.detail); CPU \(model.compute.gemm) \(model.compute.dtype), \(Parallel.threadCount) threads"
        if let cached = try? HybridCostModel.load(from: path), cached.measuredOn == machine { return cached }
        let cpu = HybridCostMeasurement.cpu(weights: model.weights, compute: model.compute)
        let g: (hostToDevice: Double, flops: Double, launchSeconds: Double)
        do { g = try gpu.measure(sample: sample) } catch { throw ExecutionError.setup("hybrid: measuring the GPU: \(error)") }
        let cost = HybridCostModel(cpuFlopsPerSecond: cpu.points, cpuReadBytesPerSecond: cpu.readBytesPerSecond,
                                   hostToDeviceBytesPerSecond: g.hostToDevice, gpuFlopsPerSecond: g.flops, gpuLaunchSeconds: g.launchSeconds,
                                   measuredOn: machine)
        try? cost.save(to: path)
        return cost
    }

    public static func register(in registry: StrategyRegistry) {
        registry.registerExecution("hybrid", summary: "CPU-GPU hybrid: dense products, attention and hot experts on a CUDA GPU, cold experts on the CPU or uploaded where cheaper (GPU path not yet run on a GPU)",
                                   options: [
                                       StrategyOption("gpu_memory", type: "string", default: "0.8", help: "GPU memory for dense weights and resident experts: a size (8GiB) or a fraction of free memory"),
                                       StrategyOption("device", type: "int", default: "0", help: "CUDA device index"),
                                       StrategyOption("cpu_moe", type: "bool", default: "false", help: "llama.cpp --cpu-moe: every routed expert on the CPU"),
                                       StrategyOption("n_cpu_moe", type: "int", default: "0", help: "llama.cpp --n-cpu-moe N: the experts of the first N layers on the CPU"),
                                       StrategyOption("upload_all", type: "bool", default: "false", help: "upload every non-resident expert with tokens instead of deciding by measured cost (comparison arm)"),
                                       StrategyOption("max_swaps", type: "int", default: "2", help: "resident-set swaps per MoE layer step"),
                                       StrategyOption("upload_slots", type: "int", default: "4", help: "slots of the upload ring: pinned host and device staging, one expert each (a layer may upload more: the host waits for a slot, which the plan counts)"),
                                       StrategyOption("dense", type: "bool", default: "true", help: "q/k/v/o projections, router, shared experts, dense MLPs and the LM head on the GPU (weights resident before experts)"),
                                       StrategyOption("attention", type: "bool", default: "true", help: "with dense: attention on the GPU over a copy of the KV cache, when it fits beside the budget"),
                                       StrategyOption("device_combine", type: "bool", default: "true", help: "GPU experts gather their input rows on the GPU (after an on-GPU layer front) and sum their outputs per token there"),
                                       StrategyOption("device_routing", type: "bool", default: "true", help: "each token's experts chosen on the GPU where the router's logits are (the CPU then skips its routing)"),
                                       StrategyOption("device_residual", type: "bool", default: "true", help: "with attention: the residual stream kept on the GPU across MoE layers (the CPU's experts' share of each layer goes over; the final norm and LM head run there, so only the logits come back)"),
                                       StrategyOption("attention_gemm_min_tokens", type: "int", default: "16", help: "with attention: a sequence with at least this many tokens in a batch (a prompt) has its attention through cuBLAS's products, the rest through kernels (0: kernels always)"),
                                       StrategyOption("cuda_library_path", type: "string", default: "", help: "directories (colon-separated) searched first for libcuda, cuBLAS and NVRTC"),
                                   ]) { config in
            var o = Options()
            o.gpuMemory = try config.string("gpu_memory", default: o.gpuMemory)
            o.device = try config.int("device", default: o.device, in: 0...1023)
            o.cpuMoE = try config.bool("cpu_moe", default: o.cpuMoE)
            o.nCPUMoE = try config.int("n_cpu_moe", default: o.nCPUMoE, in: 0...Int.max)
            o.uploadAll = try config.bool("upload_all", default: o.uploadAll)
            o.maxSwapsPerStep = try config.int("max_swaps", default: o.maxSwapsPerStep, in: 0...Int.max)
            o.uploadSlots = try config.int("upload_slots", default: o.uploadSlots, in: 1...1024)
            o.cudaLibraryPath = try config.string("cuda_library_path", default: o.cudaLibraryPath)
            o.dense = try config.bool("dense", default: o.dense)
            o.attention = try config.bool("attention", default: o.attention)
            o.deviceCombine = try config.bool("device_combine", default: o.deviceCombine)
            o.deviceRouting = try config.bool("device_routing", default: o.deviceRouting)
            o.deviceResidual = try config.bool("device_residual", default: o.deviceResidual)
            o.attentionGemmMinTokens = try config.int("attention_gemm_min_tokens", default: o.attentionGemmMinTokens, in: 0...Int.max)
            return HybridExecution(o)
        }
    }
}
