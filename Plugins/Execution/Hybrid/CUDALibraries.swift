import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The CUDA libraries the hybrid executor needs, found at run time so one
/// binary builds without CUDA and runs everywhere: the driver
/// (`libcuda.so.1`, from the NVIDIA driver, never from pip), cuBLAS and
/// NVRTC (from a CUDA toolkit or the CUDA 13 pip wheels, which put them
/// under `site-packages/nvidia/cu13/lib`). Driver functions are taken
/// through `cuGetProcAddress` at a fixed API version, so a newer driver's
/// changed entry points (CUDA 13's `cuCtxCreate`) cannot be picked up by
/// accident; the devices are queried through their primary contexts.
public enum CUDALibraries {
    /// The API version driver functions are requested at (CUDA 12.0).
    public static let driverAPIVersion: Int32 = 12000

    /// Directories searched before the system's own library search, in
    /// order: `SWITCHYARD_CUDA_LIBRARY_PATH` (colon-separated), a CUDA
    /// toolkit under `CUDA_HOME` or /usr/local/cuda, and the NVIDIA pip
    /// wheels of the active virtual environment, of the system Pythons and
    /// of whichever `python3` is on the PATH.
    public static func defaultSearchPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> [String] {
        var dirs: [String] = []
        if let user = environment["SWITCHYARD_CUDA_LIBRARY_PATH"] {
            dirs += user.split(separator: ":").map(String.init).filter { !$0.isEmpty }
        }
        for home in [environment["CUDA_HOME"], "/usr/local/cuda"].compactMap({ $0 }) {
            dirs += [home + "/lib64", home + "/lib", home + "/compat"]
        }
        var sitePackages: [String] = []
        if let venv = environment["VIRTUAL_ENV"] { sitePackages += pythonSiteDirectories(under: venv + "/lib") }
        if let home = environment["HOME"] { sitePackages += pythonSiteDirectories(under: home + "/.local/lib") }
        sitePackages += pythonSiteDirectories(under: "/usr/local/lib") + pythonSiteDirectories(under: "/usr/lib")
        sitePackages += activePythonSiteDirectories().filter { !sitePackages.contains($0) }
        for site in sitePackages {
            dirs += ["cu13/lib", "cublas/lib", "cuda_nvrtc/lib", "cuda_runtime/lib"].map { site + "/nvidia/" + $0 }
        }
        // WSL puts the driver here.
        dirs.append("/usr/lib/wsl/lib")
        return dirs
    }

    /// Where `python3` on the PATH keeps its packages (pyenv, conda and
    /// other interpreters outside the usual prefixes); empty without one.
    static func activePythonSiteDirectories() -> [String] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", "import site; print('\\n'.join(site.getsitepackages() + [site.getusersitepackages()]))"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return [] }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { return [] }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    static func pythonSiteDirectories(under lib: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: lib)) ?? []
        var dirs: [String] = []
        for name in names.filter({ $0.hasPrefix("python3") }).sorted() {
            let base: String = lib + "/" + name
            dirs.append(base + "/site-packages")
            dirs.append(base + "/dist-packages")
        }
        return dirs
    }

    /// A library opened from `searchPath` (first match) or, with
    /// `systemSearch`, by the dynamic loader's own search; the error names
    /// every place looked in.
    public static func open(_ names: [String], searchPath: [String], systemSearch: Bool) -> Result<OpenedLibrary, CUDAError> {
        var tried: [String] = []
        for dir in searchPath {
            for name in names {
                let path = dir + "/" + name
                guard FileManager.default.fileExists(atPath: path) else { continue }
                if let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) { return .success(OpenedLibrary(handle: handle, path: path)) }
                tried.append("\(path): \(String(cString: dlerror()))")
            }
        }
        if systemSearch {
            for name in names {
                if let handle = dlopen(name, RTLD_NOW | RTLD_LOCAL) { return .success(OpenedLibrary(handle: handle, path: name + " (system search)")) }
            }
        }
        return .failure(.libraryNotFound(names: names, searched: searchPath, systemSearch: systemSearch, failedToLoad: tried))
    }

    /// The sonames of `base` ("libcublas", "libnvrtc") a driver of
    /// `driverVersion` (1000 × major + 10 × minor) can use, newest first:
    /// a CUDA 13 cuBLAS or NVRTC's output needs a CUDA 13 driver, while a
    /// CUDA 12 one runs on either. Without a driver version, every one.
    public static func sonames(_ base: String, driverVersion: Int32?) -> [String] {
        let newest = driverVersion.map { max(12, min(13, Int($0) / 1000)) } ?? 13
        return (12...newest).reversed().map { "\(base).so.\($0)" } + ["\(base).so"]
    }

    /// `base` for a driver of `driverVersion`; where only a newer one than
    /// the driver can use is found, the error says that, not "not found".
    public static func open(_ base: String, driverVersion: Int32?, searchPath: [String], systemSearch: Bool) -> Result<OpenedLibrary, CUDAError> {
        let usable = sonames(base, driverVersion: driverVersion)
        let found = open(usable, searchPath: searchPath, systemSearch: systemSearch)
        guard case .failure = found, let driverVersion else { return found }
        let newer = sonames(base, driverVersion: nil).filter { !usable.contains($0) }
        guard !newer.isEmpty, case .success(let library) = open(newer, searchPath: searchPath, systemSearch: systemSearch) else { return found }
        return .failure(.libraryNeedsNewerDriver(path: library.path, driverVersion: driverVersion))
    }

    /// The driver, the devices it reports and whether cuBLAS and NVRTC can
    /// be loaded: what `switchyard topology` prints and what the hybrid
    /// executor checks at start-up.
    public static func probe(searchPath: [String] = defaultSearchPath(), systemSearch: Bool = true) -> CUDAProbe {
        let driver = CUDADriver.load(searchPath: searchPath, systemSearch: systemSearch).flatMap { $0.devices() }
        let version = try? driver.get().driverVersion
        let blas = open("libcublas", driverVersion: version, searchPath: searchPath, systemSearch: systemSearch)
        let nvrtc = open("libnvrtc", driverVersion: version, searchPath: searchPath, systemSearch: systemSearch)
        return CUDAProbe(driver: driver, cublas: blas.map(\.path), nvrtc: nvrtc.map(\.path))
    }
}

