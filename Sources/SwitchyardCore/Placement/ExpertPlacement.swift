/// Which device holds each logical expert of each layer (vLLM's vocabulary:
/// logical experts map to physical experts on devices; this map has one
/// physical copy per logical expert, no redundant experts).
public struct ExpertMap: Codable, Sendable, Equatable {
    public var numDevices: Int
    /// `device[layer][expert]`.
    public var device: [[Int]]

    enum CodingKeys: String, CodingKey {
        case numDevices = "num_devices"
        case device = "expert_device"
    }

    public init(numDevices: Int, device: [[Int]]) {
        self.numDevices = numDevices
        self.device = device
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
