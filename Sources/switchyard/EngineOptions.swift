import ArgumentParser
import Foundation
import SwitchyardCore
import SwitchyardModel

/// Engine flags shared by every command that serves requests.
struct EngineOptions: ParsableArguments {
    @Option(help: "Checkpoint directory (Hugging Face format).")
    var model: String

    @Option(name: .customLong("max-model-len"), help: "Longest prompt + output per request (default: the model's max_position_embeddings, capped at 4096).")
    var maxModelLen: Int?

    @Option(name: .customLong("block-size"), help: "Tokens per KV-cache block.")
    var blockSize: Int = 16

    @Option(name: .customLong("num-kv-blocks"), help: "KV-cache capacity in blocks (overrides --kv-cache-memory).")
    var numKVBlocks: Int?

    @Option(name: .customLong("kv-cache-memory"), help: "KV-cache memory budget, e.g. 512MiB or 2GiB.")
    var kvCacheMemory: String = "1GiB"

    @Option(help: "Scheduler strategy (see `switchyard strategies`).")
    var scheduler: String = "chunked"

    @Option(name: .customLong("scheduler-config"), help: "Scheduler options as JSON, e.g. '{\"max_num_batched_tokens\": 1024}'.")
    var schedulerConfig: String?

    @Option(name: .customLong("max-num-batched-tokens"), help: "Shorthand for the scheduler option max_num_batched_tokens.")
    var maxNumBatchedTokens: Int?

    @Option(name: .customLong("max-num-seqs"), help: "Shorthand for the scheduler option max_num_seqs.")
    var maxNumSeqs: Int?

    @OptionGroup var executionFlags: ExecutionFlags

    @OptionGroup var compute: ComputeFlags

    func validate() throws {
        if blockSize < 1 { throw ValidationError("--block-size must be positive") }
        if let n = numKVBlocks, n < 1 { throw ValidationError("--num-kv-blocks must be positive") }
        if let n = maxNumBatchedTokens, n < 1 { throw ValidationError("--max-num-batched-tokens must be positive") }
        if let n = maxNumSeqs, n < 1 { throw ValidationError("--max-num-seqs must be positive") }
        if let m = maxModelLen, m < 2 { throw ValidationError("--max-model-len must be at least 2") }
        _ = try parseBytes(kvCacheMemory)
    }

    /// The engine's limits. A KV cache that cannot hold one sequence of
    /// `--max-model-len` tokens is an error naming the figures (as vLLM's);
    /// when the length was not given, it is clamped to the cache instead.
    func engineConfig(for model: ModelConfig, compute: ComputeOptions) throws -> EngineConfig {
        var config: EngineConfig
        let maxLen = maxModelLen ?? min(model.maxPositionEmbeddings, 4096)
        if let n = numKVBlocks {
            config = EngineConfig(maxModelLen: maxLen, blockSize: blockSize, numKVBlocks: n)
        } else {
            config = EngineConfig.fromMemory(model: model, kvCacheBytes: try parseBytes(kvCacheMemory), maxModelLen: maxLen, blockSize: blockSize,
                                            compute: compute)
        }
        let capacity = config.numKVBlocks * config.blockSize
        if capacity < config.maxModelLen {
            if maxModelLen != nil {
                throw CLIError("error: --max-model-len \(config.maxModelLen) is more than the KV cache holds (\(config.numKVBlocks) blocks of \(config.blockSize) = \(capacity) tokens); raise --kv-cache-memory / --num-kv-blocks or lower --max-model-len")
            }
            log.warning("the KV cache holds \(capacity) tokens, less than the default max-model-len \(config.maxModelLen): serving with --max-model-len \(capacity); raise --kv-cache-memory for longer requests")
            config.maxModelLen = capacity
        }
        return config
    }

    /// The scheduler options: `--scheduler-config` JSON, plus the shorthand
    /// flags when given (a key set both ways is an error).
    func schedulerOptions() throws -> [String: Any] {
        var values: [String: Any] = [:]
        if let json = schedulerConfig {
            guard let object = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any] else {
                throw ValidationError("--scheduler-config must be a JSON object, e.g. '{\"max_num_batched_tokens\": 1024}'")
            }
            values = object
        }
        for (key, value) in [("max_num_batched_tokens", maxNumBatchedTokens), ("max_num_seqs", maxNumSeqs)] {
            guard let value else { continue }
            if values[key] != nil { throw ValidationError("\(key) is given both in --scheduler-config and as a flag") }
            values[key] = value
        }
        return values
    }

    func makeScheduler(numLayers: Int, maxModelLen: Int) throws -> any Scheduler {
        do {
            let json = String(decoding: try JSONSerialization.data(withJSONObject: try schedulerOptions()), as: UTF8.self)
            return try strategies.makeScheduler(scheduler, config: json,
                                                environment: SchedulerEnvironment(numLayers: numLayers, maxModelLen: maxModelLen))
        } catch let e as StrategyError {
            throw CLIError("error: \(e.description)")
        }
    }

    var placement: String { executionFlags.placement }

    func makeEngine() throws -> Engine { try makeEngineAndExecution().engine }

    /// The engine, and what its execution strategy set up (the expert map
    /// `serve` reports per-device load with).
    func makeEngineAndExecution() throws -> (engine: Engine, execution: ExecutionSummary) {
        let transformer = try loadModel(model)
        try compute.apply(to: transformer)
        let execution = try executionFlags.prepare(transformer)
        let tokenizer = try? TokenizerLoader.load(directory: model)
        let config = try engineConfig(for: transformer.config, compute: transformer.compute)
        let scheduler = try makeScheduler(numLayers: transformer.config.numLayers, maxModelLen: config.maxModelLen)
        return (Engine(model: transformer, config: config, scheduler: scheduler, tokenizer: tokenizer), execution)
    }
}

