import SwitchyardCore

/// vLLM's `round_robin` expert placement: expert e on device e mod N
/// (4 experts on 2 devices: [0, 2] and [1, 3]), the same in every layer.
public struct RoundRobinPlacement: ExpertPlacement {
    public init() {}

    public func place(_ p: PlacementProblem) throws -> ExpertMap {
        try p.requireEvenSplit()
        return ExpertMap(numDevices: p.numDevices,
                         device: Array(repeating: (0..<p.numExperts).map { $0 % p.numDevices }, count: p.numLayers))
    }

    public static func register(in registry: StrategyRegistry) {
        registry.registerPlacement("round-robin", summary: "expert e on device e mod N, same in every layer (vLLM's round_robin)") { _ in RoundRobinPlacement() }
    }
}
