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

    func validate() throws {
        if blockSize < 1 { throw ValidationError("--block-size must be positive") }
        if let n = numKVBlocks, n < 1 { throw ValidationError("--num-kv-blocks must be positive") }
        if let n = maxNumBatchedTokens, n < 1 { throw ValidationError("--max-num-batched-tokens must be positive") }
        if let n = maxNumSeqs, n < 1 { throw ValidationError("--max-num-seqs must be positive") }
        if let m = maxModelLen, m < 2 { throw ValidationError("--max-model-len must be at least 2") }
        _ = try parseBytes(kvCacheMemory)
    }

    func engineConfig(for model: ModelConfig) throws -> EngineConfig {
        let maxLen = maxModelLen ?? min(model.maxPositionEmbeddings, 4096)
        if let n = numKVBlocks { return EngineConfig(maxModelLen: maxLen, blockSize: blockSize, numKVBlocks: n) }
        return EngineConfig.fromMemory(model: model, kvCacheBytes: try parseBytes(kvCacheMemory), maxModelLen: maxLen, blockSize: blockSize)
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

    func makeEngine() throws -> Engine {
        let transformer = try loadModel(model)
        let tokenizer = try? TokenizerLoader.load(directory: model)
        let config = try engineConfig(for: transformer.config)
        let scheduler = try makeScheduler(numLayers: transformer.config.numLayers, maxModelLen: config.maxModelLen)
        return Engine(model: transformer, config: config, scheduler: scheduler, tokenizer: tokenizer)
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
