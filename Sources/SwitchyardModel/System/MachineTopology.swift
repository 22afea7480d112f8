import CHwloc
import CNuma
import Foundation

/// What the machine looks like to the kernels: cores, NUMA nodes, caches.
/// Read through hwloc (and libnuma for node availability), so the same code
/// reports a laptop, a 2-socket server or a container's slice correctly.
public struct MachineTopology: Sendable, CustomStringConvertible {
    public var packages: Int
    public var cores: Int
    public var processingUnits: Int
    public var numaNodes: Int
    public var l3Bytes: Int
    public var numaAvailable: Bool

    public static func detect() -> MachineTopology {
        var topo: hwloc_topology_t?
        var t = MachineTopology(packages: 1, cores: ProcessInfo.processInfo.activeProcessorCount,
                                processingUnits: ProcessInfo.processInfo.activeProcessorCount,
                                numaNodes: 1, l3Bytes: 0, numaAvailable: numa_available() >= 0)
        guard hwloc_topology_init(&topo) == 0, let topo else { return t }
        defer { hwloc_topology_destroy(topo) }
        guard hwloc_topology_load(topo) == 0 else { return t }
        func count(_ type: hwloc_obj_type_t) -> Int { Int(hwloc_get_nbobjs_by_type(topo, type)) }
        t.packages = max(1, count(HWLOC_OBJ_PACKAGE))
        t.cores = max(1, count(HWLOC_OBJ_CORE))
        t.processingUnits = max(1, count(HWLOC_OBJ_PU))
        t.numaNodes = max(1, count(HWLOC_OBJ_NUMANODE))
        if let l3 = hwloc_get_obj_by_type(topo, HWLOC_OBJ_L3CACHE, 0), let attr = l3.pointee.attr {
            t.l3Bytes = Int(attr.pointee.cache.size)
        }
        return t
    }

    public var description: String {
        "\(packages) package(s), \(cores) core(s), \(processingUnits) PU(s), \(numaNodes) NUMA node(s), L3 \(l3Bytes >> 20) MiB"
    }
}
