import Store
import HTTP

/// What a handler gets: the request, the path parameters, and who is asking.
public struct RequestContext: Sendable {
    public let request: HTTPRequest
    public let parameters: [String: String]
    public let principal: Principal?
}

public typealias Principal = Store.Principal

/// Maps method and path to handlers. Patterns name their parameters:
/// `/v1/fine_tuning/jobs/{id}/cancel`. An unknown path is 404, a known path with
/// another method 405; both in the error envelope.
public struct Router: Sendable {
    public typealias Handler = @Sendable (RequestContext) async throws -> HTTPResponse

    struct Route: Sendable {
        let method: String
        /// As registered, e.g. `/v1/fine_tuning/jobs/{id}`: the `route` label of the HTTP metrics.
        let pattern: String
        let segments: [String]
        let authenticated: Bool
        /// The handler reads the body as it arrives (`HTTPRequest.bodyStream`), e.g. uploads.
        let streamsBody: Bool
        let maxBodyBytes: Int
        let handler: Handler
    }

    /// The body limit of requests whose route does not set one.
    public static let defaultMaxBodyBytes = 1 << 20

    var routes: [Route] = []

    public init() {}

    public mutating func add(_ method: String, _ pattern: String, authenticated: Bool = true, streamsBody: Bool = false,
                             maxBodyBytes: Int = Router.defaultMaxBodyBytes, _ handler: @escaping Handler) {
        routes.append(Route(method: method, pattern: pattern, segments: pattern.split(separator: "/").map(String.init), authenticated: authenticated,
                            streamsBody: streamsBody, maxBodyBytes: maxBodyBytes, handler: handler))
    }

    /// The route a request head goes to, if any: the server asks it, as soon as the head
    /// is parsed, whether to stream the body and how large it may be.
    func route(for head: HTTPRequestHead) -> Route? {
        let path = String(head.target.split(separator: "?", maxSplits: 1).first ?? "")
        if case let .success((route, _)) = match(method: head.method, path: path) { return route }
        return nil
    }

    struct Failure: Error {
        let error: APIError
        /// The methods the path does take (for 405's Allow header).
        let allowed: [String]
    }

    /// The route for a request and its path parameters, or the error to answer with.
    func match(method: String, path: String) -> Result<(Route, [String: String]), Failure> {
        let segments = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        var allowed: [String] = []
        for route in routes where route.segments.count == segments.count {
            var parameters: [String: String] = [:]
            var matched = true
            for (pattern, segment) in zip(route.segments, segments) {
                if pattern.hasPrefix("{") && pattern.hasSuffix("}") {
                    parameters[String(pattern.dropFirst().dropLast())] = segment.removingPercentEncoding ?? segment
                } else if pattern != segment {
                    matched = false
                    break
                }
            }
            guard matched else { continue }
            if route.method == method { return .success((route, parameters)) }
            allowed.append(route.method)
        }
        if allowed.isEmpty {
            return .failure(Failure(error: APIError(status: 404, message: "no such endpoint: \(method) \(path)", code: "unknown_url"), allowed: []))
        }
        return .failure(Failure(error: APIError(status: 405, message: "\(method) is not allowed on \(path); use \(allowed.joined(separator: " or "))",
                                                code: "method_not_allowed"), allowed: allowed))
    }
}
