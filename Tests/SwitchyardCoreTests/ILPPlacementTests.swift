import Foundation
import LinearPlacement
import Synchronization
import Testing
@testable import ILPPlacement
@testable import SwitchyardCore
@testable import SwitchyardModel

@Suite struct ILPPlacementTests {
    /// Every way to give each of `groups` groups exactly `n / groups` of `n` items.
    static func equalSplits(_ n: Int, groups: Int) -> [[Int]] {
        let size = n / groups
        var out: [[Int]] = []
        var current = Array(repeating: 0, count: n)
        var counts = Array(repeating: 0, count: groups)
        func go(_ i: Int) {
            if i == n { out.append(current); return }
            for g in 0..<groups where counts[g] < size {
                current[i] = g; counts[g] += 1
                go(i + 1)
                counts[g] -= 1
            }
        }
        go(0)
        return out
    }

    @Test func balanceStepFindsTheBruteForceOptimum() {
        var rng = Xoshiro256(seed: 7)
        for (experts, groups) in [(8, 2), (6, 3), (8, 4)] {
            for _ in 0..<4 {
                let load = (0..<experts).map { _ in Int(rng.next() % 1000) + 1 }
                let step = BalanceStep(load: load, numGroups: groups)
                let s = step.solve(start: step.greedy(), useSolver: true, timeLimit: 120)
                let best = Self.equalSplits(experts, groups: groups).map(step.maxLoad).min()!
                #expect(s.maxLoad == best, "loads \(load) over \(groups) groups")
                #expect(s.exact)
                #expect(Set((0..<groups).map { g in s.group.filter { $0 == g }.count }) == [experts / groups])
            }
        }
    }

    /// CBC's driver keeps its option parser in process-wide statics; two
    /// placements solved at once (two engines in one process, or parallel
    /// tests) must still each get their proven optimum.
    @Test func concurrentSolvesEachStayProvenOptimal() {
        var rng = Xoshiro256(seed: 5)
        let loads = (0..<8).map { _ in (0..<8).map { _ in Int(rng.next() % 1000) + 1 } }
        let serial = loads.map { load -> Int in
            let step = BalanceStep(load: load, numGroups: 2)
            return step.solve(start: step.greedy(), useSolver: true, timeLimit: 120).maxLoad
        }
        let results = Mutex([(Int, Bool)](repeating: (0, false), count: loads.count))
        DispatchQueue.concurrentPerform(iterations: loads.count) { i in
            let step = BalanceStep(load: loads[i], numGroups: 2)
            let s = step.solve(start: step.greedy(), useSolver: true, timeLimit: 120)
            results.withLock { $0[i] = (s.maxLoad, s.exact) }
        }
        let got = results.withLock { $0 }
        for i in loads.indices {
            #expect(got[i].0 == serial[i], "loads \(loads[i])")
            #expect(got[i].1)
        }
    }

    @Test func alignStepFindsTheBruteForceOptimumUnderTheLoadCap() {
        var rng = Xoshiro256(seed: 11)
        let experts = 8, devices = 2
        for _ in 0..<4 {
            let load = (0..<experts).map { _ in Int(rng.next() % 100) + 1 }
            let previous = [0, 1, 0, 1, 1, 0, 1, 0]
            let pairs = (0..<experts).map { _ in (0..<experts).map { _ in Int(rng.next() % 50) } }
            let boundary = AlignStep.Boundary(previousDevice: previous, pairs: pairs, numExperts: experts, numDevices: devices)
            let mean = load.reduce(0, +) / devices
            let step = AlignStep(boundaries: [boundary], load: load, numDevices: devices, capacity: mean * 115 / 100, pairWeight: 1)
            let feasible = Self.equalSplits(experts, groups: devices).filter(step.feasible)
            guard let start = feasible.first else { continue }
            let best = feasible.map(step.objective).min()!
            // A generous limit: a loaded CI machine must not turn this into a timing test.
            let s = step.solve(start: step.improve(start), integer: true, timeLimit: 120)
            #expect(step.feasible(s.device))
            #expect(abs(s.objective - best) < 1e-9, "loads \(load)")
        }
    }

