import Foundation
import SwitchyardModel

/// `ExpertAccelerator` on an NVIDIA GPU through the driver API, cuBLAS and
/// NVRTC, all opened at run time. Resident experts' BF16 weights live in
/// device memory; a layer's share goes: input rows narrowed to BF16 into
/// pinned memory and copied over, per expert `G = X·Wgᵀ` and `U = X·Wuᵀ`
/// (`cublasGemmEx`, BF16 in, Float32 accumulate), `A = SiLU(G)·U` rounded to
/// BF16 (an NVRTC kernel), `Y = A·Wdᵀ`, and `Y` copied back; uploads copy an
/// expert's weights into a staging slot first. Rounding points are those of
/// the CPU's bfloat16 mode (BF16 at every product's inputs).
///
/// Unverified: this file has never run on a GPU (no session that wrote it
/// had one). `scripts/gpu-check.sh` compares its logits with the CPU's.
public final class CUDAExpertAccelerator: ExpertAccelerator, @unchecked Sendable {
    typealias DevicePointer = UInt64
    typealias MemAlloc = @convention(c) (UnsafeMutablePointer<DevicePointer>, Int) -> Int32
    typealias MemFree = @convention(c) (DevicePointer) -> Int32
    typealias CopyHtoD = @convention(c) (DevicePointer, UnsafeRawPointer, Int, OpaquePointer?) -> Int32
    typealias CopyDtoH = @convention(c) (UnsafeMutableRawPointer, DevicePointer, Int, OpaquePointer?) -> Int32
    typealias StreamCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, UInt32) -> Int32
    typealias StreamSync = @convention(c) (OpaquePointer?) -> Int32
    typealias HostAlloc = @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>, Int, UInt32) -> Int32
    typealias HostFree = @convention(c) (UnsafeMutableRawPointer) -> Int32
    typealias ModuleLoadData = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, UnsafeRawPointer) -> Int32
    typealias ModuleGetFunction = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, OpaquePointer?, UnsafePointer<CChar>) -> Int32
    typealias LaunchKernel = @convention(c) (OpaquePointer?, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, OpaquePointer?,
                                             UnsafeMutablePointer<UnsafeMutableRawPointer?>?, UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32
    typealias BlasCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>) -> Int32
    typealias BlasSetStream = @convention(c) (OpaquePointer?, OpaquePointer?) -> Int32
    typealias GemmEx = @convention(c) (OpaquePointer?, Int32, Int32, Int32, Int32, Int32, UnsafeRawPointer, DevicePointer, Int32, Int32,
                                       DevicePointer, Int32, Int32, UnsafeRawPointer, DevicePointer, Int32, Int32, Int32, Int32) -> Int32
    typealias NvrtcCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, UnsafePointer<CChar>, UnsafePointer<CChar>, Int32,
                                            UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
    typealias NvrtcCompile = @convention(c) (OpaquePointer?, Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
    typealias NvrtcSize = @convention(c) (OpaquePointer?, UnsafeMutablePointer<Int>) -> Int32
    typealias NvrtcGet = @convention(c) (OpaquePointer?, UnsafeMutablePointer<CChar>) -> Int32
    typealias NvrtcDestroy = @convention(c) (UnsafeMutablePointer<OpaquePointer?>) -> Int32

    // cuBLAS and CUDA enum values (cublas_api.h, library_types.h).
    static let opN: Int32 = 0, opT: Int32 = 1, realF32: Int32 = 0, realBF16: Int32 = 14, compute32F: Int32 = 68, gemmDefault: Int32 = -1

    static let kernelSource = """
    extern "C" __global__ void silu_mul_bf16(const float* g, const float* u, unsigned short* out, long long count) {
        long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
        if (i >= count) return;
        float x = g[i];
        float a = x / (1.0f + expf(-x)) * u[i];
        unsigned int bits = __float_as_uint(a);
        bits += 0x7FFFu + ((bits >> 16) & 1u);
        out[i] = (unsigned short)(bits >> 16);
    }
    """

    public let name: String
    public let detail: String
    public let expertBudgetBytes: Int
    let hidden: Int, intermediate: Int, expertBytes: Int
    let memAlloc: MemAlloc, memFree: MemFree, copyHtoD: CopyHtoD, copyDtoH: CopyDtoH, streamSync: StreamSync
    let launch: LaunchKernel, gemmEx: GemmEx
    let hostAlloc: HostAlloc, hostFree: HostFree
    let stream: OpaquePointer?, blas: OpaquePointer?, siluMul: OpaquePointer?
    /// The device's primary context, made current on whichever thread calls
    /// (the engine loop is not the thread that built this).
    let context: OpaquePointer?, setCurrent: CUDADriver.CtxSetCurrent
    /// Device copies of resident experts: gate, up, down back to back.
    private var residentCopies: [ResidentExperts.Expert: DevicePointer] = [:]
    /// Staging for uploaded experts, `uploadSlots` experts at a time.
    private let uploadArea: DevicePointer, uploadSlots: Int
    /// Per-row scratch on the device and pinned rows on the host, grown to
    /// the largest layer share seen.
    private var capacityRows = 0
    private var dX: DevicePointer = 0, dG: DevicePointer = 0, dU: DevicePointer = 0, dA: DevicePointer = 0, dY: DevicePointer = 0
    private var hX: UnsafeMutableRawPointer?, hY: UnsafeMutableRawPointer?
    private var pending: (work: ExpertWork, experts: [Int], rowOfExpert: [Int])?
    /// Host rows for weights that are packed for the CPU's products
    /// (`MatrixLayout.packedBF16`): cuBLAS reads Hugging Face's row-major
    /// layout, so they are unpacked here before each copy.
    private var rowMajorScratch: UnsafeMutableRawPointer?

    /// Opens the driver, cuBLAS and NVRTC, takes device `index`'s primary
    /// context, compiles the kernel and reserves `budgetBytes` of experts
    /// plus staging for `uploadSlots` uploads. Every failure names its cause.
    public init(config: ModelConfig, sampleExpert: ExpertWeights, deviceIndex: Int, budgetBytes: Int, uploadSlots: Int = 4,
                searchPath: [String] = CUDALibraries.defaultSearchPath()) throws {
        guard sampleExpert.gate.dtype == .bf16, sampleExpert.up.dtype == .bf16, sampleExpert.down.dtype == .bf16,
              sampleExpert.activation == .swiglu, sampleExpert.gateBias == nil else {
            throw HybridSetupError("the GPU path computes plain SwiGLU experts with BF16 weights; this checkpoint's experts are "
                                   + "\(sampleExpert.gate.dtype) (or biased / clamped): use --execution cpu")
        }
        let driver = try CUDADriver.load(searchPath: searchPath, systemSearch: true).get()
        let devices = try driver.devices().get()
        guard deviceIndex < devices.list.count else {
            throw HybridSetupError("GPU \(deviceIndex) requested but the driver reports \(devices.list.count) device(s)")
        }
        let blasLib = try CUDALibraries.open(["libcublas.so.13", "libcublas.so.12", "libcublas.so"], searchPath: searchPath, systemSearch: true).get()
        let nvrtcLib = try CUDALibraries.open(["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"], searchPath: searchPath, systemSearch: true).get()
        let check = Self.check
        func symbol<F>(_ lib: OpenedLibrary, _ name: String, _ type: F.Type) throws -> F { try Self.symbol(lib, name, type) }
        var device: Int32 = 0, context: OpaquePointer?
        try check("cuDeviceGet", try driver.function("cuDeviceGet", as: CUDADriver.DeviceGet.self).get()(&device, Int32(deviceIndex)))
        try check("cuDevicePrimaryCtxRetain", try driver.function("cuDevicePrimaryCtxRetain", as: CUDADriver.PrimaryCtxRetain.self).get()(&context, device))
        setCurrent = try driver.function("cuCtxSetCurrent", as: CUDADriver.CtxSetCurrent.self).get()
        self.context = context
        try check("cuCtxSetCurrent", setCurrent(context))
        memAlloc = try driver.function("cuMemAlloc", as: MemAlloc.self).get()
        memFree = try driver.function("cuMemFree", as: MemFree.self).get()
        copyHtoD = try driver.function("cuMemcpyHtoDAsync", as: CopyHtoD.self).get()
        copyDtoH = try driver.function("cuMemcpyDtoHAsync", as: CopyDtoH.self).get()
        streamSync = try driver.function("cuStreamSynchronize", as: StreamSync.self).get()
        launch = try driver.function("cuLaunchKernel", as: LaunchKernel.self).get()
        hostAlloc = try driver.function("cuMemHostAlloc", as: HostAlloc.self).get()
        hostFree = try driver.function("cuMemFreeHost", as: HostFree.self).get()
        var s: OpaquePointer?
        try check("cuStreamCreate", try driver.function("cuStreamCreate", as: StreamCreate.self).get()(&s, 1))
        stream = s
        var handle: OpaquePointer?
        try check("cublasCreate_v2", try symbol(blasLib, "cublasCreate_v2", BlasCreate.self)(&handle))
        try check("cublasSetStream_v2", try symbol(blasLib, "cublasSetStream_v2", BlasSetStream.self)(handle, s))
        blas = handle
        gemmEx = try symbol(blasLib, "cublasGemmEx", GemmEx.self)
        // The kernel: NVRTC to PTX, which the driver compiles for this GPU.
        let ptx = try Self.compileKernel(nvrtc: nvrtcLib)
        var module: OpaquePointer?, function: OpaquePointer?
        try ptx.withUnsafeBytes { try check("cuModuleLoadData", try driver.function("cuModuleLoadData", as: ModuleLoadData.self).get()(&module, $0.baseAddress!)) }
        try check("cuModuleGetFunction", try driver.function("cuModuleGetFunction", as: ModuleGetFunction.self).get()(&function, module, "silu_mul_bf16"))
        siluMul = function
        hidden = config.hiddenSize
        intermediate = sampleExpert.gate.rows
        expertBytes = sampleExpert.byteCount
        let gpu = devices.list[deviceIndex]
        let staging = uploadSlots * expertBytes
        guard budgetBytes + staging <= gpu.freeBytes else {
            throw HybridSetupError(String(format: "--gpu-memory asks for %.2f GiB of experts plus %.2f GiB of upload staging, but %@ has %.2f GiB free",
                                          Double(budgetBytes) / 1073741824, Double(staging) / 1073741824, gpu.name, Double(gpu.freeBytes) / 1073741824))
        }
        expertBudgetBytes = budgetBytes
        var area: DevicePointer = 0
        try check("cuMemAlloc (upload staging)", memAlloc(&area, max(1, staging)))
        uploadArea = area
        self.uploadSlots = uploadSlots
        name = "gpu\(deviceIndex)"
        detail = "\(gpu.name), \(gpu.totalBytes >> 20) MiB, CUDA driver \(devices.driverVersion) (unverified GPU path)"
    }

    deinit {
        for p in residentCopies.values { _ = memFree(p) }
        for p in [uploadArea, dX, dG, dU, dA, dY] where p != 0 { _ = memFree(p) }
        if let hX { _ = hostFree(hX) }
        if let hY { _ = hostFree(hY) }
        rowMajorScratch?.deallocate()
    }

    public func load(_ expert: ResidentExperts.Expert, weights: ExpertWeights) throws {
        guard residentCopies[expert] == nil else { return }
        try makeCurrent()
        guard (residentCopies.count + 1) * expertBytes <= expertBudgetBytes else { throw HybridSetupError("resident experts exceed the GPU budget") }
        var p: DevicePointer = 0
        try check("cuMemAlloc (expert)", memAlloc(&p, expertBytes))
        try copyWeights(weights, to: p)
        try check("cuStreamSynchronize", streamSync(stream))
        residentCopies[expert] = p
    }

    public func evict(_ expert: ResidentExperts.Expert) {
        guard let p = residentCopies.removeValue(forKey: expert), setCurrent(context) == 0 else { return }
        _ = memFree(p)
    }

    public func begin(_ work: ExpertWork, experts: [Int], uploads: [Int]) throws {
        guard uploads.count <= uploadSlots else { throw HybridSetupError("\(uploads.count) uploads in one layer, staging holds \(uploadSlots)") }
        try makeCurrent()
        var rows = 0, rowOfExpert: [Int] = []
        for j in experts {
            rowOfExpert.append(rows)
            rows += Int(work.tokenCount[j])
        }
        try reserve(rows: rows)
        // Inputs, narrowed to BF16 as the CPU's bfloat16 mode rounds them.
        let x = hX!.assumingMemoryBound(to: UInt16.self)
        for (i, j) in experts.enumerated() {
            let n = Int(work.tokenCount[j])
            narrowToBF16(work.input + Int(work.rowOffset[j]) * hidden, count: n * hidden, into: x + rowOfExpert[i] * hidden)
        }
        try check("cuMemcpyHtoDAsync (inputs)", copyHtoD(dX, hX!, rows * hidden * 2, stream))
        var slot = 0
        for (i, j) in experts.enumerated() {
            let n = Int32(work.tokenCount[j])
            let weights: DevicePointer
            if uploads.contains(j) {
                weights = uploadArea + DevicePointer(slot * expertBytes)
                slot += 1
                try copyWeights(work.experts[j], to: weights)
            } else {
                guard let p = residentCopies[.init(layer: work.layer, expert: j)] else {
                    throw HybridSetupError("expert \(j) of layer \(work.layer) is not resident")
                }
                weights = p
            }
            let gate = weights, up = weights + DevicePointer(work.experts[j].gate.byteCount)
            let down = up + DevicePointer(work.experts[j].up.byteCount)
            let r = DevicePointer(rowOfExpert[i])
            let h = Int32(hidden), m = Int32(intermediate)
            try gemm(rows: m, tokens: n, k: h, weights: gate, input: dX + r * DevicePointer(hidden * 2), output: dG + r * DevicePointer(intermediate * 4))
            try gemm(rows: m, tokens: n, k: h, weights: up, input: dX + r * DevicePointer(hidden * 2), output: dU + r * DevicePointer(intermediate * 4))
            var g = dG + r * DevicePointer(intermediate * 4), u = dU + r * DevicePointer(intermediate * 4)
            var a = dA + r * DevicePointer(intermediate * 2), count = Int64(n) * Int64(intermediate)
            let blocks = UInt32((Int(count) + 255) / 256)
            try withUnsafeMutablePointer(to: &g) { gp in
                try withUnsafeMutablePointer(to: &u) { up in
                    try withUnsafeMutablePointer(to: &a) { ap in
                        try withUnsafeMutablePointer(to: &count) { cp in
                            var params: [UnsafeMutableRawPointer?] = [UnsafeMutableRawPointer(gp), UnsafeMutableRawPointer(up),
                                                                      UnsafeMutableRawPointer(ap), UnsafeMutableRawPointer(cp)]
                            try check("cuLaunchKernel (SiLU)", launch(siluMul, blocks, 1, 1, 256, 1, 1, 0, stream, &params, nil))
                        }
                    }
                }
            }
            try gemm(rows: h, tokens: n, k: m, weights: down, input: a, output: dY + r * DevicePointer(hidden * 4))
        }
        try check("cuMemcpyDtoHAsync (outputs)", copyDtoH(hY!, dY, rows * hidden * 4, stream))
        pending = (work, experts, rowOfExpert)
    }

    public func finish() throws {
        guard let p = pending else { return }
        let work = p.work, experts = p.experts, rowOfExpert = p.rowOfExpert
        pending = nil
        try makeCurrent()
        try check("cuStreamSynchronize", streamSync(stream))
        let y = hY!.assumingMemoryBound(to: Float.self)
        for (i, j) in experts.enumerated() {
            (work.output + Int(work.rowOffset[j]) * hidden).update(from: y + rowOfExpert[i] * hidden, count: Int(work.tokenCount[j]) * hidden)
        }
    }

    /// `kernelSource` compiled to PTX by NVRTC (no GPU needed for this step).
    static func compileKernel(nvrtc: OpenedLibrary) throws -> [CChar] {
        func symbol<F>(_ name: String, _ type: F.Type) throws -> F { try Self.symbol(nvrtc, name, type) }
        var program: OpaquePointer?
        let created = try symbol("nvrtcCreateProgram", NvrtcCreate.self)(&program, kernelSource, "silu_mul.cu", 0, nil, nil)
        guard created == 0 else { throw HybridSetupError("nvrtcCreateProgram failed with error \(created)") }
        defer { _ = try? symbol("nvrtcDestroyProgram", NvrtcDestroy.self)(&program) }
        let compiled = try symbol("nvrtcCompileProgram", NvrtcCompile.self)(program, 0, nil)
        if compiled != 0 {
            var size = 0
            _ = try symbol("nvrtcGetProgramLogSize", NvrtcSize.self)(program, &size)
            var log = [CChar](repeating: 0, count: size + 1)
            _ = try symbol("nvrtcGetProgramLog", NvrtcGet.self)(program, &log)
            throw HybridSetupError("NVRTC could not compile the SiLU kernel (\(compiled)): \(String(cString: log))")
        }
        var size = 0
        guard try symbol("nvrtcGetPTXSize", NvrtcSize.self)(program, &size) == 0 else { throw HybridSetupError("nvrtcGetPTXSize failed") }
        var ptx = [CChar](repeating: 0, count: size + 1)
        guard try symbol("nvrtcGetPTX", NvrtcGet.self)(program, &ptx) == 0 else { throw HybridSetupError("nvrtcGetPTX failed") }
        return ptx
    }

    /// The cuBLAS entry points this accelerator calls, for checking a
    /// library before relying on it.
    static let cublasSymbols = ["cublasCreate_v2", "cublasSetStream_v2", "cublasGemmEx"]

    /// Host-to-device bytes/s for one expert's weights, the GPU's FLOP/s
    /// on a 256-token expert, and the cost of a 1-token expert (launches):
    /// the GPU half of `HybridCostModel`.
    public func measure(sample: ExpertWeights, repeats: Int = 5) throws -> (hostToDevice: Double, flops: Double, launchSeconds: Double) {
        try makeCurrent()
        var slot: DevicePointer = 0
        try check("cuMemAlloc", memAlloc(&slot, expertBytes))
        defer { _ = memFree(slot) }
        try reserve(rows: 256)
        func timed(_ body: () throws -> Void) throws -> Double {
            try body()
            try check("cuStreamSynchronize", streamSync(stream))
            let t0 = monotonicSeconds()
            for _ in 0..<repeats { try body() }
            try check("cuStreamSynchronize", streamSync(stream))
            return (monotonicSeconds() - t0) / Double(repeats)
        }
        let upload = try timed { try copyWeights(sample, to: slot) }
        let h = Int32(hidden), m = Int32(intermediate)
        let big = try timed { try gemm(rows: m, tokens: 256, k: h, weights: slot, input: dX, output: dG) }
        let small = try timed { try gemm(rows: m, tokens: 1, k: h, weights: slot, input: dX, output: dG) }
        // One of an expert's three products each time.
        return (Double(expertBytes) / upload, 2 * 256 * Double(hidden * intermediate) / big, 3 * small)
    }

    /// Row-major `out[t][r] = Σ_k W[r][k] · in[t][k]` in cuBLAS's
    /// column-major terms: `outᵀ (rows × tokens) = Wᵀ·in`, W read as the
    /// column-major `k × rows` matrix its row-major storage is.
    private func gemm(rows: Int32, tokens: Int32, k: Int32, weights: DevicePointer, input: DevicePointer, output: DevicePointer) throws {
        var one: Float = 1, zero: Float = 0
        try check("cublasGemmEx", gemmEx(blas, Self.opT, Self.opN, rows, tokens, k, &one, weights, Self.realBF16, k,
                                         input, Self.realBF16, k, &zero, output, Self.realF32, rows, Self.compute32F, Self.gemmDefault))
    }

    private func copyWeights(_ e: ExpertWeights, to p: DevicePointer) throws {
        try copy(e.gate, to: p, "gate")
        try copy(e.up, to: p + DevicePointer(e.gate.byteCount), "up")
        try copy(e.down, to: p + DevicePointer(e.gate.byteCount + e.up.byteCount), "down")
    }

    /// One matrix, row-major on the device. A copy from pageable memory
    /// returns once the source is staged, so the scratch may be reused by
    /// the next copy.
    private func copy(_ m: Matrix, to p: DevicePointer, _ name: String) throws {
        guard m.layout != .rowMajor else {
            try check("cuMemcpyHtoDAsync (\(name))", copyHtoD(p, m.data, m.byteCount, stream))
            return
        }
        let scratch = rowMajorScratch ?? UnsafeMutableRawPointer.allocate(byteCount: expertBytes, alignment: 64)
        rowMajorScratch = scratch
        m.writeRowMajor(to: scratch)
        try check("cuMemcpyHtoDAsync (\(name))", copyHtoD(p, scratch, m.byteCount, stream))
    }

    private func reserve(rows: Int) throws {
        guard rows > capacityRows else { return }
        try check("cuStreamSynchronize", streamSync(stream))
        for p in [dX, dG, dU, dA, dY] where p != 0 { _ = memFree(p) }
        if let hX { _ = hostFree(hX) }
        if let hY { _ = hostFree(hY) }
        let n = max(rows, 2 * capacityRows)
        try check("cuMemAlloc", memAlloc(&dX, n * hidden * 2))
        try check("cuMemAlloc", memAlloc(&dG, n * intermediate * 4))
        try check("cuMemAlloc", memAlloc(&dU, n * intermediate * 4))
        try check("cuMemAlloc", memAlloc(&dA, n * intermediate * 2))
        try check("cuMemAlloc", memAlloc(&dY, n * hidden * 4))
        try check("cuMemHostAlloc", hostAlloc(&hX, n * hidden * 2, 0))
        try check("cuMemHostAlloc", hostAlloc(&hY, n * hidden * 4, 0))
        capacityRows = n
    }

    private func makeCurrent() throws { try check("cuCtxSetCurrent", setCurrent(context)) }

    private func check(_ call: String, _ code: Int32) throws { try Self.check(call, code) }

    static func check(_ call: String, _ code: Int32) throws {
        if code != 0 { throw HybridSetupError("\(call) failed with CUDA/cuBLAS error \(code)") }
    }

    /// A function of a library opened at run time, or the error naming it.
    static func symbol<F>(_ lib: OpenedLibrary, _ name: String, _ type: F.Type) throws -> F {
        guard let p = lib.symbol(name) else { throw CUDAError.missingSymbol(name, library: lib.path) }
        return unsafeBitCast(p, to: type)
    }
}

public struct HybridSetupError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
