import CNuma
import Foundation

/// Where memory pages actually live, from `move_pages(2)` in query mode
/// (no move): a NUMA node per page, or "not resident" for pages never touched.
public enum PageLocation {
    public struct Summary: Sendable, Equatable {
        /// Pages per NUMA node.
        public var byNode: [Int: Int]
        public var notResident: Int
        public var failed: Int
    }

    /// Queries every page of `[base, base + bytes)`.
    public static func query(_ base: UnsafeRawPointer, bytes: Int) -> Summary {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = Int(bitPattern: base) / page * page
        let end = Int(bitPattern: base) + bytes
        var pages: [UnsafeMutableRawPointer?] = []
        var p = start
        while p < end { pages.append(UnsafeMutableRawPointer(bitPattern: p)); p += page }
        var status = [Int32](repeating: 0, count: pages.count)
        var summary = Summary(byNode: [:], notResident: 0, failed: 0)
        let rc = pages.withUnsafeMutableBufferPointer { pp in
            status.withUnsafeMutableBufferPointer { sp in
                move_pages(0, UInt(pp.count), pp.baseAddress, nil, sp.baseAddress, 0)
            }
        }
        if rc != 0 {
            summary.failed = pages.count
            return summary
        }
        for s in status {
            if s >= 0 { summary.byNode[Int(s), default: 0] += 1 }
            else if s == -ENOENT { summary.notResident += 1 }
            else { summary.failed += 1 }
        }
        return summary
    }

    /// Pages of all expert weights of a model.
    public static func experts(of weights: ModelWeights) -> Summary {
        experts(Array(weights.routedExpertsByLayer.joined()))
    }

    /// Pages of these experts' weights, summed.
    public static func experts(_ list: [ExpertWeights]) -> Summary {
        var total = Summary(byNode: [:], notResident: 0, failed: 0)
        for e in list {
            for m in [e.gate, e.up, e.down] {
                let s = query(m.data, bytes: m.byteCount)
                for (n, c) in s.byNode { total.byNode[n, default: 0] += c }
                total.notResident += s.notResident
                total.failed += s.failed
            }
        }
        return total
    }
}
