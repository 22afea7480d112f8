import Foundation
import Hummingbird
import Logging

/// What every request passes before and after its route: the API key,
/// the content type of generation bodies, OpenAI-style error bodies for
/// unknown routes (404) and wrong methods (405), and one log line.
struct GatekeeperMiddleware: RouterMiddleware {
    typealias Context = ServerRequestContext
    let apiKey: String?
    let logger: Logger

    /// Routes and their methods, for 405 with `Allow`.
    static let routes: [String: [HTTPRequest.Method]] = [
        "/v1/completions": [.post], "/v1/chat/completions": [.post], "/v1/models": [.get], "/health": [.get, .head],
        "/version": [.get], "/metrics": [.get], "/v1/experts/stats": [.get], "/v1/experts/stats/reset": [.post],
    ]
    /// POST routes whose body is a JSON request.
    static let jsonBodies: Set<String> = ["/v1/completions", "/v1/chat/completions"]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = Date()
        let path = request.uri.path
        let response: Response
        if let refused = gate(request, path: path) {
            response = refused
        } else {
            response = try await route(request, context: context, path: path, next: next)
        }
        let status = response.status.code
        let ms = Int(Date().timeIntervalSince(start) * 1000)
        let line: Logger.Message = "\(request.method) \(path) \(status) \(ms) ms"
        if status >= 500 { logger.error(line) } else if status >= 400 { logger.notice(line) } else { logger.info(line) }
        return response
    }

    /// A response that ends the request here, or nil to let it through.
    private func gate(_ request: Request, path: String) -> Response? {
        if let key = apiKey, path.hasPrefix("/v1/"), request.headers[.authorization] != "Bearer \(key)" {
            return OpenAIServer.error(APIError(status: 401, message: "missing or wrong API key; send `Authorization: Bearer <key>` (the server's --api-key)",
                                               type: "authentication_error", param: nil))
        }
        if request.method == .post, Self.jsonBodies.contains(path) {
            let type = request.headers[.contentType]?.lowercased() ?? ""
            if !type.hasPrefix("application/json") {
                // Browsers may send text/plain cross-origin without asking first:
                // refusing it keeps a web page from driving a local server.
                return OpenAIServer.error(APIError(status: 415, message: "the body must be JSON with `Content-Type: application/json`, got \(type.isEmpty ? "none" : "`\(type)`")",
                                                   type: "invalid_request_error", param: nil))
            }
        }
        return nil
    }

    private func route(_ request: Request, context: Context, path: String,
                       next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as HTTPError where e.status == .notFound || e.status == .methodNotAllowed {
            if let methods = Self.routes[path], !methods.contains(request.method) {
                var response = OpenAIServer.error(APIError(status: 405, message: "\(request.method) is not allowed on \(path); use \(methods.map(\.rawValue).joined(separator: " or "))",
                                                           type: "invalid_request_error", param: nil))
                response.headers[.allow] = methods.map(\.rawValue).joined(separator: ", ")
                return response
            }
            return OpenAIServer.error(.notFound("no route \(request.method) \(path); see docs/server.md for the endpoints"))
        }
    }
}
