import SwitchyardCore

/// Greedy token-load balancing per layer: experts in decreasing load order,
/// each to the least-loaded device that still has room, every device holding
/// the same number of experts (longest-processing-time first). Ignores
/// cross-layer traffic; `ilp` (MoETuner) is the placement that weighs both.
public struct BalancedPlacement: ExpertPlacement {
    public init() {}

    public func place(_ p: PlacementProblem) throws -> ExpertMap {
        guard let profile = p.profile else {
            throw PlacementError.invalidPlacement("balanced needs a routing profile (--profile FILE)")
        }
        try p.requireEvenSplit()
        let capacity = p.numExperts / p.numDevices
        var device: [[Int]] = []
        for l in 0..<p.numLayers {
            let order = (0..<p.numExperts).sorted { (profile.expertTokens[l][$0], -$0) > (profile.expertTokens[l][$1], -$1) }
            var load = Array(repeating: 0, count: p.numDevices)
            var count = Array(repeating: 0, count: p.numDevices)
            var row = Array(repeating: 0, count: p.numExperts)
            for e in order {
                let d = (0..<p.numDevices).filter { count[$0] < capacity }.min { (load[$0], $0) < (load[$1], $1) }!
                row[e] = d
                load[d] += profile.expertTokens[l][e]
                count[d] += 1
            }
            device.append(row)
        }
        return ExpertMap(numDevices: p.numDevices, device: device)
    }

    public static func register(in registry: StrategyRegistry) {
        registry.registerPlacement("balanced", summary: "greedy per-layer token-load balancing with equal expert counts per device") { _ in BalancedPlacement() }
    }
}
