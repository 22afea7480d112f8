/// Element types a checkpoint tensor may hold. Weights stay in this type in
/// memory; kernels widen to Float32 as they read.
public enum DType: String, Sendable, Codable, CaseIterable {
    case f32 = "F32"
    case bf16 = "BF16"
    case f16 = "F16"
    /// Raw bytes (MXFP4 blocks and scales on disk).
    case u8 = "U8"
    /// A matrix packed as MXFP4 (OCP microscaling FP4): two E2M1 values per
    /// byte, low nibble first, one E8M0 scale byte per 32 values of a row.
    /// Only a `Matrix` has this type (built from a checkpoint's `U8`
    /// `*_blocks` / `*_scales` pair); its sizes come from `Matrix.rowBytes`.
    case mxfp4 = "MXFP4"

    /// Bytes per element; for `mxfp4`, per stored block byte (use `Matrix.rowBytes`).
    public var byteSize: Int {
        switch self {
        case .f32: 4
        case .bf16, .f16: 2
        case .u8, .mxfp4: 1
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
