import Foundation
import SwitchyardCore

/// An error answered with OpenAI's error object:
/// `{"error": {"message": ..., "type": ..., "param": FIELD, "code": STATUS}}`.
public struct APIError: Error, Sendable, Equatable, CustomStringConvertible {
    public var status: Int
    public var message: String
    public var type: String
    /// The request field at fault, or nil when no single field is.
    public var param: String?

    public init(status: Int, message: String, type: String, param: String?) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
    }

    /// HTTP 400, `invalid_request_error`, naming the field.
    public static func invalid(_ param: String?, _ message: String) -> APIError {
        APIError(status: 400, message: message, type: "invalid_request_error", param: param)
    }

    public static func notFound(_ message: String) -> APIError {
        APIError(status: 404, message: message, type: "not_found_error", param: nil)
    }

    /// HTTP 503 when `--max-queued-requests` requests already wait.
    public static func queueFull(limit: Int) -> APIError {
        APIError(status: 503, message: "the server already has \(limit) queued requests (--max-queued-requests); retry later",
                 type: "service_unavailable_error", param: nil)
    }

    /// HTTP 500, `internal_error`: the engine failed while running the request.
    public static func internalError(_ message: String) -> APIError {
        APIError(status: 500, message: message, type: "internal_error", param: nil)
    }

    /// What the client gets for an engine-side `RequestError`: a failed
    /// forward is the server's fault (500); anything else names its field (400).
    public init(_ error: RequestError, promptField: String = "prompt") {
        if case .engine = error {
            self = .internalError(error.description)
        } else {
            self = .invalid(error.field == "prompt" ? promptField : error.field, error.reason)
        }
    }

    public var description: String { message }

    /// The JSON body.
    public var jsonObject: [String: Any] {
        ["error": ["message": message, "type": type, "param": param as Any? ?? NSNull(), "code": status] as [String: Any]]
    }

    public var json: Data {
        (try? JSONSerialization.data(withJSONObject: jsonObject, options: [.sortedKeys])) ?? Data("{}".utf8)
    }
}
