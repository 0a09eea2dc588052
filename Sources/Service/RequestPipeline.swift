import Foundation
import HTTP
import JSON
import Store

/// A route's handler once wrapped: its answer to a request with the route's path parameters.
/// A read answers at once, on the event loop; anything that may await answers later, from a task.
enum Responder: Sendable {
    case now(@Sendable (HTTPRequest, [String: String]) -> HTTPResponse)
    case later(@Sendable (HTTPRequest, [String: String]) async -> HTTPResponse)

    func answer(_ request: HTTPRequest, _ parameters: [String: String]) -> HTTPAnswer {
        switch self {
        case let .now(respond): .now(respond(request, parameters))
        case let .later(respond): .later { await respond(request, parameters) }
        }
    }
}

/// What every request passes through on its way to a handler, as wrappers composed once per
/// route when the application is built, outermost first:
/// - telemetry: the request's latency and status under the route's pattern;
/// - the envelope: whatever the handler throws becomes the API's error body;
/// - authentication: the handler gets a non-optional principal (a read gets it from the same
///   read transaction as its resource);
/// - idempotency, for POSTs that carry an `Idempotency-Key`.
struct RequestPipeline: Sendable {
    let database: any StoreDatabase
    let idempotency: any IdempotencyStore
    let telemetry: Telemetry

    /// A route's handler inside the wrappers its kind takes.
    func responder(pattern: String, streamsBody streamed: Bool, _ action: Router.Action) -> Responder {
        switch action {
        case let .unauthenticated(handler):
            return measured(pattern, .later { request, _ in await enveloped(request) { try await handler(request) } })
        case let .authenticatedRead(handler):
            return measured(pattern, .now { request, parameters in
                enveloped(request) { try inReadTransaction(request) { try handler(RequestContext(request: request, parameters: parameters, principal: $0)) } }
            })
        case let .authenticated(handler):
            return measured(pattern, .later { request, parameters in
                await enveloped(request) {
                    let principal = try authenticate(request).get()
                    guard request.method == "POST", let key = request.head.header("idempotency-key") else {
                        return try await handler(RequestContext(request: request, parameters: parameters, principal: principal))
                    }
                    return try await idempotent(key: key, principal: principal, request: request, streamed: streamed) { check in
                        try await handler(RequestContext(request: request, parameters: parameters, principal: principal, idempotency: check))
                    }
                }
            })
        }
    }

    // MARK: - Telemetry

    /// Records each answer's latency and status under `route` (the metrics' `route` label).
    func measured(_ route: String, _ responder: Responder) -> Responder {
        switch responder {
        case let .now(respond):
            return .now { request, parameters in
                let started = ContinuousClock.now
                return record(respond(request, parameters), route: route, method: request.method, since: started)
            }
        case let .later(respond):
            return .later { request, parameters in
                let started = ContinuousClock.now
                return record(await respond(request, parameters), route: route, method: request.method, since: started)
            }
        }
    }

    func record(_ response: HTTPResponse, route: String, method: String, since started: ContinuousClock.Instant) -> HTTPResponse {
        let elapsed = started.duration(to: .now)
        telemetry.recordRequest(route: route, method: method, code: response.status,
                                seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18)
        return response
    }

    // MARK: - The envelope

    /// Runs a handler, and maps what it throws to the envelope.
    func enveloped(_ request: HTTPRequest, _ handler: () throws -> HTTPResponse) -> HTTPResponse {
        do { return try handler() } catch { return Self.response(for: error, to: request) }
    }

    func enveloped(_ request: HTTPRequest, _ handler: () async throws -> HTTPResponse) async -> HTTPResponse {
        do { return try await handler() } catch { return Self.response(for: error, to: request) }
    }

    /// What a handler threw, in the envelope.
    static func response(for error: any Error, to request: HTTPRequest) -> HTTPResponse {
        switch error {
        case let error as APIError:
            return error.response
        case let error as DatabaseUnavailable:
            ServerLog.error("\(request.method) \(request.path)", error)
            return APIError.databaseUnavailable(error).response
        case is CancellationError:
            // The client left (or the server is stopping): nobody reads this.
            return APIError(status: 499, message: "the request was cancelled", type: "server_error", code: "cancelled").response
        default:
            // Never a bare 500 body: the envelope, and the cause in the server log.
            ServerLog.error("\(request.method) \(request.path)", error)
            return APIError(status: 500, message: "internal error; the server log has the details", type: "server_error").response
        }
    }

    // MARK: - Authentication

    /// Authenticates and runs `body` in one read transaction: the key and what the handler
    /// reads come from one snapshot.
    func inReadTransaction(_ request: HTTPRequest, _ body: (Principal) throws -> HTTPResponse) throws -> HTTPResponse {
        var began = false
        do {
            return try database.readTransaction {
                began = true
                return try body(try authenticate(request).get())
            }
        } catch let error as SQLiteError where !began {
            throw storeUnavailable(error)
        } catch let error as DatabaseUnavailable {
            throw storeUnavailable(error)
        }
    }

