import ArgumentParser
import Foundation
import SwitchyardCore

struct ProfileCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "profile",
        abstract: "Routing profiles (expert token counts P and consecutive-layer pair counts R).",
        subcommands: [Import.self, Synthetic.self])

    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Build a profile from per-token routing records (the Mixtral-8x7B trace format).")

        @Option(parsing: .upToNextOption, help: "JSONL files of {\"layer\", \"experts\", \"token_idx\", ...} records.")
        var trace: [String]

        @Option(help: "Layers per token path.")
        var layers: Int

        @Option(help: "Experts per layer.")
        var experts: Int

        @Option(help: "Where to write the profile JSON.")
        var output: String

        func run() throws {
            do {
                let p = try RoutingProfile.importTokenRecords(paths: trace, numLayers: layers, numExperts: experts)
                try p.save(path: output)
                print("wrote \(output): \(p.tokens) tokens × \(p.numLayers) layers, top-\(p.topK) of \(p.numExperts) experts")
            } catch let e as PlacementError {
                throw CLIError("error: \(e.description)")
            }
        }
    }
}

extension ProfileCommand {
    struct Synthetic: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a reproducible skewed profile (Zipf expert popularity, consecutive-layer affinity) for placement scaling runs.")

        @Option(help: "Layers.") var layers: Int
        @Option(help: "Experts per layer.") var experts: Int
        @Option(name: .customLong("top-k"), help: "Experts per token.") var topK: Int = 2
        @Option(help: "Token paths to draw.") var tokens: Int = 4096
        @Option(help: "Zipf exponent of expert popularity (0 = uniform).") var skew: Double = 1.0
        @Option(help: "Probability that a token's first expert follows its previous layer's first expert's fixed successor.") var affinity: Double = 0.3
        @Option(help: "Random seed.") var seed: UInt64 = 0
        @Option(help: "Where to write the profile JSON.") var output: String

        func run() throws {
            do {
                let p = try RoutingProfile.synthetic(numLayers: layers, numExperts: experts, topK: topK, tokens: tokens,
                                                     skew: skew, affinity: affinity, seed: seed)
                try p.save(path: output)
                print("wrote \(output): \(p.tokens) tokens × \(p.numLayers) layers, top-\(p.topK) of \(p.numExperts) experts")
            } catch let e as PlacementError {
                throw CLIError("error: \(e.description)")
            }
        }
    }
}

struct PlaceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "place",
        abstract: "Place experts on devices with a placement strategy and report load balance and cross-device traffic on a profile.")

    @Option(help: "Routing profile JSON (see docs/placement.md).")
    var profile: String

    @Option(help: "Number of devices.")
    var devices: Int

    @Option(help: "Placement strategy (see `switchyard strategies`).")
    var placement: String

    @Option(name: .customLong("placement-config"), help: "Placement options as JSON.")
    var placementConfig: String?

    @Option(help: "Write the expert map JSON here.")
    var output: String?

    @Flag(help: "Print the per-device load of every layer.")
    var verbose = false

    func run() throws {
        do {
            let prof = try RoutingProfile.load(path: profile)
            let strategy = try strategies.makePlacement(placement, config: placementConfig)
            let t0 = Date()
            let map = try strategy.place(PlacementProblem(numLayers: prof.numLayers, numExperts: prof.numExperts,
                                                          numDevices: devices, profile: prof))
            let seconds = Date().timeIntervalSince(t0)
            let r = PlacementReport(map: map, profile: prof)
            print("placement \(placement) on \(devices) devices, profile \(prof.source) (\(prof.tokens) tokens, \(prof.numLayers) layers × \(prof.numExperts) experts, top-\(prof.topK))")
            if verbose {
                for (l, load) in r.deviceLoad.enumerated() {
                    print(String(format: "  layer %3d  imbalance %.3f  load %@", l, r.imbalance[l], load.map(String.init).joined(separator: " ")))
                }
            }
            let worst = r.imbalance.indices.max { r.imbalance[$0] < r.imbalance[$1] } ?? 0
            print(String(format: "worst-layer max/mean device load: %.3f (layer %d); mean over layers %.3f", r.worstImbalance, worst,
                         r.imbalance.reduce(0, +) / Double(max(r.imbalance.count, 1))))
            print("cross-device pairs between consecutive layers: \(r.totalCrossDevicePairs) total, worst boundary \(r.crossDevicePairs.max() ?? 0)")
            print(String(format: "solve time: %.3f s", seconds))
            if let info = map.solver {
                print(String(format: "solver: %@; gap: balance %.4f, traffic %.4f; %d subproblems exact, %d heuristic; %d refinement sweeps",
                             info.method, info.balanceGap, info.trafficGap, info.exactSubproblems, info.heuristicSubproblems,
                             info.refinementSweeps))
            }
            if let output {
                let enc = JSONEncoder()
                enc.outputFormatting = [.sortedKeys]
                try enc.encode(map).write(to: URL(fileURLWithPath: output))
            }
        } catch let e as PlacementError {
            throw CLIError("error: \(e.description)")
        } catch let e as StrategyError {
            throw CLIError("error: \(e.description)")
        }
    }
}
