import CNuma
import Foundation

/// Memory whose pages live on one NUMA node: `numa_alloc_onnode` (an mbind
/// policy, so the pages land on the node whichever thread touches them
/// first). Where libnuma reports no NUMA support it falls back to ordinary
/// page-aligned memory and says so in `onNode`.
public final class NodeLocalMemory: @unchecked Sendable {
    public let pointer: UnsafeMutableRawPointer
    public let bytes: Int
    public let node: Int
    /// False when NUMA is unavailable and the memory came from the heap.
    public let onNode: Bool

    public init(bytes: Int, node: Int) {
        let size = max(bytes, 1)
        self.bytes = bytes
        self.node = node
        if numa_available() >= 0, node >= 0, node <= numa_max_node(), let p = numa_alloc_onnode(size, Int32(node)) {
            pointer = p
            onNode = true
        } else {
            var p: UnsafeMutableRawPointer?
            precondition(posix_memalign(&p, 4096, size) == 0, "out of memory allocating \(size) bytes")
            pointer = p!
            onNode = false
        }
    }

    deinit {
        if onNode { numa_free(pointer, max(bytes, 1)) } else { free(pointer) }
    }
}
