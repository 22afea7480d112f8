import ArgumentParser
import Foundation
import SwitchyardModel

struct TopologyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topology",
        abstract: "Print the machine's cores and NUMA nodes, the CPU device pools, and where a model's expert pages live.")

    @Option(help: "Split the cores into this many device pools.")
    var devices: Int?

    @Flag(help: "One device pool per NUMA node.")
    var numa = false

    @Option(help: "An hwloc synthetic topology to show instead of this machine, e.g. \"package:2 numa:2 core:4 pu:1\".")
    var synthetic: String?

    @Option(help: "A checkpoint whose expert weight pages to locate (move_pages).")
    var model: String?

    func run() throws {
        let t: CPUTopology
        do { t = try CPUTopology.load(synthetic: synthetic) } catch let e as CPUTopology.TopologyError { throw CLIError("error: \(e.description)") }
        print("\(synthetic.map { "synthetic \"\($0)\"" } ?? "this machine"): \(t.cores.count) cores, \(t.numaNodes) NUMA node(s)")
        for n in 0..<t.numaNodes {
            let cs = t.cores.filter { $0.numaNode == n }
            print("  node \(n): cores \(cs.map { String($0.index) }.joined(separator: ",")) (PUs \(cs.flatMap(\.processingUnits).map(String.init).joined(separator: ",")))")
        }
        if numa || devices != nil {
            let pools: [CorePool]
            do { pools = numa ? CorePools.perNUMANode(t) : try CorePools.split(t, devices: devices!) } catch let e as CorePools.PoolError {
                throw CLIError("error: \(e.description)")
            }
            print("device pools:")
            for (i, p) in pools.enumerated() {
                print("  device \(i): cores \(p.cores.map(String.init).joined(separator: ",")), NUMA node \(p.numaNode)")
            }
        }
        if let model {
            let w = try loadModel(model).weights
            let s = PageLocation.experts(of: w)
            let nodes = s.byNode.keys.sorted().map { "node \($0): \(s.byNode[$0]!) pages" }.joined(separator: ", ")
            print("expert weight pages of \(model): \(nodes.isEmpty ? "none resident" : nodes); not yet resident: \(s.notResident)\(s.failed > 0 ? "; query failed: \(s.failed)" : "")")
        }
    }
}
