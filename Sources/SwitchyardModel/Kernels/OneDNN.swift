import CDNNL
import Foundation
import Synchronization

/// oneDNN, opened at run time (see `CDNNL`). Loading pins oneDNN's OpenMP to
/// one thread: the kernel threads (`Parallel`, or `cpu-ep`'s pinned pools)
/// each call it on their own slice, so exactly one set of threads works.
public enum OneDNN {
    private static let state = Mutex<Result<String, ComputeOptions.OptionError>?>(nil)

    /// Opens the library (`SWITCHYARD_DNNL_LIBRARY`, else libdnnl.so.2 on the
    /// loader's path) once per process; later calls return the first outcome.
    public static func load() throws {
        let outcome = state.withLock { s -> Result<String, ComputeOptions.OptionError> in
            if let s { return s }
            let path = ProcessInfo.processInfo.environment["SWITCHYARD_DNNL_LIBRARY"]
            var error = [CChar](repeating: 0, count: 512)
            let rc = path.map { p in p.withCString { sy_dnnl_load($0, &error, error.count) } } ?? sy_dnnl_load(nil, &error, error.count)
            let r: Result<String, ComputeOptions.OptionError> = rc == 0
                ? .success(String(cString: sy_dnnl_description()))
                : .failure(.backendUnavailable(String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)))
            s = r
            return r
        }
        _ = try outcome.get()
    }

    public static var isLoaded: Bool { (try? load()) != nil }

    /// Whether the library at `path` would load, without loading it: the
    /// error `load()` would give for it.
    public static func probe(path: String) throws {
        var error = [CChar](repeating: 0, count: 512)
        if path.withCString({ sy_dnnl_probe($0, &error, error.count) }) != 0 {
            throw ComputeOptions.OptionError.backendUnavailable(String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
    }

    /// Version, threading runtime and the ISA oneDNN dispatches to.
    public static var description: String {
        state.withLock { s in
            switch s {
            case .success(let d): return d
            case .failure(let e): return "oneDNN unavailable (\(e.description))"
            case nil: return "oneDNN not loaded"
            }
        }
    }

    /// AVX512_BF16 or AMX: BF16 products at native speed.
    public static var hasNativeBF16: Bool { isLoaded && sy_dnnl_has_native_bf16() != 0 }

    /// Primitives created so far (each ~70 KB; bounded by `Linear`'s M buckets).
    public static var primitiveCount: Int { Int(sy_matmul_count()) }

    /// `dst[m][n] = Σ_k src[m][k] · wei[n][k]` on the calling thread, through
    /// the cached primitive for this shape. `packed`: BF16 weights in
    /// `MatrixLayout.packedBF16` (`ldw` ignored). Returns false if oneDNN
    /// could not build or run it (the caller then takes its OpenBLAS path).
    @inline(__always)
    static func matmul(m: Int, n: Int, k: Int, src: UnsafeRawPointer, lds: Int, wei: UnsafeRawPointer, ldw: Int,
                       dst: UnsafeMutablePointer<Float>, ldd: Int, bf16: Bool, packed: Bool = false) -> Bool {
        var error = (Int64(0), Int64(0), Int64(0), Int64(0), Int64(0), Int64(0), Int64(0), Int64(0),
                     Int64(0), Int64(0), Int64(0), Int64(0), Int64(0), Int64(0), Int64(0), Int64(0))
        let primitive = withUnsafeMutableBytes(of: &error) { e in
            sy_matmul_get(Int64(m), Int64(n), Int64(k), Int64(lds), Int64(ldw), Int64(ldd), bf16 ? 1 : 0, packed ? 1 : 0,
                          e.baseAddress!.assumingMemoryBound(to: CChar.self), e.count)
        }
        guard let primitive else {
            let message = withUnsafeBytes(of: &error) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            reportFailure(message)
            return false
        }
        let rc = sy_matmul_run(primitive, src, wei, dst)
        if rc != 0 { reportFailure("oneDNN matmul \(m)x\(n)x\(k) failed with status \(rc)") }
        return rc == 0
    }

    /// `dst[m][n] = Σ_k src[m][k] · wei[n][k]`, BF16 in, Float32 out, for
    /// any shape, on the calling thread: attention's products, whose key
    /// count changes with every chunk, through one run-time-shaped primitive
    /// per thread instead of one cached primitive per shape. Returns false if
    /// oneDNN could not build or run it.
    @inline(__always)
    static func matmulBF16AnyShape(m: Int, n: Int, k: Int, src: UnsafePointer<UInt16>, lds: Int,
                                   wei: UnsafePointer<UInt16>, ldw: Int, dst: UnsafeMutablePointer<Float>, ldd: Int) -> Bool {
        let rc = sy_matmul_bf16_any(Int64(m), Int64(n), Int64(k), src, Int64(lds), wei, Int64(ldw), dst, Int64(ldd))
        if rc != 0 { reportFailure("oneDNN run-time-shaped bf16 matmul \(m)x\(n)x\(k) failed with status \(rc)") }
        return rc == 0
    }

    /// oneDNN's implementation name for a shape (kernel-bench reports it).
    public static func implementation(m: Int, n: Int, k: Int, bf16: Bool, packed: Bool = false) -> String {
        var error = [CChar](repeating: 0, count: 256)
        guard isLoaded, let p = sy_matmul_get(Int64(m), Int64(n), Int64(k), Int64(k), Int64(k), Int64(n), bf16 ? 1 : 0,
                                              packed ? 1 : 0, &error, error.count) else {
            return "unavailable"
        }
        return String(cString: sy_matmul_impl(p))
    }

    private static let failures = Atomic<Int>(0)

    /// Failed products so far (each computed by OpenBLAS instead).
    public static var failureCount: Int { failures.load(ordering: .relaxed) }

    private static func reportFailure(_ message: String) {
        if failures.add(1, ordering: .relaxed).oldValue == 0 {
            FileHandle.standardError.write(Data("warning: \(message); computing such products with OpenBLAS\n".utf8))
        }
    }
}
