import CHwloc

/// The machine's cores and NUMA nodes, read with hwloc, or built from an
/// hwloc synthetic description ("package:2 numa:2 core:4 pu:1") so pool
/// layouts can be tested for machines we do not have.
public struct CPUTopology: Sendable, Equatable {
    public struct Core: Sendable, Equatable {
        /// hwloc's logical index of the core.
        public var index: Int
        /// OS indices of the core's processing units (what pinning uses).
        public var processingUnits: [Int]
        /// The NUMA node (logical index) whose memory is local to the core.
        public var numaNode: Int
    }

    public var cores: [Core]
    public var numaNodes: Int

    public enum TopologyError: Error, CustomStringConvertible, Equatable {
        case hwloc(String)
        public var description: String {
            switch self { case let .hwloc(m): "hwloc: \(m)" }
        }
    }

    /// The running machine (`synthetic` nil) or a synthetic one.
    public static func load(synthetic: String? = nil) throws -> CPUTopology {
        var topology: hwloc_topology_t?
        guard hwloc_topology_init(&topology) == 0, let topo = topology else { throw TopologyError.hwloc("cannot initialise a topology") }
        defer { hwloc_topology_destroy(topo) }
        if let synthetic, hwloc_topology_set_synthetic(topo, synthetic) != 0 {
            throw TopologyError.hwloc("invalid synthetic topology \"\(synthetic)\" (e.g. \"package:2 numa:2 core:4 pu:1\")")
        }
        guard hwloc_topology_load(topo) == 0 else { throw TopologyError.hwloc("cannot load the topology") }
        let numaCount = max(1, Int(hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE)))
        let coreCount = Int(hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE))
        var cores: [Core] = []
        for i in 0..<coreCount {
            guard let core = hwloc_get_obj_by_type(topo, HWLOC_OBJ_CORE, UInt32(i)) else { continue }
            var pus: [Int] = []
            let puCount = Int(hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PU))
            for p in 0..<puCount {
                guard let pu = hwloc_get_obj_by_type(topo, HWLOC_OBJ_PU, UInt32(p)),
                      hwloc_bitmap_isincluded(pu.pointee.cpuset, core.pointee.cpuset) != 0 else { continue }
                pus.append(Int(pu.pointee.os_index))
            }
            var node = 0
            for n in 0..<numaCount {
                if let numa = hwloc_get_obj_by_type(topo, HWLOC_OBJ_NUMANODE, UInt32(n)),
                   hwloc_bitmap_intersects(numa.pointee.cpuset, core.pointee.cpuset) != 0 {
                    node = n
                    break
                }
            }
            cores.append(Core(index: i, processingUnits: pus, numaNode: node))
        }
        return CPUTopology(cores: cores, numaNodes: numaCount)
    }
}

/// A device on a CPU: a pool of cores whose experts' weights belong on the
/// pool's NUMA node.
public struct CorePool: Sendable, Equatable {
    public var cores: [Int]
    public var processingUnits: [Int]
    public var numaNode: Int
}

public enum CorePools {
    public enum PoolError: Error, CustomStringConvertible, Equatable {
        case tooManyDevices(devices: Int, cores: Int)
        public var description: String {
            switch self {
            case let .tooManyDevices(d, c): "--devices \(d) needs at least \(d) cores; this machine has \(c)"
            }
        }
    }

    /// One pool per NUMA node (`--numa`); a machine with one node gets one pool.
    public static func perNUMANode(_ t: CPUTopology) -> [CorePool] {
        (0..<t.numaNodes).compactMap { n in
            let cs = t.cores.filter { $0.numaNode == n }
            return cs.isEmpty ? nil : CorePool(cores: cs.map(\.index), processingUnits: cs.flatMap(\.processingUnits), numaNode: n)
        }
    }

    /// `devices` pools of consecutive cores, as equal as possible. When the
    /// device count is a multiple of the node count, each node's cores are
    /// split among its own pools, so no pool spans two nodes.
    public static func split(_ t: CPUTopology, devices: Int) throws -> [CorePool] {
        guard devices >= 1, devices <= t.cores.count else { throw PoolError.tooManyDevices(devices: devices, cores: t.cores.count) }
        var groups: [[CPUTopology.Core]]
        if devices % t.numaNodes == 0 && t.numaNodes > 1 {
            groups = []
            for n in 0..<t.numaNodes {
                let cs = t.cores.filter { $0.numaNode == n }
                groups += chunks(cs, devices / t.numaNodes)
            }
        } else {
            groups = chunks(t.cores, devices)
        }
        return groups.map { cs in
            // A pool's node: where most of its cores are.
            let node = Dictionary(grouping: cs, by: \.numaNode).max { ($0.value.count, -$0.key) < ($1.value.count, -$1.key) }!.key
            return CorePool(cores: cs.map(\.index), processingUnits: cs.flatMap(\.processingUnits), numaNode: node)
        }
    }

    static func chunks<T>(_ items: [T], _ n: Int) -> [[T]] {
        (0..<n).map { i in Array(items[(items.count * i / n)..<(items.count * (i + 1) / n)]) }
    }
}
