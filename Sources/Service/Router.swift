import Foundation
import Store
import HTTP
import Synchronization

/// What a handler of an authenticated route gets: the request, the path parameters, and
/// who is asking (the route's wrapper has authenticated them).
public struct RequestContext: Sendable {
    public let request: HTTPRequest
    public let parameters: [String: String]
    public let principal: Principal
    /// For a streamed POST with an Idempotency-Key: the handler reports what it stored.
    public var idempotency: IdempotencyCheck?

    public init(request: HTTPRequest, parameters: [String: String], principal: Principal, idempotency: IdempotencyCheck? = nil) {
        self.request = request
        self.parameters = parameters
        self.principal = principal
        self.idempotency = idempotency
    }
}

/// The Idempotency-Key of a streamed request (an upload), whose identity is known only once
/// its body has been read: the handler calls `verify` with a signature of what it stored
/// (the content's hash) before committing it. A repeat of the first request then gets the
/// first response (`Replay`, which undoes this one), another request with the key a 409.
public final class IdempotencyCheck: Sendable {
    struct Replay: Error { let response: IdempotentResponse }

    let previous: IdempotentResponse?
    let prefix: String
    private let verified = Mutex<String?>(nil)
    /// What the handler stored, once it has verified it.
    var signature: String? { verified.withLock { $0 } }

    init(previous: IdempotentResponse?, prefix: String) {
        self.previous = previous
        self.prefix = prefix
    }

    public func verify(content: String) throws {
        let signature = "\(prefix) \(content)"
        if let previous {
            guard previous.request == signature else {
                throw APIError(status: 409, message: "the Idempotency-Key was used for an upload of other content", param: "Idempotency-Key",
                               code: "idempotency_key_reused")
            }
            throw Replay(response: previous)
        }
        verified.withLock { $0 = signature }
    }
}

public typealias Principal = Store.Principal

/// Maps method and path to handlers. Patterns name their parameters:
/// `/v1/fine_tuning/jobs/{id}/cancel`. An unknown path is 404, a known path with
/// another method 405; both in the error envelope.
public struct Router: Sendable {
    public typealias Handler = @Sendable (RequestContext) async throws -> HTTPResponse
    /// A read: synchronous, run with the authentication in one read transaction of the store.
    public typealias ReadHandler = @Sendable (RequestContext) throws -> HTTPResponse
    /// A route anyone may call (health checks, the dashboard's page, Prometheus).
    public typealias PublicHandler = @Sendable (HTTPRequest) async throws -> HTTPResponse

    enum Action: Sendable {
        case authenticated(Handler)
        case authenticatedRead(ReadHandler)
        case unauthenticated(PublicHandler)
    }

    struct Route: Sendable {
        let method: String
        /// As registered, e.g. `/v1/fine_tuning/jobs/{id}`: the `route` label of the HTTP metrics.
        let pattern: String
        let segments: [String]
        /// For each segment, the parameter it names (`{id}` → "id"), or nil for a literal.
        let parameterNames: [String?]
        /// The handler reads the body as it arrives (`HTTPRequest.bodyStream`), e.g. uploads.
        let streamsBody: Bool
        let maxBodyBytes: Int
        /// The handler inside the pipeline's wrappers.
        let responder: Responder
    }

    /// The body limit of requests whose route does not set one.
    public static let defaultMaxBodyBytes = 1 << 20

    var routes: [Route] = []
    /// Wraps each handler as it is added.
    let pipeline: RequestPipeline

    init(pipeline: RequestPipeline) { self.pipeline = pipeline }

    /// A route for project keys: its handler runs once the request is authenticated.
    public mutating func add(_ method: String, _ pattern: String, streamsBody: Bool = false,
                             maxBodyBytes: Int = Router.defaultMaxBodyBytes, _ handler: @escaping Handler) {
        append(method, pattern, streamsBody: streamsBody, maxBodyBytes: maxBodyBytes, .authenticated(handler))
    }

    /// A route for project keys that only reads the store: the key and what the handler reads
    /// come from one snapshot, in one read transaction.
    public mutating func addRead(_ method: String, _ pattern: String, _ handler: @escaping ReadHandler) {
        append(method, pattern, streamsBody: false, maxBodyBytes: Router.defaultMaxBodyBytes, .authenticatedRead(handler))
    }

    /// A route that needs no key.
    public mutating func addPublic(_ method: String, _ pattern: String, _ handler: @escaping PublicHandler) {
        append(method, pattern, streamsBody: false, maxBodyBytes: Router.defaultMaxBodyBytes, .unauthenticated(handler))
    }

    mutating func append(_ method: String, _ pattern: String, streamsBody: Bool, maxBodyBytes: Int, _ action: Action) {
        let segments = pattern.split(separator: "/").map(String.init)
        let names = segments.map { $0.hasPrefix("{") && $0.hasSuffix("}") ? String($0.dropFirst().dropLast()) : nil }
        routes.append(Route(method: method, pattern: pattern, segments: segments, parameterNames: names,
                            streamsBody: streamsBody, maxBodyBytes: maxBodyBytes,
                            responder: pipeline.responder(pattern: pattern, streamsBody: streamsBody, action)))
    }

    /// The route a request head goes to, if any: the server asks it, as soon as the head
    /// is parsed, whether to stream the body and how large it may be. (No parameters are decoded.)
    func route(for head: HTTPRequestHead) -> Route? {
        let segments = Self.segments(of: Substring(head.target.prefix { $0 != "?" }))
        return routes.first { $0.method == head.method && Self.matches($0, segments) }
    }

    /// A path's non-empty segments, without copying them. Split on bytes: splitting on
    /// Characters walks grapheme boundaries, and this runs on every request.
    static func segments(of path: Substring) -> [Substring] {
        path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true).map { Substring($0) }
    }

    static func matches(_ route: Route, _ segments: [Substring]) -> Bool {
        guard route.segments.count == segments.count else { return false }
        for i in 0..<segments.count where route.parameterNames[i] == nil && route.segments[i] != segments[i] { return false }
        return true
    }

    struct Failure: Error {
        let error: APIError
        /// The methods the path does take (for 405's Allow header).
        let allowed: [String]
    }

    /// The route for a request and its path parameters, or the error to answer with.
    func match(method: String, path: String) -> Result<(Route, [String: String]), Failure> {
        let segments = Self.segments(of: Substring(path))
        var allowed: [String] = []
        for route in routes where Self.matches(route, segments) {
            guard route.method == method else {
                allowed.append(route.method)
                continue
            }
            var parameters: [String: String] = [:]
            for (i, name) in route.parameterNames.enumerated() {
                guard let name else { continue }
                let segment = String(segments[i])
                // Foundation's decoding is slow; most ids have nothing to decode.
                parameters[name] = segment.utf8.contains(UInt8(ascii: "%")) ? (segment.removingPercentEncoding ?? segment) : segment
            }
            return .success((route, parameters))
        }
        if allowed.isEmpty {
            return .failure(Failure(error: APIError(status: 404, message: "no such endpoint: \(method) \(path)", code: "unknown_url"), allowed: []))
        }
        return .failure(Failure(error: APIError(status: 405, message: "\(method) is not allowed on \(path); use \(allowed.joined(separator: " or "))",
                                                code: "method_not_allowed"), allowed: allowed))
    }
}
