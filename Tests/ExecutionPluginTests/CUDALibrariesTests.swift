import Foundation
import Testing
@testable import HybridExecution

/// Finding CUDA at run time fails with messages that name what was looked
/// for, where, and the fix; none of this needs a GPU.
@Suite struct CUDALibrariesTests {
    func scratchDirectory() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cuda-libs-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test func aMissingDriverNamesTheLibraryTheDirectoriesAndTheFix() throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        guard case .failure(let e) = CUDADriver.load(searchPath: [dir], systemSearch: false) else {
            Issue.record("loaded a driver from an empty directory")
            return
        }
        #expect(e == .libraryNotFound(names: ["libcuda.so.1", "libcuda.so"], searched: [dir], systemSearch: false, failedToLoad: []))
        #expect(e.description.contains("libcuda.so.1 / libcuda.so not found: looked in 1 directories (\(dir))"))
        #expect(e.description.contains("SWITCHYARD_CUDA_LIBRARY_PATH"))
    }

    /// A file with the driver's name that is not a shared library.
    @Test func aLibraryThatFailsToLoadIsReportedWithTheLoadersReason() throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data("not an ELF file".utf8).write(to: URL(fileURLWithPath: dir + "/libcuda.so.1"))
        guard case .failure(let e) = CUDADriver.load(searchPath: [dir], systemSearch: false) else {
            Issue.record("loaded a text file as the driver")
            return
        }
        #expect(e.description.contains("found but failed to load: \(dir)/libcuda.so.1"))
    }

    /// The C library under the driver's name: it loads, but has no
    /// cuGetProcAddress.
    @Test func aLibraryWithoutTheDriverEntryPointIsNamed() throws {
        let candidates = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6",
                          "/usr/lib64/libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6"]
        guard let libc = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
            Issue.record("no libc.so.6 at \(candidates)")
            return
        }
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createSymbolicLink(atPath: dir + "/libcuda.so.1", withDestinationPath: libc)
        guard case .failure(let e) = CUDADriver.load(searchPath: [dir], systemSearch: false) else {
            Issue.record("libc passed for the CUDA driver")
            return
        }
        #expect(e == .missingSymbol("cuGetProcAddress", library: dir + "/libcuda.so.1"))
        #expect(e.description.contains("not a CUDA 12 or newer driver library"))
    }

    @Test func searchPathPutsTheUsersDirectoriesFirstThenToolkitThenPipWheels() {
        let dirs = CUDALibraries.defaultSearchPath(environment: ["SWITCHYARD_CUDA_LIBRARY_PATH": "/opt/a:/opt/b", "CUDA_HOME": "/opt/cuda"])
        #expect(Array(dirs.prefix(5)) == ["/opt/a", "/opt/b", "/opt/cuda/lib64", "/opt/cuda/lib", "/opt/cuda/compat"])
        #expect(dirs.contains("/usr/local/cuda/lib64") && dirs.last == "/usr/lib/wsl/lib")
    }

    /// A CUDA 13 cuBLAS or NVRTC needs a CUDA 13 driver; a CUDA 12 one
    /// runs on both, so a CUDA 12 driver looks for CUDA 12 libraries only.
    @Test func librariesAreLookedForByTheDriversMajorVersion() {
        #expect(CUDALibraries.sonames("libcublas", driverVersion: 13000) == ["libcublas.so.13", "libcublas.so.12", "libcublas.so"])
        #expect(CUDALibraries.sonames("libnvrtc", driverVersion: 12080) == ["libnvrtc.so.12", "libnvrtc.so"])
        #expect(CUDALibraries.sonames("libnvrtc", driverVersion: 14010) == ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"])
        #expect(CUDALibraries.sonames("libnvrtc", driverVersion: nil) == ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"])
    }

    /// Only a CUDA 13 cuBLAS beside a CUDA 12.8 driver: the error says the
    /// library is too new for the driver and how to fix it, not "not found".
    @Test func aLibraryNewerThanTheDriverIsNamedAsTheMismatch() throws {
        let dir = try SoftwareCUDA.directory.get()
        let result = CUDALibraries.open("libcublas", driverVersion: 12080, searchPath: [dir], systemSearch: false)
        guard case .failure(let error) = result else { Issue.record("a CUDA 13 library was taken for a CUDA 12 driver"); return }
        #expect(error == .libraryNeedsNewerDriver(path: dir + "/libcublas.so.13", driverVersion: 12080))
        #expect(error.description.contains("is a CUDA 13 library, but the driver is CUDA 12.8, which cannot run it"))
        #expect(error.description.contains("pip install nvidia-cublas-cu12 nvidia-cuda-nvrtc-cu12"))
        // A CUDA 13 driver takes it.
        #expect((try? CUDALibraries.open("libcublas", driverVersion: 13000, searchPath: [dir], systemSearch: false).get().path) == dir + "/libcublas.so.13")
    }

    /// The driver's refusals of the kernels, each with its cause and fix;
    /// the NVRTC wheel to install is named as PyPI names it for the
    /// driver's CUDA version.
    @Test func aRefusedKernelImageNamesTheVersionsAndTheFix() throws {
        let nvrtc = try CUDALibraries.open(["libnvrtc.so.13"], searchPath: [try SoftwareCUDA.directory.get()], systemSearch: false).get()
        let h100 = GPUDevice(index: 0, name: "NVIDIA H100", totalBytes: 0, freeBytes: 0, computeCapability: 90)
        let ptx = CUDAAccelerator.KernelImage(bytes: [], target: "PTX"), cubin = CUDAAccelerator.KernelImage(bytes: [], target: "sm_80")
        let old12 = CUDAAccelerator.moduleLoadFailure(code: 222, image: ptx, nvrtc: nvrtc, driverVersion: 12040, gpu: h100)
        #expect(old12.contains("the CUDA 12.4 driver cannot compile the kernels, compiled by NVRTC 13.0"))
        #expect(old12.contains("pip install 'nvidia-cuda-nvrtc-cu12==12.4.*'"))
        let old13 = CUDAAccelerator.moduleLoadFailure(code: 218, image: ptx, nvrtc: nvrtc, driverVersion: 13000, gpu: h100)
        #expect(old13.contains("pip install 'nvidia-cuda-nvrtc==13.0.*'"))
        let wrong = CUDAAccelerator.moduleLoadFailure(code: 209, image: cubin, nvrtc: nvrtc, driverVersion: 13000, gpu: h100)
        #expect(wrong.contains("as sm_80 hold no code for NVIDIA H100 (compute 9.0)"))
    }

    @Test func probeWithoutLibrariesReportsEachMissingPiece() throws {
        let dir = try scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let probe = CUDALibraries.probe(searchPath: [dir], systemSearch: false)
        let lines = probe.description.split(separator: "\n").map(String.init)
        #expect(lines.count == 3)
        #expect(lines[0].hasPrefix("no usable GPU: libcuda.so.1 / libcuda.so not found"))
        #expect(lines[1].hasPrefix("cuBLAS: not found (libcublas.so.13 / libcublas.so.12 / libcublas.so not found"))
        #expect(lines[2].hasPrefix("NVRTC: not found (libnvrtc.so.13"))
    }
}

