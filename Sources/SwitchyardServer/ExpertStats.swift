import Foundation
import Synchronization
import SwitchyardCore
import SwitchyardModel

/// The model's expert counters at one moment, copied on the engine's loop
/// thread (where the forward pass writes them).
public struct ExpertCounts: Sendable, Equatable {
    public var numLayers: Int
    public var numExperts: Int
    /// `tokens[layer * numExperts + expert]`: token-slots routed there.
    public var tokens: [Int]
    public var expertWeightBytesRead: Int
    public var expertActivations: Int
    /// What each of the executor's devices did.
    public var devices: DeviceWork? = nil

    /// The executor's device work summed over layers (see `ExpertExecutionStats`).
    public struct DeviceWork: Sendable, Equatable {
        /// Seconds each device spent on its experts.
        public var busySeconds: [Double]
        /// Wall seconds of the expert phases: what the forwards waited on.
        public var expertPhaseSeconds: Double
        /// Σ over forwards and layers of the busiest device's token-expert
        /// assignments, and of the mean device's.
        public var busiestDeviceTokens: Int
        public var meanDeviceTokens: Double
        /// The executor's own named counters as it reports them (totals and
        /// ratios since it started; never differenced).
        public var counters: [String: Double] = [:]

        init(_ s: ExpertExecutionStats) {
            let n = s.deviceBusySeconds.first?.count ?? 0
            busySeconds = (0..<n).map { d in s.deviceBusySeconds.reduce(0) { $0 + $1[d] } }
            expertPhaseSeconds = s.expertPhaseSeconds.reduce(0, +)
            busiestDeviceTokens = s.busiestDeviceTokens.reduce(0, +)
            meanDeviceTokens = s.meanDeviceTokens.reduce(0, +)
            counters = s.counters
        }

        init(busySeconds: [Double], expertPhaseSeconds: Double, busiestDeviceTokens: Int, meanDeviceTokens: Double,
             counters: [String: Double] = [:]) {
            self.busySeconds = busySeconds
            self.expertPhaseSeconds = expertPhaseSeconds
            self.busiestDeviceTokens = busiestDeviceTokens
            self.meanDeviceTokens = meanDeviceTokens
            self.counters = counters
        }

        /// The imbalance the expert phases waited on: busiest / mean device.
        public var perForwardImbalance: Double { meanDeviceTokens > 0 ? Double(busiestDeviceTokens) / meanDeviceTokens : 1 }

        static func - (a: DeviceWork, b: DeviceWork) -> DeviceWork {
            DeviceWork(busySeconds: zip(a.busySeconds, b.busySeconds).map { $0 - $1 },
                       expertPhaseSeconds: a.expertPhaseSeconds - b.expertPhaseSeconds,
                       busiestDeviceTokens: a.busiestDeviceTokens - b.busiestDeviceTokens,
                       meanDeviceTokens: a.meanDeviceTokens - b.meanDeviceTokens, counters: a.counters)
        }
    }

    public static func read(_ engine: Engine) async -> ExpertCounts {
        let model = engine.model
        return await engine.onLoopThread {
            let c = model.counters
            return ExpertCounts(numLayers: c.numLayers, numExperts: c.numExperts, tokens: c.tokens,
                                expertWeightBytesRead: c.expertWeightBytesRead, expertActivations: c.expertActivations,
                                devices: DeviceWork(model.experts.stats))
        }
    }

    public static func - (a: ExpertCounts, b: ExpertCounts) -> ExpertCounts {
        ExpertCounts(numLayers: a.numLayers, numExperts: a.numExperts, tokens: zip(a.tokens, b.tokens).map { $0 - $1 },
                     expertWeightBytesRead: a.expertWeightBytesRead - b.expertWeightBytesRead,
                     expertActivations: a.expertActivations - b.expertActivations,
                     devices: a.devices.map { ad in b.devices.map { ad - $0 } ?? ad })
    }

    public func tokens(layer: Int) -> ArraySlice<Int> { tokens[(layer * numExperts)..<((layer + 1) * numExperts)] }

    /// `[layer][expert]`, as `/v1/experts/stats` writes it.
    public var tokensPerLayerExpert: [[Int]] { (0..<numLayers).map { Array(tokens(layer: $0)) } }
}

/// `GET /v1/experts/stats` and its reset: per-(layer, expert) token counts,
/// per-device load under the serving placement, and imbalance, counted since
/// the server started or the last `POST /v1/experts/stats/reset`. The reset
/// moves a baseline; the engine's counters (and the Prometheus counters built
/// on them) stay monotonic.
public final class ExpertStats: Sendable {
    public let engine: Engine
    /// Which device holds each expert; one device when not given.
    public let map: ExpertMap
    public let placementName: String
    private let baseline: Mutex<(counts: ExpertCounts?, since: Double)>

