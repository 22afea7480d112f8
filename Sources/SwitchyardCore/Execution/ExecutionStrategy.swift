import SwitchyardModel

/// What an execution strategy is given: the loaded model, the machine, and a
/// way to ask the chosen placement for an expert map over any number of devices.
public struct ExecutionContext: Sendable {
    public var model: Transformer
    public var topology: CPUTopology
    /// The placement's map of logical experts onto `numDevices` devices.
    public var placeExperts: @Sendable (_ numDevices: Int) throws -> ExpertMap
    /// The routing profile the user gave (`--placement-profile`), for
    /// strategies that seed anything from measured routing (the hybrid
    /// executor's resident experts); nil without one.
    public var profile: RoutingProfile?

    public init(model: Transformer, topology: CPUTopology, profile: RoutingProfile? = nil,
                placeExperts: @escaping @Sendable (Int) throws -> ExpertMap) {
        self.model = model
        self.topology = topology
        self.profile = profile
        self.placeExperts = placeExperts
    }
}

/// What an execution strategy set up, for logs and benchmark results.
public struct ExecutionSummary: Sendable, Equatable {
    public var strategy: String
    /// The devices the installed `ExpertExecutor` computes on, by kind.
    public var devices: [ExecutionDevice]
    /// The expert map in force (nil: every expert on every device in turn).
    public var map: ExpertMap?
    public var notes: [String]

    public init(strategy: String, devices: [ExecutionDevice], map: ExpertMap?, notes: [String] = []) {
        self.strategy = strategy
        self.devices = devices
        self.map = map
        self.notes = notes
    }
}

/// An execution strategy decides where each piece of the model's work runs
/// (which cores, which NUMA node's memory, which accelerator) and configures
/// the model accordingly, once, before serving: typically by building an
/// `ExpertExecutor` and installing it with `Transformer.install(experts:)`.
public protocol ExecutionStrategy: Sendable {
    func prepare(_ context: ExecutionContext) throws -> ExecutionSummary
}

public enum ExecutionError: Error, CustomStringConvertible, Equatable {
    case setup(String)
    public var description: String {
        switch self { case let .setup(m): return m }
    }
}
