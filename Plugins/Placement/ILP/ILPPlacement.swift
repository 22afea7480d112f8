import Foundation
import SwitchyardCore

/// MoETuner (Go and Mahajan, arXiv 2502.06643) as two integer programs
/// solved with COIN-OR CBC:
///
/// 1. per layer, split the experts into one group per device with equal
///    expert counts and the smallest possible largest token load;
/// 2. layer by layer, put the experts on devices so that the fewest tokens
///    change device from the previous layer (in total, plus `pair_weight` ×
///    the busiest device pair), keeping equal counts and every device's load
///    within a cap: by default (`balance_target` "worst_layer") the worst
///    layer's optimal max/mean ratio × (1 + `load_slack`) times the layer's
///    mean, so layers that balance easily trade a little balance for traffic
///    without raising the worst layer (what bounds a pipeline of layers);
///    "layer" caps each layer at its own optimum. Step 1's groups matched to
///    devices (an assignment problem) are the warm start, so the result is
///    never worse than MoETuner's group-to-device matching.
///
/// Both steps start from greedy solutions, so CBC only ever improves on them;
/// subproblems with more than `max_ilp_binaries` binaries keep the greedy
/// solution (step 2 still gets an LP bound), and `time_limit_s` caps the
/// whole solve. `PlacementSolverInfo` reports the gaps.
public struct ILPPlacement: ExpertPlacement {
    public struct Options: Sendable {
        public var timeLimit: Double = 10
        public var loadSlack: Double = 0.01
        public var pairWeight: Double = 1
        public var maxILPBinaries: Int = 4096
        public var balanceTarget = "worst_layer"

        public init() {}
    }

    public let options: Options

    public init(_ options: Options = Options()) {
        self.options = options
    }

