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

    /// The strategies of one kind, by name.
    private struct Table<Factory> {
        let kind: StrategyKind
        var entries: [String: (info: StrategyInfo, make: Factory)] = [:]

        mutating func add(_ name: String, summary: String, options: [StrategyOption], _ make: Factory) {
            precondition(entries[name] == nil, "\(kind.rawValue) \(name) registered twice")
            entries[name] = (StrategyInfo(kind: kind, name: name, summary: summary, options: options), make)
        }

        /// Builds `name` from its JSON options: an unknown name lists the
        /// registered ones, and options nobody read are an error.
        func build<T>(_ name: String, json: String?, _ body: (Factory, StrategyConfig) throws -> T) throws -> T {
            guard let entry = entries[name] else {
                throw StrategyError.unknown(kind: kind, name: name, valid: entries.keys.sorted())
            }
            let config = try StrategyConfig(strategy: name, json: json)
            let strategy = try body(entry.make, config)
            try config.finish()
            return strategy
        }
    }

    private var schedulers = Table<SchedulerFactory>(kind: .scheduler)
    private var placements = Table<PlacementFactory>(kind: .placement)
    private var executions = Table<ExecutionFactory>(kind: .execution)

    public init() {}

    public func registerScheduler(_ name: String, summary: String, options: [StrategyOption] = [],
                                  factory: @escaping SchedulerFactory) {
        schedulers.add(name, summary: summary, options: options, factory)
    }

    public func registerPlacement(_ name: String, summary: String, options: [StrategyOption] = [],
                                  factory: @escaping PlacementFactory) {
        placements.add(name, summary: summary, options: options, factory)
    }

    public func registerExecution(_ name: String, summary: String, options: [StrategyOption] = [],
                                  factory: @escaping ExecutionFactory) {
        executions.add(name, summary: summary, options: options, factory)
    }

    /// Builds scheduler `name` from its JSON options; unknown names and bad
    /// options fail with the list of what is valid.
    public func makeScheduler(_ name: String, config json: String? = nil, environment: SchedulerEnvironment) throws -> any Scheduler {
        try schedulers.build(name, json: json) { make, config in try make(config, environment) }
    }

    /// Builds placement `name` from its JSON options.
    public func makePlacement(_ name: String, config json: String? = nil) throws -> any ExpertPlacement {
        try placements.build(name, json: json) { make, config in try make(config) }
    }

    /// Builds execution strategy `name` from its JSON options.
    public func makeExecution(_ name: String, config json: String? = nil) throws -> any ExecutionStrategy {
        try executions.build(name, json: json) { make, config in try make(config) }
    }

    /// Every registered strategy, by kind then name.
    public var all: [StrategyInfo] {
        (schedulers.entries.values.map(\.info) + placements.entries.values.map(\.info) + executions.entries.values.map(\.info)).sorted { ($0.kind.rawValue, $0.name) < ($1.kind.rawValue, $1.name) }
    }

    public func names(_ kind: StrategyKind) -> [String] {
        all.filter { $0.kind == kind }.map(\.name)
    }
}
