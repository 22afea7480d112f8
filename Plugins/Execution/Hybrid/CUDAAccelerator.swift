import Foundation
import SwitchyardModel

/// The GPU side of `--execution hybrid`: `ExpertAccelerator` (and, in
/// `CUDADenseProducts.swift`, `DenseOffload`) on an NVIDIA GPU through the
/// driver API, cuBLAS and NVRTC, all opened at run time. Resident experts' BF16 weights live in
/// device memory, gate, up and down back to back. A layer's share goes:
/// input rows narrowed to BF16 into pinned memory and copied over; per
/// expert a product for gate and up together (`[G U] = X·[Wg;Wu]ᵀ`, BF16
/// in, Float32 accumulate), `A = SiLU(G)·U` rounded to BF16 (an NVRTC
/// kernel), `Y = A·Wdᵀ`; and `Y` copied back. Resident experts with the same
/// token count share one `cublasGemmBatchedEx` per product and the kernel
/// one launch; uploaded ones take `cublasGemmEx` each. Rounding points are
/// those of the CPU's bfloat16 mode (BF16 at every product's inputs).
///
/// Uploads of cold experts overlap the resident experts' products: they
/// are queued after them, and each goes through a ring of `uploadSlots`
/// pinned host slots (the only pinned memory besides the row buffers, so it
/// is bounded) on a copy stream of its own. Events order the ring: the
/// host rewrites a pinned slot only after its last copy has run, the copy
/// stream overwrites a device slot only after the compute stream has read
/// it, and the compute stream reads it only after its copy has landed.
///
/// Checked in tests against a software CUDA device (`Tests/SoftwareCUDA`),
/// which runs this call sequence with lazy streams, bounds-checked device
/// memory and the kernel's own source; it has not run on a GPU (no session
/// that wrote it had one). `scripts/gpu-check.sh` compares its logits with
/// the CPU's there.
public final class CUDAAccelerator: ExpertAccelerator, @unchecked Sendable {
    typealias DevicePointer = UInt64
    typealias MemAlloc = @convention(c) (UnsafeMutablePointer<DevicePointer>, Int) -> Int32
    typealias MemFree = @convention(c) (DevicePointer) -> Int32
    typealias CopyHtoD = @convention(c) (DevicePointer, UnsafeRawPointer, Int, OpaquePointer?) -> Int32
    typealias CopyDtoH = @convention(c) (UnsafeMutableRawPointer, DevicePointer, Int, OpaquePointer?) -> Int32
    typealias StreamCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, UInt32) -> Int32
    typealias StreamSync = @convention(c) (OpaquePointer?) -> Int32
    typealias EventCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, UInt32) -> Int32
    typealias EventRecord = @convention(c) (OpaquePointer?, OpaquePointer?) -> Int32
    typealias StreamWaitEvent = @convention(c) (OpaquePointer?, OpaquePointer?, UInt32) -> Int32
    typealias EventSync = @convention(c) (OpaquePointer?) -> Int32
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
    typealias GemmBatchedEx = @convention(c) (OpaquePointer?, Int32, Int32, Int32, Int32, Int32, UnsafeRawPointer, DevicePointer, Int32, Int32,
                                              DevicePointer, Int32, Int32, UnsafeRawPointer, DevicePointer, Int32, Int32, Int32, Int32, Int32) -> Int32
    typealias GemmStridedBatchedEx = @convention(c) (OpaquePointer?, Int32, Int32, Int32, Int32, Int32, UnsafeRawPointer, DevicePointer, Int32,
                                                     Int32, Int64, DevicePointer, Int32, Int32, Int64, UnsafeRawPointer, DevicePointer, Int32,
                                                     Int32, Int64, Int32, Int32, Int32) -> Int32
    typealias NvrtcCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, UnsafePointer<CChar>, UnsafePointer<CChar>, Int32,
                                            UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
    typealias NvrtcCompile = @convention(c) (OpaquePointer?, Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
    typealias NvrtcSize = @convention(c) (OpaquePointer?, UnsafeMutablePointer<Int>) -> Int32
    typealias NvrtcGet = @convention(c) (OpaquePointer?, UnsafeMutablePointer<CChar>) -> Int32
    typealias NvrtcDestroy = @convention(c) (UnsafeMutablePointer<OpaquePointer?>) -> Int32
    typealias NvrtcVersion = @convention(c) (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) -> Int32

    // cuBLAS and CUDA enum values (cublas_api.h, library_types.h, cuda.h).
    static let opN: Int32 = 0, opT: Int32 = 1, realF32: Int32 = 0, realBF16: Int32 = 14, compute32F: Int32 = 68, gemmDefault: Int32 = -1
    static let streamNonBlocking: UInt32 = 1, eventDisableTiming: UInt32 = 2

    /// SiLU(G)·U per token from the fused gate-up product, whose row `t`
    /// holds `m` gate values then `m` up values; BF16 out, rounded to
    /// nearest even as the CPU rounds.
    static let kernelSource = """
    extern "C" __global__ void silu_mul_bf16(const float* gu, unsigned short* out, int m, long long count) {
        long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
        if (i >= count) return;
        long long t = i / m, c = i - t * m;
        float x = gu[t * 2 * m + c];
        float a = x / (1.0f + expf(-x)) * gu[t * 2 * m + m + c];
        unsigned int bits = __float_as_uint(a);
        bits += 0x7FFFu + ((bits >> 16) & 1u);
        out[i] = (unsigned short)(bits >> 16);
    }
    """

    public let name: String
    public let detail: String
    public let expertBudgetBytes: Int
    /// Whether the model's experts are ones the device computes (plain
    /// SwiGLU, BF16); if not, the accelerator holds none and
    /// takes dense work only (`cpu_moe`).
    public let expertsFitDevice: Bool
    let hidden: Int, intermediate: Int, expertBytes: Int
    let memAlloc: MemAlloc, memFree: MemFree, copyHtoD: CopyHtoD, copyDtoH: CopyDtoH, streamSync: StreamSync
    let eventRecord: EventRecord, streamWaitEvent: StreamWaitEvent, eventSync: EventSync
    let launch: LaunchKernel, gemmEx: GemmEx
    /// cuBLAS's batched product, for the resident experts of a layer that
    /// have the same token count (one call instead of one per expert); nil,
    /// or switched off after a call it refused, leaves one call per expert.
    let gemmBatchedEx: GemmBatchedEx?
    private var batchedWorks = true
    /// cuBLAS's strided-batched product, for latent attention's per-head
    /// products (one call over the heads); nil, or switched off after a
    /// call it refused, leaves one `cublasGemmEx` per head.
    let gemmStridedBatchedEx: GemmStridedBatchedEx?
    var stridedWorks = true
    /// Device arrays of pointers for the batched calls, and their pinned
    /// host side.
    private var pointerArrays = DeviceScratch()
    let hostAlloc: HostAlloc, hostFree: HostFree
    /// Products and row copies run on `compute`, expert uploads on `copy`.
    let compute: OpaquePointer?, copy: OpaquePointer?, blas: OpaquePointer?, siluMul: OpaquePointer?
    /// The device's primary context, made current on whichever thread calls
    /// (the engine loop is not the thread that built this).
    let context: OpaquePointer?, setCurrent: CUDADriver.CtxSetCurrent
    /// Device copies of resident experts: gate, up, down back to back.
    /// `[layer][expert]`, 0 where not resident: indexed, not looked up by
    /// key, since every layer of every step reads it.
    private var residentCopies: [[DevicePointer]]
    private var residentCount = 0
    /// `[expert]`: among the layer's uploads (set and cleared by `begin`).
    private var uploading: [Bool]
    /// Resident experts live in one allocation of as many expert-sized
    /// slots as the budget holds, made at start-up: a swap allocates and
    /// frees nothing (`cuMemFree` waits for the whole device). `evicted` is
    /// recorded on the compute stream when an expert leaves its slot; the
    /// copy of the next one into a slot waits for it, so products queued
    /// before still read the old weights, and the host waits for neither.
    private let residentArea: DevicePointer
    private var freeResidentSlots: [Int]
    private let evicted: OpaquePointer?
    private var evictedRecorded = false
    var residentLayers: Int { residentCopies.count }
    /// The upload ring: `uploadSlots` device slots and as many pinned host
    /// slots, `expertBytes` each. `staged[i]` is recorded on the copy stream
    /// after slot i's copy, `consumed[i]` on the compute stream after its
    /// last product; `nextSlot` turns the ring across layers.
    private let deviceSlots: DevicePointer, hostSlots: UnsafeMutableRawPointer, uploadSlots: Int
    private let staged: [OpaquePointer?], consumed: [OpaquePointer?]
    private var nextSlot = 0
    /// A layer share's rows: BF16 inputs and Float32 outputs (pinned on the
    /// host too), gate-up products and activations (device only).
    private var inputs = DeviceScratch(), outputs = DeviceScratch(), gateUp = DeviceScratch(), activations = DeviceScratch()
    /// `kept`: the sums stay on the device, for the kept layer output.
    private var pending: (work: ExpertWork, experts: [Int], rowOfExpert: [Int], summed: Bool, kept: Bool)?
    /// Gathering and summing expert rows on the device (`CUDAExpertRoutes.swift`).
    var routes = DeviceExpertRoutes()
    /// Choosing each token's experts on the device (`CUDARouting.swift`).
    var routing = DeviceRouting()
    /// The residual stream kept on the device (`CUDAResidual.swift`).
    var residual = DeviceResidual()
    /// Times the host waited for the device (`wait`).
    var hostWaits = 0, hostWaitSeconds = 0.0
    /// Dense weights on the device and their scratch (`CUDADenseProducts.swift`).
    var dense = DenseDeviceWeights()
    /// Recorded on the compute stream after a layer's router logits and
    /// after the shared expert started with them have been copied back.
    let routerDone: OpaquePointer?, sharedExpertDone: OpaquePointer?
    /// The device's copy of the KV cache and attention's scratch
    /// (`CUDAAttention.swift`), and its kernels: store, scores, softmax, values.
    var attention = DeviceAttention()
    let kernels: [OpaquePointer?]
    /// What the loaded kernels were compiled for: "sm_90", or "PTX".
    let kernelTarget: String
    /// `launch`'s arguments, made once: a launch allocates nothing.
    let kernelArguments = KernelArgumentSlots()

    /// Opens the driver, cuBLAS and NVRTC, takes device `index`'s primary
    /// context, compiles the kernel and reserves `budgetBytes` of experts
    /// plus the upload ring of `uploadSlots` experts. Every failure names
    /// its cause.
    public init(config: ModelConfig, sampleExpert: ExpertWeights, deviceIndex: Int, budgetBytes: Int, uploadSlots: Int = 4,
                denseBytes: Int = 0, searchPath: [String] = CUDALibraries.defaultSearchPath()) throws {
        // Packed layouts are fine: uploads unpack them to row-major.
        expertsFitDevice = [sampleExpert.gate, sampleExpert.up, sampleExpert.down].allSatisfy { $0.dtype == .bf16 }
            && sampleExpert.activation == .swiglu && sampleExpert.gateBias == nil && sampleExpert.upBias == nil && sampleExpert.downBias == nil
        guard expertsFitDevice || budgetBytes == 0 else {
            throw HybridSetupError("the GPU path computes plain SwiGLU experts with BF16 weights; this checkpoint's are "
                                   + "\(sampleExpert.gate.dtype) \(sampleExpert.activation == .swiglu ? "SwiGLU" : "clamped SwiGLU")"
                                   + "\(sampleExpert.gateBias == nil ? "" : " with biases"): "
                                   + "pass \"cpu_moe\": true to keep every expert on the CPU (dense products and attention still on the GPU), "
                                   + "or use --execution cpu")
        }
        guard uploadSlots > 0 else { throw HybridSetupError("upload_slots must be at least 1") }
        let driver = try CUDADriver.load(searchPath: searchPath, systemSearch: true).get()
        let devices = try driver.devices().get()
        guard deviceIndex < devices.list.count else {
            throw HybridSetupError("GPU \(deviceIndex) requested but the driver reports \(devices.list.count) device(s)")
        }
        let blasLib = try CUDALibraries.open("libcublas", driverVersion: devices.driverVersion, searchPath: searchPath, systemSearch: true).get()
        let nvrtcLib = try CUDALibraries.open("libnvrtc", driverVersion: devices.driverVersion, searchPath: searchPath, systemSearch: true).get()
        let check = Self.check
        func symbol<F>(_ lib: OpenedLibrary, _ name: String, _ type: F.Type) throws -> F { try Self.symbol(lib, name, type) }
        func driverFunction<F>(_ name: String, _ type: F.Type) throws -> F { try driver.function(name, as: type).get() }
        var device: Int32 = 0, context: OpaquePointer?
        try check("cuDeviceGet", try driverFunction("cuDeviceGet", CUDADriver.DeviceGet.self)(&device, Int32(deviceIndex)))
        try check("cuDevicePrimaryCtxRetain", try driverFunction("cuDevicePrimaryCtxRetain", CUDADriver.PrimaryCtxRetain.self)(&context, device))
        setCurrent = try driverFunction("cuCtxSetCurrent", CUDADriver.CtxSetCurrent.self)
        self.context = context
        try check("cuCtxSetCurrent", setCurrent(context))
        memAlloc = try driverFunction("cuMemAlloc", MemAlloc.self)
        memFree = try driverFunction("cuMemFree", MemFree.self)
        copyHtoD = try driverFunction("cuMemcpyHtoDAsync", CopyHtoD.self)
        copyDtoH = try driverFunction("cuMemcpyDtoHAsync", CopyDtoH.self)
        streamSync = try driverFunction("cuStreamSynchronize", StreamSync.self)
        eventRecord = try driverFunction("cuEventRecord", EventRecord.self)
        streamWaitEvent = try driverFunction("cuStreamWaitEvent", StreamWaitEvent.self)
        eventSync = try driverFunction("cuEventSynchronize", EventSync.self)
        launch = try driverFunction("cuLaunchKernel", LaunchKernel.self)
        hostAlloc = try driverFunction("cuMemHostAlloc", HostAlloc.self)
        hostFree = try driverFunction("cuMemFreeHost", HostFree.self)
        let streamCreate = try driverFunction("cuStreamCreate", StreamCreate.self)
        var s: OpaquePointer?, c: OpaquePointer?
        try check("cuStreamCreate", streamCreate(&s, Self.streamNonBlocking))
        try check("cuStreamCreate", streamCreate(&c, Self.streamNonBlocking))
        compute = s
        copy = c
        let eventCreate = try driverFunction("cuEventCreate", EventCreate.self)
        func events(_ count: Int) throws -> [OpaquePointer?] {
            try (0..<count).map { _ in
                var e: OpaquePointer?
                try check("cuEventCreate", eventCreate(&e, Self.eventDisableTiming))
                return e
            }
        }
        staged = try events(uploadSlots)
        consumed = try events(uploadSlots)
        let marks = try events(3)
        routerDone = marks[0]
        sharedExpertDone = marks[1]
        evicted = marks[2]
        var handle: OpaquePointer?
        try check("cublasCreate_v2", try symbol(blasLib, "cublasCreate_v2", BlasCreate.self)(&handle))
        try check("cublasSetStream_v2", try symbol(blasLib, "cublasSetStream_v2", BlasSetStream.self)(handle, s))
        blas = handle
        gemmEx = try symbol(blasLib, "cublasGemmEx", GemmEx.self)
        gemmBatchedEx = blasLib.symbol("cublasGemmBatchedEx").map { unsafeBitCast($0, to: GemmBatchedEx.self) }
        gemmStridedBatchedEx = blasLib.symbol("cublasGemmStridedBatchedEx").map { unsafeBitCast($0, to: GemmStridedBatchedEx.self) }
        let image = try Self.compileModule(nvrtc: nvrtcLib, computeCapability: devices.list[deviceIndex].computeCapability)
        var module: OpaquePointer?, function: OpaquePointer?
        let loaded = try image.bytes.withUnsafeBytes { try driverFunction("cuModuleLoadData", ModuleLoadData.self)(&module, $0.baseAddress!) }
        guard loaded == 0 else {
            throw HybridSetupError(Self.moduleLoadFailure(code: loaded, image: image, nvrtc: nvrtcLib, driverVersion: devices.driverVersion,
                                                          gpu: devices.list[deviceIndex]))
        }
        kernelTarget = image.target
        let getFunction = try driverFunction("cuModuleGetFunction", ModuleGetFunction.self)
        try check("cuModuleGetFunction", getFunction(&function, module, "silu_mul_bf16"))
        siluMul = function
        kernels = try Self.kernelNames.map { name in
            var f: OpaquePointer?
            try check("cuModuleGetFunction (\(name))", getFunction(&f, module, name))
            return f
        }
        hidden = config.hiddenSize
        residentCopies = Array(repeating: Array(repeating: 0, count: config.numExperts), count: config.numLayers)
        uploading = Array(repeating: false, count: config.numExperts)
        intermediate = sampleExpert.gate.rows
        expertBytes = sampleExpert.byteCount
        let gpu = devices.list[deviceIndex]
        // Experts the device cannot compute are never uploaded: a token ring.
        let staging = expertsFitDevice ? uploadSlots * expertBytes : 256
        guard budgetBytes + denseBytes + staging <= gpu.freeBytes else {
            let size = HybridExecution.size
            throw HybridSetupError("--gpu-memory asks for \(size(budgetBytes)) of experts plus \(size(denseBytes)) of dense weights and "
                                   + "\(size(staging)) of upload staging, but \(gpu.name) has \(size(gpu.freeBytes)) free")
        }
        expertBudgetBytes = budgetBytes
        var area: DevicePointer = 0
        try check("cuMemAlloc (upload slots)", memAlloc(&area, staging))
        deviceSlots = area
        let residentSlots = expertsFitDevice ? budgetBytes / expertBytes : 0
        var resident: DevicePointer = 0
        if residentSlots > 0 { try check("cuMemAlloc (resident experts)", memAlloc(&resident, residentSlots * expertBytes)) }
        residentArea = resident
        freeResidentSlots = Array((0..<residentSlots).reversed())
        var host: UnsafeMutableRawPointer?
        try check("cuMemHostAlloc (upload slots: \(staging >> 20) MiB pinned)", hostAlloc(&host, staging, 0))
        hostSlots = host!
        self.uploadSlots = uploadSlots
        name = "gpu\(deviceIndex)"
        detail = "\(gpu.name), \(gpu.totalBytes >> 20) MiB, CUDA driver \(devices.driverVersion), kernels \(image.target) "
            + "(GPU path checked on a software device only)"
    }

    deinit {
        guard setCurrent(context) == 0 else { return }
        _ = streamSync(compute)
        _ = streamSync(copy)
        for p in [deviceSlots, residentArea] + dense.weightAllocations + attention.keys + attention.values where p != 0 { _ = memFree(p) }
        for s in [inputs, outputs, gateUp, activations, pointerArrays, routes.index, routes.sums, routing.scratch, routing.rows, residual.share]
            + dense.scratch + attention.buffers + [attention.sequenceKeys, attention.sequenceValues, attention.gemmScores, attention.weights16] {
            release(s)
        }
        _ = hostFree(hostSlots)
    }

    public func load(_ expert: ResidentExperts.Expert, weights: ExpertWeights) throws {
        guard residentCopies[expert.layer][expert.expert] == 0 else { return }
        try makeCurrent()
        guard let slot = freeResidentSlots.popLast() else { throw HybridSetupError("resident experts exceed the GPU budget") }
        let p = residentArea + DevicePointer(slot * expertBytes)
        // Through the ring like an upload, into a slot whose last reader
        // may still be queued; later products wait for the copy on the
        // device, not the host.
        if evictedRecorded { try check("cuStreamWaitEvent (evicted)", streamWaitEvent(copy, evicted, 0)) }
        let ring = takeSlot()
        try stage(weights, slot: ring, to: p)
        try check("cuStreamWaitEvent (resident copy)", streamWaitEvent(compute, staged[ring], 0))
        residentCopies[expert.layer][expert.expert] = p
        residentCount += 1
    }

    func isResident(_ expert: ResidentExperts.Expert) -> Bool { residentCopies[expert.layer][expert.expert] != 0 }

    public func evict(_ expert: ResidentExperts.Expert) {
        let p = residentCopies[expert.layer][expert.expert]
        guard p != 0 else { return }
        residentCopies[expert.layer][expert.expert] = 0
        residentCount -= 1
        freeResidentSlots.append(Int((p - residentArea) / DevicePointer(expertBytes)))
        guard setCurrent(context) == 0 else { return }
        // A failure here leaves the copy stream unordered against the
        // products: the next CUDA call reports the sticky error.
        evictedRecorded = eventRecord(evicted, compute) == 0 || evictedRecorded
    }

    public func begin(_ work: ExpertWork, experts: [Int], uploads: [Int]) throws {
        try makeCurrent()
        // Resident experts first, so their products run while uploads copy.
        for j in uploads { uploading[j] = true }
        defer { for j in uploads { uploading[j] = false } }
        let order = experts.filter { !uploading[$0] } + experts.filter { uploading[$0] }
        var rows = 0, rowOfExpert: [Int] = []
        for j in order {
            rowOfExpert.append(rows)
            rows += Int(work.tokenCount[j])
        }
        try reserve(rows: rows)
        let plan = try planRows(work, order: order, rowOfExpert: rowOfExpert, rows: rows)
        if plan.gather {
            try gatherRows(rows: rows, into: inputs.device)
        } else {
            // Inputs as BF16, as the CPU's bfloat16 mode rounds them: copied
            // where the host gathered them as BF16 too (oneDNN), else narrowed.
            let x = inputs.host!.assumingMemoryBound(to: UInt16.self)
            for (i, j) in order.enumerated() {
                let n = Int(work.tokenCount[j]), from = Int(work.rowOffset[j]) * hidden, to = x + rowOfExpert[i] * hidden
                if let bf16 = work.inputBF16 { to.update(from: bf16 + from, count: n * hidden) } else {
                    narrowToBF16(work.input + from, count: n * hidden, into: to)
                }
            }
            try check("cuMemcpyHtoDAsync (inputs)", copyHtoD(inputs.device, inputs.host!, rows * hidden * 2, compute))
            routes.bytesIn += rows * hidden * 2
        }
        let residentCount = order.count - uploads.count
        let batched = try residentProductsBatched(work, order: order, count: residentCount, rowOfExpert: rowOfExpert)
        for (i, j) in order.enumerated() where !batched || i >= residentCount {
            let weights: DevicePointer, slot: Int?
            if uploading[j] {
                let s = takeSlot()
                weights = deviceSlots + DevicePointer(s * expertBytes)
                try stage(work.experts[j], slot: s, to: weights)
                try check("cuStreamWaitEvent", streamWaitEvent(compute, staged[s], 0))
                slot = s
            } else {
                let p = residentCopies[work.layer][j]
                guard p != 0 else {
                    throw HybridSetupError("expert \(j) of layer \(work.layer) is not resident")
                }
                weights = p
                slot = nil
            }
            try expertProducts(weights: weights, down: work.experts[j].gate.byteCount + work.experts[j].up.byteCount,
                               tokens: Int(work.tokenCount[j]), row: rowOfExpert[i])
            if let slot { try check("cuEventRecord", eventRecord(consumed[slot], compute)) }
        }
        let kept = keepsExpertSums(work)
        if plan.combine {
            try combineRows(plan, rows: rows, outputs: outputs.device, copyBack: !kept)
        } else {
            try check("cuMemcpyDtoHAsync (outputs)", copyDtoH(outputs.host!, outputs.device, rows * hidden * 4, compute))
            routes.bytesOut += rows * hidden * 4
        }
        if kept { residual.expertSums = true }
        pending = (work, order, rowOfExpert, plan.combine, kept)
    }

    public func finish() throws {
        guard let p = pending else { return }
        let work = p.work, experts = p.experts, rowOfExpert = p.rowOfExpert
        pending = nil
        // Kept on the device for the layer's output: nothing comes back,
        // so the host does not wait; its combine adds none of these.
        if p.kept { return deliverSums(work, experts: experts, kept: true) }
        try makeCurrent()
        try wait(compute)
        if p.summed { return deliverSums(work, experts: experts) }
        let y = outputs.host!.assumingMemoryBound(to: Float.self)
        for (i, j) in experts.enumerated() {
            (work.output + Int(work.rowOffset[j]) * hidden).update(from: y + rowOfExpert[i] * hidden, count: Int(work.tokenCount[j]) * hidden)
        }
    }

    /// The first `count` experts of `order` (resident ones) in batched
    /// products: one `cublasGemmBatchedEx` for gate-up and one for down per
    /// distinct token count, one SiLU launch over all their rows (they are
    /// the first rows). False, having changed nothing the per-expert path
    /// would not overwrite, when there is no batched product to use.
    private func residentProductsBatched(_ work: ExpertWork, order: [Int], count: Int, rowOfExpert: [Int]) throws -> Bool {
        guard batchedWorks, let batchedGemm = gemmBatchedEx, count > 1 else { return false }
        // Positions in `order` with tokens, by token count.
        let byTokens = (0..<count).filter { work.tokenCount[order[$0]] > 0 }.sorted {
            (work.tokenCount[order[$0]], $0) < (work.tokenCount[order[$1]], $1)
        }
        let n = byTokens.count, h = hidden, m = intermediate
        guard n > 0 else { return true }
        try grow(&pointerArrays, to: 6 * n * 8, pinned: true, "pointer arrays")
        // Six arrays of n pointers: gate-up weights, inputs, gate-up
        // outputs; down weights, activations, outputs.
        let p = pointerArrays.host!.assumingMemoryBound(to: DevicePointer.self)
        for (slot, i) in byTokens.enumerated() {
            let j = order[i], r = DevicePointer(rowOfExpert[i])
            let w = residentCopies[work.layer][j]
            guard w != 0 else {
                throw HybridSetupError("expert \(j) of layer \(work.layer) is not resident")
            }
            p[slot] = w
            p[n + slot] = inputs.device + r * DevicePointer(h * 2)
            p[2 * n + slot] = gateUp.device + r * DevicePointer(2 * m * 4)
            p[3 * n + slot] = w + DevicePointer(work.experts[j].gate.byteCount + work.experts[j].up.byteCount)
            p[4 * n + slot] = activations.device + r * DevicePointer(m * 2)
            p[5 * n + slot] = outputs.device + r * DevicePointer(h * 4)
        }
        try check("cuMemcpyHtoDAsync (pointer arrays)", copyHtoD(pointerArrays.device, pointerArrays.host!, 6 * n * 8, compute))
        // Runs of equal token counts.
        var groups: [(start: Int, count: Int, tokens: Int32)] = []
        for (slot, i) in byTokens.enumerated() {
            let t = work.tokenCount[order[i]]
            if let last = groups.last, last.tokens == t { groups[groups.count - 1].count += 1 } else { groups.append((slot, 1, t)) }
        }
        var one: Float = 1, zero: Float = 0
        func array(_ k: Int, _ start: Int) -> DevicePointer { pointerArrays.device + DevicePointer((k * n + start) * 8) }
        for g in groups {
            let status = batchedGemm(blas, Self.opT, Self.opN, Int32(2 * m), g.tokens, Int32(h), &one, array(0, g.start), Self.realBF16, Int32(h),
                                     array(1, g.start), Self.realBF16, Int32(h), &zero, array(2, g.start), Self.realF32, Int32(2 * m),
                                     Int32(g.count), Self.compute32F, Self.gemmDefault)
            guard status == 0 else { batchedWorks = false; return false }
        }
        let rows = byTokens.reduce(0) { $0 + Int(work.tokenCount[order[$1]]) }
        try launchSiLU(gu: gateUp.device, a: activations.device, intermediate: m, tokens: rows)
        for g in groups {
            let status = batchedGemm(blas, Self.opT, Self.opN, Int32(h), g.tokens, Int32(m), &one, array(3, g.start), Self.realBF16, Int32(m),
                                     array(4, g.start), Self.realBF16, Int32(m), &zero, array(5, g.start), Self.realF32, Int32(h),
                                     Int32(g.count), Self.compute32F, Self.gemmDefault)
            guard status == 0 else { batchedWorks = false; return false }
        }
        return true
    }

    /// One expert on the compute stream: `[G U]` for its `tokens` rows from
    /// row `row` of the inputs, the SiLU kernel, then the down product into
    /// the same rows of `Y`. `down`: the down matrix's byte offset.
    private func expertProducts(weights: DevicePointer, down: Int, tokens: Int, row: Int) throws {
        let r = DevicePointer(row), h = hidden, m = intermediate
        try swiglu(weights: weights, intermediate: m, down: down, tokens: tokens, x: inputs.device + r * DevicePointer(h * 2),
                   gu: gateUp.device + r * DevicePointer(2 * m * 4), a: activations.device + r * DevicePointer(m * 2),
                   y: outputs.device + r * DevicePointer(h * 4))
    }

    /// A SwiGLU MLP on the compute stream: `gu = x·[Wg;Wu]ᵀ` (gate and up
    /// back to back at `weights`, `intermediate` rows each), `a = SiLU(G)·U`
    /// in BF16, `y = a·Wdᵀ` (Wd at byte offset `down`). x and a are BF16,
    /// gu and y Float32, each `tokens` rows.
    func swiglu(weights: DevicePointer, intermediate m: Int, down: Int, tokens: Int, x: DevicePointer, gu: DevicePointer,
                a: DevicePointer, y: DevicePointer) throws {
        guard tokens > 0 else { return }
        let h = hidden
        try gemm(rows: 2 * m, tokens: tokens, k: h, weights: weights, input: x, output: gu)
        try launchSiLU(gu: gu, a: a, intermediate: m, tokens: tokens)
        try gemm(rows: h, tokens: tokens, k: m, weights: weights + DevicePointer(down), input: a, output: y)
    }

    /// `a = SiLU(G)·U` in BF16 for `tokens` rows of `[G U]` (the kernel).
    private func launchSiLU(gu: DevicePointer, a: DevicePointer, intermediate m: Int, tokens: Int) throws {
        let count = tokens * m
        try launch(function: siluMul, name: "SiLU", blocks: (count + 255) / 256, threads: 256, [.pointer(gu), .pointer(a), .int32(Int32(m))],
                   count: count)
    }

    /// The ring's next slot. A layer may upload more experts than there are
    /// slots: a slot is reused once its events allow.
    private func takeSlot() -> Int {
        defer { nextSlot = (nextSlot + 1) % uploadSlots }
        return nextSlot
    }

    /// Queues `e`'s weights for device address `p` through ring slot
    /// `slot`; `staged[slot]` completes when they land. The host waits only
    /// for the slot's previous copy to have run.
    private func stage(_ e: ExpertWeights, slot: Int, to p: DevicePointer) throws {
        try wait(event: staged[slot])
        // cuBLAS reads Hugging Face's row-major layout; packed experts
        // (`MatrixLayout.packedBF16`) are unpacked on the way. The kernel
        // threads split the rows, since the CPU's share of the layer starts
        // only after this returns (what that gains is not measured: no GPU).
        let host = hostSlots + slot * expertBytes
        let matrices = [e.gate, e.up, e.down]
        let offsets = [0, e.gate.byteCount, e.gate.byteCount + e.up.byteCount]
        let firstRow = [0, e.gate.rows, e.gate.rows + e.up.rows]
        Parallel.forRanges(firstRow[2] + e.down.rows, minChunk: 64) { range in
            for (i, m) in matrices.enumerated() {
                let lo = max(range.lowerBound, firstRow[i]) - firstRow[i], hi = min(range.upperBound, firstRow[i] + m.rows) - firstRow[i]
                if lo < hi { m.writeRowMajor(rows: lo..<hi, to: host + offsets[i]) }
            }
        }
        // The device slot may still be read by products queued earlier.
        try check("cuStreamWaitEvent", streamWaitEvent(copy, consumed[slot], 0))
        try check("cuMemcpyHtoDAsync (expert)", copyHtoD(p, host, expertBytes, copy))
        try check("cuEventRecord", eventRecord(staged[slot], copy))
    }

    /// A NUL-terminated C string NVRTC wrote into `chars`.
    static func text(_ chars: [CChar]) -> String {
        String(decoding: chars.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The kernels as the driver loads them, and what they were built for.
    struct KernelImage {
        var bytes: [CChar]
        /// "sm_90" for a cubin, "PTX" for PTX the driver compiles.
        var target: String
    }

    /// Every kernel for a GPU of `computeCapability`: a cubin for that
    /// architecture where this NVRTC knows it, so nothing is compiled at
    /// load and the image loads on a driver older than the NVRTC (the CUDA
    /// pip wheels are often newer than a host's driver, and a driver cannot
    /// compile PTX newer than itself); else PTX, which the driver compiles.
    static func compileModule(nvrtc: OpenedLibrary, computeCapability: Int?, source: String = allKernelSources) throws -> KernelImage {
        if let capability = computeCapability {
            do {
                return KernelImage(bytes: try compileKernel(nvrtc: nvrtc, source: source, architecture: capability), target: "sm_\(capability)")
            } catch is NVRTCUnknownArchitecture {
                // An NVRTC older than the GPU: PTX for its default
                // architecture, which the driver compiles for this GPU.
            }
        }
        return KernelImage(bytes: try compileKernel(nvrtc: nvrtc, source: source), target: "PTX")
    }

    /// NVRTC's version as "13.0", or "unknown".
    static func version(of nvrtc: OpenedLibrary) -> String {
        var major: Int32 = 0, minor: Int32 = 0
        guard let get = try? symbol(nvrtc, "nvrtcVersion", NvrtcVersion.self), get(&major, &minor) == 0 else { return "unknown" }
        return "\(major).\(minor)"
    }

    /// Why the driver refused the kernels, and the fix.
    static func moduleLoadFailure(code: Int32, image: KernelImage, nvrtc: OpenedLibrary, driverVersion: Int32, gpu: GPUDevice) -> String {
        let driver = "\(driverVersion / 1000).\(driverVersion % 1000 / 10)"
        // The CUDA 12 wheels carry the major version in their names.
        let wheel = driverVersion >= 13000 ? "nvidia-cuda-nvrtc" : "nvidia-cuda-nvrtc-cu\(driverVersion / 1000)"
        let built = "the kernels, compiled by NVRTC \(version(of: nvrtc)) (\(nvrtc.path)) as \(image.target)"
        let capability = gpu.computeCapability.map { "compute \($0 / 10).\($0 % 10)" } ?? "compute capability unknown"
        switch code {
        case 218, 222:  // CUDA_ERROR_INVALID_PTX, CUDA_ERROR_UNSUPPORTED_PTX_VERSION
            return "cuModuleLoadData failed with CUDA error \(code): the CUDA \(driver) driver cannot compile \(built); "
                + "PTX from an NVRTC newer than the driver does not load. Install an NVRTC no newer than the driver "
                + "(pip install '\(wheel)==\(driver).*', then point SWITCHYARD_CUDA_LIBRARY_PATH at it) or update the driver"
        case 209:  // CUDA_ERROR_NO_BINARY_FOR_GPU
            return "cuModuleLoadData failed with CUDA error 209: \(built) hold no code for \(gpu.name) (\(capability)); "
                + "this is a bug in choosing the architecture, please report it with `switchyard topology`'s output"
        default:
            return "cuModuleLoadData failed with CUDA error \(code) loading \(built) on \(gpu.name) (\(capability), driver \(driver))"
        }
    }

    static let allKernelSources = kernelSource + attentionKernelSource + layerKernelSource + routeKernelSource + routingKernelSource
        + latentKernelSource + residualKernelSource

    /// `source` (every kernel here unless given) compiled by NVRTC (no GPU
    /// needed for this step): to PTX, or with `architecture` (90 for
    /// sm_90) to a cubin for that GPU; `NVRTCUnknownArchitecture` where
    /// this NVRTC does not know it.
    static func compileKernel(nvrtc: OpenedLibrary, source: String = allKernelSources, architecture: Int? = nil) throws -> [CChar] {
        func symbol<F>(_ name: String, _ type: F.Type) throws -> F { try Self.symbol(nvrtc, name, type) }
        var program: OpaquePointer?
        let created = try symbol("nvrtcCreateProgram", NvrtcCreate.self)(&program, source, "switchyard.cu", 0, nil, nil)
        guard created == 0 else { throw HybridSetupError("nvrtcCreateProgram failed with error \(created)") }
        defer { _ = try? symbol("nvrtcDestroyProgram", NvrtcDestroy.self)(&program) }
        let compile = try symbol("nvrtcCompileProgram", NvrtcCompile.self)
        let compiled: Int32
        if let architecture {
            let option = strdup("--gpu-architecture=sm_\(architecture)")
            defer { free(option) }
            var options: [UnsafePointer<CChar>?] = [UnsafePointer(option)]
            compiled = compile(program, 1, &options)
            // NVRTC_ERROR_INVALID_OPTION: an architecture newer than this NVRTC.
            if compiled == 5 { throw NVRTCUnknownArchitecture(architecture: architecture) }
        } else {
            compiled = compile(program, 0, nil)
        }
        if compiled != 0 {
            var size = 0
            _ = try symbol("nvrtcGetProgramLogSize", NvrtcSize.self)(program, &size)
            var log = [CChar](repeating: 0, count: size + 1)
            _ = try symbol("nvrtcGetProgramLog", NvrtcGet.self)(program, &log)
            throw HybridSetupError("NVRTC could not compile the kernels (\(compiled)): \(text(log))")
        }
        let (sizeName, getName) = architecture == nil ? ("nvrtcGetPTXSize", "nvrtcGetPTX") : ("nvrtcGetCUBINSize", "nvrtcGetCUBIN")
        var size = 0
        guard try symbol(sizeName, NvrtcSize.self)(program, &size) == 0 else { throw HybridSetupError("\(sizeName) failed") }
        var output = [CChar](repeating: 0, count: size + 1)
        guard try symbol(getName, NvrtcGet.self)(program, &output) == 0 else { throw HybridSetupError("\(getName) failed") }
        return output
    }

    /// The cuBLAS entry points this accelerator calls, for checking a
    /// library before relying on it.
    static let cublasSymbols = ["cublasCreate_v2", "cublasSetStream_v2", "cublasGemmEx", "cublasGemmBatchedEx", "cublasGemmStridedBatchedEx"]

    /// Host-to-device bytes/s for one expert's weights through the upload
    /// ring (pinned staging and the copy), the GPU's FLOP/s on a 256-token
    /// expert, and the cost of a 1-token expert (launches): the GPU half of
    /// `HybridCostModel`.
    public func measure(sample: ExpertWeights, repeats: Int = 5) throws -> (hostToDevice: Double, flops: Double, launchSeconds: Double) {
        try makeCurrent()
        try reserve(rows: 256)
        let address = deviceSlots
        func timed(repeats: Int, _ body: () throws -> Void) throws -> Double {
            try body()
            try wait(compute)
            try wait(copy)
            let t0 = monotonicSeconds()
            for _ in 0..<repeats { try body() }
            try wait(compute)
            try wait(copy)
            return (monotonicSeconds() - t0) / Double(repeats)
        }
        // Uploads as a layer makes them: round the ring, so the host fills
        // one slot while the previous slot's copy runs (with one slot, one
        // after the other), twice round so the steady state dominates.
        let upload = try timed(repeats: max(repeats, 2 * uploadSlots)) {
            let slot = takeSlot()
            try stage(sample, slot: slot, to: deviceSlots + DevicePointer(slot * expertBytes))
        }
        let down = sample.gate.byteCount + sample.up.byteCount
        let big = try timed(repeats: repeats) { try expertProducts(weights: address, down: down, tokens: 256, row: 0) }
        let small = try timed(repeats: repeats) { try expertProducts(weights: address, down: down, tokens: 1, row: 0) }
        return (Double(expertBytes) / upload, 256 * sample.flopsPerToken / big, small)
    }

    /// Row-major `out[t][r] = Σ_k W[r][k] · in[t][k]` in cuBLAS's
    /// column-major terms: `outᵀ (rows × tokens) = Wᵀ·in`, W read as the
    /// column-major `k × rows` matrix its row-major storage is.
    func gemm(rows: Int, tokens: Int, k: Int, weights: DevicePointer, input: DevicePointer, output: DevicePointer) throws {
        var one: Float = 1, zero: Float = 0
        try check("cublasGemmEx", gemmEx(blas, Self.opT, Self.opN, Int32(rows), Int32(tokens), Int32(k), &one, weights, Self.realBF16, Int32(k),
                                         input, Self.realBF16, Int32(k), &zero, output, Self.realF32, Int32(rows), Self.compute32F, Self.gemmDefault))
    }

    /// `batch` column-major products `C_i = alpha·op(A_i)·B_i` (BF16 in, or
    /// Float32 with `float32Inputs`; Float32 out), each matrix `stride`
    /// elements after the one before (0: the same one): one strided-batched
    /// call, or one `cublasGemmEx` each where cuBLAS lacks or refuses it.
    func stridedGemm(transposingA: Bool, m: Int, n: Int, k: Int, a: DevicePointer, lda: Int, strideA: Int, b: DevicePointer, ldb: Int,
                     strideB: Int, c: DevicePointer, ldc: Int, strideC: Int, batch: Int, alpha: Float = 1, float32Inputs: Bool = false) throws {
        var one = alpha, zero: Float = 0
        let opA = transposingA ? Self.opT : Self.opN
        let type = float32Inputs ? Self.realF32 : Self.realBF16, size = float32Inputs ? 4 : 2
        if stridedWorks, let strided = gemmStridedBatchedEx {
            let status = strided(blas, opA, Self.opN, Int32(m), Int32(n), Int32(k), &one, a, type, Int32(lda), Int64(strideA), b,
                                 type, Int32(ldb), Int64(strideB), &zero, c, Self.realF32, Int32(ldc), Int64(strideC), Int32(batch),
                                 Self.compute32F, Self.gemmDefault)
            if status == 0 { return }
            stridedWorks = false
        }
        for i in 0..<batch {
            try check("cublasGemmEx", gemmEx(blas, opA, Self.opN, Int32(m), Int32(n), Int32(k), &one, a + DevicePointer(i * strideA * size),
                                             type, Int32(lda), b + DevicePointer(i * strideB * size), type, Int32(ldb), &zero,
                                             c + DevicePointer(i * strideC * 4), Self.realF32, Int32(ldc), Self.compute32F, Self.gemmDefault))
        }
    }

    private func reserve(rows: Int) throws {
        try grow(&inputs, to: rows * hidden * 2, pinned: true, "expert inputs")
        try grow(&gateUp, to: rows * 2 * intermediate * 4, pinned: false, "gate-up products")
        try grow(&activations, to: rows * intermediate * 2, pinned: false, "activations")
        try grow(&outputs, to: rows * hidden * 4, pinned: true, "expert outputs")
    }

    /// `scratch` holding at least `bytes`, with a pinned host twin if
    /// `pinned`; it doubles when it grows (from 256 KiB at least, so the
    /// small buffers decode steps need, a context one longer each step,
    /// do not grow every few steps), and what it replaces is freed once
    /// the compute stream is done with it (a host wait).
    func grow(_ scratch: inout DeviceScratch, to bytes: Int, pinned: Bool, _ what: String) throws {
        guard bytes > scratch.bytes else { return }
        try wait(compute)
        let size = max(bytes, 2 * scratch.bytes, 256 << 10)
        release(scratch)
        scratch = DeviceScratch()
        try check("cuMemAlloc (\(what))", memAlloc(&scratch.device, size))
        if pinned { try check("cuMemHostAlloc (\(what))", hostAlloc(&scratch.host, size, 0)) }
        scratch.bytes = size
    }

    func release(_ scratch: DeviceScratch) {
        if scratch.device != 0 { _ = memFree(scratch.device) }
        if let host = scratch.host { _ = hostFree(host) }
    }

    func makeCurrent() throws { try check("cuCtxSetCurrent", setCurrent(context)) }

    /// The host waiting for the device: every such wait is a round trip's
    /// latency on the serving path, so each is counted (`hostWaits`) and
    /// timed (`hostWaitSeconds`: the host idle while the device works, the
    /// first thing to read on a GPU).
    func wait(_ stream: OpaquePointer?) throws {
        hostWaits += 1
        let start = monotonicSeconds()
        defer { hostWaitSeconds += monotonicSeconds() - start }
        try check("cuStreamSynchronize", streamSync(stream))
    }

    func wait(event: OpaquePointer?, _ what: String = "") throws {
        hostWaits += 1
        let start = monotonicSeconds()
        defer { hostWaitSeconds += monotonicSeconds() - start }
        try check("cuEventSynchronize\(what.isEmpty ? "" : " (\(what))")", eventSync(event))
    }

    // The call's name is made only on failure: most names are interpolated.
    func check(_ call: @autoclosure () -> String, _ code: Int32) throws { try Self.check(call(), code) }

    static func check(_ call: @autoclosure () -> String, _ code: Int32) throws {
        if code != 0 { throw HybridSetupError("\(call()) failed with CUDA/cuBLAS error \(code)") }
    }

    /// A function of a library opened at run time, or the error naming it.
    static func symbol<F>(_ lib: OpenedLibrary, _ name: String, _ type: F.Type) throws -> F {
        guard let p = lib.symbol(name) else { throw CUDAError.missingSymbol(name, library: lib.path) }
        return unsafeBitCast(p, to: type)
    }
}

/// NVRTC refused `--gpu-architecture=sm_N`: it predates that GPU.
struct NVRTCUnknownArchitecture: Error {
    var architecture: Int
}

public struct HybridSetupError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A device buffer and, for rows copied to or from it, a pinned host twin;
/// grown by `CUDAAccelerator.grow`, never shrunk.
struct DeviceScratch {
    var device: UInt64 = 0
    var host: UnsafeMutableRawPointer?
    var bytes = 0
}
