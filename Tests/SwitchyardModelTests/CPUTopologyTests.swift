import Foundation
import Testing
@testable import SwitchyardModel

/// Device pools on machines we do not have, through hwloc synthetic topologies.
@Suite struct CPUTopologyTests {
    @Test func syntheticTwoSocketTopologyIsReadCorrectly() throws {
        let t = try CPUTopology.load(synthetic: "package:2 numa:2 core:4 pu:1")
        #expect(t.numaNodes == 4)
        #expect(t.cores.count == 16)
        #expect(t.cores.map(\.numaNode) == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3])
        #expect(t.cores.map(\.processingUnits) == (0..<16).map { [$0] })
    }

    @Test func numaPoolsFollowTheNodes() throws {
        let t = try CPUTopology.load(synthetic: "package:2 numa:2 core:4 pu:1")
        let pools = CorePools.perNUMANode(t)
        #expect(pools.map(\.numaNode) == [0, 1, 2, 3])
        #expect(pools.map(\.cores) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]])
    }

    @Test func devicePoolsNeverSpanNodesWhenTheCountsDivide() throws {
        let t = try CPUTopology.load(synthetic: "package:2 numa:2 core:4 pu:2")
        let eight = try CorePools.split(t, devices: 8)
        #expect(eight.map(\.cores) == (0..<8).map { [2 * $0, 2 * $0 + 1] })
        #expect(eight.map(\.numaNode) == [0, 0, 1, 1, 2, 2, 3, 3])
        #expect(eight[0].processingUnits == [0, 1, 2, 3])
        let two = try CorePools.split(t, devices: 2)
        #expect(two.map(\.numaNode) == [0, 2])
        #expect(two[1].cores == Array(8..<16))
    }

    @Test func aSingleNodeMachineDegradesCleanly() throws {
        let t = try CPUTopology.load(synthetic: "core:2 pu:1")
        #expect(t.numaNodes == 1)
        #expect(CorePools.perNUMANode(t) == [CorePool(cores: [0, 1], processingUnits: [0, 1], numaNode: 0)])
        #expect(try CorePools.split(t, devices: 2).map(\.cores) == [[0], [1]])
        #expect(throws: CorePools.PoolError.tooManyDevices(devices: 3, cores: 2)) { try CorePools.split(t, devices: 3) }
        #expect(throws: CPUTopology.TopologyError.self) { try CPUTopology.load(synthetic: "bogus:7") }
    }

    @Test func theRealMachineHasCores() throws {
        let t = try CPUTopology.load()
        #expect(!t.cores.isEmpty && t.cores.allSatisfy { !$0.processingUnits.isEmpty })
    }
}

@Suite struct PageLocationTests {
    @Test func touchedPagesAreFoundOnANodeAndUntouchedOnesAreNotResident() {
        let page = Int(sysconf(Int32(_SC_PAGESIZE))), count = 64
        // A fresh anonymous mapping: no page is resident until written (heap
        // memory could reuse pages other tests already touched).
        let raw = mmap(nil, page * count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        precondition(raw != MAP_FAILED)
        defer { munmap(raw, page * count) }
        // Touch the first half only.
        for i in 0..<(count / 2) { raw!.storeBytes(of: UInt8(1), toByteOffset: i * page, as: UInt8.self) }
        let s = PageLocation.query(UnsafeRawPointer(raw!), bytes: page * count)
        #expect(s.failed == 0)
        #expect(s.byNode.values.reduce(0, +) == count / 2)
        #expect(s.notResident == count / 2)
    }
}
