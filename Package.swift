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

/// A strategy plug-in: one module depending only on the core.
func plugin(_ name: String, _ path: String) -> Target {
    .target(name: name, dependencies: ["SwitchyardCore"], path: path, swiftSettings: swiftSettings)
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
        .target(
            name: "SwitchyardModel",
            dependencies: [
                "CBLAS", "CNuma", "CHwloc", "CDNNL",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SwitchyardCore",
            dependencies: ["SwitchyardModel", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "ChunkedScheduler",
            dependencies: ["SwitchyardCore"],
            path: "Plugins/Scheduler/Chunked",
            swiftSettings: swiftSettings
        ),
        .target(
            name: "FCFSScheduler",
            dependencies: ["SwitchyardCore"],
            path: "Plugins/Scheduler/FCFS",
            swiftSettings: swiftSettings
        ),
        .target(
            name: "LayeredScheduler",
            dependencies: ["SwitchyardCore"],
            path: "Plugins/Scheduler/Layered",
            swiftSettings: swiftSettings
        ),
        .target(
            name: "ShortestPromptFirstScheduler",
            dependencies: ["SwitchyardCore"],
            path: "Plugins/Scheduler/ShortestPromptFirst",
            swiftSettings: swiftSettings
        ),
        plugin("LinearPlacement", "Plugins/Placement/Linear"),
        plugin("RoundRobinPlacement", "Plugins/Placement/RoundRobin"),
        plugin("BalancedPlacement", "Plugins/Placement/Balanced"),
        plugin("FilePlacement", "Plugins/Placement/File"),
        .target(name: "ILPPlacement", dependencies: ["SwitchyardCore", "CCbc"], path: "Plugins/Placement/ILP",
                swiftSettings: swiftSettings),
        plugin("CPUExecution", "Plugins/Execution/CPU"),
        plugin("ExpertParallelExecution", "Plugins/Execution/ExpertParallel"),
        plugin("WholeExpertsExecution", "Plugins/Execution/WholeExperts"),
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
                "SwitchyardModel", "SwitchyardCore", "ChunkedScheduler", "FCFSScheduler", "LayeredScheduler",
                "ShortestPromptFirstScheduler",
                "LinearPlacement", "RoundRobinPlacement", "BalancedPlacement", "FilePlacement", "ILPPlacement", "CPUExecution", "ExpertParallelExecution",
                "WholeExpertsExecution", "SwitchyardServer",
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
            dependencies: ["SwitchyardModel", "SwitchyardCore", "CPUExecution", "ExpertParallelExecution", "WholeExpertsExecution"],
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
