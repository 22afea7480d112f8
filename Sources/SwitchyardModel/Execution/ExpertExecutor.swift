/// Where the experts of an MoE layer are computed: the seam between the MoE
/// block (routing, grouping, combining, which never change) and the places
/// the expert products can run (all kernel threads in turn, CPU core pools,
/// an accelerator, later other processes or hosts).
///
/// `MoEBlock` routes the batch, sorts its (token, slot) assignments by
/// expert and gathers each assignment's input row, then hands the whole
/// layer's grouped work to the executor in force (`Transformer.experts`)
/// with one call, and combines the output rows. An executor must fill
/// `work.output` for every row of every expert with tokens, or, for
/// experts it computed on a device of its own, may instead hand back their
/// weighted sum per token (`ExpertRoutes`: one row per token crosses back
/// instead of one per assignment); which threads, devices or copies of the
/// weights it uses is its own business.
///
/// The grouped layout is also what a remote executor would ship: each
/// expert's rows are contiguous (`tokenCount`, `rowOffset`), so a device
/// or host receives only the rows of the experts it holds and returns
/// their output rows in place. Dense work (attention projections, router,
/// shared experts, LM head) crosses the sibling seam `DenseOffload`, asked
/// per product by role.
///
/// Executors are installed before serving and called from the engine's
/// loop thread only, one layer at a time; `stats` and `resetStats` are
/// read and called on that thread too (`Engine.onLoopThread`).
public protocol ExpertExecutor: AnyObject, Sendable {
    /// Computes `output` rows for every expert of `work` that has tokens.
    func run(_ work: ExpertWork)
    /// Called before the layer's input rows are gathered (`work.input` is
    /// not filled yet): clear `gather[j]` for each expert whose rows this
    /// executor will not read from `work.input` (a device that gathers them
    /// from rows it already holds). Optional: by default every expert's
    /// rows are gathered. An executor that clears a flag and then computes
    /// that expert on the host after all calls `work.gatherRows` first.
    func selectRowsToGather(_ work: ExpertWork, gather: UnsafeMutablePointer<Bool>)

    /// The devices this executor computes experts on, in its device order
    /// (the order of `stats` and of `expertDevice`'s indices).
    var devices: [ExecutionDevice] { get }

    /// `[layer][expert]`: which device computes each logical expert; nil
    /// when every expert runs on every device in turn (one device).
    var expertDevice: [[Int]]? { get }

    /// What the devices did since the last `resetStats()`.
    var stats: ExpertExecutionStats { get }
    func resetStats()
}

/// One device an executor computes experts on, described by kind so the
/// server, metrics and benchmark reports need no knowledge of CPU pools or
/// accelerators.
public struct ExecutionDevice: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Equatable, Codable {
        /// CPU cores of the host (all of them, or a pinned pool).
        case cpuPool = "cpu-pool"
        /// A GPU or other accelerator with memory of its own.
        case accelerator
        /// Another process or host, reached over a transport.
        case remote
    }

    public var name: String
    public var kind: Kind
    /// Bytes of memory the device computes from (nil: unknown, or shared
    /// host memory with no bound of its own).
    public var memoryBytes: Int?
    /// Bytes of expert weights resident on the device.
    public var expertWeightBytes: Int
    /// Experts (summed over layers) this device computes.
    public var experts: Int
    /// Free-form: cores and NUMA node, PCI bus id, address.
    public var detail: String

    public init(name: String, kind: Kind, memoryBytes: Int? = nil, expertWeightBytes: Int, experts: Int, detail: String) {
        self.name = name
        self.kind = kind
        self.memoryBytes = memoryBytes
        self.expertWeightBytes = expertWeightBytes
        self.experts = experts
        self.detail = detail
    }
}

/// What an executor's devices did since its last reset.
public struct ExpertExecutionStats: Sendable, Equatable {
    /// `[layer][device]`: token-expert assignments computed.
    public var deviceTokens: [[Int]]
    /// `[layer][device]`: seconds each device spent on its experts.
    public var deviceBusySeconds: [[Double]]
    /// `[layer]`: wall seconds of the expert phase (what the layer waited on).
    public var expertPhaseSeconds: [Double]
    /// `[layer]`: Σ over forwards of the busiest device's assignments, and
    /// of the mean device's. Their ratio is the imbalance each forward
    /// actually waits on, which can exceed the imbalance of the run's
    /// totals (`deviceTokens`).
    public var busiestDeviceTokens: [Int]
    public var meanDeviceTokens: [Double]
    /// Executor-specific counters by name (the hybrid executor's tokens per
    /// site, bytes copied to the device, hit rate), printed in benchmark
    /// results as they are; empty for executors with nothing more to say.
    public var counters: [String: Double]

