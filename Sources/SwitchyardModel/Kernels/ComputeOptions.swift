import Foundation

/// How the forward multiplies: which library runs the many-token matrix
/// products, and at what precision activations enter them. Chosen per
/// model (`Transformer.configure(compute:)`), from the CLI's `--gemm` and
/// `--dtype` (vLLM's flag and values).
public struct ComputeOptions: Sendable, Equatable, CustomStringConvertible {
    public enum Backend: String, Sendable, CaseIterable {
        /// oneDNN matmul primitives (ISA chosen by oneDNN: AVX2, AVX-512, AVX512_BF16, AMX).
        case onednn
        /// OpenBLAS sgemm on weights widened to Float32 tile by tile.
        case openblas
    }

    public enum Precision: String, Sendable, CaseIterable {
        /// Activations stay Float32; BF16/F16 weights are widened exactly.
        case float32
        /// Activations are rounded to BF16 at every matrix product's input and
        /// products accumulate in Float32, as vLLM and llama.cpp do on CPU.
        case bfloat16
    }

    public var gemm: Backend
    public var dtype: Precision

    public init(gemm: Backend, dtype: Precision) {
        self.gemm = gemm
        self.dtype = dtype
    }

    /// Float32 activations through OpenBLAS: what a `Transformer` uses until
    /// configured, and the exactness reference (`switchyard logits`).
    public static let exact = ComputeOptions(gemm: .openblas, dtype: .float32)

    public var description: String { "gemm \(gemm.rawValue), dtype \(dtype.rawValue)" }

    public enum OptionError: Error, CustomStringConvertible, Equatable {
        case unknownBackend(String)
        case unknownPrecision(String)
        case backendUnavailable(String)
        case noBF16Path(String)

        public var description: String {
            switch self {
            case .unknownBackend(let s):
                return "--gemm \"\(s)\" is not a GEMM backend; use onednn or openblas"
            case .unknownPrecision(let s):
                return "--dtype \"\(s)\" is not an activation precision; use auto, bfloat16 or float32"
            case .backendUnavailable(let why):
                return "--gemm onednn: \(why). Install oneDNN (Debian: apt-get install libdnnl2), point SWITCHYARD_DNNL_LIBRARY at libdnnl.so.2, or use --gemm openblas"
            case .noBF16Path(let why):
                return "--dtype bfloat16: \(why); use --dtype float32"
            }
        }
    }

    /// Resolves the CLI's strings. `auto` picks bfloat16 for 16-bit
    /// checkpoints when the backend multiplies BF16 natively on this CPU,
    /// float32 otherwise. Loads oneDNN when asked for, so a missing library is
    /// an error here, at start-up, not in the first forward.
    public static func resolve(gemm: String, dtype: String, checkpointDType: DType) throws -> ComputeOptions {
        guard let backend = Backend(rawValue: gemm.lowercased()) else { throw OptionError.unknownBackend(gemm) }
        if backend == .onednn { try OneDNN.load() }
        let precision: Precision
        switch dtype.lowercased() {
        case "auto":
            let native = backend == .onednn && OneDNN.hasNativeBF16
            precision = native && checkpointDType != .f32 ? .bfloat16 : .float32
        case "bfloat16", "bf16":
            precision = .bfloat16
        case "float32", "fp32", "f32", "float":
            precision = .float32
        default:
            throw OptionError.unknownPrecision(dtype)
        }
        let options = ComputeOptions(gemm: backend, dtype: precision)
        try options.check()
        return options
    }

    /// Every combination this machine can run, `exact` first.
    public static var available: [ComputeOptions] {
        [exact, ComputeOptions(gemm: .onednn, dtype: .float32), ComputeOptions(gemm: .onednn, dtype: .bfloat16)]
            .filter { (try? $0.check()) != nil }
    }

    /// Throws when this machine cannot run these options.
    public func check() throws {
        if gemm == .onednn { try OneDNN.load() }
        if dtype == .bfloat16 {
            switch gemm {
            case .openblas:
                throw OptionError.noBF16Path("OpenBLAS has no BF16 matrix product here (use --gemm onednn)")
            case .onednn where !OneDNN.hasNativeBF16:
                throw OptionError.noBF16Path("\(OneDNN.description) has no native BF16 matmul on this CPU (needs AVX512_BF16 or AMX)")
            case .onednn:
                break
            }
        }
    }
}