/// "2GiB", "512MiB", "1G", "1000000" → bytes.
func parseBytes(_ s: String) throws -> Int {
    let gib = 1_073_741_824.0, mib = 1_048_576.0, kib = 1024.0
    let units: [(String, Double)] = [("GiB", gib), ("MiB", mib), ("KiB", kib), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3),
                                     ("G", gib), ("M", mib), ("K", kib), ("B", 1)]
    let t = s.trimmingCharacters(in: .whitespaces)
    for (suffix, mult) in units where t.hasSuffix(suffix) {
        if let v = Double(t.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), v > 0 { return Int(v * mult) }
    }
    if let v = Int(t), v > 0 { return v }
    throw ValidationError("cannot read memory size \"\(s)\"; use a number of bytes or e.g. 512MiB, 2GiB")
}

/// Where the model's work runs: the execution strategy and the expert
/// placement it asks for. Every command that runs the model takes them, so
/// any execution strategy's output can be checked on one prompt.
struct ExecutionFlags: ParsableArguments {
    @Option(help: "Execution strategy: cpu (default), cpu-ep (expert-parallel core pools), ... (see `switchyard strategies`).")
    var execution: String = "cpu"

    @Option(name: .customLong("execution-config"), help: "Execution options as JSON, e.g. '{\"devices\": 2, \"pin\": true}'.")
    var executionConfig: String?

    @Option(help: "Shorthand for the execution option devices (core pools for cpu-ep).")
    var devices: Int?

    @Flag(help: "Shorthand for the execution option numa (one pool per NUMA node for cpu-ep).")
    var numa = false

    @Option(name: .customLong("gpu-memory"),
            help: "Shorthand for the hybrid execution option gpu_memory: GPU memory for dense weights and resident experts, a size (8GiB) or a fraction of free memory (0.8).")
    var gpuMemory: String?

    @Flag(name: .customLong("cpu-moe"), help: "Shorthand for the hybrid execution option cpu_moe (llama.cpp's --cpu-moe): every routed expert on the CPU.")
    var cpuMoE = false

    @Option(name: .customLong("n-cpu-moe"),
            help: "Shorthand for the hybrid execution option n_cpu_moe (llama.cpp's --n-cpu-moe N): the experts of the first N layers on the CPU.")
    var nCPUMoE: Int?

    @Option(help: "Expert placement over the execution's devices (see `switchyard strategies`).")
    var placement: String = "linear"

    @Option(name: .customLong("placement-config"), help: "Placement options as JSON, e.g. '{\"time_limit_s\": 5}'.")
    var placementConfig: String?

    @Option(name: .customLong("placement-profile"), help: "Routing profile JSON for placements that need one (balanced, ilp); record one with bench --record-routing.")
    var placementProfile: String?

    func validate() throws {
        if let d = devices, d < 1 { throw ValidationError("--devices must be positive") }
        if let n = nCPUMoE, n < 0 { throw ValidationError("--n-cpu-moe must be 0 or more") }
    }

    /// The execution options: `--execution-config` JSON plus the shorthand
    /// flags, each refused by name where the strategy does not take it.
    func executionOptions() throws -> String {
        let shorthands: [(flag: String, key: String, value: Any?)] = [
            ("--devices", "devices", devices), ("--numa", "numa", numa ? true : nil), ("--gpu-memory", "gpu_memory", gpuMemory),
            ("--cpu-moe", "cpu_moe", cpuMoE ? true : nil), ("--n-cpu-moe", "n_cpu_moe", nCPUMoE),
        ]
        let executions = strategies.all.filter { $0.kind == .execution }
        if let chosen = executions.first(where: { $0.name == execution }) {
            for (flag, key, value) in shorthands where value != nil && !chosen.options.contains(where: { $0.name == key }) {
                let takers = executions.filter { $0.options.contains { $0.name == key } }.map { "--execution \($0.name)" }
                throw CLIError("error: \(flag) is an option of \(takers.joined(separator: " or ")); --execution \(execution) does not take it")
            }
        }
        return try StrategyConfig.merging(json: executionConfig, shorthands: shorthands, strategy: execution)
    }

    /// Applies the execution strategy (and through it the placement) to a loaded model.
    @discardableResult
    func prepare(_ transformer: Transformer) throws -> ExecutionSummary {
        do {
            let strategy = try strategies.makeExecution(execution, config: try executionOptions())
            let placementName = placement, placementJSON = placementConfig
            let profile = try placementProfile.map { try RoutingProfile.load(path: $0) }
            let c = transformer.config
            // A strategy that offloads dense products installs its own.
            transformer.install(dense: nil)
            let summary = try strategy.prepare(ExecutionContext(model: transformer, topology: try CPUTopology.load(), profile: profile) { devices in
                let p = try strategies.makePlacement(placementName, config: placementJSON)
                return try p.place(PlacementProblem(numLayers: c.numLayers, numExperts: c.numExperts, numDevices: devices, profile: profile))
            })
            log.info("execution", metadata: ["strategy": "\(summary.strategy)", "devices": "\(summary.devices.map { "\($0.name) (\($0.kind.rawValue): \($0.detail)) experts \($0.experts)" })",
                                             "notes": "\(summary.notes)"])
            return summary
        } catch let e as StrategyError {
            throw CLIError("error: \(e.description)")
        } catch let e as PlacementError {
            throw CLIError("error: placement \(placement): \(e.description)")
        } catch let e as ExecutionError {
            throw CLIError("error: execution \(execution): \(e.description)")
        } catch let e as CPUTopology.TopologyError {
            throw CLIError("error: \(e.description)")
        }
    }

}