    public init(deviceTokens: [[Int]], deviceBusySeconds: [[Double]], expertPhaseSeconds: [Double],
                busiestDeviceTokens: [Int], meanDeviceTokens: [Double], counters: [String: Double] = [:]) {
        self.deviceTokens = deviceTokens
        self.deviceBusySeconds = deviceBusySeconds
        self.expertPhaseSeconds = expertPhaseSeconds
        self.busiestDeviceTokens = busiestDeviceTokens
        self.meanDeviceTokens = meanDeviceTokens
        self.counters = counters
    }

    public var numDevices: Int { deviceTokens.first?.count ?? 0 }

    /// Σ busiest device's assignments / Σ mean device's, over layers and forwards.
    public var perForwardImbalance: Double {
        let mean = meanDeviceTokens.reduce(0, +)
        return mean > 0 ? Double(busiestDeviceTokens.reduce(0, +)) / mean : 1
    }
}

/// Per-(layer, device) counters an executor fills while it runs, on the
/// loop thread or on disjoint kernel threads (each (layer, device) cell is
/// written by one thread at a time).
public final class ExpertExecutionCounters: @unchecked Sendable {
    public let numLayers: Int
    public let numDevices: Int
    private let busy: UnsafeMutablePointer<Double>
    private let tokens: UnsafeMutablePointer<Int>
    private let phase: UnsafeMutablePointer<Double>
    private let busiest: UnsafeMutablePointer<Int>
    private let mean: UnsafeMutablePointer<Double>

    public init(numLayers: Int, numDevices: Int) {
        self.numLayers = numLayers
        self.numDevices = numDevices
        busy = .allocate(capacity: numLayers * numDevices)
        tokens = .allocate(capacity: numLayers * numDevices)
        phase = .allocate(capacity: numLayers)
        busiest = .allocate(capacity: numLayers)
        mean = .allocate(capacity: numLayers)
        reset()
    }

    deinit {
        busy.deallocate()
        tokens.deallocate()
        phase.deallocate()
        busiest.deallocate()
        mean.deallocate()
    }

    public func reset() {
        busy.initialize(repeating: 0, count: numLayers * numDevices)
        tokens.initialize(repeating: 0, count: numLayers * numDevices)
        phase.initialize(repeating: 0, count: numLayers)
        busiest.initialize(repeating: 0, count: numLayers)
        mean.initialize(repeating: 0, count: numLayers)
    }

    /// One layer's assignments per device (before the devices run).
    @inline(__always)
    public func recordAssignments(layer: Int, device: Int, tokens n: Int) { tokens[layer * numDevices + device] += n }

    /// The busiest and the mean device's assignments of one forward's layer.
    @inline(__always)
    public func recordBalance(layer: Int, busiest b: Int, mean m: Double) {
        busiest[layer] += b
        mean[layer] += m
    }

    @inline(__always)
    public func recordBusy(layer: Int, device: Int, seconds: Double) { busy[layer * numDevices + device] += seconds }

    @inline(__always)
    public func recordPhase(layer: Int, seconds: Double) { phase[layer] += seconds }

    /// A one-device executor's layer: all `assignments` on device 0, which
    /// was busy for the whole phase.
    @inline(__always)
    public func recordSingleDevice(layer: Int, assignments n: Int, seconds: Double) {
        recordAssignments(layer: layer, device: 0, tokens: n)
        recordBalance(layer: layer, busiest: n, mean: Double(n))
        recordBusy(layer: layer, device: 0, seconds: seconds)
        recordPhase(layer: layer, seconds: seconds)
    }

    public var stats: ExpertExecutionStats {
        let n = numDevices
        return ExpertExecutionStats(deviceTokens: (0..<numLayers).map { l in (0..<n).map { tokens[l * n + $0] } },
                                    deviceBusySeconds: (0..<numLayers).map { l in (0..<n).map { busy[l * n + $0] } },
                                    expertPhaseSeconds: (0..<numLayers).map { phase[$0] },
                                    busiestDeviceTokens: (0..<numLayers).map { busiest[$0] },
                                    meanDeviceTokens: (0..<numLayers).map { mean[$0] })
    }
}

extension ExpertExecutor {
    public func selectRowsToGather(_ work: ExpertWork, gather: UnsafeMutablePointer<Bool>) {}
}
