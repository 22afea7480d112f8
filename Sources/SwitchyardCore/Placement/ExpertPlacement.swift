/// Which device holds each logical expert of each layer (vLLM's vocabulary:
/// logical experts map to physical experts on devices; this map has one
/// physical copy per logical expert, no redundant experts).
public struct ExpertMap: Codable, Sendable, Equatable {
    public var numDevices: Int
    /// `device[layer][expert]`.
    public var device: [[Int]]
    /// How an optimising placement's solver did; nil for static placements.
    public var solver: PlacementSolverInfo?

    enum CodingKeys: String, CodingKey {
        case numDevices = "num_devices"
        case device = "expert_device"
        case solver
    }

    public init(numDevices: Int, device: [[Int]], solver: PlacementSolverInfo? = nil) {
        self.numDevices = numDevices
        self.device = device
        self.solver = solver
    }
}

/// What a solver-based placement reports about its solution: relative gaps
/// between what it found and the best bound it proved (0 = optimal), and how
/// many of its subproblems it solved exactly.
public struct PlacementSolverInfo: Codable, Sendable, Equatable {
    public var method: String
    /// Worst layer's (max load − bound) / max load, for the balance objective.
    public var balanceGap: Double
    /// (found − bound) / found for the traffic objective, summed over the
    /// per-layer subproblems, each given the placement of the layer before.
    public var trafficGap: Double
    public var exactSubproblems: Int
    public var heuristicSubproblems: Int
    /// Passes of local re-optimisation after the main solve.
    public var refinementSweeps: Int
    public var seconds: Double

    enum CodingKeys: String, CodingKey {
        case method
        case balanceGap = "balance_gap"
        case trafficGap = "traffic_gap"
        case exactSubproblems = "exact_subproblems"
        case heuristicSubproblems = "heuristic_subproblems"
        case refinementSweeps = "refinement_sweeps"
        case seconds
    }

    public init(method: String, balanceGap: Double, trafficGap: Double, exactSubproblems: Int, heuristicSubproblems: Int,
                refinementSweeps: Int, seconds: Double) {
        self.method = method
        self.balanceGap = balanceGap
        self.trafficGap = trafficGap
        self.exactSubproblems = exactSubproblems
        self.heuristicSubproblems = heuristicSubproblems
        self.refinementSweeps = refinementSweeps
        self.seconds = seconds
    }
}

/// What a placement is asked to solve.
public struct PlacementProblem: Sendable {
    public var numLayers: Int
    public var numExperts: Int
    public var numDevices: Int
    /// Routing statistics; static placements ignore them.
    public var profile: RoutingProfile?

    public init(numLayers: Int, numExperts: Int, numDevices: Int, profile: RoutingProfile?) {
        self.numLayers = numLayers
        self.numExperts = numExperts
        self.numDevices = numDevices
        self.profile = profile
    }
}

extension PlacementProblem {
    /// Placements that give every device the same number of experts need
    /// the device count to divide the expert count.
    public func requireEvenSplit() throws {
        guard numDevices > 0, numExperts % numDevices == 0 else {
            throw PlacementError.invalidPlacement("\(numExperts) experts do not split evenly over \(numDevices) devices; choose a device count that divides the expert count")
        }
    }
}

/// An expert placement maps logical experts to devices.
public protocol ExpertPlacement: Sendable {
    func place(_ problem: PlacementProblem) throws -> ExpertMap
}

/// How good a map is on a profile: token load per device per layer, the
/// worst layer's max/mean device load, and tokens crossing devices between
/// consecutive layers (from the pair counts).
public struct PlacementReport: Sendable {
    /// `[layer][device]`.
    public var deviceLoad: [[Int]]
    public var imbalance: [Double]
    /// `[layer boundary]`: pair counts whose experts sit on different devices.
    public var crossDevicePairs: [Int]

    public var worstImbalance: Double { imbalance.max() ?? 1 }
    public var totalCrossDevicePairs: Int { crossDevicePairs.reduce(0, +) }

    public init(map: ExpertMap, profile: RoutingProfile) {
        deviceLoad = (0..<profile.numLayers).map { l in
            var load = Array(repeating: 0, count: map.numDevices)
            for e in 0..<profile.numExperts { load[map.device[l][e]] += profile.expertTokens[l][e] }
            return load
        }
        imbalance = deviceLoad.map { row in
            let mean = Double(row.reduce(0, +)) / Double(row.count)
            return mean > 0 ? Double(row.max()!) / mean : 1
        }
        crossDevicePairs = (0..<max(0, profile.numLayers - 1)).map { l in
            var n = 0
            for a in 0..<profile.numExperts {
                for b in 0..<profile.numExperts where map.device[l][a] != map.device[l + 1][b] {
                    n += profile.pairTokens[l][a][b]
                }
            }
            return n
        }
    }
}
