/// Element types a checkpoint tensor may hold. Weights stay in this type in
/// memory; kernels widen to Float32 as they read.
public enum DType: String, Sendable, Codable, CaseIterable {
    case f32 = "F32"
    case bf16 = "BF16"
    case f16 = "F16"

    public var byteSize: Int {
        switch self {
        case .f32: 4
        case .bf16, .f16: 2
        }
    }

    /// Parses a CLI spelling (`bf16`, `f32`, `f16`) or a safetensors one (`BF16`).
    public init?(name: String) {
        switch name.lowercased() {
        case "f32", "float32", "fp32": self = .f32
        case "bf16", "bfloat16": self = .bf16
        case "f16", "float16", "fp16": self = .f16
        default: return nil
        }
    }
}