/// The GPU-side pieces that can be checked without a GPU where the CUDA
/// pip wheels are installed (this project's build machines have them, CI
/// does not): the SiLU kernel compiles to PTX, and cuBLAS exports what the
/// accelerator calls.
@Suite struct CUDAToolkitTests {
    static let nvrtc = try? CUDALibraries.open(["libnvrtc.so.13", "libnvrtc.so.12"], searchPath: CUDALibraries.defaultSearchPath(),
                                               systemSearch: true).get()
    static let cublas = try? CUDALibraries.open(["libcublas.so.13", "libcublas.so.12"], searchPath: CUDALibraries.defaultSearchPath(),
                                                systemSearch: true).get()

    @Test(.enabled(if: nvrtc != nil, "NVRTC is not installed"))
    func kernelsCompileToPTXWithTheirEntryPointsAndParameters() throws {
        let ptx = CUDAAccelerator.text(try CUDAAccelerator.compileKernel(nvrtc: Self.nvrtc!))
        #expect(ptx.contains(".visible .entry silu_mul_bf16("))
        // Four parameters: gate-up, output, width, count.
        #expect(ptx.contains("silu_mul_bf16_param_3") && !ptx.contains("silu_mul_bf16_param_4"))
        // Attention's kernels, those of a whole attention layer and the
        // expert rows' gather and combine, each with the parameter count
        // `DeviceKernel.parameters` holds for it (which launches must pass).
        for kernel in CUDAAccelerator.DeviceKernel.allCases {
            let (name, parameters) = (kernel.name, kernel.parameters)
            #expect(ptx.contains(".visible .entry \(name)("), "\(name)")
            #expect(ptx.contains("\(name)_param_\(parameters - 1)") && !ptx.contains("\(name)_param_\(parameters)"), "\(name)")
        }
    }

    /// The cubin the accelerator loads on an H100 or H200 (sm_90): the
    /// real NVRTC runs ptxas on every kernel, so this is the GPU's own
    /// assembler accepting them; an architecture NVRTC does not know is
    /// the error the accelerator falls back to PTX on.
    @Test(.enabled(if: nvrtc != nil, "NVRTC is not installed"))
    func kernelsAssembleToACubinForSM90AndAnUnknownArchitectureIsRefused() throws {
        let cubin = try CUDAAccelerator.compileKernel(nvrtc: Self.nvrtc!, architecture: 90)
        #expect(cubin.count > 10_000)
        #expect(cubin.prefix(4).map { UInt8(bitPattern: $0) } == [0x7F, 0x45, 0x4C, 0x46])  // an ELF image
        #expect(throws: NVRTCUnknownArchitecture.self) { try CUDAAccelerator.compileKernel(nvrtc: Self.nvrtc!, architecture: 990) }
        let image = try CUDAAccelerator.compileModule(nvrtc: Self.nvrtc!, computeCapability: 990)
        #expect(image.target == "PTX" && CUDAAccelerator.text(image.bytes).contains(".visible .entry silu_mul_bf16("))
        #expect(CUDAAccelerator.version(of: Self.nvrtc!).hasPrefix("1"))
    }

    @Test(.enabled(if: cublas != nil, "cuBLAS is not installed"))
    func cublasExportsEveryFunctionTheAcceleratorCalls() {
        for name in CUDAAccelerator.cublasSymbols { #expect(Self.cublas!.symbol(name) != nil, "\(name)") }
    }
}