    /// Who the request's bearer key belongs to, or the error to answer with.
    func authenticate(_ request: HTTPRequest) -> Result<Principal, APIError> {
        // "Bearer ", in any case (ORing in 0x20 lowers a letter and leaves a space alone).
        guard let header = request.head.header("authorization"), header.utf8.count > 7,
              zip(header.utf8, "bearer ".utf8).allSatisfy({ $0 | 0x20 == $1 }) else {
            return .failure(.unauthorized)
        }
        // Trimmed by hand: Foundation's trimming bridges through NSString on every request.
        var secret = Substring(header.utf8.dropFirst(7))
        while secret.first == " " || secret.first == "\t" { secret.removeFirst() }
        while secret.last == " " || secret.last == "\t" { secret.removeLast() }
        let found: Principal?
        do { found = try database.read { try APIKeys.authenticate(String(secret), on: $0) } } catch {
            return .failure(storeUnavailable(error))
        }
        return found.map { .success($0) } ?? .failure(.unauthorized)
    }

    /// A store failure is the server's fault, not a bad key: it must not read as 401.
    func storeUnavailable(_ error: any Error) -> APIError {
        ServerLog.error("reading the store", error)
        if let error = error as? DatabaseUnavailable { return .databaseUnavailable(error) }
        return APIError(status: 503, message: "the key store is unavailable; retry shortly", type: "server_error", code: "store_unavailable")
    }

    // MARK: - Idempotency

    /// `Idempotency-Key` on POST: the key is reserved before the request runs (a repeat that
    /// arrives meanwhile waits for the first to finish), its response is stored and returned
    /// again for a repeat of the same request; reusing a key for another request is 409.
    /// A streamed upload's key covers the bytes it stored: the handler checks them through `check`.
    func idempotent(key: String, principal: Principal, request: HTTPRequest, streamed: Bool,
                    _ body: (IdempotencyCheck?) async throws -> HTTPResponse) async throws -> HTTPResponse {
        guard (1...255).contains(key.count) else { throw APIError.invalid("Idempotency-Key must be 1-255 characters", param: "Idempotency-Key") }
        let project = principal.projectID
        // The same key with another body is another request: it must not get this one's answer.
        // JSON bodies compare by content (a retry may serialise its keys in another order).
        let prefix = "\(request.method) \(request.path)"
        var signature = prefix
        if !streamed {
            var canonical = request.body
            if let value = try? JSONParser.parse(request.body) { canonical = JSONBodyEncoder.encode(value.canonical) }
            signature += " \(SHA256.hex(canonical))"
        }
        func replay(_ stored: IdempotentResponse) -> HTTPResponse {
            HTTPResponse(status: stored.status, headers: [("Content-Type", "application/json"), ("Idempotent-Replayed", "true")],
                         body: .bytes(stored.body))
        }
        func reused() -> APIError {
            APIError(status: 409, message: "Idempotency-Key \(key) was used for another request", param: "Idempotency-Key", code: "idempotency_key_reused")
        }
        // A repeat waits (up to a minute) for the request holding the key.
        var waited = 0
        while true {
            switch try idempotency.reserve(project: project, key: key, request: signature) {
            case .reserved:
                let check = streamed ? IdempotencyCheck(previous: nil, prefix: prefix) : nil
                return try await runReserved(key: key, project: project, signature: signature, check: check, body)
            case let .completed(stored):
                if streamed, stored.request.hasPrefix(prefix + " ") {
                    // Whether the bytes are the same is known only once they are read: the handler reads them and decides.
                    let check = IdempotencyCheck(previous: stored, prefix: prefix)
                    do { return try await body(check) } catch let replayed as IdempotencyCheck.Replay { return replay(replayed.response) }
                }
                guard stored.request == signature else { throw reused() }
                return replay(stored)
            case let .inProgress(holder):
                guard holder.hasPrefix(prefix), streamed || holder == signature else { throw reused() }
                guard waited < 3000 else {
                    throw APIError(status: 409, message: "a request with Idempotency-Key \(key) is still running; retry later",
                                   param: "Idempotency-Key", code: "idempotency_key_in_use")
                }
                waited += 1
                try await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    func runReserved(key: String, project: String, signature: String, check: IdempotencyCheck?,
                     _ body: (IdempotencyCheck?) async throws -> HTTPResponse) async throws -> HTTPResponse {
        let response: HTTPResponse
        do {
            response = try await body(check)
        } catch let error as APIError {
            response = error.response
        } catch {
            try? idempotency.release(project: project, key: key)
            throw error
        }
        // Server errors are not remembered: the client may retry them.
        if case let .bytes(bytes) = response.body, response.status < 500 {
            try? idempotency.complete(project: project, key: key,
                                      IdempotentResponse(request: check?.signature ?? signature, status: response.status, body: bytes))
        } else {
            try? idempotency.release(project: project, key: key)
        }
        return response
    }
}
