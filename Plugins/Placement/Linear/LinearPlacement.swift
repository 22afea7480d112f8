import SwitchyardCore

/// vLLM's `linear` expert placement: contiguous blocks of experts per device
/// (4 experts on 2 devices: [0, 1] and [2, 3]), the same in every layer.
public struct LinearPlacement: ExpertPlacement {
    public init() {}

    public func place(_ p: PlacementProblem) throws -> ExpertMap {
        try p.requireEvenSplit()
        let per = p.numExperts / p.numDevices
        return ExpertMap(numDevices: p.numDevices,
                         device: Array(repeating: (0..<p.numExperts).map { $0 / per }, count: p.numLayers))
    }

    public static func register(in registry: StrategyRegistry) {
        registry.registerPlacement("linear", summary: "contiguous experts per device, same in every layer (vLLM's linear)") { _ in LinearPlacement() }
    }
}