    @Test func syntheticProfilesAreReproducibleSkewedAndComplete() throws {
        let a = try RoutingProfile.synthetic(numLayers: 4, numExperts: 16, topK: 2, tokens: 2000, skew: 1.2, affinity: 0.4, seed: 3)
        let b = try RoutingProfile.synthetic(numLayers: 4, numExperts: 16, topK: 2, tokens: 2000, skew: 1.2, affinity: 0.4, seed: 3)
        #expect(a == b)
        #expect(a.expertTokens.allSatisfy { $0.reduce(0, +) == 4000 })
        #expect(a.pairTokens.allSatisfy { $0.joined().reduce(0, +) == 8000 })
        #expect(a.expertTokens.allSatisfy { Double($0.max()!) > 4 * Double($0.min()!) })
        #expect(throws: PlacementError.self) {
            try RoutingProfile.synthetic(numLayers: 4, numExperts: 16, topK: 17, tokens: 10, skew: 1, affinity: 0, seed: 0)
        }
    }

    @Test func ilpBeatsLinearOnBalanceAndTrafficOnASkewedProfile() throws {
        let p = try RoutingProfile.synthetic(numLayers: 6, numExperts: 16, topK: 2, tokens: 3000, skew: 1.0, affinity: 0.5, seed: 1)
        let problem = PlacementProblem(numLayers: 6, numExperts: 16, numDevices: 4, profile: p)
        var o = ILPPlacement.Options()
        o.timeLimit = 60
        o.pairWeight = 0
        let map = try ILPPlacement(o).place(problem)
        let ilp = PlacementReport(map: map, profile: p)
        let linear = PlacementReport(map: try LinearPlacement().place(problem), profile: p)
        #expect(map.device.allSatisfy { row in (0..<4).allSatisfy { d in row.filter { $0 == d }.count == 4 } })
        #expect(ilp.worstImbalance < linear.worstImbalance)
        #expect(Double(ilp.totalCrossDevicePairs) < 0.9 * Double(linear.totalCrossDevicePairs))
        let info = try #require(map.solver)
        #expect(info.trafficGap >= 0 && info.trafficGap <= 1)
        #expect(info.exactSubproblems + info.heuristicSubproblems == 6 + 5)
    }

    @Test func largeInstancesFallBackToTheHeuristicAndReportAGap() throws {
        let p = try RoutingProfile.synthetic(numLayers: 3, numExperts: 64, topK: 4, tokens: 2000, skew: 1.0, affinity: 0.3, seed: 2)
        var o = ILPPlacement.Options()
        o.timeLimit = 5
        o.maxILPBinaries = 64
        let map = try ILPPlacement(o).place(PlacementProblem(numLayers: 3, numExperts: 64, numDevices: 8, profile: p))
        let info = try #require(map.solver)
        #expect(info.heuristicSubproblems > 0)
        #expect(info.method.contains("greedy"))
        #expect(map.device.allSatisfy { row in (0..<8).allSatisfy { d in row.filter { $0 == d }.count == 8 } })
    }

    @Test(.enabled(if: PlacementTests.traceAvailable, "needs the Mixtral trace in ../shared"))
    func ilpOnTheRealMixtralProfileMeetsMoETunersBar() throws {
        let p = try PlacementTests().mixtral()
        let problem = PlacementProblem(numLayers: 32, numExperts: 8, numDevices: 4, profile: p)
        var o = ILPPlacement.Options()
        // Without the busiest-pair term every subproblem solves well inside
        // the limit, so the result does not depend on the machine's speed.
        o.pairWeight = 0
        o.timeLimit = 60
        let ilp = PlacementReport(map: try ILPPlacement(o).place(problem), profile: p)
        let linear = PlacementReport(map: try LinearPlacement().place(problem), profile: p)
        #expect(ilp.worstImbalance <= 1.17)
        #expect(Double(ilp.totalCrossDevicePairs) <= 0.92 * Double(linear.totalCrossDevicePairs))
    }

    @Test func ilpRejectsMissingOrMismatchedProfiles() throws {
        #expect(throws: PlacementError.self) {
            try ILPPlacement().place(PlacementProblem(numLayers: 2, numExperts: 4, numDevices: 2, profile: nil))
        }
        let p = try RoutingProfile.synthetic(numLayers: 2, numExperts: 4, topK: 1, tokens: 10, skew: 0, affinity: 0, seed: 0)
        #expect(throws: PlacementError.self) {
            try ILPPlacement().place(PlacementProblem(numLayers: 3, numExperts: 4, numDevices: 2, profile: p))
        }
    }
}
