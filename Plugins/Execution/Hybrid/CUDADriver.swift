import Foundation

/// The CUDA driver API, loaded from `libcuda.so.1` at run time. Every
/// function comes from `cuGetProcAddress` at `CUDALibraries.driverAPIVersion`
/// (the one symbol taken by name), so the version of each entry point is
/// chosen here, not by whichever default the installed driver exports.
public struct CUDADriver: @unchecked Sendable {
    typealias GetProcAddressV2 = @convention(c) (UnsafePointer<CChar>, UnsafeMutablePointer<UnsafeMutableRawPointer?>, Int32, UInt64,
                                                 UnsafeMutablePointer<Int32>?) -> Int32
    typealias GetProcAddressV1 = @convention(c) (UnsafePointer<CChar>, UnsafeMutablePointer<UnsafeMutableRawPointer?>, Int32, UInt64) -> Int32
    typealias Init = @convention(c) (UInt32) -> Int32
    typealias IntOut = @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
    typealias DeviceGet = @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Int32
    typealias DeviceGetName = @convention(c) (UnsafeMutablePointer<CChar>, Int32, Int32) -> Int32
    typealias DeviceTotalMem = @convention(c) (UnsafeMutablePointer<Int>, Int32) -> Int32
    typealias DeviceGetAttribute = @convention(c) (UnsafeMutablePointer<Int32>, Int32, Int32) -> Int32
    typealias PrimaryCtxRetain = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, Int32) -> Int32
    typealias CtxSetCurrent = @convention(c) (OpaquePointer?) -> Int32
    typealias MemGetInfo = @convention(c) (UnsafeMutablePointer<Int>, UnsafeMutablePointer<Int>) -> Int32
    typealias PrimaryCtxRelease = @convention(c) (Int32) -> Int32
    typealias GetErrorString = @convention(c) (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Int32

    public let library: OpenedLibrary
    let getProcAddress: (String) -> UnsafeMutableRawPointer?

    /// Opens the driver and takes `cuGetProcAddress` from it.
    public static func load(searchPath: [String], systemSearch: Bool) -> Result<CUDADriver, CUDAError> {
        CUDALibraries.open(["libcuda.so.1", "libcuda.so"], searchPath: searchPath, systemSearch: systemSearch).flatMap { lib in
            let version = CUDALibraries.driverAPIVersion
            if let p = lib.symbol("cuGetProcAddress_v2") {
                let f = unsafeBitCast(p, to: GetProcAddressV2.self)
                return .success(CUDADriver(library: lib, getProcAddress: { name in
                    var pfn: UnsafeMutableRawPointer?
                    return f(name, &pfn, version, 0, nil) == 0 ? pfn : nil
                }))
            }
            if let p = lib.symbol("cuGetProcAddress") {
                let f = unsafeBitCast(p, to: GetProcAddressV1.self)
                return .success(CUDADriver(library: lib, getProcAddress: { name in
                    var pfn: UnsafeMutableRawPointer?
                    return f(name, &pfn, version, 0) == 0 ? pfn : nil
                }))
            }
            return .failure(.missingSymbol("cuGetProcAddress", library: lib.path))
        }
    }

    func function<F>(_ name: String, as type: F.Type) -> Result<F, CUDAError> {
        guard let p = getProcAddress(name) else { return .failure(.missingSymbol(name, library: library.path)) }
        return .success(unsafeBitCast(p, to: type))
    }

    /// `cuInit` then every device's name and memory (total, and free as its
    /// primary context sees it).
    public struct Devices: Sendable {
        public var path: String
        public var driverVersion: Int32
        public var list: [GPUDevice]
    }

    public func devices() -> Result<Devices, CUDAError> {
        do {
            let errorString = try? function("cuGetErrorString", as: GetErrorString.self).get()
            func check(_ call: String, _ code: Int32) throws {
                guard code != 0 else { return }
                var text: UnsafePointer<CChar>?
                _ = errorString?(code, &text)
                throw CUDAError.driverCall(call, code: code, message: text.map { String(cString: $0) } ?? "unknown")
            }
            try check("cuInit", try function("cuInit", as: Init.self).get()(0))
            var version: Int32 = 0
            try check("cuDriverGetVersion", try function("cuDriverGetVersion", as: IntOut.self).get()(&version))
            var count: Int32 = 0
            try check("cuDeviceGetCount", try function("cuDeviceGetCount", as: IntOut.self).get()(&count))
            guard count > 0 else { throw CUDAError.noDevice(driverPath: library.path) }
            let get = try function("cuDeviceGet", as: DeviceGet.self).get()
            let name = try function("cuDeviceGetName", as: DeviceGetName.self).get()
            let total = try function("cuDeviceTotalMem", as: DeviceTotalMem.self).get()
            let retain = try function("cuDevicePrimaryCtxRetain", as: PrimaryCtxRetain.self).get()
            let setCurrent = try function("cuCtxSetCurrent", as: CtxSetCurrent.self).get()
            let memInfo = try function("cuMemGetInfo", as: MemGetInfo.self).get()
            let release = try function("cuDevicePrimaryCtxRelease", as: PrimaryCtxRelease.self).get()
            let attribute = try? function("cuDeviceGetAttribute", as: DeviceGetAttribute.self).get()
            var list: [GPUDevice] = []
            for i in 0..<count {
                var device: Int32 = 0
                try check("cuDeviceGet", get(&device, i))
                var buffer = [CChar](repeating: 0, count: 256)
                try check("cuDeviceGetName", name(&buffer, 256, device))
                var bytes = 0
                try check("cuDeviceTotalMem", total(&bytes, device))
                // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR and _MINOR:
                // what NVRTC compiles the kernels for.
                var major: Int32 = 0, minor: Int32 = 0
                let capability = attribute.flatMap { get in
                    get(&major, 75, device) == 0 && get(&minor, 76, device) == 0 ? Int(major) * 10 + Int(minor) : nil
                }
                var context: OpaquePointer?
                try check("cuDevicePrimaryCtxRetain", retain(&context, device))
                var free = 0, all = 0
                let infoCode = setCurrent(context) == 0 ? memInfo(&free, &all) : -1
                _ = setCurrent(nil)
                _ = release(device)
                try check("cuMemGetInfo", infoCode)
                list.append(GPUDevice(index: Int(i), name: String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self),
                                      totalBytes: bytes, freeBytes: free, computeCapability: capability))
            }
            return .success(Devices(path: library.path, driverVersion: version, list: list))
        } catch let e as CUDAError {
            return .failure(e)
        } catch {
            return .failure(.driverCall("driver query", code: -1, message: "\(error)"))
        }
    }
}