/// A `dlopen` handle and where it came from. Never closed: the functions
/// taken from it live as long as the process.
public struct OpenedLibrary: @unchecked Sendable {
    public let handle: UnsafeMutableRawPointer
    public let path: String

    public func symbol(_ name: String) -> UnsafeMutableRawPointer? { dlsym(handle, name) }
}

/// One GPU as the driver reports it.
public struct GPUDevice: Sendable, Equatable, Codable {
    public var index: Int
    public var name: String
    public var totalBytes: Int
    public var freeBytes: Int
    /// Major * 10 + minor (90 for an H100 or H200); nil where the driver
    /// did not say.
    public var computeCapability: Int?

    public init(index: Int, name: String, totalBytes: Int, freeBytes: Int, computeCapability: Int? = nil) {
        (self.index, self.name, self.totalBytes, self.freeBytes, self.computeCapability) = (index, name, totalBytes, freeBytes, computeCapability)
    }
}

/// What `CUDALibraries.probe` found.
public struct CUDAProbe: Sendable {
    /// The driver's path, version and devices, or why there are none.
    public var driver: Result<CUDADriver.Devices, CUDAError>
    public var cublas: Result<String, CUDAError>
    public var nvrtc: Result<String, CUDAError>

    /// One line per finding, for `switchyard topology`.
    public var description: String {
        var lines: [String] = []
        switch driver {
        case .success(let d):
            lines.append("CUDA driver \(d.driverVersion / 1000).\(d.driverVersion % 1000 / 10) (\(d.path)): \(d.list.count) device(s)")
            for g in d.list {
                let capability = g.computeCapability.map { " (compute \($0 / 10).\($0 % 10))" } ?? ""
                lines.append(String(format: "  gpu %d: %@, %.1f GiB, %.1f GiB free; --execution hybrid's default budget (gpu_memory 0.8) %.1f GiB of dense weights and experts",
                                    g.index, g.name + capability, Double(g.totalBytes) / 1073741824, Double(g.freeBytes) / 1073741824,
                                    0.8 * Double(g.freeBytes) / 1073741824))
            }
        case .failure(let e): lines.append("no usable GPU: \(e.description)")
        }
        func library(_ name: String, _ r: Result<String, CUDAError>) -> String {
            switch r {
            case .success(let path): "\(name): \(path)"
            case .failure(let e): "\(name): not found (\(e.description))"
            }
        }
        lines.append(library("cuBLAS", cublas))
        lines.append(library("NVRTC", nvrtc))
        return lines.joined(separator: "\n")
    }
}

/// Why CUDA cannot be used, naming what was looked for, where, and the fix.
public enum CUDAError: Error, Sendable, Equatable, CustomStringConvertible {
    case libraryNotFound(names: [String], searched: [String], systemSearch: Bool, failedToLoad: [String])
    case missingSymbol(String, library: String)
    case driverCall(String, code: Int32, message: String)
    case noDevice(driverPath: String)
    case libraryNeedsNewerDriver(path: String, driverVersion: Int32)

    public var description: String {
        switch self {
        case .libraryNotFound(let names, let searched, let system, let failed):
            let looked = searched.isEmpty ? "no directories" : "\(searched.count) directories (\(searched.prefix(4).joined(separator: ", "))\(searched.count > 4 ? ", ..." : ""))"
            return "\(names.joined(separator: " / ")) not found: looked in \(looked)\(system ? " and the system library search" : "")"
                + (failed.isEmpty ? "" : "; found but failed to load: \(failed.joined(separator: "; "))")
                + ". Install the NVIDIA driver (libcuda) or the CUDA 13 pip wheels (cuBLAS, NVRTC), or set SWITCHYARD_CUDA_LIBRARY_PATH to the directory holding them"
        case .missingSymbol(let name, let library):
            return "\(library) has no \(name): it is not a CUDA 12 or newer driver library; install a current NVIDIA driver or point SWITCHYARD_CUDA_LIBRARY_PATH elsewhere"
        case .driverCall(let call, let code, let message):
            return "\(call) failed with CUDA error \(code) (\(message)); check that the NVIDIA driver is loaded (nvidia-smi) and the device is visible to this process (CUDA_VISIBLE_DEVICES)"
        case .libraryNeedsNewerDriver(let path, let version):
            let major = path.split(separator: ".").last.flatMap { Int($0) } ?? 13
            let driverMajor = Int(version) / 1000
            return "\(path) is a CUDA \(major) library, but the driver is CUDA \(driverMajor).\(Int(version) % 1000 / 10), which cannot run it: "
                + "install the CUDA \(driverMajor) libraries (pip install nvidia-cublas-cu\(driverMajor) nvidia-cuda-nvrtc-cu\(driverMajor)) "
                + "or a driver for CUDA \(major), or point SWITCHYARD_CUDA_LIBRARY_PATH at CUDA \(driverMajor) libraries"
        case .noDevice(let path):
            return "the CUDA driver (\(path)) reports no devices; check nvidia-smi and CUDA_VISIBLE_DEVICES"
        }
    }
}
