import CHwloc
import Foundation

/// Binds the calling thread to processing units through hwloc, so a device
/// pool's kernel threads stay on the cores (and so the NUMA node) that own
/// its experts' memory.
public enum ThreadPinning {
    /// One loaded topology for the process; hwloc needs it to bind.
    nonisolated(unsafe) private static let topology: hwloc_topology_t? = {
        var t: hwloc_topology_t?
        guard hwloc_topology_init(&t) == 0, let t, hwloc_topology_load(t) == 0 else { return nil }
        return t
    }()
    private static let lock = NSLock()

    /// Pins the calling thread to `processingUnits` (OS indices); false when
    /// the system refuses (no hwloc topology, or a container without the right).
    @discardableResult
    public static func pinCurrentThread(to processingUnits: [Int]) -> Bool {
        guard let topo = topology, !processingUnits.isEmpty, let set = hwloc_bitmap_alloc() else { return false }
        defer { hwloc_bitmap_free(set) }
        for pu in processingUnits { hwloc_bitmap_set(set, UInt32(pu)) }
        lock.lock(); defer { lock.unlock() }
        return hwloc_set_cpubind(topo, set, Int32(HWLOC_CPUBIND_THREAD.rawValue)) == 0
    }

    /// The OS indices of the processing units the calling thread may run on.
    public static func currentBinding() -> [Int] {
        guard let topo = topology, let set = hwloc_bitmap_alloc() else { return [] }
        defer { hwloc_bitmap_free(set) }
        lock.lock()
        let rc = hwloc_get_cpubind(topo, set, Int32(HWLOC_CPUBIND_THREAD.rawValue))
        lock.unlock()
        guard rc == 0 else { return [] }
        var out: [Int] = []
        var i = hwloc_bitmap_first(set)
        while i >= 0 { out.append(Int(i)); i = hwloc_bitmap_next(set, i) }
        return out
    }
}
