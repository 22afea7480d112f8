import Foundation

enum Fixtures {
    static let root: URL = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
    static func model(_ name: String) -> String { root.appendingPathComponent("models/\(name)").path }
    static func tokenizer(_ name: String) -> String { root.appendingPathComponent("tokenizers/\(name)").path }

    static let modelCases = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "qwen3_moe_bf16_sharded",
                             "deepseek_v2", "deepseek_v2_group", "deepseek_v3", "deepseek_v3_noninterleaved_bf16_sharded",
                             "glm4_moe", "glm4_moe_bf16_sharded", "gpt_oss", "gpt_oss_mxfp4", "deepseek_v3_long_prompt"]
    /// The fixtures with transformers-bfloat16 references (see make_bf16_references.py
    /// for why the DeepSeek ones have none).
    static let bf16Cases = Array(modelCases.prefix(5))

    struct Reference: Decodable {
        let tokens: [Int32]
        let greedy: [Int32]
        let rows: Int
        let vocab: Int
    }

    static func reference(_ name: String) throws -> (Reference, [Float]) {
        let dir = URL(fileURLWithPath: model(name))
        let ref = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: dir.appendingPathComponent("reference.json")))
        let raw = try Data(contentsOf: dir.appendingPathComponent("reference_logits.f32"))
        let logits = raw.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        return (ref, logits)
    }

    /// A fresh temporary copy of a fixture model, for tests that corrupt it.
    static func scratchCopy(of name: String) throws -> URL {
        let dst = scratchDirectory("copy-\(name)")
        try FileManager.default.copyItem(at: URL(fileURLWithPath: model(name)), to: dst)
        return dst
    }

    /// One directory per test process for the files tests write, removed
    /// when the process exits, so test runs do not pile checkpoints up in
    /// /tmp.
    static let scratchRoot: URL = {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-tests-\(getpid())")
        try? FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(at: Fixtures.scratchRoot) }
        return root
    }()

    /// A path under `scratchRoot` that does not exist yet.
    static func scratchDirectory(_ prefix: String) -> URL {
        scratchRoot.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
    }
}