    public func place(_ p: PlacementProblem) throws -> ExpertMap {
        guard let profile = p.profile else {
            throw PlacementError.invalidPlacement("ilp needs a routing profile (--profile FILE, or record one with bench --record-routing)")
        }
        try p.requireEvenSplit()
        guard profile.numLayers == p.numLayers, profile.numExperts == p.numExperts else {
            throw PlacementError.invalidPlacement("the profile has \(profile.numLayers) layers × \(profile.numExperts) experts but the model has \(p.numLayers) × \(p.numExperts); record a profile of this model")
        }
        let t0 = Date()
        // A CBC call can overrun its share a little; keep a margin so the
        // whole solve ends inside the limit.
        let budget = options.timeLimit - min(1, 0.03 * options.timeLimit)
        let deadline = t0.addingTimeInterval(budget)
        let exactSize = p.numExperts * p.numDevices <= options.maxILPBinaries
        var exact = 0, heuristic = 0

        // Step 1 gets half the time; each layer an equal share of what is left.
        let step1End = t0.addingTimeInterval(budget / 2)
        var groups: [[Int]] = []
        var maxLoad: [Int] = []
        var balanceGap = 0.0
        for l in 0..<p.numLayers {
            let step = BalanceStep(load: profile.expertTokens[l], numGroups: p.numDevices)
            let share = step1End.timeIntervalSinceNow / Double(p.numLayers - l)
            let s = step.solve(start: step.greedy(), useSolver: exactSize && share > 0.005, timeLimit: share)
            if s.exact { exact += 1 } else { heuristic += 1 }
            groups.append(s.group)
            maxLoad.append(s.maxLoad)
            if s.maxLoad > 0 { balanceGap = max(balanceGap, (Double(s.maxLoad) - s.bound) / Double(s.maxLoad)) }
        }

        // Step 2, MoETuner's pass: layer 0 keeps its groups as devices; each
        // later layer is aligned to the one before it.
        let mean = (0..<p.numLayers).map { Double(profile.expertTokens[$0].reduce(0, +)) / Double(p.numDevices) }
        let worstOptimum = (0..<p.numLayers).map { mean[$0] > 0 ? Double(maxLoad[$0]) / mean[$0] : 1 }.max() ?? 1
        let capacity = (0..<p.numLayers).map { l -> Int in
            let own = Double(maxLoad[l]) * (1 + options.loadSlack)
            let target = options.balanceTarget == "worst_layer" ? max(own, mean[l] * worstOptimum * (1 + options.loadSlack)) : own
            return max(maxLoad[l], Int(target.rounded(.down)))
        }
        func alignStep(_ l: Int, _ device: [[Int]], next: Bool) -> AlignStep {
            var b: [AlignStep.Boundary] = []
            if l > 0 {
                b.append(.init(previousDevice: device[l - 1], pairs: profile.pairTokens[l - 1], numExperts: p.numExperts, numDevices: p.numDevices))
            }
            if next && l + 1 < p.numLayers {
                b.append(.init(nextDevice: device[l + 1], pairs: profile.pairTokens[l], numExperts: p.numExperts, numDevices: p.numDevices))
            }
            return AlignStep(boundaries: b, load: profile.expertTokens[l], numDevices: p.numDevices,
                             capacity: capacity[l], pairWeight: options.pairWeight)
        }
        let forwardEnd = t0.addingTimeInterval(budget * 0.75)
        var device: [[Int]] = [groups[0]]
        var found = 0.0, bound = 0.0
        for l in 1..<max(p.numLayers, 1) {
            let step = alignStep(l, device, next: false)
            let start = step.heuristic(groups: groups[l])
            let share = forwardEnd.timeIntervalSinceNow / Double(p.numLayers - l)
            let s = share > 0.005 ? step.solve(start: start, integer: exactSize, timeLimit: share)
                                  : AlignStep.Solution(device: start, objective: step.objective(start), bound: 0, exact: false)
            if s.exact { exact += 1 } else { heuristic += 1 }
            device.append(s.device)
            found += s.objective
            bound += s.bound
        }
        // Beyond MoETuner: the forward pass fixes each layer before seeing the
        // next, so sweep again, re-solving every layer against both
        // neighbours, and keep a change only if it lowers that layer's two
        // boundaries (so the whole objective never rises), until a sweep
        // changes nothing or time runs out.
        var sweeps = 0
        var improvedSweep = p.numLayers > 1
        while improvedSweep && deadline.timeIntervalSinceNow > 0.01 && sweeps < 8 {
            improvedSweep = false
            sweeps += 1
            for l in 0..<p.numLayers {
                let step = alignStep(l, device, next: true)
                let current = step.objective(device[l])
                let start = step.improve(device[l])
                let share = deadline.timeIntervalSinceNow / Double(p.numLayers - l)
                guard share > 0.005 else { break }
                let s = exactSize ? step.solve(start: start, integer: true, timeLimit: share)
                                  : AlignStep.Solution(device: start, objective: step.objective(start), bound: 0, exact: false)
                if s.objective < current - 1e-9 {
                    device[l] = s.device
                    improvedSweep = true
                }
            }
        }
        let info = PlacementSolverInfo(
            method: exactSize ? "MoETuner ILP (CBC)" : "MoETuner greedy + swaps (above max_ilp_binaries), LP bound",
            balanceGap: balanceGap, trafficGap: found > 0 ? max(0, (found - bound) / found) : 0,
            exactSubproblems: exact, heuristicSubproblems: heuristic, refinementSweeps: sweeps,
            seconds: Date().timeIntervalSince(t0))
        return ExpertMap(numDevices: p.numDevices, device: device, solver: info)
    }

    public static func register(in registry: StrategyRegistry) {
        registry.registerPlacement("ilp", summary: "MoETuner: balanced expert groups per layer, then groups aligned across layers to cut cross-device tokens (MILP, CBC)",
                                   options: [
                                       StrategyOption("time_limit_s", type: "number", default: "10", help: "wall-clock limit of the whole solve"),
                                       StrategyOption("load_slack", type: "number", default: "0.01", help: "step 2 may exceed step 1's largest device load by this fraction"),
                                       StrategyOption("pair_weight", type: "number", default: "1", help: "weight of the busiest device pair's tokens next to the total"),
                                       StrategyOption("max_ilp_binaries", type: "int", default: "4096", help: "experts × devices above which a layer keeps the greedy solution"),
                                       StrategyOption("balance_target", type: "string", default: "worst_layer", help: "cap each layer's device load at its own optimum (layer) or at the worst layer's optimum ratio (worst_layer), × (1 + load_slack)"),
                                   ]) { config in
            var o = Options()
            o.timeLimit = try config.double("time_limit_s", default: o.timeLimit, in: 0.01...3600)
            o.loadSlack = try config.double("load_slack", default: o.loadSlack, in: 0...1)
            o.pairWeight = try config.double("pair_weight", default: o.pairWeight, in: 0...1000)
            o.maxILPBinaries = try config.int("max_ilp_binaries", default: o.maxILPBinaries)
            o.balanceTarget = try config.string("balance_target", default: o.balanceTarget, allowed: ["layer", "worst_layer"])
            return ILPPlacement(o)
        }
    }
}