    public init(engine: Engine, map: ExpertMap?, placementName: String) {
        self.engine = engine
        let c = engine.model.config
        self.map = map ?? ExpertMap(numDevices: 1, device: Array(repeating: Array(repeating: 0, count: max(c.numExperts, 1)),
                                                                 count: c.numLayers))
        self.placementName = map == nil ? "single-device" : placementName
        baseline = Mutex((nil, Date().timeIntervalSince1970))
    }

    /// Counts since the last reset.
    public func current() async -> (counts: ExpertCounts, since: Double) {
        let now = await ExpertCounts.read(engine)
        let (base, since) = baseline.withLock { ($0.counts, $0.since) }
        return (base.map { now - $0 } ?? now, since)
    }

    public func reset() async {
        let now = await ExpertCounts.read(engine)
        baseline.withLock { $0 = (now, Date().timeIntervalSince1970) }
    }

    /// `[layer][device]` token-slots.
    public func deviceLoad(_ c: ExpertCounts) -> [[Int]] {
        (0..<c.numLayers).map { l in
            var load = Array(repeating: 0, count: map.numDevices)
            for (e, n) in c.tokens(layer: l).enumerated() where l < map.device.count && e < map.device[l].count {
                load[map.device[l][e]] += n
            }
            return load
        }
    }

    /// max / mean of a row; 1 for an empty or all-zero row (perfect balance).
    public static func maxOverMean(_ row: some Collection<Int>) -> Double {
        let total = row.reduce(0, +)
        guard total > 0, !row.isEmpty else { return 1 }
        return Double(row.max()!) / (Double(total) / Double(row.count))
    }

    public func json() async -> JSONOut {
        let (c, since) = await current()
        let perLayer = c.tokensPerLayerExpert
        let devicePerLayer = deviceLoad(c)
        let deviceTotal = (0..<map.numDevices).map { d in devicePerLayer.reduce(0) { $0 + $1[d] } }
        let expertImbalance = perLayer.map { Self.maxOverMean($0) }
        let deviceImbalance = devicePerLayer.map { Self.maxOverMean($0) }
        func ints(_ v: [Int]) -> JSONOut { .array(v.map { .int($0) }) }
        func doubles(_ v: [Double]) -> JSONOut { .array(v.map { .double($0) }) }
        var execution: [(String, JSONOut)] = []
        if let d = c.devices {
            // Measured by the executor on its devices, not derived from the map.
            let described = engine.model.experts.devices.map { dev -> JSONOut in
                .object([("name", .string(dev.name)), ("kind", .string(dev.kind.rawValue)), ("detail", .string(dev.detail)),
                         ("experts", .int(dev.experts)), ("expert_weight_bytes", .int(dev.expertWeightBytes)),
                         ("memory_bytes", dev.memoryBytes.map { .int($0) } ?? .null)])
            }
            execution = [("execution", .object([
                ("devices", .array(described)),
                ("device_busy_seconds", doubles(d.busySeconds)),
                ("expert_phase_seconds", .double(d.expertPhaseSeconds)),
                ("per_forward_device_imbalance", .double(d.perForwardImbalance)),
            ]))]
        }
        return .object([
            ("object", "expert_stats"),
            ("since", .double(since)),
            ("num_layers", .int(c.numLayers)),
            ("num_experts", .int(c.numExperts)),
            ("num_devices", .int(map.numDevices)),
            ("placement", .string(placementName)),
            ("total_tokens", .int(c.tokens.reduce(0, +))),
            ("expert_activations", .int(c.expertActivations)),
            ("expert_weight_bytes_read", .int(c.expertWeightBytesRead)),
            ("tokens_per_layer_expert", .array(perLayer.map(ints))),
            ("expert_device", .array(map.device.map(ints))),
            ("device_load_per_layer", .array(devicePerLayer.map(ints))),
            ("device_load", ints(deviceTotal)),
            ("imbalance", .object([
                ("expert_max_over_mean_per_layer", doubles(expertImbalance)),
                ("expert_max_over_mean", .double(expertImbalance.max() ?? 1)),
                ("device_max_over_mean_per_layer", doubles(deviceImbalance)),
                ("device_max_over_mean", .double(deviceImbalance.max() ?? 1)),
                ("device_max_over_mean_total", .double(Self.maxOverMean(deviceTotal))),
            ])),
        ] + execution)
    }
}
