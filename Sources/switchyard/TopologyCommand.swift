import ArgumentParser
import Foundation
import SwitchyardCore
import SwitchyardModel
import ExpertParallelExecution
import HybridExecution

struct TopologyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topology",
        abstract: "Print the machine's cores and NUMA nodes, the CPU device pools, any CUDA GPUs and libraries, and where a model's expert pages live.")

    @Option(help: "Split the cores into this many device pools.")
    var devices: Int?

    @Flag(help: "One device pool per NUMA node.")
    var numa = false

    @Option(help: "An hwloc synthetic topology to show instead of this machine, e.g. \"package:2 numa:2 core:4 pu:1\".")
    var synthetic: String?

    @Option(help: "A checkpoint whose expert weight pages to locate (move_pages); with --devices/--numa also after cpu-ep's per-node copies.")
    var model: String?

    @Option(help: "With --model and --devices/--numa: the static placement (linear or round-robin) of experts on the pools.")
    var placement: String = "linear"

    @Option(name: .customLong("gpu-memory"),
            help: "With --model: the hybrid budget to size, a size (8GiB; sized even without a GPU) or a fraction of GPU 0's free memory (default 0.8).")
    var gpuMemory: String?

    func run() throws {
        let t: CPUTopology
        do { t = try CPUTopology.load(synthetic: synthetic) } catch let e as CPUTopology.TopologyError { throw CLIError("error: \(e.description)") }
        print("\(synthetic.map { "synthetic \"\($0)\"" } ?? "this machine"): \(t.cores.count) cores, \(t.numaNodes) NUMA node(s)")
        for n in 0..<t.numaNodes {
            let cs = t.cores.filter { $0.numaNode == n }
            print("  node \(n): cores \(cs.map { String($0.index) }.joined(separator: ",")) (PUs \(cs.flatMap(\.processingUnits).map(String.init).joined(separator: ",")))")
        }
        var pools: [CorePool] = []
        if numa || devices != nil {
            do { pools = numa ? CorePools.perNUMANode(t) : try CorePools.split(t, devices: devices!) } catch let e as CorePools.PoolError {
                throw CLIError("error: \(e.description)")
            }
            print("device pools:")
            for (i, p) in pools.enumerated() {
                print("  device \(i): cores \(p.cores.map(String.init).joined(separator: ",")), NUMA node \(p.numaNode)")
            }
        }
        var gpuFree: Int?
        if synthetic == nil {
            // The GPU side of the hybrid executor: driver, devices, libraries.
            let probe = CUDALibraries.probe()
            print(probe.description)
            if case .success(let d) = probe.driver { gpuFree = d.list.first?.freeBytes }
        }
        if let model {
            let w = try loadModel(model).weights
            // What --execution hybrid (default options but the budget, GPU 0) would hold.
            var hybrid = HybridExecution.Options()
            if let gpuMemory { hybrid.gpuMemory = gpuMemory }
            for line in HybridExecution.sizing(w, freeBytes: gpuFree, options: hybrid) { print(line) }
            func describe(_ s: PageLocation.Summary) -> String {
                let nodes = s.byNode.keys.sorted().map { "node \($0): \(s.byNode[$0]!) pages" }.joined(separator: ", ")
                return "\(nodes.isEmpty ? "none resident" : nodes); not yet resident: \(s.notResident)\(s.failed > 0 ? "; query failed: \(s.failed)" : "")"
            }
            print("expert weight pages of \(model) (checkpoint mapping): \(describe(PageLocation.experts(of: w)))")
            if !pools.isEmpty && synthetic == nil {
                // What cpu-ep does at start-up: copy each expert onto its pool's node.
                let c = w.config
                let map: ExpertMap
                do {
                    map = try strategies.makePlacement(placement).place(PlacementProblem(numLayers: c.numLayers, numExperts: c.numExperts,
                                                                                         numDevices: pools.count, profile: nil))
                } catch let e as PlacementError { throw CLIError("error: placement \(placement): \(e.description)") }
                let ep: ExpertParallelExecutor
                do { ep = try ExpertParallelExecutor(weights: w, pools: pools, map: map.device, weightsOnNode: true, pin: false) } catch let e as ExpertParallelExecutor.SetupError {
                    throw CLIError("error: \(e.description)")
                }
                print("after cpu-ep copies the experts onto their pools' nodes (placement \(placement))\(ep.weightsOnNode ? "" : ", libnuma reports no NUMA support: ordinary memory"):")
                for d in 0..<pools.count { print("  device \(d) (node \(pools[d].numaNode)): \(describe(ep.expertPages(device: d)))") }
            }
        }
    }
}
