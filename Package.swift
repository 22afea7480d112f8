// swift-tools-version:6.0
import PackageDescription
import Foundation

// Release builds on x86-64 target Haswell (x86-64-v3: AVX2, FMA, F16C): Swift's default
// x86 target is baseline SSE2, which makes the BF16 matrix-vector kernel ~20x
// slower. The flag is only added when the building machine itself supports
// AVX2 and FMA (read from /proc/cpuinfo), so other CPUs fall back to the
// portable build; SWITCHYARD_PORTABLE=1 forces the portable build anywhere.
//
// Where the building CPU has AVX-512 (F, BW, CD, DQ, VL), release builds
// target skylake-avx512 (x86-64-v4: the AVX-512 subset every AVX-512 CPU has)
// instead, so the direct matrix-vector kernel can use 512-bit registers.
func hostCPUFlags() -> Set<String> {
    #if arch(x86_64)
    if ProcessInfo.processInfo.environment["SWITCHYARD_PORTABLE"] == "1" { return [] }
    guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return [] }
    guard let flagsLine = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return [] }
    return Set(flagsLine.split(separator: " ").map(String.init))
    #else
    return []
    #endif
}

let hostFlags = hostCPUFlags()
let x86Level: String? = ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx2", "fma", "f16c", "bmi2"]
    .allSatisfy(hostFlags.contains) ? "skylake-avx512"
    : ["avx2", "fma", "f16c", "bmi2"].allSatisfy(hostFlags.contains) ? "haswell" : nil

let cpuFlags: [SwiftSetting] = x86Level.map { level in
    [.unsafeFlags(["-target-cpu", level], .when(configuration: .release)),
     .unsafeFlags(["-Xcc", "-march=\(level)"], .when(configuration: .release))]
} ?? []

let swiftSettings: [SwiftSetting] = [.swiftLanguageMode(.v6)] + cpuFlags

/// Strategy plug-ins, found on disk: `Plugins/<Kind>/<Name>/` is the module
/// `<Name><Kind>` (e.g. `Plugins/Execution/WholeExperts` is
/// `WholeExpertsExecution`), depending only on the core, plus any system
/// library listed here. A new plug-in is a new folder and one line in
/// `Plugins/Registry/BuiltinPlugins.swift`.
let pluginKinds = ["Scheduler", "Placement", "Execution"]
let pluginExtraDependencies: [String: [Target.Dependency]] = ["ILPPlacement": ["CCbc"]]
let pluginModules: [(name: String, path: String)] = pluginKinds.flatMap { kind -> [(name: String, path: String)] in
    let folder = Context.packageDirectory + "/Plugins/" + kind
    let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
    return names.sorted().compactMap { name in
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder + "/" + name, isDirectory: &isDirectory), isDirectory.boolValue
        else { return nil }
        return (name + kind, "Plugins/\(kind)/\(name)")
    }
}
let pluginTargets: [Target] = pluginModules.map { m in
    .target(name: m.name, dependencies: ["SwitchyardCore"] + (pluginExtraDependencies[m.name] ?? []), path: m.path,
            swiftSettings: swiftSettings)
}

let package = Package(
    name: "Switchyard",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "switchyard", targets: ["switchyard"]),
        .library(name: "SwitchyardModel", targets: ["SwitchyardModel"]),
        .library(name: "SwitchyardCore", targets: ["SwitchyardCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CNuma", path: "Sources/CNuma", pkgConfig: "numa",
                       providers: [.apt(["libnuma-dev"])]),
        .systemLibrary(name: "CHwloc", path: "Sources/CHwloc", pkgConfig: "hwloc",
                       providers: [.apt(["libhwloc-dev"])]),
        .systemLibrary(name: "CCbc", path: "Sources/CCbc", pkgConfig: "cbc",
                       providers: [.apt(["coinor-libcbc-dev"])]),
        // oneDNN's matmul, opened with dlopen at run time (headers from libdnnl-dev).
        .target(name: "CDNNL", path: "Sources/CDNNL"),
        // AVX512-BF16 matrix-vector kernels (BF16 and MXFP4 weights), compiled
        // for that ISA per function and called only where the CPU has it;
        // softmax and SwiGLU on glibc's vector expf (libmvec).
        .target(name: "CKernels", path: "Sources/CKernels", cSettings: [.unsafeFlags(["-O3"])],
                linkerSettings: [.linkedLibrary("mvec")]),
        .target(
            name: "SwitchyardModel",
            dependencies: [
                "CBLAS", "CNuma", "CHwloc", "CDNNL", "CKernels",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SwitchyardCore",
            dependencies: ["SwitchyardModel", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        // Registers every plug-in by name (the CLI's strategies).
        .target(name: "SwitchyardPlugins", dependencies: ["SwitchyardCore"] + pluginModules.map { .target(name: $0.name) },
                path: "Plugins/Registry", swiftSettings: swiftSettings),
        .target(
            name: "SwitchyardServer",
            dependencies: [
                "SwitchyardCore", "SwitchyardModel",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "switchyard",
            dependencies: [
                "SwitchyardModel", "SwitchyardCore", "SwitchyardPlugins", "ExpertParallelExecution", "HybridExecution", "SwitchyardServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SwitchyardModelTests",
            dependencies: ["SwitchyardModel"],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ExecutionPluginTests",
            dependencies: ["SwitchyardModel", "SwitchyardCore", "CPUExecution", "ExpertParallelExecution", "WholeExpertsExecution",
                           "HybridExecution", "ChunkedScheduler", "LayeredScheduler"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SwitchyardCoreTests",
            dependencies: ["SwitchyardCore", "SwitchyardModel", "ChunkedScheduler", "FCFSScheduler", "LayeredScheduler",
                           "ShortestPromptFirstScheduler",
                           "LinearPlacement", "RoundRobinPlacement", "BalancedPlacement", "FilePlacement", "ILPPlacement",
                           "CPUExecution", "ExpertParallelExecution"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SwitchyardServerTests",
            dependencies: ["SwitchyardServer", "SwitchyardCore", "SwitchyardModel", "ChunkedScheduler", "ExpertParallelExecution",
                           .product(name: "AsyncHTTPClient", package: "async-http-client"),
                           .product(name: "Logging", package: "swift-log")],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
    ]
)

package.targets += pluginTargets
