import Foundation
import Testing
@testable import SwitchyardModel

/// A malformed checkpoint fails with one error naming the file and tensor.
@Suite struct CheckpointErrorTests {
    func loadError(_ dir: URL) -> CheckpointError? {
        do {
            _ = try Transformer(directory: dir.path)
            return nil
        } catch let e as CheckpointError {
            return e
        } catch {
            Issue.record("unexpected error type \(error)")
            return nil
        }
    }

    /// Rewrites a safetensors file's header through `edit`, keeping the data.
    func rewriteHeader(_ file: URL, _ edit: (inout [String: Any]) -> Void) throws {
        let data = try Data(contentsOf: file)
        let n = Int(data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        var header = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + n))) as! [String: Any]
        let body = data.subdata(in: (8 + n)..<data.count)
        edit(&header)
        var json = try JSONSerialization.data(withJSONObject: header)
        while json.count % 8 != 0 { json.append(0x20) }
        var out = Data()
        var len = UInt64(json.count).littleEndian
        out.append(Data(bytes: &len, count: 8))
        out.append(json)
        out.append(body)
        try out.write(to: file)
    }

    @Test func missingTensorNamesTheTensor() throws {
        let dir = try Fixtures.scratchCopy(of: "mixtral")
        let file = dir.appendingPathComponent("model.safetensors")
        try rewriteHeader(file) { $0.removeValue(forKey: "model.layers.1.block_sparse_moe.experts.3.w2.weight") }
        let e = loadError(dir)
        #expect(e == .missingTensor(tensor: "model.layers.1.block_sparse_moe.experts.3.w2.weight", directory: dir.standardizedFileURL.path))
        #expect(e?.description.contains("experts.3.w2.weight") == true)
    }

    @Test func wrongShapeNamesFileTensorAndShapes() throws {
        let dir = try Fixtures.scratchCopy(of: "olmoe")
        // Claim the router is [48, 9] instead of [9, 48] (same byte count).
        try rewriteHeader(dir.appendingPathComponent("model.safetensors")) { h in
            var entry = h["model.layers.0.mlp.gate.weight"] as! [String: Any]
            entry["shape"] = [48, 9]
            h["model.layers.0.mlp.gate.weight"] = entry
        }
        let e = loadError(dir)
        #expect(e == .wrongShape(file: "model.safetensors", tensor: "model.layers.0.mlp.gate.weight", expected: [9, 48], found: [48, 9]))
    }

    @Test func unknownModelTypeListsSupportedOnes() throws {
        let dir = try Fixtures.scratchCopy(of: "mixtral")
        let url = dir.appendingPathComponent("config.json")
        let text = try String(contentsOf: url, encoding: .utf8).replacingOccurrences(of: "\"mixtral\"", with: "\"deepseek_v9\"")
        try text.write(to: url, atomically: true, encoding: .utf8)
        let e = loadError(dir)
        guard case let .unsupportedModelType(_, modelType, supported) = e else { Issue.record("got \(String(describing: e))"); return }
        #expect(modelType == "deepseek_v9")
        #expect(supported == ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3", "glm4_moe", "gpt_oss"])
    }

    @Test func truncatedHeaderIsReported() throws {
        let dir = try Fixtures.scratchCopy(of: "qwen3_moe")
        let file = dir.appendingPathComponent("model.safetensors")
        let data = try Data(contentsOf: file)
        try data.prefix(100).write(to: file)
        let e = loadError(dir)
        guard case let .truncatedHeader(name, _) = e else { Issue.record("got \(String(describing: e))"); return }
        #expect(name == "model.safetensors")
    }

    @Test func truncatedDataIsReportedWithTheTensor() throws {
        let dir = try Fixtures.scratchCopy(of: "qwen3_moe")
        let file = dir.appendingPathComponent("model.safetensors")
        let data = try Data(contentsOf: file)
        try data.prefix(data.count - 1000).write(to: file)
        let e = loadError(dir)
        guard case let .tensorOutOfBounds(name, tensor, _) = e else { Issue.record("got \(String(describing: e))"); return }
        #expect(name == "model.safetensors")
        #expect(!tensor.isEmpty)
    }

    @Test func unsupportedDTypeNamesTheTensor() throws {
        let dir = try Fixtures.scratchCopy(of: "mixtral")
        try rewriteHeader(dir.appendingPathComponent("model.safetensors")) { h in
            var entry = h["model.norm.weight"] as! [String: Any]
            entry["dtype"] = "I32"
            h["model.norm.weight"] = entry
        }
        #expect(loadError(dir) == .unsupportedDType(file: "model.safetensors", tensor: "model.norm.weight", dtype: "I32"))
    }

    @Test func indexNamingAMissingShardIsReported() throws {
        let dir = try Fixtures.scratchCopy(of: "qwen3_moe_bf16_sharded")
        try FileManager.default.removeItem(at: dir.appendingPathComponent("model-00002-of-00003.safetensors"))
        let e = loadError(dir)
        guard case let .indexNamesMissingFile(_, tensor, file) = e else { Issue.record("got \(String(describing: e))"); return }
        #expect(file == "model-00002-of-00003.safetensors")
        #expect(!tensor.isEmpty)
    }

    @Test func missingConfigAndMissingDirectoryAreReported() throws {
        let dir = try Fixtures.scratchCopy(of: "mixtral")
        try FileManager.default.removeItem(at: dir.appendingPathComponent("config.json"))
        guard case .missingFile = loadError(dir) else { Issue.record("expected missingFile"); return }
        guard case .missingFile = loadError(URL(fileURLWithPath: "/nonexistent/model")) else { Issue.record("expected missingFile"); return }
    }

    @Test func configWithWrongTypeNamesTheKey() throws {
        let dir = try Fixtures.scratchCopy(of: "mixtral")
        let url = dir.appendingPathComponent("config.json")
        let text = try String(contentsOf: url, encoding: .utf8).replacingOccurrences(of: "\"num_local_experts\": 5", with: "\"num_local_experts\": \"five\"")
        try text.write(to: url, atomically: true, encoding: .utf8)
        let e = loadError(dir)
        guard case let .invalidConfig(_, reason) = e else { Issue.record("got \(String(describing: e))"); return }
        #expect(reason.contains("num_local_experts"))
    }
}
