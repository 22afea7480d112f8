import ArgumentParser
import Foundation
import Logging
import SwitchyardCore
import SwitchyardModel
import SwitchyardServer

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the model over an OpenAI-compatible HTTP API with streaming, Prometheus metrics and expert statistics.",
        discussion: "Endpoints, metrics and error behaviour: docs/server.md.")

    @OptionGroup var engine: EngineOptions

    @Option(help: "Address to bind (loopback by default; 0.0.0.0 for every interface).")
    var host: String = "127.0.0.1"

    @Option(help: "Port to listen on.")
    var port: Int = 8000

    @Option(name: .customLong("served-model-name"), help: "Model id in /v1/models and requests (default: the --model argument as given; its directory name is accepted too).")
    var servedModelName: String?

    @Option(name: .customLong("api-key"), help: "Require `Authorization: Bearer KEY` on /v1/* (default: $SWITCHYARD_API_KEY, else none).")
    var apiKey: String?

    @Option(name: .customLong("idle-timeout"), help: "Seconds before closing a connection with no request in progress (idle keep-alive, or a request head still arriving).")
    var idleTimeout: Double = 60

    @Option(name: .customLong("body-timeout"), help: "Seconds a request body may take to arrive before the connection is closed.")
    var bodyTimeout: Double = 30

    @Option(name: .customLong("shutdown-timeout"), help: "Seconds requests in flight get to finish after SIGTERM/SIGINT before they are cancelled.")
    var shutdownTimeout: Double = 30

    @Option(name: .customLong("max-connections"), help: "Most open connections; more wait in the listen backlog (default: below the descriptor limit).")
    var maxConnections: Int?

    @Option(name: .customLong("log-level"), help: "Request log level: trace, debug, info (a line per request), notice, warning, error.")
    var logLevel: String = "info"

    @Option(name: .customLong("max-queued-requests"), help: "Most requests admitted without a first token yet; more get HTTP 503 (default: no limit).")
    var maxQueuedRequests: Int?

    func validate() throws {
        if !(0...65535).contains(port) { throw ValidationError("--port must be in 0...65535") }
        if let n = maxQueuedRequests, n < 1 { throw ValidationError("--max-queued-requests must be at least 1") }
        if Logger.Level(rawValue: logLevel.lowercased()) == nil {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        if apiKey?.isEmpty == true { throw ValidationError("--api-key must not be empty") }
        if let n = maxConnections, n < 1 { throw ValidationError("--max-connections must be at least 1") }
        for (flag, v) in [("--idle-timeout", idleTimeout), ("--body-timeout", bodyTimeout), ("--shutdown-timeout", shutdownTimeout)]
        where !(v > 0 && v.isFinite) {
            throw ValidationError("\(flag) must be a positive number of seconds")
        }
    }

    func run() async throws {
        // Per-device load in /metrics and /v1/experts/stats follows the
        // placement the engine really runs (one device for --execution cpu).
        let (eng, execution) = try engine.makeEngineAndExecution()
        let basename = URL(fileURLWithPath: engine.model).standardizedFileURL.lastPathComponent
        let name = servedModelName ?? engine.model
        let key = apiKey ?? ProcessInfo.processInfo.environment["SWITCHYARD_API_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        if key == nil && !["127.0.0.1", "localhost", "::1"].contains(host) {
            log.warning("serving on \(host) without --api-key: anyone who can reach this address can use the model; set --api-key or SWITCHYARD_API_KEY")
        }
        let template = ChatTemplate.load(directory: engine.model)
        if let reason = template.fallbackReason {
            log.warning("the checkpoint's chat template is not used (\(reason)); chat prompts use the native \(template.family.rawValue) format instead")
        }
        var config = ServerConfig(host: host, port: port, modelName: name, maxQueuedRequests: maxQueuedRequests,
                                  chatTemplate: template, expertMap: execution.map, placementName: engine.placement)
        config.modelAliases = servedModelName == nil && basename != name ? [basename] : []
        config.apiKey = key
        config.idleTimeout = .milliseconds(Int64(idleTimeout * 1000))
        config.bodyTimeout = .milliseconds(Int64(bodyTimeout * 1000))
        config.shutdownTimeout = .milliseconds(Int64(shutdownTimeout * 1000))
        if let n = maxConnections {
            config.maxConnections = n
            if let allowed = ServerConfig.connectionsAllowedByDescriptorLimit, n > allowed {
                config.maxConnections = allowed
                log.warning("--max-connections \(n) is more than the descriptor limit allows (ulimit -n \(ServerConfig.descriptorLimit ?? 0), \(ServerConfig.descriptorHeadroom) kept for the engine): using \(allowed); raise ulimit -n to allow more")
            }
        }
        let server = OpenAIServer(engine: eng, config: config)
        let host = self.host
        var requestLog = Logger(label: "switchyard.server")
        requestLog.logLevel = Logger.Level(rawValue: logLevel.lowercased()) ?? .info
        try await server.run(logger: requestLog) { port in
            FileHandle.standardError.write(Data("switchyard serving \(name) on http://\(host):\(port) (max-model-len \(eng.config.maxModelLen), \(eng.config.numKVBlocks) KV blocks)\n".utf8))
        }
    }
}
