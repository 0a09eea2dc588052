import Foundation
import HTTP
import Store

/// The API: routes, authentication and the error envelope around the store.
/// Handlers read like the endpoint's documentation; decoding errors, auth and
/// the envelope live here, not in each handler.
public final class Application: Sendable {
    public let dataDirectory: DataDirectory
    let router: Router

    public init(dataDirectory: DataDirectory) {
        self.dataDirectory = dataDirectory
        var router = Router()
        Self.addOperations(&router)
        ModelsAPI.add(to: &router, data: dataDirectory)
        FilesAPI.add(to: &router, data: dataDirectory)
        JobsAPI.add(to: &router, data: dataDirectory, store: SQLiteJobStore(database: dataDirectory.database))
        self.router = router
    }

    /// What the server must know about the routes: which stream their body, and how large it may be.
    public func configure(_ configuration: inout HTTPServer.Configuration) {
        configuration.streamsBody = { $0.method == "POST" && $0.target.split(separator: "?").first == "/v1/files" }
        let uploadLimit = FilesAPI.maximumUpload + (1 << 20)
        configuration.limits.bodyBytesForHead = { head in
            head.method == "POST" && head.target.split(separator: "?").first == "/v1/files" ? uploadLimit : 1 << 20
        }
    }

    /// Answers one request: route, authenticate, run the handler, map errors to the envelope.
    public func handle(_ request: HTTPRequest) async -> HTTPResponse {
        switch router.match(method: request.method, path: request.path) {
        case let .failure(error):
            return error.response
        case let .success((route, parameters)):
            var principal: Principal?
            if route.authenticated {
                guard let header = request.head.header("authorization"), header.lowercased().hasPrefix("bearer "),
                      let found = try? dataDirectory.database.read({ try APIKeys(connection: $0).authenticate(String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)) })
                else { return APIError.unauthorized.response }
                principal = found
            }
            do {
                return try await route.handler(RequestContext(request: request, parameters: parameters, principal: principal))
            } catch let error as APIError {
                return error.response
            } catch {
                // Never a bare 500 body: the envelope, and the cause in the server log.
                FileHandle.standardError.write(Data("preftune: \(request.method) \(request.path): \(error)\n".utf8))
                return APIError(status: 500, message: "internal error; the server log has the details", type: "server_error").response
            }
        }
    }

    static func addOperations(_ router: inout Router) {
        router.add("GET", "/healthz", authenticated: false) { _ in JSON.response(["status": "ok"]) }
        router.add("GET", "/readyz", authenticated: false) { _ in JSON.response(["status": "ready"]) }
    }
}
