import Foundation
import SwitchyardCore

/// How `switchyard serve` serves (the engine has its own `EngineConfig`).
public struct ServerConfig: Sendable {
    /// Loopback unless told otherwise.
    public var host: String
    /// 0 picks a free port (tests); `onRunning` reports it.
    public var port: Int
    /// The id in `/v1/models`; requests naming another model (not in
    /// `modelAliases` either) get 404.
    public var modelName: String
    /// Other names requests may use for the model (e.g. the checkpoint
    /// directory's basename when the id is the `--model` path).
    public var modelAliases: [String] = []
    /// `--api-key`: when set, `/v1/*` needs `Authorization: Bearer <key>`.
    public var apiKey: String?
    /// A connection with no request in progress (idle keep-alive, or a
    /// request head still arriving) is closed after this long.
    public var idleTimeout: Duration = .seconds(60)
    /// A request body must arrive within this long, else the connection is closed.
    public var bodyTimeout: Duration = .seconds(30)
    /// On SIGTERM or SIGINT: requests in flight get this long to finish,
    /// then they are cancelled and the server exits.
    public var shutdownTimeout: Duration = .seconds(30)
    /// Most open connections; more wait in the listen backlog instead of
    /// being accepted. The default stays below the process's descriptor
    /// limit, so the server never reaches it (where accept fails and loops).
    public var maxConnections: Int = ServerConfig.defaultMaxConnections

    public static var defaultMaxConnections: Int { connectionsAllowedByDescriptorLimit ?? 4096 }

    /// Descriptors kept for the model files, logs, the event loops and the
    /// engine, beyond connections.
    public static let descriptorHeadroom = 128

    /// The soft descriptor limit (`ulimit -n`), when finite.
    public static var descriptorLimit: Int? {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < rlim_t(Int32.max) else { return nil }
        return Int(limit.rlim_cur)
    }

    /// The most connections the descriptor limit leaves room for. Beyond it
    /// accept fails with EMFILE, and swift-nio's listener then retries in a
    /// busy loop (its accept backoff does not hold in this pipeline; measured
    /// by DescriptorLimitTests), so `--max-connections` is clamped to this.
    public static var connectionsAllowedByDescriptorLimit: Int? {
        descriptorLimit.map { max(16, min(65536, $0 - descriptorHeadroom)) }
    }
    /// Requests admitted but without a first token yet, at most; more get 503. Nil: no limit.
    public var maxQueuedRequests: Int?
    public var chatTemplate: ChatTemplate
    /// Expert placement for per-device load; nil = one device.
    public var expertMap: ExpertMap?
    public var placementName: String
    public var maxBodyBytes: Int

    public init(host: String = "127.0.0.1", port: Int = 8000, modelName: String, maxQueuedRequests: Int? = nil,
                chatTemplate: ChatTemplate = .default, expertMap: ExpertMap? = nil, placementName: String = "linear",
                maxBodyBytes: Int = 32 << 20) {
        self.host = host
        self.port = port
        self.modelName = modelName
        self.maxQueuedRequests = maxQueuedRequests
        self.chatTemplate = chatTemplate
        self.expertMap = expertMap
        self.placementName = placementName
        self.maxBodyBytes = maxBodyBytes
    }
}
