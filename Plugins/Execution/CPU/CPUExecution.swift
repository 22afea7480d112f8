import SwitchyardCore
import SwitchyardModel

/// The default: one device, every kernel thread works on every expert in
/// turn (each expert's rows split over all threads), weights read where the
/// checkpoint's memory mapping put them.
public struct CPUExecution: ExecutionStrategy {
    public init() {}

    public func prepare(_ context: ExecutionContext) throws -> ExecutionSummary {
        context.model.install(expertParallel: nil)
        let c = context.model.config
        let cores = context.topology.cores.map(\.index)
        return ExecutionSummary(strategy: "cpu", devices: [.init(name: "cpu", cores: cores, numaNode: -1,
                                                                experts: c.numExperts * c.sparseLayers.filter { $0 }.count)],
                                map: nil)
    }

    public static func register(in registry: StrategyRegistry) {
        registry.registerExecution("cpu", summary: "one device: every expert computed by all kernel threads in turn (default)") { _ in
            CPUExecution()
        }
    }
}
