import Foundation
import ChunkedScheduler
import LayeredScheduler
@testable import HybridExecution
import SwitchyardCore
import SwitchyardModel
import Testing

/// The hybrid executor's GPU path (`CUDAAccelerator`, `--execution
/// hybrid`) run through its real driver, cuBLAS and NVRTC calls on the
/// software CUDA device: lazy streams, bounds-checked device memory, the
/// kernel's own source. The first tests show the device is strict enough
/// to catch what would go wrong on a GPU; the rest run the accelerator.
/// Serialized: the device is one per process.
@Suite(.serialized) struct SoftwareCUDATests {
    typealias A = CUDAAccelerator

    /// The driver functions the device tests call, in a current context.
    struct Driver {
        let library: CUDADriver
        init() throws {
            library = try CUDADriver.load(searchPath: [try SoftwareCUDA.directory.get()], systemSearch: false).get()
            _ = try library.devices().get()
            var context: OpaquePointer?
            #expect(try library.function("cuDevicePrimaryCtxRetain", as: CUDADriver.PrimaryCtxRetain.self).get()(&context, 0) == 0)
            #expect(try library.function("cuCtxSetCurrent", as: CUDADriver.CtxSetCurrent.self).get()(context) == 0)
        }
        func f<F>(_ name: String, _ type: F.Type) throws -> F { try library.function(name, as: type).get() }
        func alloc(_ bytes: Int) throws -> UInt64 {
            var p: UInt64 = 0
            #expect(try f("cuMemAlloc", A.MemAlloc.self)(&p, bytes) == 0)
            return p
        }
        func stream() throws -> OpaquePointer? {
            var s: OpaquePointer?
            #expect(try f("cuStreamCreate", A.StreamCreate.self)(&s, 1) == 0)
            return s
        }
        /// `cublasGemmEx` and a handle whose stream is `stream`.
        func blas(stream: OpaquePointer?) throws -> (gemm: A.GemmEx, handle: OpaquePointer?) {
            let library = try CUDALibraries.open(["libcublas.so.13"], searchPath: [try SoftwareCUDA.directory.get()], systemSearch: false).get()
            var handle: OpaquePointer?
            #expect(try A.symbol(library, "cublasCreate_v2", A.BlasCreate.self)(&handle) == 0)
            #expect(try A.symbol(library, "cublasSetStream_v2", A.BlasSetStream.self)(handle, stream) == 0)
            return (try A.symbol(library, "cublasGemmEx", A.GemmEx.self), handle)
        }
        /// The kernels `names` of `source`, compiled by the device's NVRTC and loaded.
        func kernels(_ names: [String], source: String) throws -> [OpaquePointer?] {
            let nvrtc = try CUDALibraries.open(["libnvrtc.so.13"], searchPath: [try SoftwareCUDA.directory.get()], systemSearch: false).get()
            let ptx = try A.compileKernel(nvrtc: nvrtc, source: source)
            var module: OpaquePointer?
            #expect(try ptx.withUnsafeBytes { try f("cuModuleLoadData", A.ModuleLoadData.self)(&module, $0.baseAddress!) } == 0)
            let get = try f("cuModuleGetFunction", A.ModuleGetFunction.self)
            return names.map { name in
                var function: OpaquePointer?
                #expect(get(&function, module, name) == 0)
                return function
            }
        }
        /// Queues `kernel` with device pointers `pointers` and then the
        /// thread count, as every kernel here takes them.
        func launch(_ kernel: OpaquePointer?, blocks: UInt32, threads: UInt32, stream: OpaquePointer?, _ pointers: [UInt64]) throws -> Int32 {
            var values = pointers + [UInt64(blocks) * UInt64(threads)]
            return try values.withUnsafeMutableBufferPointer { v in
                var params: [UnsafeMutableRawPointer?] = v.indices.map { UnsafeMutableRawPointer(v.baseAddress! + $0) }
                return try f("cuLaunchKernel", A.LaunchKernel.self)(kernel, blocks, 1, 1, threads, 1, 1, 0, stream, &params, nil)
            }
        }
        func read(_ p: UInt64, count: Int, stream: OpaquePointer?) throws -> [Float] {
            var out = [Float](repeating: 0, count: count)
            let code = try out.withUnsafeMutableBytes { try f("cuMemcpyDtoHAsync", A.CopyDtoH.self)($0.baseAddress!, p, count * 4, stream) }
            #expect(code == 0)
            return out
        }
    }

    @Test func aPinnedBufferIsReadWhenItsCopyRunsAndAPageableOneAtTheCall() throws {
        SoftwareCUDA.reset()
        let d = try Driver()
        let s = try d.stream(), device = try d.alloc(8)
        var host: UnsafeMutableRawPointer?
        #expect(try d.f("cuMemHostAlloc", A.HostAlloc.self)(&host, 8, 0) == 0)
        let pinned = host!.assumingMemoryBound(to: Float.self)
        pinned[0] = 1; pinned[1] = 1
        #expect(try d.f("cuMemcpyHtoDAsync", A.CopyHtoD.self)(device, host!, 8, s) == 0)
        // Rewritten before anything waited for the copy: a GPU may read
        // either value; this device always reads the later one.
        pinned[0] = 2; pinned[1] = 2
        #expect(try d.read(device, count: 2, stream: s) == [2, 2])
        var pageable: [Float] = [3, 3]
        _ = try pageable.withUnsafeBytes { try d.f("cuMemcpyHtoDAsync", A.CopyHtoD.self)(device, $0.baseAddress!, 8, s) }
        pageable = [4, 4]
        #expect(try d.read(device, count: 2, stream: s) == [3, 3])
        #expect(SoftwareCUDA.counter("pinned_h2d_bytes") == 8 && SoftwareCUDA.counter("pageable_h2d_bytes") == 8)
        _ = try d.f("cuMemFreeHost", A.HostFree.self)(host!)
        _ = try d.f("cuMemFree", A.MemFree.self)(device)
        #expect(SoftwareCUDA.error == "")
    }

    /// cuBLAS's column-major definition, as the accelerator calls it
    /// (weights transposed, BF16 in, Float32 out), then a product that reads
    /// past its weights: a sticky illegal-address error, as on a GPU.
    @Test func gemmFollowsCuBLASAndAnOutOfBoundsReadIsAnIllegalAddress() throws {
        SoftwareCUDA.reset()
        defer { SoftwareCUDA.reset() }
        let d = try Driver()
        let s = try d.stream()
        let (gemm, handle) = try d.blas(stream: s)
        // W: 2 x 3 row-major, X: 2 tokens x 3; out[t][r] = Σ W[r][k] X[t][k].
        let w: [Float] = [1, 2, 3, 4, 5, 6], x: [Float] = [1, 0, -1, 0.5, 0.25, 2]
        let wBF16 = w.map { UInt16($0.bitPattern >> 16) }, xBF16 = x.map { UInt16($0.bitPattern >> 16) }
        let dW = try d.alloc(12), dX = try d.alloc(12), dY = try d.alloc(16)
        _ = try wBF16.withUnsafeBytes { try d.f("cuMemcpyHtoDAsync", A.CopyHtoD.self)(dW, $0.baseAddress!, 12, s) }
        _ = try xBF16.withUnsafeBytes { try d.f("cuMemcpyHtoDAsync", A.CopyHtoD.self)(dX, $0.baseAddress!, 12, s) }
        var one: Float = 1, zero: Float = 0
        #expect(gemm(handle, A.opT, A.opN, 2, 2, 3, &one, dW, A.realBF16, 3, dX, A.realBF16, 3, &zero, dY, A.realF32, 2, A.compute32F, -1) == 0)
        // Column-major C: token 0's two outputs, then token 1's.
        let expected: [Float] = [-2, -2, 7, 15.25]
        #expect(try d.read(dY, count: 4, stream: s) == expected)
        // lda below k is refused at the call, as cuBLAS does.
        #expect(gemm(handle, A.opT, A.opN, 2, 2, 3, &one, dW, A.realBF16, 2, dX, A.realBF16, 3, &zero, dY, A.realF32, 2, A.compute32F, -1) == 7)
        // k = 4 reads past both 12-byte inputs.
        #expect(gemm(handle, A.opT, A.opN, 2, 2, 4, &one, dW, A.realBF16, 4, dX, A.realBF16, 4, &zero, dY, A.realF32, 2, A.compute32F, -1) == 0)
        #expect(try d.f("cuStreamSynchronize", A.StreamSync.self)(s) == 700)
        #expect(SoftwareCUDA.error.contains("cublasGemmEx A: 16 bytes at device address"))
        #expect(SoftwareCUDA.error.contains("past its allocation of 12"))
    }

    /// A matrix that starts inside an element of its type: cuBLAS on a GPU
    /// fails it as a misaligned address, and so does this device.
    @Test func aProductStartingInsideAnElementIsAMisalignedAddress() throws {
        SoftwareCUDA.reset()
        defer { SoftwareCUDA.reset() }
        let d = try Driver()
        let s = try d.stream()
        let (gemm, handle) = try d.blas(stream: s)
        let dW = try d.alloc(64), dX = try d.alloc(64), dY = try d.alloc(64)
        var one: Float = 1, zero: Float = 0
        // BF16 inputs may start on any even byte; a Float32 output may not start 2 bytes in.
        #expect(gemm(handle, A.opT, A.opN, 2, 2, 3, &one, dW + 2, A.realBF16, 3, dX + 6, A.realBF16, 3, &zero, dY + 4, A.realF32, 2, A.compute32F, -1) == 0)
        #expect(try d.f("cuStreamSynchronize", A.StreamSync.self)(s) == 0)
        #expect(gemm(handle, A.opT, A.opN, 2, 2, 3, &one, dW, A.realBF16, 3, dX, A.realBF16, 3, &zero, dY + 2, A.realF32, 2, A.compute32F, -1) == 0)
        #expect(try d.f("cuStreamSynchronize", A.StreamSync.self)(s) == 716)
        #expect(SoftwareCUDA.error.contains("does not start on a whole element"))
    }

