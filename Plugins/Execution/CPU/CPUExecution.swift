import SwitchyardCore
import SwitchyardModel

/// The default: one device, every kernel thread works on every expert in
/// turn (`SharedPoolExecutor`), weights read where the checkpoint's memory
/// mapping put them.
public struct CPUExecution: ExecutionStrategy {
    public init() {}

    public func prepare(_ context: ExecutionContext) throws -> ExecutionSummary {
        let executor = SharedPoolExecutor(weights: context.model.weights)
        context.model.install(experts: executor)
        return ExecutionSummary(strategy: "cpu", devices: executor.devices, map: nil)
    }

    public static func register(in registry: StrategyRegistry) {
        registry.registerExecution("cpu", summary: "one device: every expert computed by all kernel threads in turn (default)") { _ in
            CPUExecution()
        }
    }
}
