import BalancedPlacement
import ChunkedScheduler
import CPUExecution
import ExpertParallelExecution
import Foundation
import LinearPlacement
import Testing
@testable import SwitchyardCore
@testable import SwitchyardModel

@Suite(.serialized) struct ExecutionStrategyTests {
    static let defaultModel = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("models/stdlib-moe").path

    func registry() -> StrategyRegistry {
        let r = StrategyRegistry()
        CPUExecution.register(in: r)
        ExpertParallelExecution.register(in: r)
        LinearPlacement.register(in: r)
        BalancedPlacement.register(in: r)
        return r
    }

    func serve(_ execution: String, config: String?, placement: String, profile: RoutingProfile?,
               prompts: [[Int32]]) async throws -> (outputs: [[Int32]], summary: ExecutionSummary, stats: ExpertExecutionStats) {
        let r = registry()
        let model = try Transformer(directory: Self.defaultModel)
        let c = model.config
        let summary = try r.makeExecution(execution, config: config).prepare(ExecutionContext(model: model, topology: try CPUTopology.load()) { n in
            try r.makePlacement(placement).place(PlacementProblem(numLayers: c.numLayers, numExperts: c.numExperts, numDevices: n, profile: profile))
        })
        let engine = Engine(model: model, config: EngineConfig(maxModelLen: 256, blockSize: 16, numKVBlocks: 64),
                            scheduler: ChunkedScheduler(.init(maxNumBatchedTokens: 64)))
        let out = await engine.generate(prompts.enumerated().map { GenerationRequest(id: "r\($0)", promptTokens: $1, maxTokens: 8, ignoreEOS: true) })
        engine.shutdown()
        return (out.map(\.outputTokens), summary, model.experts.stats)
    }

    @Test func expertParallelServingGivesTheSameGreedyTokensAsOneDevice() async throws {
        let prompts: [[Int32]] = [Array(10...90), Array(200...230), [7, 8, 9], Array(1000...1100)]
        let devices = min(2, try CPUTopology.load().cores.count)
        let single = try await serve("cpu", config: nil, placement: "linear", profile: nil, prompts: prompts)
        #expect(single.summary.map == nil && single.summary.devices.count == 1)
        let computed = prompts.map(\.count).reduce(0, +) + prompts.count * 7
        #expect(single.stats.deviceTokens.allSatisfy { $0 == [computed * 2] })
        // A profile of the same model steers balanced placement.
        var profile = RoutingProfile(numLayers: 6, numExperts: 16, topK: 2)
        for e in 0..<16 { for _ in 0...e { profile.add(path: Array(repeating: [e, (e + 1) % 16], count: 6)) } }
        for placement in ["linear", "balanced"] {
            let ep = try await serve("cpu-ep", config: "{\"devices\": \(devices)}", placement: placement, profile: profile, prompts: prompts)
            #expect(ep.outputs == single.outputs, "\(placement)")
            #expect(ep.summary.devices.count == devices)
            #expect(ep.summary.devices.map(\.experts).reduce(0, +) == 6 * 16)
            let stats = ep.stats
            // Every computed token's k assignments ran on some device.
            #expect(stats.deviceTokens.allSatisfy { $0.reduce(0, +) == computed * 2 })
        }
    }

    @Test func unknownExecutionNamesAndBadOptionsAreClearErrors() throws {
        let r = registry()
        #expect(throws: StrategyError.unknown(kind: .execution, name: "gpu-magic", valid: ["cpu", "cpu-ep"])) {
            try r.makeExecution("gpu-magic")
        }
        for (config, named) in [("{\"devices\": \"two\"}", "devices"), ("{\"pin\": 1}", "pin"), ("{\"device\": 2}", "device")] {
            do {
                _ = try r.makeExecution("cpu-ep", config: config)
                Issue.record("\(config) was accepted")
            } catch let e as StrategyError {
                // The message names the option at fault and what is valid.
                #expect(e.description.contains(named), "\(e.description)")
                #expect(e.description.contains("cpu-ep"), "\(e.description)")
            }
        }
    }

    @Test func moreDevicesThanCoresIsASetupErrorNamingTheFix() throws {
        let r = registry()
        let model = try Transformer(directory: Self.defaultModel)
        let cores = try CPUTopology.load().cores.count
        let strategy = try r.makeExecution("cpu-ep", config: "{\"devices\": \(cores + 1)}")
        do {
            _ = try strategy.prepare(ExecutionContext(model: model, topology: try CPUTopology.load()) { _ in
                ExpertMap(numDevices: 1, device: [])
            })
            Issue.record("expected an error")
        } catch let e as ExecutionError {
            #expect(e.description.contains("--devices \(cores + 1)"))
        }
        #expect(model.experts is SharedPoolExecutor)
    }
}