    /// A kernel that reads a float from an address 2 bytes into one: an x86
    /// host reads it, a GPU stops the kernel. Kernels here are built with
    /// the alignment sanitizer trapping, so the test process stops, naming
    /// the kernel.
    @Test func aKernelsMisalignedAccessStopsTheProcess() async {
        await #expect(processExitsWith: .signal(SIGABRT), observing: [\.standardErrorContent]) {
            let d = try Driver()
            let s = try d.stream()
            let kernel = try d.kernels(["read_inside"], source: """
                extern "C" __global__ void read_inside(const unsigned short* in, float* out, long long count) {
                    out[0] = *(const float*)(in + 1);
                }
                """)[0]
            _ = try d.launch(kernel, blocks: 1, threads: 1, stream: s, [try d.alloc(16), try d.alloc(16)])
            _ = try d.f("cuStreamSynchronize", A.StreamSync.self)(s)
        }.map { result in
            #expect(String(decoding: result.standardErrorContent, as: UTF8.self).contains("kernel read_inside made a misaligned access"))
        }
    }

    /// A barrier inside a branch: threads 0 and 1 wait at one
    /// `__syncthreads` while 2 and 3 are at the next. A GPU hangs or breaks the barrier there; this
    /// device stops the process naming the kernel. The same kernel with
    /// every thread at one barrier runs.
    @Test(arguments: [false, true])
    func threadsWaitingAtDifferentBarriersStopTheProcess(divergent: Bool) async {
        let body = divergent
            ? "if (threadIdx.x < 2) { seen[0] = 1; __syncthreads(); } __syncthreads();"
            : "if (threadIdx.x < 2) seen[0] = 1; __syncthreads(); __syncthreads();"
        let source = """
            extern "C" __global__ void branchy(int* out, long long count) {
                __shared__ int seen[1];
                \(body)
                out[threadIdx.x] = seen[0];
            }
            """
        let expected: ExitTest.Condition = divergent ? .signal(SIGABRT) : .exitCode(0)
        await #expect(processExitsWith: expected, observing: [\.standardErrorContent]) { [source = source as String] in
            let d = try Driver()
            let s = try d.stream()
            let output = try d.alloc(16)
            _ = try d.launch(try d.kernels(["branchy"], source: source)[0], blocks: 1, threads: 4, stream: s, [output])
            guard try d.f("cuStreamSynchronize", A.StreamSync.self)(s) == 0,
                  try d.read(output, count: 4, stream: s).map({ Int32(bitPattern: $0.bitPattern) }) == [1, 1, 1, 1] else { exit(3) }
        }.map { result in
            let stderr = String(decoding: result.standardErrorContent, as: UTF8.self)
            #expect(stderr.contains("kernel branchy: threads of block 0 wait at different __syncthreads") == divergent, "\(stderr)")
        }
    }

    /// A cubin runs on its own architecture (at its minor version or
    /// above), PTX only on a driver at least as new as the NVRTC that wrote
    /// it: the device refuses the rest with the GPU's codes.
    @Test func aCubinLoadsOnlyOnItsArchitectureAndPTXOnlyOnANewEnoughDriver() throws {
        SoftwareCUDA.reset()
        defer { SoftwareCUDA.reset() }
        let d = try Driver()
        let nvrtc = try CUDALibraries.open(["libnvrtc.so.13"], searchPath: [try SoftwareCUDA.directory.get()], systemSearch: false).get()
        let source = #"extern "C" __global__ void one(float* out, long long count) { out[0] = 1; }"#
        func load(_ image: [CChar]) throws -> Int32 {
            var module: OpaquePointer?
            return try image.withUnsafeBytes { try d.f("cuModuleLoadData", A.ModuleLoadData.self)(&module, $0.baseAddress!) }
        }
        let sm90 = try A.compileKernel(nvrtc: nvrtc, source: source, architecture: 90)
        let sm80 = try A.compileKernel(nvrtc: nvrtc, source: source, architecture: 80)
        let ptx = try A.compileKernel(nvrtc: nvrtc, source: source)
        #expect(try load(sm90) == 0 && load(ptx) == 0)
        #expect(try load(sm80) == 209)  // CUDA_ERROR_NO_BINARY_FOR_GPU
        SoftwareCUDA.configureToolkit(computeCapability: 90, nvrtcNewestArchitecture: 120, driverTakesPTX: false)
        #expect(try load(sm90) == 0)
        #expect(try load(ptx) == 222)  // CUDA_ERROR_UNSUPPORTED_PTX_VERSION
        SoftwareCUDA.configureToolkit(computeCapability: 90, nvrtcNewestArchitecture: 89, driverTakesPTX: true)
        #expect(throws: NVRTCUnknownArchitecture.self) { try A.compileKernel(nvrtc: nvrtc, source: source, architecture: 90) }
    }

    /// The accelerator compiles its kernels for the GPU it runs on (a
    /// cubin for compute 9.0), so they load on a driver that could not
    /// compile NVRTC's PTX; with an NVRTC older than the GPU it falls back
    /// to PTX; where neither loads, the error names both versions and the
    /// fix.
    @Test(.enabled(if: bf16 != nil, "no bfloat16 compute on this CPU"),
          arguments: [(120, true, "sm_90"), (120, false, "sm_90"), (89, true, "PTX"), (89, false, nil)] as [(Int, Bool, String?)])
    func kernelsAreACubinForTheGPUWhereNVRTCKnowsIt(nvrtcNewest: Int, driverTakesPTX: Bool, target: String?) throws {
        let model = try Transformer(directory: PluginFixtures.defaultModel)
        SoftwareCUDA.reset()
        defer { SoftwareCUDA.reset() }
        SoftwareCUDA.configureToolkit(computeCapability: 90, nvrtcNewestArchitecture: nvrtcNewest, driverTakesPTX: driverTakesPTX)
        let make = {
            try CUDAAccelerator(config: model.config, sampleExpert: model.weights.routedExpertsByLayer[0][0], deviceIndex: 0,
                                budgetBytes: 0, uploadSlots: 1, searchPath: [try SoftwareCUDA.directory.get()])
        }
        if let target {
            let gpu = try make()
            #expect(gpu.kernelTarget == target)
            #expect(gpu.detail.contains("kernels \(target)"))
        } else {
            let error = try #require(throws: HybridSetupError.self) { try make() }
            #expect(error.description.contains("CUDA error 222: the CUDA 13.0 driver cannot compile the kernels, compiled by NVRTC 13.0"))
            #expect(error.description.contains("as PTX") && error.description.contains("pip install 'nvidia-cuda-nvrtc==13.0.*'"))
        }
    }

    /// Threads a barrier does not order run in either order, from one
    /// launch of a kernel to the next (a GPU promises neither): the last
    /// thread to write a value is the block's last one, then its first.
    /// Also between a block's barriers: the value all threads wrote before
    /// one is the last's, then the first's. A kernel here whose result
    /// depended on that order would differ between launches.
    @Test func threadsNoBarrierOrdersRunInEitherOrderFromOneLaunchToTheNext() throws {
        SoftwareCUDA.reset()
        defer { SoftwareCUDA.reset() }
        let d = try Driver()
        let s = try d.stream()
        let kernels = try d.kernels(["last_writer", "last_before_barrier"], source: """
            extern "C" __global__ void last_writer(int* out, long long count) { out[0] = blockIdx.x * blockDim.x + threadIdx.x; }
            extern "C" __global__ void last_before_barrier(int* out, long long count) {
                __shared__ int seen[1];
                seen[0] = threadIdx.x;
                __syncthreads();
                if (threadIdx.x == 0) out[1 + blockIdx.x] = seen[0];
            }
            """)
        let out = try d.alloc(12)
        func run(_ f: OpaquePointer?, blocks: UInt32, threads: UInt32) throws -> [Int32] {
            #expect(try d.launch(f, blocks: blocks, threads: threads, stream: s, [out]) == 0)
            return try d.read(out, count: 3, stream: s).map { Int32(bitPattern: $0.bitPattern) }
        }
        let writer = kernels[0], barrier = kernels[1]
        #expect(try run(writer, blocks: 2, threads: 4)[0] == 7)
        #expect(try run(writer, blocks: 2, threads: 4)[0] == 0)
        #expect(try run(writer, blocks: 2, threads: 4)[0] == 7)
        #expect(try run(barrier, blocks: 2, threads: 4)[1...] == [3, 3])
        #expect(try run(barrier, blocks: 2, threads: 4)[1...] == [0, 0])
        #expect(SoftwareCUDA.error == "")
    }

    // MARK: the accelerator

    static let bf16 = ComputeOptions.available.first { $0.dtype == .bfloat16 }

    func maxRelativeDifference(_ a: [[Float]], _ b: [[Float]]) -> Float {
        zip(a, b).map { zip($0, $1).map { abs($0 - $1) / (1 + abs($1)) }.max() ?? 0 }.max() ?? Float.infinity
    }

    func argmax(_ row: [Float]) -> Int { row.indices.max { row[$0] < row[$1] }! }

    /// A fresh software device and an accelerator on it holding `model`'s
    /// dense weights, with `budgetBytes` for experts.
    func denseAccelerator(_ model: Transformer, budgetBytes: Int, uploadSlots: Int = 1) throws -> CUDAAccelerator {
        SoftwareCUDA.reset()
        let gpu = try CUDAAccelerator(config: model.config, sampleExpert: model.weights.routedExpertsByLayer.lazy.compactMap(\.first).first!,
                                      deviceIndex: 0, budgetBytes: budgetBytes, uploadSlots: uploadSlots,
                                      denseBytes: CUDAAccelerator.denseBytes(model.weights), searchPath: [try SoftwareCUDA.directory.get()])
        try gpu.loadDense(model.weights)
        return gpu
    }

    /// Transformers' DeepSeek-V3 checkpoint in bfloat16, its reference
    /// prompt and the CPU's logits for it.
    func deepseekModel() throws -> (model: Transformer, prompt: [Int32], reference: [[Float]], expertBytes: Int) {
        let dir = PluginFixtures.model("deepseek_v3_noninterleaved_bf16_sharded")
        let model = try Transformer(directory: dir)
        try model.configure(compute: Self.bf16!)
        struct Reference: Decodable { var tokens: [Int32] }
        let prompt = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/reference.json"))).tokens
        let reference = try Generator(model: model, blockSize: 16).allLogits(prompt)
        return (model, prompt, reference, model.weights.routedExpertsByLayer.lazy.compactMap(\.first).first!.byteCount)
    }

    /// The default model in bfloat16 (its experts packed for the CPU, so
    /// uploads unpack them) and the CPU's logits for a 40-token prompt.
    func bf16Model() throws -> (model: Transformer, prompt: [Int32], reference: [[Float]], expertBytes: Int) {
        let model = try Transformer(directory: PluginFixtures.defaultModel)
        try model.configure(compute: Self.bf16!)
        let prompt = (0..<40).map { Int32(($0 * 53 + 7) % model.config.vocabSize) }
        let reference = try Generator(model: model, blockSize: 16).allLogits(prompt)
        let sample = model.weights.routedExpertsByLayer.lazy.compactMap(\.first).first!
        return (model, prompt, reference, sample.byteCount)
    }

    /// Residency swaps move no memory and wait for nothing on the host
    /// (the resident experts' slots are one allocation made at start-up).
    /// Each layer, right after its products are queued and before anything
    /// waited for them, one resident expert the layer reads is evicted and
    /// another expert loaded into its slot, then evicted for the first to
    /// come back, through a ring of one slot whose reuse makes the host
    /// wait for the copy stream: the copies into the slot wait on the
    /// device for the products queued before, so every expert the GPU
    /// computed still matches the CPU. (Without that wait the copy ran
    /// first and the products read the other expert's weights.)
    @Test(.enabled(if: bf16 != nil, "no bfloat16 compute on this CPU"))
    func swappingAnExpertOutWhileItsProductsAreQueuedLeavesThemItsWeights() throws {
        let (model, prompt, _, bytes) = try bf16Model()
        SoftwareCUDA.reset()
        let routed = model.weights.routedExpertsByLayer
        let gpu = try CUDAAccelerator(config: model.config, sampleExpert: routed[0][0], deviceIndex: 0,
                                      budgetBytes: 6 * bytes, uploadSlots: 1, searchPath: [try SoftwareCUDA.directory.get()])
        let checked = CheckingAccelerator(gpu, weights: model.weights)
        var swapped = 0
        checked.afterBegin = { work, experts, uploads in
            #expect(uploads.isEmpty)
            guard let e = experts.first else { return }
            let kept = ResidentExperts.Expert(layer: work.layer, expert: e)
            let other = (0..<routed.count).lazy.flatMap { l in routed[l].indices.map { ResidentExperts.Expert(layer: l, expert: $0) } }
                .first { !gpu.isResident($0) }!
            let waits = SoftwareCUDA.counter("host_waits")
            gpu.evict(kept)
            try gpu.load(other, weights: routed[other.layer][other.expert])
            gpu.evict(other)
            try gpu.load(kept, weights: routed[kept.layer][kept.expert])
            // Each load's wait for the ring's one slot, nothing else (a
            // load waited for its copy too, and an evict freed memory,
            // which waits for the whole device).
            #expect(SoftwareCUDA.counter("host_waits") - waits == 2)
            swapped += 1
        }
        // No uploads (a link too slow to pay), so nothing else makes the
        // copy stream wait for the products.
        var noUploads = HybridExecutorTests.cost
        noUploads.hostToDeviceBytesPerSecond = 1
        let hybrid = try HybridExecutor(weights: model.weights, accelerator: checked, cost: noUploads, maxSwapsPerStep: 0, uploadSlots: 1)
        model.install(experts: hybrid)
        defer { model.install(experts: nil) }
        _ = try Generator(model: model, blockSize: 16).allLogits(prompt)
        #expect(SoftwareCUDA.error == "" && hybrid.lastAcceleratorError == nil)
        #expect(swapped > 0 && checked.expertsChecked > 0)
        #expect(checked.worstRelativeDifference < 2e-3, "worst relative difference \(checked.worstRelativeDifference)")
    }

    /// Experts resident, uploaded and on the CPU, with one upload slot so
    /// every layer's uploads queue behind each other through it: each
    /// expert the GPU computed, checked against the CPU's bfloat16 kernels
    /// on the same rows (same rounding points, another summation order),
    /// every upload through pinned memory, products fused.
    /// Also with a cuBLAS that refuses the batched product: the resident
    /// experts go one call each, with the same results.
    @Test(.enabled(if: bf16 != nil, "no bfloat16 compute on this CPU"), arguments: [false, true])
    func acceleratorMatchesTheCPUWithUploadsQueuedThroughOneSlot(refusingBatched: Bool) throws {
        let (model, prompt, _, bytes) = try bf16Model()
        #expect(model.expertsArePacked)
        SoftwareCUDA.reset()
        SoftwareCUDA.refuseBatchedProducts(refusingBatched)
        defer { SoftwareCUDA.refuseBatchedProducts(false) }
        let routed = model.weights.routedExperts.count
        let gpu = try CUDAAccelerator(config: model.config, sampleExpert: model.weights.routedExpertsByLayer[0][0], deviceIndex: 0,
                                      budgetBytes: routed / 4 * bytes, uploadSlots: 1, searchPath: [try SoftwareCUDA.directory.get()])
        let checked = CheckingAccelerator(gpu, weights: model.weights)
        let hybrid = try HybridExecutor(weights: model.weights, accelerator: checked, cost: HybridExecutorTests.cost,
                                        uploadSlots: 1, maxUploadBytesPerLayer: 8 * bytes)
        model.install(experts: hybrid)
        defer { model.install(experts: nil) }
        let logits = try Generator(model: model, blockSize: 16).allLogits(prompt)
        #expect(SoftwareCUDA.error == "")
        #expect(hybrid.lastAcceleratorError == nil)
        #expect(logits.allSatisfy { $0.allSatisfy(\.isFinite) })
        // Summation order alone: at most 2.9e-4 seen (one BF16 rounding of
        // an activation falling the other way). Gate and up swapped in the
        // kernel, or either event wait of the ring dropped, put whole
        // experts off by O(1).
        #expect(checked.expertsChecked > 20)
        #expect(checked.worstRelativeDifference < 2e-3, "worst relative difference \(checked.worstRelativeDifference)")
        let sites = hybrid.siteCounters
        #expect(sites.residentTokens > 0 && sites.uploadedTokens > 0 && sites.cpuTokens > 0, "\(sites)")
        // More uploads in a layer than the ring has slots: the slot was reused.
        #expect(sites.hostToDeviceBytes > (routed / 4 + model.config.numLayers) * bytes)
        #expect(SoftwareCUDA.counter("pageable_h2d_bytes") == 0)
        #expect(SoftwareCUDA.counter("pinned_h2d_bytes") >= sites.hostToDeviceBytes)
        #expect(SoftwareCUDA.counter("event_waits") > 0)
        // No layer front on the device, so the rows went over; where the
        // device computed more rows than the batch had tokens it summed
        // them per token (checked too) and sent those sums back instead.
        let summedLayers = Int(gpu.counters["hybrid_gpu_expert_layers_summed"]!)
        #expect(gpu.counters["hybrid_gpu_expert_rows_gathered"] == 0)
        #expect(summedLayers > 0 && checked.summedExperts > 0, "\(summedLayers) layers, \(checked.summedExperts) experts summed")
        if refusingBatched {
            // One product for gate and up together, one kernel, one for down;
            // and the sums' kernel.
            #expect(SoftwareCUDA.counter("batched_gemms") == 0)
            #expect(SoftwareCUDA.counter("gemms") == 2 * (SoftwareCUDA.counter("launches") - summedLayers))
        } else {
            // A layer's resident experts share batched products and one kernel.
            #expect(SoftwareCUDA.counter("batched_gemms") > 0)
            #expect(SoftwareCUDA.counter("launches") < checked.expertsChecked)
        }
    }

    /// GLM-4.5's layout: a dense first layer, then MoE layers with a shared
    /// expert, attention with biases. Only the dense products go to the
    /// GPU here (experts stay on the CPU): every one of them, with the
    /// CPU's bfloat16 logits. Attention whole per layer in one round trip,
    /// or (`wholeLayers` false) as three steps: projections, attention, o.
    /// Whole, the MoE layers keep the residual stream and their shared
    /// experts on the device (`keepsResidual`), or (`keepsResidual` false)
    /// send both back each layer.
    @Test(.enabled(if: bf16 != nil, "no bfloat16 compute on this CPU"), arguments: [(true, true), (true, false), (false, false)])
    func denseProductsOfDenseLayersAndSharedExpertsMatchTheCPU(wholeLayers: Bool, keepsResidual: Bool) throws {
        let model = try Transformer(directory: PluginFixtures.model("glm4_moe_bf16_sharded"))
        try model.configure(compute: Self.bf16!)
        let prompt = (0..<20).map { Int32(($0 * 37 + 3) % model.config.vocabSize) }
        let reference = try Generator(model: model, blockSize: 16).allLogits(prompt)
        let gpu = try denseAccelerator(model, budgetBytes: 0)
        #expect(gpu.dense.denseMLP.map { $0.address != 0 } == [true, false, false])
        #expect(gpu.dense.sharedMLP.map { $0.address != 0 } == [false, true, true])
        // q/k/v biases on every layer, as one fused row.
        #expect(gpu.dense.attentionParts.map { $0.whole && $0.bias != 0 } == [true, true, true])
        gpu.residual.enabled = keepsResidual
        let checked = CheckingDenseOffload(gpu, weights: model.weights, compute: Self.bf16!)
        checked.offersWholeLayers = wholeLayers
        checked.offersLayerFronts = wholeLayers
        model.install(dense: checked)
        defer { model.install(dense: nil) }
        let logits = try Generator(model: model, blockSize: 16).allLogits(prompt)
        #expect(SoftwareCUDA.error == "" && gpu.denseFailure == nil && gpu.attentionFailure == nil)
        if wholeLayers {
            // Each layer's keys, values and output (layers 1 and 2 with their
            // norms and routers, in one round trip each); then the products:
            // layer 0's MLP, the routers and shared experts, the LM head.
            #expect(checked.wholeLayersChecked == 3 && checked.frontsChecked == 2 && checked.attentionChecked == 0)
            // Kept, the shared experts are checked with their layers' output.
            #expect(checked.productsChecked == (keepsResidual ? 4 : 6))
            #expect(checked.frontsKept == (keepsResidual ? 2 : 0) && checked.layerOutputsChecked == checked.frontsKept)
            // Layer 0 whole: attention, its MLP and both adds in one round trip.
            #expect(checked.denseLayersChecked == 1)
            #expect(gpu.counters["hybrid_gpu_attention_whole_layers"] == 3)
            #expect(gpu.counters["hybrid_gpu_residual_layers_kept"] == (keepsResidual ? 2 : 0))
            // The logits of its one forward from the rows held after layer 2.
            #expect(checked.logitsFromHeldRowsChecked == (keepsResidual ? 1 : 0))
        } else {
            // 12 products, q, k and v compared apart: 5 + 6 + 6 + 1; and each
            // layer's attention, over the device's copy of the KV cache.
            #expect(checked.productsChecked == 18 && checked.attentionChecked == 3 && checked.wholeLayersChecked == 0)
        }
        #expect(gpu.counters["hybrid_gpu_attention_layers"] == 3)
        // Layers 1 and 2's shared experts, started with their routers (and
        // kept on the device with the residual rows).
        #expect(checked.sharedExpertsStarted + checked.sharedExpertsKept == 2 && checked.sharedExpertsKept == checked.frontsKept)
        // And their routes chosen on the device (sigmoid, the fixture's
        // selection bias, scale), from the front or from the router alone.
        #expect(checked.routesChecked == 2 && gpu.counters["hybrid_gpu_layers_routed"] == 2)
        #expect(checked.worstRelativeDifference < 2e-3, "worst relative difference \(checked.worstRelativeDifference)")
        // Here the logits came out within 1.3e-7 of the CPU's too; asserted
        // per product above, since routing can amplify a rounding.
        #expect(logits.map(argmax) == reference.map(argmax))
        // Per forward, layer 0: (q/k/v, o,) its MLP; layers 1 and 2:
        // (q/k/v, o,) router, shared expert (not collected where kept); the
        // LM head.
        let perForward = wholeLayers ? (keepsResidual ? 4 : 6) : 12
        #expect(gpu.dense.products > 0 && gpu.dense.products % perForward == 0, "\(gpu.dense.products)")
        // Round trips of a decode step on a warm cache, one host wait each
        // (keeping, counted without the checking wrapper, whose own reads
        // of the kept rows would add theirs): in steps, 12 products and 3
        // attention layers; whole, layer 0 (attention and MLP together),
        // each MoE layer's front (attention, norms, router) and shared
        // expert, the LM head; keeping the residual stream, the shared
        // experts stay and the rows never come back: the final norm and
        // the LM head run from them after layer 2.
        if keepsResidual { model.install(dense: gpu) }
        let cache = PagedKVCache(config: model.config, numBlocks: 2, blockSize: 16, compute: model.compute)
        var prefill = ForwardBatch(), warm = ForwardBatch(), decode = ForwardBatch()
        prefill.append(tokens: prompt, startPosition: 0, blockTable: [0, 1], logits: .last)
        // A first decode grows the kernels' scratch (the prefill's attention
        // took the products); the second is counted.
        warm.append(tokens: [prompt[2]], startPosition: prompt.count, blockTable: [0, 1], logits: .last)
        decode.append(tokens: [prompt[3]], startPosition: prompt.count + 1, blockTable: [0, 1], logits: .last)
        _ = try model.forward(prefill, cache: cache)
        _ = try model.forward(warm, cache: cache)
        let (waits, products, counted) = (SoftwareCUDA.counter("host_waits"), gpu.dense.products, gpu.counters["hybrid_gpu_host_waits"]!)
        let waited = gpu.counters["hybrid_gpu_host_wait_seconds"]!
        _ = try model.forward(decode, cache: cache)
        #expect(gpu.dense.products - products == perForward)
        let roundTrips = wholeLayers ? (keepsResidual ? 4 : 6) : 15
        #expect(SoftwareCUDA.counter("host_waits") - waits == roundTrips)
        // The accelerator's own count, which bench and /metrics report, agrees.
        #expect(gpu.counters["hybrid_gpu_host_waits"]! - counted == Double(roundTrips))
        // And timed: the software device computes inside the waits, so they take time.
        #expect(gpu.counters["hybrid_gpu_host_wait_seconds"]! > waited)
        gpu.resetCounters()
        #expect(gpu.counters["hybrid_gpu_host_wait_seconds"] == 0 && gpu.counters["hybrid_gpu_host_waits"] == 0)
    }

    /// Attention whole on the device for each form it takes in the
    /// architectures with grouped-query attention: Mixtral's plain one,
    /// Qwen2-MoE's and GLM's q/k/v biases, OLMoE's q/k norms over the whole
    /// projection with `clip_qkv` (set low here so it clips), Qwen3's
    /// per-head norms, gpt-oss's sinks, o bias and a sliding window on
    /// every other layer (5 positions here, so the 13-token prompt and its
    /// decodes slide). Random BF16 checkpoints, whose biases are zero and
    /// norm weights one: the bias and norm values themselves are checked
    /// on GLM's fixture and the default model (tests above and below). Each
    /// layer's keys, values and output checked against the model's weights.
    /// The prefill's attention through the kernels, or (`products`) through
    /// cuBLAS's products (`CUDAAttentionGEMM.swift`), in chunks of a few
    /// tokens; decodes take the kernels either way.
    @Test(.enabled(if: bf16 != nil, "no bfloat16 compute on this CPU"),
          arguments: [Architecture.mixtral, .qwen2Moe, .olmoe, .qwen3Moe, .glm4Moe, .gptOss], [false, true])
    func wholeAttentionLayersMatchTheCPUInEveryGroupedForm(_ arch: Architecture, products: Bool) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("whole-attention-\(arch.rawValue)-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let presets = PluginFixtures.tests.deletingLastPathComponent().appendingPathComponent("models/presets/tiny.json").path
        try RandomCheckpoint.create(.init(architecture: arch, preset: ModelPreset.load(presets), seed: 5, dtype: .bf16), at: dir)
        // Random checkpoints have zero biases: give the routing ones values,
        // so routing on the device is checked with them.
        try setBiases(named: ["router.bias", "e_score_correction_bias"], in: dir)
        if arch == .olmoe || arch == .gptOss {
            let file = dir.appendingPathComponent("config.json")
            var config = try #require(JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String: Any])
            if arch == .olmoe { config["clip_qkv"] = 0.5 } else { config["sliding_window"] = 5 }
            try JSONSerialization.data(withJSONObject: config).write(to: file)
        }
        let model = try Transformer(directory: dir.path)
        try model.configure(compute: Self.bf16!)
        let c = model.config
        #expect(c.clipQKV == (arch == .olmoe ? 0.5 : nil))
        #expect(c.attentionWindows == (arch == .gptOss ? [5, 0] : []))
        let biased = model.weights.layers.contains { layer in
            guard case .moe(let moe) = layer.feedForward else { return false }
            return ((moe.routerBias ?? []) + (moe.selectionBias ?? [])).contains { $0 != 0 }
        }
        #expect(biased == (arch == .gptOss || arch == .glm4Moe))
        let gpu = try denseAccelerator(model, budgetBytes: 0)
        // Softmax and norm rows with few threads each, every thread taking
        // several keys or values, as long contexts and wide rows make them;
        // the values' sums in many pieces, some partial or empty (the
        // window); the
        // prefill's tokens in chunks of two, as long prompts take them.
        gpu.attention.softmaxThreads = 4
        gpu.attention.valuePiece = 3
        gpu.attention.normThreads = 4
        gpu.attention.chunkBytes = products ? 1024 : 4096
        gpu.attention.gemmMinTokens = products ? 4 : 0
        #expect(gpu.dense.attentionParts.allSatisfy { $0.whole })
        let checked = CheckingDenseOffload(gpu, weights: model.weights, compute: Self.bf16!)
        model.install(dense: checked)
        defer { model.install(dense: nil) }
        // A 13-token prefill, then decodes that read what it stored.
        let result = try Generator(model: model, blockSize: 4).generate(prompt: (0..<13).map { Int32(($0 * 29 + 11) % c.vocabSize) },
                                                                        maxTokens: 4)
        #expect(result.tokens.count == 4)
        #expect(SoftwareCUDA.error == "" && gpu.attentionFailure == nil && gpu.denseFailure == nil)
        // The prefill's sequence, once per layer.
        #expect(gpu.counters["hybrid_gpu_attention_gemm_sequences"] == (products ? Double(c.numLayers) : 0))
        #expect(checked.wholeLayersChecked >= 3 * c.numLayers && checked.wholeLayersChecked % c.numLayers == 0, "\(checked.wholeLayersChecked)")
        // The batch's index (and the prefill's sequence slots) copied over
        // by each forward's first layer only: every layer has the same.
        let forwards = checked.wholeLayersChecked / c.numLayers
        #expect(gpu.counters["hybrid_gpu_attention_index_uploads"] == Double(forwards))
        #expect(gpu.counters["hybrid_gpu_attention_slot_uploads"] == (products ? 1 : 0))
        #expect(checked.attentionChecked == 0)
        // Every MoE layer's routes chosen on the device, in each routing
        // form (softmax; GLM's sigmoid with groups, selection bias and
        // scale; gpt-oss's softmax over the chosen with a router bias),
        // the same experts as the CPU's from the same logits.
        let moeLayers = c.sparseLayers.filter { $0 }.count
        #expect(checked.routesChecked == checked.frontsChecked && checked.routesChecked >= 3 * moeLayers, "\(checked.routesChecked)")
        #expect(gpu.counters["hybrid_gpu_layers_routed"] == Double(checked.routesChecked))
        #expect(checked.worstRelativeDifference < 2e-3, "worst relative difference \(checked.worstRelativeDifference)")
    }

    /// Overwrites every BF16 tensor whose name contains one of `names`
    /// in the checkpoint's safetensors files with values in ±0.2.
    func setBiases(named names: [String], in dir: URL) throws {
        for file in try FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil) where file.pathExtension == "safetensors" {
            var data = try Data(contentsOf: file)
            let headerBytes = Int(data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
            let header = try #require(JSONSerialization.jsonObject(with: data.subdata(in: 8..<8 + headerBytes)) as? [String: Any])
            for (name, entry) in header where names.contains(where: name.contains) {
                let info = try #require(entry as? [String: Any]), offsets = try #require(info["data_offsets"] as? [Int])
                try #require(info["dtype"] as? String == "BF16")
                for (i, at) in stride(from: 8 + headerBytes + offsets[0], to: 8 + headerBytes + offsets[1], by: 2).enumerated() {
                    let bits = (Float(sin(Double(i) * 1.7 + 0.3)) * 0.2).bitPattern >> 16
                    data[at] = UInt8(bits & 0xFF)
                    data[at + 1] = UInt8(bits >> 8)
                }
            }
            try data.write(to: file)
        }
    }

    /// Serving: twelve requests through the engine (chunked prefill in
    /// 4-token blocks, decodes beside prefills, blocks freed and handed to
    /// later requests), experts split between the CPU and the device, every
    /// dense product and every attention layer on the device. Each is
    /// checked as it runs; attention against a reference that keeps its own
    /// copy of the cache across the forwards, so decodes read what earlier
    /// forwards stored on the device. Also with layered prefill (cohorts
    /// a group of layers at a time beside the decodes, so the residual
    /// stream is kept across each run of layers with the same sequences).
    @Test(.enabled(if: bf16 != nil, "no bfloat16 compute on this CPU"), arguments: [false, true])
    func servingThroughTheEngineKeepsTheDeviceCacheRightAcrossForwards(layered: Bool) async throws {
        let (model, _, _, bytes) = try bf16Model()
        let gpu = try denseAccelerator(model, budgetBytes: 24 * bytes, uploadSlots: 2)
        // Prompt chunks of 6 tokens or more through cuBLAS's products, in
        // the same batches as decodes through the kernels.
        gpu.attention.gemmMinTokens = 6
        let experts = CheckingAccelerator(gpu, weights: model.weights)
        let dense = CheckingDenseOffload(gpu, weights: model.weights, compute: Self.bf16!)
        model.install(experts: try HybridExecutor(weights: model.weights, accelerator: experts, cost: HybridExecutorTests.cost))
        model.install(dense: dense)
        defer { model.install(experts: nil); model.install(dense: nil) }
        let engine = Engine(model: model, config: EngineConfig(maxModelLen: 128, blockSize: 4, numKVBlocks: 96),
                            scheduler: layered
                                ? LayeredScheduler(.init(maxCohortTokens: 48, tokensPerGroup: 16, maxGroups: 3, maxNumSeqs: 6),
                                                   numLayers: model.config.numLayers)
                                : ChunkedScheduler(.init(maxNumBatchedTokens: 24, maxNumSeqs: 6)))
        let requests = (0..<12).map { i in
            GenerationRequest(id: "r\(i)", promptTokens: (0..<(5 + 3 * i)).map { Int32(($0 * 37 + i * 11 + 3) % model.config.vocabSize) },
                              maxTokens: 6, ignoreEOS: true)
        }
        let outputs = await engine.generate(requests)
        engine.shutdown()
        #expect(outputs.allSatisfy { $0.outputTokens.count == 6 })
        #expect(SoftwareCUDA.error == "" && gpu.attentionFailure == nil && gpu.denseFailure == nil)
        // Every forward's six layers, whole: prefill chunks and decode steps
        // (layered: a cohort's group of layers beside them, or alone).
        #expect(dense.wholeLayersChecked >= 6 * 6 && (layered || dense.wholeLayersChecked % 6 == 0), "\(dense.wholeLayersChecked)")
        #expect(dense.attentionChecked == 0 && gpu.counters["hybrid_gpu_attention_gemm_sequences"]! > 0)
        // One BF16 ulp (2^-8, 3.9e-3): a product input that rounds to the
        // other BF16 neighbour (its Float32 value one summation order away)
        // moves an output of a 64- or 256-term dot product by up to about
        // that. Seen: 1.9e-3 with the CPU routing, 2.2e-3 with the device's
        // (the same experts, weights within 8e-8, so other inputs).
        #expect(dense.worstRelativeDifference < 4e-3, "dense and attention: \(dense.worstRelativeDifference)")
        #expect(dense.routesChecked > 0 && gpu.counters["hybrid_gpu_layers_routed"] == Double(dense.routesChecked))
        // The MoE layers kept the residual stream on the device: their
        // experts are checked with each layer's whole output.
        #expect(dense.frontsKept > 0 && dense.layerOutputsChecked == dense.frontsKept && experts.keptExperts > 0)
        #expect(experts.worstRelativeDifference < 2e-3, "experts: \(experts.worstRelativeDifference)")
    }

    /// Every expert resident and each MoE layer's front on the device: the
    /// experts' input rows are gathered there from the front's normed rows
    /// (only token indices go over) and their outputs summed per token
    /// there (one row per token comes back, not one per assignment). The
    /// same prompt with that off (`device_combine: false`) is the baseline:
    /// the bytes saved are exactly the rows' bytes less the indices', by
    /// the accelerator's count and by the software device's own count of
    /// what crossed; every sum checked against the CPU's experts. The
    /// residual stream comes back each layer here (`device_residual: false`),
    /// so the sums do too.
    @Test(.enabled(if: bf16 != nil, "no bfloat16 compute on this CPU"))
    func expertRowsGatheredAndSummedOnTheDeviceCrossOncePerToken() throws {
        let (model, prompt, reference, bytes) = try bf16Model()
        let c = model.config, h = c.hiddenSize, k = c.numExpertsPerToken
        var crossed: [Bool: (in: Int, out: Int)] = [:], counted: [Bool: [String: Double]] = [:]
        var logits: [Bool: [[Float]]] = [:]
        for onDevice in [false, true] {
            let gpu = try denseAccelerator(model, budgetBytes: model.weights.routedExperts.count * bytes)
            gpu.routes.enabled = onDevice
            gpu.residual.enabled = false
            let experts = CheckingAccelerator(gpu, weights: model.weights)
            let hybrid = try HybridExecutor(weights: model.weights, accelerator: experts, cost: HybridExecutorTests.cost, maxSwapsPerStep: 0)
            #expect(hybrid.resident.resident.count == model.weights.routedExperts.count)
            model.install(experts: hybrid)
            model.install(dense: gpu)
            defer { model.install(experts: nil); model.install(dense: nil) }
            let (in0, out0) = (SoftwareCUDA.counter("pinned_h2d_bytes"), SoftwareCUDA.counter("d2h_bytes"))
            logits[onDevice] = try Generator(model: model, blockSize: 16).allLogits(prompt)
            crossed[onDevice] = (SoftwareCUDA.counter("pinned_h2d_bytes") - in0, SoftwareCUDA.counter("d2h_bytes") - out0)
            counted[onDevice] = gpu.counters
            #expect(SoftwareCUDA.error == "" && hybrid.lastAcceleratorError == nil && gpu.attentionFailure == nil)
            #expect(experts.expertsChecked > 0 && experts.worstRelativeDifference < 2e-3, "\(experts.worstRelativeDifference)")
            #expect(hybrid.siteCounters.cpuTokens == 0)
            // Each layer's rows are its batch's assignments, all on the device.
            let rows = hybrid.siteCounters.residentTokens, tokens = rows / k
            let g = gpu.counters
            if onDevice {
                #expect(experts.summedExperts == experts.expertsChecked)
                #expect(g["hybrid_gpu_expert_rows_gathered"] == Double(rows))
                // And the host never gathered them.
                #expect(hybrid.siteCounters.rowsGatheredOnDevice == rows)
                // Token indices of the rows, then each assignment's row and weight.
                #expect(g["hybrid_gpu_expert_row_bytes_in"] == Double((rows + 2 * rows) * 4))
                #expect(g["hybrid_gpu_expert_row_bytes_out"] == Double(tokens * h * 4))
                #expect(g["hybrid_gpu_expert_layers_summed"]! >= Double(c.numLayers))
            } else {
                #expect(experts.summedExperts == 0 && g["hybrid_gpu_expert_rows_gathered"] == 0)
                #expect(hybrid.siteCounters.rowsGatheredOnDevice == 0)
                #expect(g["hybrid_gpu_expert_row_bytes_in"] == Double(rows * h * 2))
                #expect(g["hybrid_gpu_expert_row_bytes_out"] == Double(rows * h * 4))
            }
        }
        // What the software device saw cross, against the baseline.
        let saved = (in: counted[false]!["hybrid_gpu_expert_row_bytes_in"]! - counted[true]!["hybrid_gpu_expert_row_bytes_in"]!,
                     out: counted[false]!["hybrid_gpu_expert_row_bytes_out"]! - counted[true]!["hybrid_gpu_expert_row_bytes_out"]!)
        #expect(saved.in > 0 && saved.out > 0)
        #expect(Double(crossed[false]!.in - crossed[true]!.in) == saved.in)
        #expect(Double(crossed[false]!.out - crossed[true]!.out) == saved.out)
        // A k-way sum in another order: the logits agree with the CPU's.
        // Against the baseline on the same device: only the order of each
        // token's two-term sum moved (1.05e-2 seen with the routes chosen
        // on the device, 2.9e-3 with the CPU's: one expert's rounding
        // carried through later routers); the same tokens win. Both sit
        // 4.3e-2 from the CPU here, where a near-tie (position 18, margin
        // 3e-3) goes the other way on the device either way.
        #expect(logits[true]!.map(argmax) == logits[false]!.map(argmax))
        #expect(maxRelativeDifference(logits[true]!, logits[false]!) < 2e-2)
        #expect(abs(maxRelativeDifference(logits[true]!, reference) - maxRelativeDifference(logits[false]!, reference)) < 1e-2)
    }

    /// The residual stream kept on the device across MoE layers
    /// (`keepsResidual`), four experts resident (the resident set fills
    /// from the first layer) so the CPU's experts have a share that goes
    /// over each layer and the device's rows are fewer than the batch's
    /// tokens (summed all the same, since its sums stay on the device):
    /// each front's rows after
    /// attention and each layer's whole output (read back from the device)
    /// checked against the CPU's own MoE block on the same rows. Against
    /// the same prompt with it off, by count, every expert resident: a
    /// decode step waits once per MoE layer (its front) and once for the
    /// logits (the final norm and the LM head from the rows the device
    /// holds), where it waited twice per layer (front, experts) and for the
    /// LM head; and the residual rows cross once (the CPU's shares, all
    /// zeros, do not cross) instead of twice per layer. Also with every
    /// expert resident, checked: each empty share and each kept output.
    @Test(.enabled(if: bf16 != nil, "no bfloat16 compute on this CPU"))
    func residualStreamStaysOnTheDeviceAcrossMoELayers() throws {
        let (model, prompt, reference, bytes) = try bf16Model()
        let c = model.config, h = c.hiddenSize, layers = c.numLayers
        var logits: [Bool: [[Float]]] = [:], waits: [Bool: Int] = [:], residualBytes: [Bool: Double] = [:]
        for keep in [false, true] {
            let gpu = try denseAccelerator(model, budgetBytes: 4 * bytes)
            gpu.residual.enabled = keep
            let experts = CheckingAccelerator(gpu, weights: model.weights)
            let dense = CheckingDenseOffload(gpu, weights: model.weights, compute: Self.bf16!)
            // Uploads never pay here: the device computes its resident experts only.
            var cost = HybridExecutorTests.cost
            cost.hostToDeviceBytesPerSecond = 1e3
            let hybrid = try HybridExecutor(weights: model.weights, accelerator: experts, cost: cost, maxSwapsPerStep: 0)
            model.install(experts: hybrid)
            model.install(dense: dense)
            defer { model.install(experts: nil); model.install(dense: nil) }
            logits[keep] = try Generator(model: model, blockSize: 16).allLogits(prompt)
            #expect(hybrid.siteCounters.uploadedTokens == 0)
            #expect(hybrid.siteCounters.residentTokens < prompt.count)
            #expect(SoftwareCUDA.error == "" && hybrid.lastAcceleratorError == nil && gpu.attentionFailure == nil && gpu.denseFailure == nil)
            #expect(dense.worstRelativeDifference < 4e-3 && experts.worstRelativeDifference < 2e-3,
                    "dense \(dense.worstRelativeDifference), experts \(experts.worstRelativeDifference)")
            #expect(hybrid.siteCounters.cpuTokens > 0 && hybrid.siteCounters.residentTokens > 0)
            #expect(dense.frontsKept == (keep ? layers : 0) && dense.layerOutputsChecked == dense.frontsKept)
            #expect((experts.keptExperts > 0) == keep && model.profile.layersRecomputed == 0)
            #expect((dense.logitsFromHeldRowsChecked > 0) == keep && model.lastHidden == nil || !keep)
            #expect(gpu.counters["hybrid_gpu_logits_from_held_rows"] == Double(dense.logitsFromHeldRowsChecked))
            // A decode step by count, without the checking wrappers (whose
            // reads of the kept rows would add waits), every expert resident.
            let all = try denseAccelerator(model, budgetBytes: model.weights.routedExperts.count * bytes)
            all.residual.enabled = keep
            model.install(experts: try HybridExecutor(weights: model.weights, accelerator: all, cost: HybridExecutorTests.cost, maxSwapsPerStep: 0))
            model.install(dense: all)
            let cache = PagedKVCache(config: c, numBlocks: 4, blockSize: 16, compute: model.compute)
            var prefill = ForwardBatch(), warm = ForwardBatch(), decode = ForwardBatch()
            prefill.append(tokens: prompt, startPosition: 0, blockTable: [0, 1, 2], logits: .last)
            // Counted on the second decode: the first grows the kernels' scratch.
            warm.append(tokens: [prompt[2]], startPosition: prompt.count, blockTable: [0, 1, 2], logits: .last)
            decode.append(tokens: [prompt[3]], startPosition: prompt.count + 1, blockTable: [0, 1, 2], logits: .last)
            _ = try model.forward(prefill, cache: cache)
            _ = try model.forward(warm, cache: cache)
            let (w0, b0) = (SoftwareCUDA.counter("host_waits"), all.counters["hybrid_gpu_residual_bytes"]!)
            let e0 = all.counters["hybrid_gpu_residual_empty_shares"]!
            _ = try model.forward(decode, cache: cache)
            #expect(SoftwareCUDA.error == "")
            waits[keep] = SoftwareCUDA.counter("host_waits") - w0
            residualBytes[keep] = all.counters["hybrid_gpu_residual_bytes"]! - b0
            // Every expert ran on the device: no layer had a CPU share to send.
            #expect(all.counters["hybrid_gpu_residual_empty_shares"]! - e0 == (keep ? Double(layers) : 0))
            if keep {
                // The same, checked: each empty share is zeros, each kept
                // layer's output the CPU's whole MoE block.
                let checkedAll = CheckingDenseOffload(all, weights: model.weights, compute: Self.bf16!)
                model.install(dense: checkedAll)
                let allResident = try Generator(model: model, blockSize: 16).allLogits(prompt)
                #expect(checkedAll.emptySharesChecked == layers && checkedAll.layerOutputsChecked == layers)
                #expect(checkedAll.worstRelativeDifference < 4e-3, "\(checkedAll.worstRelativeDifference)")
                #expect(allResident.map(argmax) == logits[true]!.map(argmax))
            }
        }
        // Kept: a wait per front and one for the logits, computed from the
        // rows the device holds (which never come back); the rows cross
        // once, over (the CPU's shares are empty). Not kept: each front,
        // each layer's expert sums, the LM head.
        #expect(waits[true] == layers + 1, "\(waits)")
        #expect(waits[false] == 2 * layers + 1, "\(waits)")
        #expect(residualBytes[true] == Double(h * 4) && residualBytes[false] == Double(2 * layers * h * 4))
        // The sums in another order: the same tokens win, as in the test above.
        #expect(logits[true]!.map(argmax) == logits[false]!.map(argmax))
        #expect(maxRelativeDifference(logits[true]!, logits[false]!) < 2e-2)
        #expect(abs(maxRelativeDifference(logits[true]!, reference) - maxRelativeDifference(logits[false]!, reference)) < 1e-2)
    }

    /// A kept layer's CPU share crosses whenever it holds anything: on
    /// DeepSeek-V3's checkpoint with every routed expert resident, the
    /// shares are empty while the shared experts run on the device too,
    /// and cross once their weights are taken off it (the CPU then computes
    /// them into the share); each kept layer's output checked either way.
    @Test(.enabled(if: bf16 != nil, "no bfloat16 compute on this CPU"))
    func aKeptLayerSendsItsShareWheneverTheCPUComputedPartOfIt() throws {
        let (model, prompt, reference, bytes) = try deepseekModel()
        let moeLayers = model.weights.layers.filter { if case .moe = $0.feedForward { true } else { false } }.count
        for sharedOnDevice in [true, false] {
            let gpu = try denseAccelerator(model, budgetBytes: model.weights.routedExperts.count * bytes)
            if !sharedOnDevice { gpu.dense.sharedMLP = gpu.dense.sharedMLP.map { _ in DeviceMLP() } }
            let dense = CheckingDenseOffload(gpu, weights: model.weights, compute: Self.bf16!)
            model.install(experts: try HybridExecutor(weights: model.weights, accelerator: gpu, cost: HybridExecutorTests.cost, maxSwapsPerStep: 0))
            model.install(dense: dense)
            defer { model.install(experts: nil); model.install(dense: nil) }
            let logits = try Generator(model: model, blockSize: 16).allLogits(prompt)
            #expect(SoftwareCUDA.error == "" && gpu.denseFailure == nil)
            #expect(moeLayers > 0 && dense.layerOutputsChecked == moeLayers)
            #expect(dense.emptySharesChecked == (sharedOnDevice ? moeLayers : 0))
            #expect(gpu.counters["hybrid_gpu_residual_empty_shares"] == Double(dense.emptySharesChecked))
            #expect(dense.worstRelativeDifference < 4e-3, "\(dense.worstRelativeDifference)")
            #expect(logits.map(argmax) == reference.map(argmax))
        }
    }

    /// A device that fails (a launch faults, for good) while it holds the
    /// residual stream: the rows it held cannot come back, so the forward
    /// computes again from the host's rows, from the first layer it kept,
    /// on the CPU, and the logits are the CPU's. Failures injected at
    /// launches spread over the forward: in a front, among the experts,
    /// in a kept layer's output. On the bundled model, and on transformers'
    /// DeepSeek-V3 checkpoint (latent attention; two dense layers first,
    /// which the device computed before it failed: within 1e-6 of the
    /// CPU's all the same).
    @Test(.enabled(if: bf16 != nil, "no bfloat16 compute on this CPU"), arguments: [false, true])
    func aDeviceFailingWhileItHoldsTheResidualStreamLosesNoRequest(deepseek: Bool) throws {
        let (model, prompt, reference, bytes) = deepseek ? try deepseekModel() : try bf16Model()
        let c = model.config
        func run(failingAt launch: Int?) throws -> (logits: [[Float]], recomputed: Int, launches: Int) {
            let gpu = try denseAccelerator(model, budgetBytes: model.weights.routedExperts.count / 2 * bytes)
            model.install(experts: try HybridExecutor(weights: model.weights, accelerator: gpu, cost: HybridExecutorTests.cost, maxSwapsPerStep: 0))
            model.install(dense: gpu)
            // The sticky error cleared before the accelerator goes, so it can
            // free its device memory (which later tests count on).
            defer { SoftwareCUDA.reset(); model.install(experts: nil); model.install(dense: nil) }
            model.resetProfile()
            let before = SoftwareCUDA.counter("launches")
            if let launch { SoftwareCUDA.failLaunch(after: launch) }
            let logits = try Generator(model: model, blockSize: 16).allLogits(prompt)
            if launch != nil { #expect(SoftwareCUDA.error != "" && gpu.denseFailure != nil) }
            return (logits, model.profile.layersRecomputed, SoftwareCUDA.counter("launches") - before)
        }
        let clean = try run(failingAt: nil)
        #expect(clean.recomputed == 0 && clean.launches > 4 * c.numLayers)
        var recomputedRuns = 0
        for launch in [clean.launches / 5, 2 * clean.launches / 5, 3 * clean.launches / 5, 4 * clean.launches / 5, clean.launches - 1] {
            let failed = try run(failingAt: launch)
            #expect(failed.logits.allSatisfy { $0.allSatisfy(\.isFinite) })
            if failed.recomputed > 0 {
                recomputedRuns += 1
                // Again from the embedding's rows (the first layer kept), on the CPU.
                #expect(failed.recomputed <= c.numLayers, "\(failed.recomputed) layers recomputed")
                #expect(maxRelativeDifference(failed.logits, reference) < 1e-6, "failing at launch \(launch)")
            }
            #expect(failed.logits.map(argmax) == reference.map(argmax) || maxRelativeDifference(failed.logits, reference) < 5e-2)
        }
        // DeepSeek's earlier failure points fall in its dense layers, before
        // anything was kept.
        #expect(recomputedRuns >= (deepseek ? 2 : 3))
    }

    /// A KV cache whose copy does not fit the device leaves attention on
    /// the CPU for good, saying why; the products go on.
    @Test(.enabled(if: bf16 != nil, "no bfloat16 compute on this CPU"))
    func aKVCacheTooLargeForTheDeviceLeavesAttentionOnTheCPU() throws {
        let (model, _, _, _) = try bf16Model()
        SoftwareCUDA.reset()
        let gpu = try CUDAAccelerator(config: model.config, sampleExpert: model.weights.routedExpertsByLayer[0][0], deviceIndex: 0,
                                      budgetBytes: 0, uploadSlots: 1, searchPath: [try SoftwareCUDA.directory.get()])
        let c = model.config
        var sequence: Int32 = 0, position: Int32 = 0, table: Int32 = 0, start: Int32 = 0
        let q = [Float](repeating: 1, count: c.numHeads * c.headDim), kv = [Float](repeating: 1, count: c.numKVHeads * c.headDim)
        var out = [Float](repeating: 0, count: q.count)
        func attend(blocks: Int) -> Bool {
            withUnsafePointer(to: &sequence) { s in withUnsafePointer(to: &position) { p in withUnsafePointer(to: &table) { tb in
                withUnsafePointer(to: &start) { st in
                    let batch = AttentionBatch(tokens: 1, numHeads: c.numHeads, numKVHeads: c.numKVHeads, headDim: c.headDim, scale: 0.125,
                                               roundsToBF16: true, cache: ObjectIdentifier(gpu), numBlocks: blocks, blockSize: 16,
                                               tokenSequence: s, tokenPosition: p, tables: tb, tableStart: st, sequences: 1, tableEntries: 1)
                    return gpu.attention(layer: 0, batch: batch, q: q, k: kv, v: kv, out: &out)
                }
            } } }
        }
        // 1M blocks: 6 layers x 2 x 1M x 16 x 2 x 64 x 2 bytes, far beyond 1 GiB.
        #expect(!attend(blocks: 1 << 20))
        #expect(gpu.attentionFailure?.contains("the KV cache copy (48.00 GiB for 6 layers) does not fit the GPU beside the budget: lower --kv-cache-memory or gpu_memory") == true,
                "\(gpu.attentionFailure ?? "-")")
        // Not asked again, even for a cache that would fit.
        #expect(!attend(blocks: 1))
        #expect(gpu.counters["hybrid_gpu_attention_failed"] == 1 && gpu.counters["hybrid_gpu_attention_layers"] == 0)
        #expect(SoftwareCUDA.error == "")
    }

    /// `--execution hybrid` as the CLI builds it, on a copy of the default
    /// model (the measured costs are cached beside it).
    func hybridContext() throws -> (model: Transformer, context: ExecutionContext, registry: StrategyRegistry, directory: String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("hybrid-model-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for name in try FileManager.default.contentsOfDirectory(atPath: PluginFixtures.defaultModel) where !name.hasPrefix(".") {
            try FileManager.default.createSymbolicLink(atPath: directory + "/" + name, withDestinationPath: PluginFixtures.defaultModel + "/" + name)
        }
        let model = try Transformer(directory: directory)
        try model.configure(compute: Self.bf16!)
        let registry = StrategyRegistry()
        HybridExecution.register(in: registry)
        let context = ExecutionContext(model: model, topology: try CPUTopology.load()) { _ in ExpertMap(numDevices: 1, device: []) }
        return (model, context, registry, directory)
    }

    func config(_ extra: String = "", gpuMemory: String = "5MiB") throws -> String {
        "{\"gpu_memory\": \"\(gpuMemory)\", \"cuda_library_path\": \"\(try SoftwareCUDA.directory.get())\"\(extra)}"
    }

    @Test(.enabled(if: bf16 != nil, "no bfloat16 compute on this CPU"))
    func hybridStrategyStartsMeasuresAndComputesOnTheDevice() throws {
        let (model, context, registry, directory) = try hybridContext()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let prompt = (0..<24).map { Int32(($0 * 31 + 5) % model.config.vocabSize) }
        // Figures cached from another GPU are measured again, not used.
        let stale = HybridCostModel(cpuFlopsPerSecond: [.init(tokens: 1, flopsPerSecond: 1)], cpuReadBytesPerSecond: 1,
                                    hostToDeviceBytesPerSecond: 1, gpuFlopsPerSecond: 1, gpuLaunchSeconds: 1, measuredOn: "another GPU")
        try stale.save(to: HybridCostModel.cachePath(model: directory))
        SoftwareCUDA.reset()
        let summary = try registry.makeExecution("hybrid", config: try config()).prepare(context)
        defer { model.install(experts: nil); model.install(dense: nil) }
        #expect(summary.devices.map(\.kind) == [.cpuPool, .accelerator])
        #expect(summary.notes[0].contains("Software CUDA device 0 (host memory)"))
        let hybrid = try #require(model.experts as? HybridExecutor)
        let gpu = try #require(model.dense as? CUDAAccelerator)
        // Per layer q, k, v, o (256+128+128+256 rows of 256) and the router
        // (16 rows), all BF16, and the q and k norms (64 Float32 each) and
        // the layer's two norms (256 each); the tied LM head (4096 rows)
        // with the final norm (256).
        let denseBytes = 6 * ((512 * 256 + 256 * 256 + 16 * 256) * 2 + (2 * 64 + 2 * 256) * 4) + 4096 * 256 * 2 + 256 * 4
        #expect(CUDAAccelerator.denseBytes(model.weights) == denseBytes && gpu.dense.bytes == denseBytes)
        // The 5 MiB budget less the dense weights, in 96 KiB experts.
        #expect(hybrid.resident.resident.count == ((5 << 20) - denseBytes) / 98_304)
        #expect(summary.notes[1] == "dense products on the GPU: 4 MiB of weights")
        // The plan follows the costs measured just now, so which experts
        // run where varies; each product is checked against the CPU in the
        // tests above, and here per dense product through the same wiring.
        let checked = CheckingDenseOffload(gpu, weights: model.weights, compute: Self.bf16!)
        model.install(dense: checked)
        let logits = try Generator(model: model, blockSize: 16).allLogits(prompt)
        #expect(SoftwareCUDA.error == "" && gpu.denseFailure == nil && hybrid.lastAcceleratorError == nil)
        #expect(logits.count == prompt.count && logits.allSatisfy { $0.allSatisfy(\.isFinite) })
        #expect(checked.productsChecked > 0 && checked.worstRelativeDifference < 2e-3, "\(checked.worstRelativeDifference)")
        #expect(checked.wholeLayersChecked == 6 && gpu.attentionFailure == nil)
        #expect(hybrid.stats.counters["hybrid_gpu_attention_layers"] == 6)
        #expect(hybrid.stats.counters["hybrid_gpu_attention_whole_layers"] == 6)
        // Every dense product of every forward besides attention's: per
        // layer the router, then the LM head.
        let products = try #require(hybrid.stats.counters["hybrid_gpu_dense_products"])
        #expect(products > 0 && Int(products) % (6 + 1) == 0, "\(products)")
        #expect(hybrid.stats.counters["hybrid_gpu_dense_weight_bytes"] == Double(denseBytes))
        let cost = try HybridCostModel.load(from: HybridCostModel.cachePath(model: directory))
        #expect(cost.measuredOn?.hasPrefix("Software CUDA device 0 (host memory)") == true, "\(cost.measuredOn ?? "-")")
        #expect(cost.measuredOn?.hasSuffix("threads") == true && cost.gpuLaunchSeconds != 1)
        #expect(cost.hostToDeviceBytesPerSecond > 0 && cost.gpuFlopsPerSecond > 0 && cost.gpuLaunchSeconds > 0)
        #expect(!cost.cpuFlopsPerSecond.isEmpty)
    }

    /// `--placement-profile` seeds the resident experts: the hottest of the
    /// profile that fit, before any request; a profile of another model is
    /// a start-up error saying so.
    @Test(.enabled(if: bf16 != nil, "no bfloat16 compute on this CPU"))
    func aRoutingProfileSeedsTheResidentExperts() throws {
        let (model, _, registry, directory) = try hybridContext()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var profile = RoutingProfile(numLayers: 6, numExperts: 16, topK: 2)
        // Seven experts fit (5 MiB less the dense weights): the hottest seven.
        let hot = [(5, 3), (0, 9), (2, 2), (4, 15), (1, 0), (3, 7), (5, 11), (2, 8)]
        for (rank, (l, e)) in hot.enumerated() { profile.expertTokens[l][e] = 1000 - rank }
        var context = ExecutionContext(model: model, topology: try CPUTopology.load(), profile: profile) { _ in ExpertMap(numDevices: 1, device: []) }
        SoftwareCUDA.reset()
        _ = try registry.makeExecution("hybrid", config: try config()).prepare(context)
        defer { model.install(experts: nil); model.install(dense: nil) }
        let hybrid = try #require(model.experts as? HybridExecutor)
        #expect(hybrid.resident.resident == Set(hot.prefix(7).map { ResidentExperts.Expert(layer: $0.0, expert: $0.1) }))
        context.profile = RoutingProfile(numLayers: 6, numExperts: 8, topK: 2)
        #expect { try registry.makeExecution("hybrid", config: try config()).prepare(context) } throws: { error in
            "\(error)".contains("the routing profile (--placement-profile) has 6 layers x 8 experts, the model 6 x 16: record one for this model with switchyard bench --record-routing")
        }
    }

    /// A random DeepSeek-V3 BF16 checkpoint with latent attention (with
    /// the q bottleneck when `qLoraRank` is given), a dense first layer,
    /// a shared expert and group-limited routing (4 groups of 2 experts,
    /// the best 2 kept), nonzero selection biases and latent norm weights;
    /// and the accelerator holding its dense weights.
    func latentModel(qLoraRank: Int?, in dir: URL) throws -> (model: Transformer, gpu: CUDAAccelerator) {
        var preset = try ModelPreset.load(PluginFixtures.tests.deletingLastPathComponent().appendingPathComponent("models/presets/tiny.json").path)
        (preset.kvLoraRank, preset.qLoraRank, preset.qkNopeHeadDim, preset.qkRopeHeadDim, preset.vHeadDim) = (32, qLoraRank, 16, 8, 16)
        (preset.nSharedExperts, preset.firstKDenseReplace) = (1, 1)
        (preset.nGroup, preset.topkGroup) = (4, 2)
        try RandomCheckpoint.create(.init(architecture: .deepseekV3, preset: preset, seed: 4, dtype: .bf16), at: dir)
        try setBiases(named: ["e_score_correction_bias", "a_layernorm"], in: dir)
        let model = try Transformer(directory: dir.path)
        try model.configure(compute: Self.bf16!)
        let gpu = try denseAccelerator(model, budgetBytes: 0)
        #expect(gpu.dense.bytes == CUDAAccelerator.denseBytes(model.weights))
        return (model, gpu)
    }

    /// DeepSeek's latent attention by its projections, where the whole
    /// layer is not offered: q (or q_a and q_b with the CPU's norm
    /// between), kv_a and o on the device, each checked against the CPU's;
    /// the absorbed per-head products and attention over the latents stay
    /// on the CPU.
    @Test(.enabled(if: bf16 != nil, "no bfloat16 compute on this CPU"), arguments: [nil, 16] as [Int?])
    func latentAttentionProjectionsRunOnTheDevice(qLoraRank: Int?) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("latent-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (model, gpu) = try latentModel(qLoraRank: qLoraRank, in: dir)
        let prompt = (0..<11).map { Int32(($0 * 31 + 9) % model.config.vocabSize) }
        let checked = CheckingDenseOffload(gpu, weights: model.weights, compute: Self.bf16!)
        (checked.offersWholeLayers, checked.offersLayerFronts) = (false, false)
        model.install(dense: checked)
        defer { model.install(dense: nil) }
        _ = try Generator(model: model, blockSize: 4).allLogits(prompt)
        #expect(SoftwareCUDA.error == "" && gpu.denseFailure == nil)
        // Per layer q (or q_a and q_b), kv_a, o; layer 0's MLP, layer 1's
        // router and shared expert; the LM head.
        let perLayer = qLoraRank == nil ? 3 : 4
        #expect(checked.productsChecked == 2 * perLayer + 1 + 2 + 1, "\(checked.productsChecked)")
        #expect(model.config.routing.groupCount == 4 && model.config.routing.groupsKept == 2)
        // Layer 1's routes chosen on the device: sigmoid, selection bias,
        // groups, as the CPU chooses them.
        #expect(checked.routesChecked == 1 && gpu.counters["hybrid_gpu_layers_routed"] == 1)
        #expect(gpu.dense.products == checked.productsChecked)
        #expect(checked.worstRelativeDifference < 2e-3, "worst relative difference \(checked.worstRelativeDifference)")
    }

    /// DeepSeek's latent attention whole on the device, one round trip a
    /// layer: an 11-token prefill, then decodes that read the rows it
    /// stored in the device's Float32 copy of the cache. Each layer's
    /// cached rows and output checked against the absorbed form written
    /// out plainly (`CheckingDenseOffload.latentAttentionLayer`); softmax
    /// and norm blocks of 4 threads, value sums in pieces of 3 keys, the
    /// prefill's tokens in chunks, as long contexts take them. The per-head
    /// products as one strided-batched call each, or (`refusingBatched`)
    /// one product per head. The prefill's attention through the kernels,
    /// or (`products`) through cuBLAS's Float32 products
    /// (`CUDAAttentionGEMM.swift`).
    @Test(.enabled(if: bf16 != nil, "no bfloat16 compute on this CPU"), arguments: [nil, 16] as [Int?], [false, true])
    func latentAttentionLayersRunWholeOnTheDevice(qLoraRank: Int?, refusingBatched: Bool) throws {
        for products in [false, true] { try latentAttentionWhole(qLoraRank: qLoraRank, refusingBatched: refusingBatched, products: products) }
    }

    private func latentAttentionWhole(qLoraRank: Int?, refusingBatched: Bool, products: Bool) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("latent-whole-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (model, gpu) = try latentModel(qLoraRank: qLoraRank, in: dir)
        SoftwareCUDA.refuseBatchedProducts(refusingBatched)
        defer { SoftwareCUDA.refuseBatchedProducts(false) }
        let c = model.config, prompt = (0..<11).map { Int32(($0 * 31 + 9) % c.vocabSize) }
        let reference = try Generator(model: model, blockSize: 4).generate(prompt: prompt, maxTokens: 4)
        #expect(gpu.dense.latentParts.allSatisfy { $0.whole })
        (gpu.attention.softmaxThreads, gpu.attention.valuePiece, gpu.attention.normThreads, gpu.attention.chunkBytes) = (4, 3, 4, 4096)
        // The products over the prompt in chunks of a few tokens.
        gpu.attention.gemmMinTokens = products ? 4 : 0
        if products { gpu.attention.chunkBytes = 1024 }
        let chunks = products ? (prompt.count + max(1, 1024 / (4 * c.numHeads * prompt.count)) - 1) / max(1, 1024 / (4 * c.numHeads * prompt.count)) : 0
        let checked = CheckingDenseOffload(gpu, weights: model.weights, compute: Self.bf16!)
        model.install(dense: checked)
        defer { model.install(dense: nil) }
        let result = try Generator(model: model, blockSize: 4).generate(prompt: prompt, maxTokens: 4)
        #expect(gpu.counters["hybrid_gpu_attention_gemm_sequences"] == (products ? Double(c.numLayers) : 0))
        #expect(SoftwareCUDA.error == "" && gpu.attentionFailure == nil && gpu.denseFailure == nil)
        // The prefill and three decodes (the fourth token needs no forward
        // past its logits), every layer whole on the device: the dense
        // layer 0 alone, the MoE layer 1 as its front (norms, attention,
        // router, shared expert) keeping the residual rows.
        #expect(checked.latentLayersChecked == 4 * c.numLayers, "\(checked.latentLayersChecked)")
        #expect(gpu.counters["hybrid_gpu_attention_index_uploads"] == 4)
        #expect(gpu.counters["hybrid_gpu_attention_slot_uploads"] == (products ? 1 : 0))
        #expect(gpu.counters["hybrid_gpu_attention_whole_layers"] == Double(4 * c.numLayers))
        #expect(checked.frontsChecked == 4 && checked.frontsKept == 4 && checked.layerOutputsChecked == 4)
        #expect(checked.sharedExpertsKept == 4 && checked.routesChecked == 4)
        // No projection was asked apart: per forward layer 0's MLP, layer 1's
        // router logits (its shared expert checked with the layer's output),
        // the LM head.
        #expect(checked.productsChecked == 4 * 3, "\(checked.productsChecked)")
        #expect(checked.worstRelativeDifference < 2e-3, "worst relative difference \(checked.worstRelativeDifference)")
        // Two per-head products a layer: one call over the heads, or one per
        // head; with the prefill's attention through products, two more per
        // layer and chunk.
        let perHead = SoftwareCUDA.counter("strided_gemms")
        #expect(perHead == (refusingBatched ? 0 : 2 * checked.latentLayersChecked + 2 * c.numLayers * chunks), "\(perHead), \(chunks) chunks")
        #expect(!products || chunks > 1)
        // The CPU expands the prefill's attention where the device absorbs
        // it: another order of products, the same tokens.
        #expect(result.tokens == reference.tokens)
    }

    /// The same on the transformers-made DeepSeek-V3 checkpoint the CPU is
    /// checked against (`ReferenceLogitsTests`): RoPE not interleaved,
    /// two dense layers first, its own norm weights. The device's greedy
    /// continuation of the reference prompt is the CPU's.
    @Test(.enabled(if: bf16 != nil, "no bfloat16 compute on this CPU"))
    func latentAttentionOnTheDeviceFollowsTheCPUOnTheTransformersCheckpoint() throws {
        let (model, prompt, _, _) = try deepseekModel()
        #expect(model.config.rope.interleaved == false)
        let reference = try Generator(model: model, blockSize: 4).generate(prompt: prompt, maxTokens: 6)
        let gpu = try denseAccelerator(model, budgetBytes: 0)
        let checked = CheckingDenseOffload(gpu, weights: model.weights, compute: Self.bf16!)
        model.install(dense: checked)
        defer { model.install(dense: nil) }
        let result = try Generator(model: model, blockSize: 4).generate(prompt: prompt, maxTokens: 6)
        #expect(SoftwareCUDA.error == "" && gpu.attentionFailure == nil && gpu.denseFailure == nil)
        #expect(checked.latentLayersChecked == 6 * model.config.numLayers, "\(checked.latentLayersChecked)")
        // Its two dense layers whole, then its two MoE layers as fronts,
        // the residual rows kept on the device throughout.
        #expect(checked.denseLayersChecked == 6 * 2 && checked.frontsKept == 6 * 2 && checked.layerOutputsChecked == checked.frontsKept)
        #expect(checked.worstRelativeDifference < 2e-3, "worst relative difference \(checked.worstRelativeDifference)")
        #expect(result.tokens == reference.tokens)
    }

    /// gpt-oss's experts (biased, clamped SwiGLU) are not ones the GPU
    /// path computes: hybrid says so and names `cpu_moe`; with it, every
    /// expert runs on the CPU and the dense products and attention (sinks,
    /// sliding window, o bias) on the device, each checked as it runs.
    @Test(.enabled(if: bf16 != nil, "no bfloat16 compute on this CPU"))
    func gptOssRunsDenseWorkOnTheDeviceWithItsExpertsOnTheCPU() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("hybrid-gpt-oss-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let presets = PluginFixtures.tests.deletingLastPathComponent().appendingPathComponent("models/presets/tiny.json").path
        try RandomCheckpoint.create(.init(architecture: .gptOss, preset: ModelPreset.load(presets), seed: 9, dtype: .bf16), at: dir)
        let model = try Transformer(directory: dir.path)
        try model.configure(compute: Self.bf16!)
        let registry = StrategyRegistry()
        HybridExecution.register(in: registry)
        let context = ExecutionContext(model: model, topology: try CPUTopology.load()) { _ in ExpertMap(numDevices: 1, device: []) }
        SoftwareCUDA.reset()
        #expect { try registry.makeExecution("hybrid", config: try config()).prepare(context) } throws: { error in
            "\(error)".contains("this checkpoint's are bf16 clamped SwiGLU with biases: pass \"cpu_moe\": true to keep every expert on the CPU")
        }
        let summary = try registry.makeExecution("hybrid", config: try config(", \"cpu_moe\": true")).prepare(context)
        defer { model.install(experts: nil); model.install(dense: nil) }
        #expect(summary.notes[0].hasPrefix("0 experts resident in 0 MiB"))
        #expect(summary.notes.contains("experts: all on the CPU (the GPU path computes plain BF16 SwiGLU experts only)"))
        let hybrid = try #require(model.experts as? HybridExecutor)
        let gpu = try #require(model.dense as? CUDAAccelerator)
        #expect(!gpu.expertsFitDevice && gpu.dense.attentionParts.map(\.sinks).allSatisfy { $0 != 0 })
        let checked = CheckingDenseOffload(gpu, weights: model.weights, compute: Self.bf16!)
        model.install(dense: checked)
        let result = try Generator(model: model, blockSize: 4).generate(prompt: (0..<9).map { Int32(($0 * 41 + 2) % 384) }, maxTokens: 3)
        #expect(result.tokens.count == 3)
        #expect(SoftwareCUDA.error == "" && gpu.denseFailure == nil && gpu.attentionFailure == nil)
        #expect(checked.wholeLayersChecked >= 2 * model.config.numLayers && checked.productsChecked > 0)
        #expect(checked.worstRelativeDifference < 2e-3, "\(checked.worstRelativeDifference)")
        #expect(hybrid.siteCounters.cpuTokens > 0 && hybrid.siteCounters.residentTokens == 0 && hybrid.siteCounters.uploadedTokens == 0)
    }

    @Test(.enabled(if: bf16 != nil, "no bfloat16 compute on this CPU"))
    func aDriverWithoutDevicesOrMemoryIsAStartUpErrorThatSaysSo() throws {
        let (model, context, registry, directory) = try hybridContext()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        defer { SoftwareCUDA.configure(devices: 1, memoryBytes: 1 << 30) }
        SoftwareCUDA.configure(devices: 0, memoryBytes: 1 << 30)
        #expect { try registry.makeExecution("hybrid", config: try config()).prepare(context) } throws: { error in
            "\(error)".contains("hybrid needs a CUDA GPU: the CUDA driver (\(try SoftwareCUDA.directory.get())/libcuda.so.1) reports no devices")
        }
        SoftwareCUDA.configure(devices: 1, memoryBytes: 1 << 30)
        #expect { try registry.makeExecution("hybrid", config: try config(", \"device\": 3")).prepare(context) } throws: { error in
            "\(error)".contains("device 3 requested, the driver reports 1")
        }
        // A budget the dense weights fill.
        #expect { try registry.makeExecution("hybrid", config: try config(gpuMemory: "4MiB")).prepare(context) } throws: { error in
            "\(error)".contains("hybrid: the dense weights need 4.3 MiB of the 4.0 MiB gpu_memory budget, leaving none for experts: raise gpu_memory or pass \"dense\": false")
        }
        // 1 MiB: room for the upload ring, not for 2 GiB of experts.
        SoftwareCUDA.configure(devices: 1, memoryBytes: 1 << 20)
        #expect { try registry.makeExecution("hybrid", config: try config(", \"dense\": false", gpuMemory: "2GiB")).prepare(context) } throws: { error in
            // Free memory is what earlier tests' accelerators left of the 1 MiB.
            "\(error)".contains("--gpu-memory asks for 2.00 GiB of experts plus 0 KiB of dense weights and 384 KiB of upload staging, but Software CUDA device 0 (host memory) has ")
        }
        #expect(model.experts is SharedPoolExecutor)
    }
}
