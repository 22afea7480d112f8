import BalancedPlacement
import ChunkedScheduler
import LayeredScheduler
import FilePlacement
import Foundation
import LinearPlacement
import RoundRobinPlacement
import Testing
@testable import SwitchyardCore
@testable import SwitchyardModel

@Suite struct PlacementTests {
    /// The real Mixtral-8x7B routing trace in ../shared (test data only).
    static let traceDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/data/routing/mixtral-8x7b")

    static let traceAvailable = FileManager.default.fileExists(atPath: traceDir.appendingPathComponent("gsm8k_2_routing.jsonl").path)

    func mixtral() throws -> RoutingProfile {
        try RoutingProfile.importTokenRecords(paths: ["gsm8k_2_routing.jsonl", "humaneval_2_routing.jsonl"].map { Self.traceDir.appendingPathComponent($0).path },
                                              numLayers: 32, numExperts: 8)
    }

    @Test(.enabled(if: traceAvailable, "needs the Mixtral trace in ../shared"))
    func mixtralTraceImportKeepsCompleteTokenPaths() throws {
        let p = try mixtral()
        // 333 + 244 (problem, token) keys have all 32 layers (the trace's README).
        #expect(p.tokens == 577 && p.topK == 2)
        #expect(p.expertTokens.allSatisfy { $0.reduce(0, +) == 577 * 2 })
        #expect(p.pairTokens.allSatisfy { $0.joined().reduce(0, +) == 577 * 4 })
    }

    func problem(_ p: RoutingProfile, devices: Int = 4) -> PlacementProblem {
        PlacementProblem(numLayers: p.numLayers, numExperts: p.numExperts, numDevices: devices, profile: p)
    }

    /// The best worst-layer imbalance with two experts per device, by trying
    /// every pairing of the 8 experts (105 per layer).
    func bruteForceBestWorstImbalance(_ p: RoutingProfile) -> Double {
        func pairings(_ items: [Int]) -> [[[Int]]] {
            guard let first = items.first else { return [[]] }
            var out: [[[Int]]] = []
            for i in 1..<items.count {
                var rest = items
                rest.remove(at: i); rest.removeFirst()
                for tail in pairings(rest) { out.append([[first, items[i]]] + tail) }
            }
            return out
        }
        let all = pairings(Array(0..<8))
        return (0..<p.numLayers).map { l in
            let mean = Double(p.expertTokens[l].reduce(0, +)) / 4
            return all.map { pairs in Double(pairs.map { p.expertTokens[l][$0[0]] + p.expertTokens[l][$0[1]] }.max()!) / mean }.min()!
        }.max()!
    }

    @Test(.enabled(if: traceAvailable, "needs the Mixtral trace in ../shared"))
    func linearAndBalancedOnTheRealMixtralProfile() throws {
        let p = try mixtral()
        let linear = PlacementReport(map: try LinearPlacement().place(problem(p)), profile: p)
        let balanced = PlacementReport(map: try BalancedPlacement().place(problem(p)), profile: p)
        let best = bruteForceBestWorstImbalance(p)
        #expect(abs(linear.worstImbalance - 1.39) < 0.01)
        #expect(abs(best - 1.15) < 0.01)
        #expect(balanced.worstImbalance >= best - 1e-12)
        #expect(balanced.worstImbalance <= best + 0.01)
    }

    /// Recording during serving: every computed token's route counts once in
    /// P and its k×k pairs once in R, whether prompts run chunked (all layers
    /// per iteration) or layered (routes carried across layer groups).
    @Test func recordedProfilesAreCompleteAndIdenticalUnderChunkedAndLayered() async throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("SwitchyardModelTests/Fixtures/models/olmoe").path
        var profiles: [RoutingProfile] = []
        let prompts: [[Int32]] = [Array(1...60), Array(100...140), [5, 6, 7]]
        for scheduler in [ChunkedScheduler(.init(maxNumBatchedTokens: 16)) as any Scheduler,
                          LayeredScheduler(.init(tokensPerGroup: 32), numLayers: 2) as any Scheduler] {
            let model = try Transformer(directory: dir)
            model.counters.recordPairs()
            let engine = Engine(model: model, config: EngineConfig(maxModelLen: 128, blockSize: 8, numKVBlocks: 64), scheduler: scheduler)
            _ = await engine.generate(prompts.enumerated().map { GenerationRequest(id: "r\($0)", promptTokens: $1, maxTokens: 4, ignoreEOS: true) })
            engine.shutdown()
            profiles.append(RoutingProfile(counters: model.counters, topK: model.config.numExpertsPerToken, source: "test"))
        }
        // Tokens computed: every prompt token and every output token but the last.
        let computed = prompts.map(\.count).reduce(0, +) + prompts.count * 3
        let k = 4
        #expect(profiles[0].tokens == computed)
        #expect(profiles[0].expertTokens.allSatisfy { $0.reduce(0, +) == computed * k })
        #expect(profiles[0].pairTokens.allSatisfy { $0.joined().reduce(0, +) == computed * k * k })
        #expect(profiles[1].expertTokens == profiles[0].expertTokens)
        #expect(profiles[1].pairTokens == profiles[0].pairTokens)
    }

    @Test func reportCountsLoadsAndCrossDevicePairsByHand() {
        var p = RoutingProfile(numLayers: 2, numExperts: 4, topK: 1)
        for path in [[[0], [1]], [[0], [2]], [[3], [3]], [[1], [0]]] { p.add(path: path) }
        let map = ExpertMap(numDevices: 2, device: [[0, 0, 1, 1], [0, 0, 1, 1]])
        let r = PlacementReport(map: map, profile: p)
        #expect(r.deviceLoad == [[3, 1], [2, 2]])
        #expect(r.imbalance == [1.5, 1.0])
        // Only 0 → 2 crosses devices.
        #expect(r.crossDevicePairs == [1])
    }

    @Test func staticPlacementsMatchVLLMsLayouts() throws {
        let p = PlacementProblem(numLayers: 1, numExperts: 4, numDevices: 2, profile: nil)
        #expect(try LinearPlacement().place(p).device == [[0, 0, 1, 1]])
        #expect(try RoundRobinPlacement().place(p).device == [[0, 1, 0, 1]])
        #expect(throws: PlacementError.self) { try LinearPlacement().place(PlacementProblem(numLayers: 1, numExperts: 5, numDevices: 2, profile: nil)) }
        #expect(throws: PlacementError.self) { try BalancedPlacement().place(p) }
    }

    @Test func fileMapsRoundTripAndAreValidated() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("map-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: url) }
        let map = ExpertMap(numDevices: 2, device: [[1, 0, 1, 0]])
        try JSONEncoder().encode(map).write(to: url)
        #expect(try FilePlacement(path: url.path).place(PlacementProblem(numLayers: 1, numExperts: 4, numDevices: 2, profile: nil)) == map)
        #expect(throws: PlacementError.self) {
            try FilePlacement(path: url.path).place(PlacementProblem(numLayers: 1, numExperts: 4, numDevices: 3, profile: nil))
        }
    }
}
