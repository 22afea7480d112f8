/// The kinds of strategy Switchyard loads by name.
public enum StrategyKind: String, Sendable, CaseIterable, Codable {
    case scheduler
    case placement
    case execution
}

/// One documented option of a strategy, for `switchyard strategies`.
public struct StrategyOption: Sendable, Equatable {
    public var name: String
    public var type: String
    public var defaultValue: String
    public var help: String

    public init(_ name: String, type: String, default defaultValue: String, help: String) {
        self.name = name
        self.type = type
        self.defaultValue = defaultValue
        self.help = help
    }
}

/// What a registered strategy says about itself.
public struct StrategyInfo: Sendable {
    public var kind: StrategyKind
    public var name: String
    public var summary: String
    public var options: [StrategyOption]

    public init(kind: StrategyKind, name: String, summary: String, options: [StrategyOption]) {
        self.kind = kind
        self.name = name
        self.summary = summary
        self.options = options
    }
}

/// Context a scheduler factory may use.
public struct SchedulerEnvironment: Sendable {
    public var numLayers: Int
    public var maxModelLen: Int
    public init(numLayers: Int, maxModelLen: Int) {
        self.numLayers = numLayers
        self.maxModelLen = maxModelLen
    }
}

/// Maps strategy names to factories. The core registers nothing; the CLI
/// registers the built-in plug-ins (each a module under `Plugins/`), and a
/// new plug-in is one more `register` call.
public final class StrategyRegistry: @unchecked Sendable {
    public typealias SchedulerFactory = @Sendable (StrategyConfig, SchedulerEnvironment) throws -> any Scheduler

    public typealias PlacementFactory = @Sendable (StrategyConfig) throws -> any ExpertPlacement

    public typealias ExecutionFactory = @Sendable (StrategyConfig) throws -> any ExecutionStrategy

    private var schedulers: [String: (info: StrategyInfo, make: SchedulerFactory)] = [:]
    private var executions: [String: (info: StrategyInfo, make: ExecutionFactory)] = [:]

    public func registerExecution(_ name: String, summary: String, options: [StrategyOption] = [],
                                  factory: @escaping ExecutionFactory) {
        precondition(executions[name] == nil, "execution strategy \(name) registered twice")
        executions[name] = (StrategyInfo(kind: .execution, name: name, summary: summary, options: options), factory)
    }

    /// Builds execution strategy `name` from its JSON options.
    public func makeExecution(_ name: String, config json: String? = nil) throws -> any ExecutionStrategy {
        guard let entry = executions[name] else {
            throw StrategyError.unknown(kind: .execution, name: name, valid: executions.keys.sorted())
        }
        let config = try StrategyConfig(strategy: name, json: json)
        let strategy = try entry.make(config)
        try config.finish()
        return strategy
    }
    private var placements: [String: (info: StrategyInfo, make: PlacementFactory)] = [:]

    public func registerPlacement(_ name: String, summary: String, options: [StrategyOption] = [],
                                  factory: @escaping PlacementFactory) {
        precondition(placements[name] == nil, "placement \(name) registered twice")
        placements[name] = (StrategyInfo(kind: .placement, name: name, summary: summary, options: options), factory)
    }

    /// Builds placement `name` from its JSON options.
    public func makePlacement(_ name: String, config json: String? = nil) throws -> any ExpertPlacement {
        guard let entry = placements[name] else {
            throw StrategyError.unknown(kind: .placement, name: name, valid: placements.keys.sorted())
        }
        let config = try StrategyConfig(strategy: name, json: json)
        let placement = try entry.make(config)
        try config.finish()
        return placement
    }

    public init() {}

    public func registerScheduler(_ name: String, summary: String, options: [StrategyOption] = [],
                                  factory: @escaping SchedulerFactory) {
        precondition(schedulers[name] == nil, "scheduler \(name) registered twice")
        schedulers[name] = (StrategyInfo(kind: .scheduler, name: name, summary: summary, options: options), factory)
    }

    /// Builds scheduler `name` from its JSON options; unknown names and bad
    /// options fail with the list of what is valid.
    public func makeScheduler(_ name: String, config json: String? = nil, environment: SchedulerEnvironment) throws -> any Scheduler {
        guard let entry = schedulers[name] else {
            throw StrategyError.unknown(kind: .scheduler, name: name, valid: schedulers.keys.sorted())
        }
        let config = try StrategyConfig(strategy: name, json: json)
        let scheduler = try entry.make(config, environment)
        try config.finish()
        return scheduler
    }

    /// Every registered strategy, by kind then name.
    public var all: [StrategyInfo] {
        (schedulers.values.map(\.info) + placements.values.map(\.info) + executions.values.map(\.info)).sorted { ($0.kind.rawValue, $0.name) < ($1.kind.rawValue, $1.name) }
    }

    public func names(_ kind: StrategyKind) -> [String] {
        all.filter { $0.kind == kind }.map(\.name)
    }
}
