import SwitchyardCore
import SwitchyardModel

/// Expert parallelism over CPU device pools: the cores are split into
/// `devices` pools (or one per NUMA node with `numa`), the placement maps
/// each layer's experts onto the pools, each pool's threads are pinned to
/// its cores, its experts' weights are copied into its node's memory, and an
/// MoE layer runs every pool's experts at the same time.
public struct ExpertParallelExecution: ExecutionStrategy {
    public struct Options: Sendable {
        public var devices = 2
        public var numa = false
        public var pin = true
        public var weightsOnNode = true
        public init() {}
    }

    public let options: Options

    public init(_ options: Options = Options()) { self.options = options }

    public func prepare(_ context: ExecutionContext) throws -> ExecutionSummary {
        let pools: [CorePool]
        do {
            pools = options.numa ? CorePools.perNUMANode(context.topology) : try CorePools.split(context.topology, devices: options.devices)
        } catch let e as CorePools.PoolError {
            throw ExecutionError.setup(e.description)
        }
        let map = try context.placeExperts(pools.count)
        guard map.numDevices == pools.count else {
            throw ExecutionError.setup("the expert map is for \(map.numDevices) devices but there are \(pools.count) pools; use a map for \(pools.count)")
        }
        let ep: ExpertParallelExecutor
        do {
            ep = try ExpertParallelExecutor(weights: context.model.weights, pools: pools, map: map.device,
                                    weightsOnNode: options.weightsOnNode, pin: options.pin)
        } catch let e as ExpertParallelExecutor.SetupError {
            throw ExecutionError.setup(e.description)
        }
        context.model.install(experts: ep)
        var notes: [String] = []
        if options.weightsOnNode && !ep.weightsOnNode { notes.append("libnuma reports no NUMA support: expert weights copied to ordinary memory") }
        return ExecutionSummary(strategy: "cpu-ep", devices: ep.devices, map: map, notes: notes)
    }

    public static func register(in registry: StrategyRegistry) {
        registry.registerExecution("cpu-ep", summary: "expert parallel: core pools pinned per device, experts placed by --placement, weights on the pool's NUMA node",
                                   options: [
                                       StrategyOption("devices", type: "int", default: "2", help: "number of core pools (shorthand --devices)"),
                                       StrategyOption("numa", type: "bool", default: "false", help: "one pool per NUMA node instead (shorthand --numa)"),
                                       StrategyOption("pin", type: "bool", default: "true", help: "pin each kernel thread to a core of its pool"),
                                       StrategyOption("weights_on_node", type: "bool", default: "true", help: "copy each expert's weights into its pool's NUMA node"),
                                   ]) { config in
            var o = Options()
            o.devices = try config.int("devices", default: o.devices)
            o.numa = try config.bool("numa", default: o.numa)
            o.pin = try config.bool("pin", default: o.pin)
            o.weightsOnNode = try config.bool("weights_on_node", default: o.weightsOnNode)
            return ExpertParallelExecution(o)
        }
    }
}
