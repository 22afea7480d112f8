import SwitchyardCore

/// vLLM's `linear` expert placement: contiguous blocks of experts per device
/// (4 experts on 2 devices: [0, 1] and [2, 3]), the same in every layer.
public struct LinearPlacement: ExpertPlacement {
    public init() {}

    public func place(_ p: PlacementProblem) throws -> ExpertMap {
        try checkDivisible(p)
        let per = p.numExperts / p.numDevices
        return ExpertMap(numDevices: p.numDevices,
                         device: Array(repeating: (0..<p.numExperts).map { $0 / per }, count: p.numLayers))
    }

    public static func register(in registry: StrategyRegistry) {
        registry.registerPlacement("linear", summary: "contiguous experts per device, same in every layer (vLLM's linear)") { _ in LinearPlacement() }
    }
}

/// Every static placement here needs the experts to split evenly.
func checkDivisible(_ p: PlacementProblem) throws {
    guard p.numDevices > 0, p.numExperts % p.numDevices == 0 else {
        throw PlacementError.invalidPlacement("\(p.numExperts) experts do not split evenly over \(p.numDevices) devices; choose a device count that divides the expert count")
    }
}
