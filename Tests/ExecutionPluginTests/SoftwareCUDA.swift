import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The software CUDA device (`Tests/SoftwareCUDA/software_cuda.c`), built
/// once per test process with the host C compiler into a directory where it
/// stands in for libcuda.so.1, libcublas.so.13 and libnvrtc.so.13 (links to
/// one library, so they share its state as the real ones share a device).
/// Tests that use it run in one serialized suite: the device is global.
enum SoftwareCUDA {
    struct BuildError: Error, CustomStringConvertible {
        var description: String
    }

    /// The directory to put first on the CUDA search path, or why it could
    /// not be built.
    static let directory: Result<String, BuildError> = build()

    /// The C compiler: the one next to `swift` (every Swift toolchain has
    /// clang), else `cc` or `gcc` on the PATH.
    static let compiler: String? = {
        var path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        // `swift` may be a link from /usr/bin into the toolchain.
        if let dir = path.first(where: { FileManager.default.isExecutableFile(atPath: $0 + "/swift") }) {
            path.insert(URL(fileURLWithPath: dir + "/swift").resolvingSymlinksInPath().deletingLastPathComponent().path, at: 0)
        }
        for name in ["clang", "cc", "gcc"] {
            for dir in path where FileManager.default.isExecutableFile(atPath: dir + "/" + name) { return dir + "/" + name }
        }
        return nil
    }()

    static func build() -> Result<String, BuildError> {
        guard let cc = compiler else { return .failure(BuildError(description: "no C compiler (clang, cc, gcc) on the PATH")) }
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("SoftwareCUDA/software_cuda.c").path
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("software-cuda-\(getpid())").path
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let library = dir + "/libsoftcuda.so"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: cc)
        process.arguments = ["-O1", "-shared", "-fPIC", "-o", library, source, "-lm", "-ldl", "-lpthread"]
        let errors = Pipe()
        process.standardError = errors
        do { try process.run() } catch { return .failure(BuildError(description: "\(cc): \(error)")) }
        let log = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { return .failure(BuildError(description: "\(cc) failed on \(source): \(log)")) }
        for name in ["libcuda.so.1", "libcublas.so.13", "libnvrtc.so.13"] {
            try? FileManager.default.removeItem(atPath: dir + "/" + name)
            try? FileManager.default.createSymbolicLink(atPath: dir + "/" + name, withDestinationPath: library)
        }
        guard let handle = dlopen(library, RTLD_NOW | RTLD_LOCAL) else {
            return .failure(BuildError(description: "dlopen \(library): \(String(cString: dlerror()))"))
        }
        self.handle = handle
        typealias Configure = @convention(c) (Int32, Int64, UnsafePointer<CChar>) -> Void
        unsafeBitCast(dlsym(handle, "softcuda_configure")!, to: Configure.self)(1, 1 << 30, cc)
        return .success(dir)
    }

    nonisolated(unsafe) private static var handle: UnsafeMutableRawPointer?

    private static func function<F>(_ name: String, _ type: F.Type) -> F {
        _ = directory  // builds and opens the library on first use
        return unsafeBitCast(dlsym(handle, name)!, to: type)
    }

    /// The device count and memory the driver reports from now on.
    static func configure(devices: Int, memoryBytes: Int) {
        typealias Configure = @convention(c) (Int32, Int64, UnsafePointer<CChar>) -> Void
        function("softcuda_configure", Configure.self)(Int32(devices), Int64(memoryBytes), compiler ?? "cc")
    }

    /// Whether cublasGemmBatchedEx refuses every call (NOT_SUPPORTED).
    static func refuseBatchedProducts(_ refuse: Bool) {
        typealias Refuse = @convention(c) (Int32) -> Void
        function("softcuda_refuse_batched", Refuse.self)(refuse ? 1 : 0)
    }

    /// The device's compute capability (major * 10 + minor), the newest
    /// `sm_` NVRTC compiles for, and whether the driver compiles NVRTC's
    /// PTX (one older than the NVRTC does not); `reset` restores 90, 120,
    /// true.
    static func configureToolkit(computeCapability: Int, nvrtcNewestArchitecture: Int, driverTakesPTX: Bool) {
        typealias Configure = @convention(c) (Int32, Int32, Int32) -> Void
        function("softcuda_configure_toolkit", Configure.self)(Int32(computeCapability), Int32(nvrtcNewestArchitecture), driverTakesPTX ? 1 : 0)
    }

    /// Fails the launch `after` launches from now, for good (a sticky
    /// CUDA_ERROR_LAUNCH_FAILED, as a faulting kernel leaves the context).
    static func failLaunch(after: Int) {
        typealias Fail = @convention(c) (Int64) -> Void
        function("softcuda_fail_launch", Fail.self)(Int64(after))
    }

    /// pinned_h2d_bytes, pageable_h2d_bytes, d2h_bytes, gemms, batched_gemms, launches,
    /// event_waits, max_queued, device_bytes_in_use, host_waits (the host
    /// waiting on the device: stream and event synchronizations).
    static func counter(_ name: String) -> Int {
        typealias Counter = @convention(c) (UnsafePointer<CChar>) -> Int64
        return Int(function("softcuda_counter", Counter.self)(name))
    }

    /// The sticky error's message ("" without one).
    static var error: String {
        typealias ErrorText = @convention(c) () -> UnsafePointer<CChar>
        return String(cString: function("softcuda_error", ErrorText.self)())
    }

    /// Clears the sticky error and the counters, and restores the toolkit's defaults.
    static func reset() {
        typealias Reset = @convention(c) () -> Void
        function("softcuda_reset", Reset.self)()
    }
}
