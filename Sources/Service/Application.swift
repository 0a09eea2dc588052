import Foundation
import HTTP
import JSON
import Store

/// The API: routes, authentication and the error envelope around the store.
/// Handlers read like the endpoint's documentation; decoding errors, auth and
/// the envelope live here, not in each handler.
public final class Application: Sendable {
    public let dataDirectory: DataDirectory
    public let jobs: any JobStore
    /// Status changes of jobs, made by the API or the workers: the worker pool and the webhooks listen.
    public let statusChanges = JobStatusChanges()
    public let logFollowers: LogFollowers
    public let telemetry = Telemetry()
    public let settings: ServiceSettings
    /// Samples and model creation, off the request threads.
    public let heavyWork: HeavyWork
    /// Training-file validation: the stage between `validating_files` and `queued`.
    public let fileValidation: FileValidation
    let idempotency: any IdempotencyStore
    let resources: Resources
    let router: Router

    /// The stores and settings handlers share.
    struct Resources: Sendable {
        let data: DataDirectory
        let jobs: any JobStore
        let models: any ModelStore
        let files: any FileStore
        let settings: ServiceSettings
        let webhooks: Webhooks
        let heavyWork: HeavyWork
    }

    public init(dataDirectory: DataDirectory, settings: ServiceSettings = .defaults(), webhookDelays: [Double] = [0, 1, 2, 4, 8, 16, 32]) {
        self.dataDirectory = dataDirectory
        self.settings = settings
        let jobs = SQLiteJobStore(database: dataDirectory.database)
        self.jobs = jobs
        idempotency = SQLiteIdempotencyStore(database: dataDirectory.database)
        heavyWork = HeavyWork(threads: settings.heavyWorkThreads, queueCapacity: settings.heavyWorkQueue)
        let webhooks = Webhooks(store: jobs, egress: EgressPolicy(allowed: settings.webhookAllow), delays: webhookDelays)
        let resources = Resources(data: dataDirectory, jobs: jobs, models: SQLiteModelStore(database: dataDirectory.database),
                                  files: SQLiteFileStore(database: dataDirectory.database), settings: settings, webhooks: webhooks,
                                  heavyWork: heavyWork)
        self.resources = resources
        var router = Router()
        logFollowers = LogFollowers(changes: statusChanges)
        Self.addOperations(&router, jobs: jobs, telemetry: telemetry, followers: logFollowers, metricsToken: settings.metricsToken)
        ModelsAPI.add(to: &router, resources)
        FilesAPI.add(to: &router, resources)
        JobsAPI.add(to: &router, resources, changes: statusChanges)
        SamplesAPI.add(to: &router, resources)
        LogsAPI.add(to: &router, data: dataDirectory, store: jobs, followers: logFollowers)
        JobMetricsAPI.add(to: &router, store: jobs)
        Dashboard.add(to: &router)
        self.router = router
        fileValidation = FileValidation(resources: resources, changes: statusChanges)
        fileValidation.start()
        statusChanges.observe { jobID, status in
            if status.isTerminal { webhooks.jobFinished(jobID) }
        }
    }

    /// Jobs left in `validating_files` by a stopped server are validated again (the stage
    /// finds them on its own within a second; this looks at once).
    public func resumeValidations() { fileValidation.wake() }

    /// Stops heavy request work (samples, model builds: what runs is cancelled) and the
    /// validation stage (after the file it is reading).
    public func stop() {
        heavyWork.stop()
        fileValidation.stop()
    }

    /// Streams this application produces (log followers) run on the server's handler threads.
    public func serve(on server: HTTPServer) {
        logFollowers.run(on: server.taskExecutor)
    }

    /// What the server must know about the routes: which stream their body, and how large it may be.
    public func configure(_ configuration: inout HTTPServer.Configuration) {
        let router = self.router
        configuration.streamsBody = { router.route(for: $0)?.streamsBody == true }
        configuration.limits.bodyBytesForHead = { router.route(for: $0)?.maxBodyBytes ?? Router.defaultMaxBodyBytes }
        configuration.errorBody = { status, message, code in
            let error = APIError(status: status, message: message, type: status >= 500 ? "server_error" : "invalid_request_error", code: code)
            if case let .bytes(body) = error.response.body { return body }
            return []
        }
    }

    /// Answers one request: route, authenticate, run the handler, map errors to the envelope.
    public func handle(_ request: HTTPRequest) async -> HTTPResponse {
        let started = ContinuousClock.now
        let (response, route) = await answer(request)
        let elapsed = started.duration(to: .now)
        telemetry.recordRequest(route: route, method: request.method, code: response.status,
                                seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18)
        return response
    }

    /// The response, and the route pattern that answered (the metrics' `route` label).
    func answer(_ request: HTTPRequest) async -> (HTTPResponse, String) {
        if let part = request.malformedQueryPart {
            return (APIError.invalid("the query string is not valid percent-encoded UTF-8 at '\(part.prefix(64))'", param: "query").response, "unmatched")
        }
        switch router.match(method: request.method, path: request.path) {
        case let .failure(failure):
            var response = failure.error.response
            if !failure.allowed.isEmpty { response.headers.append(("Allow", failure.allowed.joined(separator: ", "))) }
            return (response, "unmatched")
        case let .success((route, parameters)):
            return (await answer(request, route: route, parameters: parameters), route.pattern)
        }
    }

    func answer(_ request: HTTPRequest, route: Router.Route, parameters: [String: String]) async -> HTTPResponse {
        switch route.action {
        case let .unauthenticated(handler):
            return await respond(to: request) { try await handler(request) }
        case let .authenticatedRead(handler):
            return await respond(to: request) {
                var began = false
                do {
                    return try dataDirectory.database.readTransaction {
                        began = true
                        let principal = try authenticate(request).get()
                        return try handler(RequestContext(request: request, parameters: parameters, principal: principal))
                    }
                } catch let error as SQLiteError where !began {
                    throw storeUnavailable(error)
                }
            }
        case let .authenticated(handler):
            let principal: Principal
            switch authenticate(request) {
            case let .success(found): principal = found
            case let .failure(error): return error.response
            }
            return await respond(to: request) {
                if request.method == "POST", let key = request.head.header("idempotency-key") {
                    return try await idempotent(key: key, principal: principal, request: request, streamed: route.streamsBody) { check in
                        try await handler(RequestContext(request: request, parameters: parameters, principal: principal, idempotency: check))
                    }
                }
                return try await handler(RequestContext(request: request, parameters: parameters, principal: principal))
            }
        }
    }

    /// Who the request's bearer key belongs to, or the error to answer with.
    func authenticate(_ request: HTTPRequest) -> Result<Principal, APIError> {
        guard let header = request.head.header("authorization"), header.lowercased().hasPrefix("bearer ") else {
            return .failure(.unauthorized)
        }
        // Trimmed by hand: Foundation's trimming bridges through NSString on every request.
        var secret = Substring(header.dropFirst(7))
        while secret.first == " " || secret.first == "\t" { secret.removeFirst() }
        while secret.last == " " || secret.last == "\t" { secret.removeLast() }
        let found: Principal?
        do { found = try dataDirectory.database.read { try APIKeys(connection: $0).authenticate(String(secret)) } } catch {
            return .failure(storeUnavailable(error))
        }
        return found.map { .success($0) } ?? .failure(.unauthorized)
    }

    /// A store failure is the server's fault, not a bad key: it must not read as 401.
    func storeUnavailable(_ error: any Error) -> APIError {
        ServerLog.error("reading the store", error)
        return APIError(status: 503, message: "the key store is unavailable; retry shortly", type: "server_error", code: "store_unavailable")
    }

    /// Runs a handler, and maps what it throws to the envelope.
    func respond(to request: HTTPRequest, _ handler: () async throws -> HTTPResponse) async -> HTTPResponse {
        do {
            return try await handler()
        } catch let error as APIError {
            return error.response
        } catch is CancellationError {
            // The client left (or the server is stopping): nobody reads this.
            return APIError(status: 499, message: "the request was cancelled", type: "server_error", code: "cancelled").response
        } catch {
            // Never a bare 500 body: the envelope, and the cause in the server log.
            ServerLog.error("\(request.method) \(request.path)", error)
            return APIError(status: 500, message: "internal error; the server log has the details", type: "server_error").response
        }
    }

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

    static func addOperations(_ router: inout Router, jobs: any JobStore, telemetry: Telemetry, followers: LogFollowers, metricsToken: String?) {
        struct Health: Encodable { let status: String }
        router.addPublic("GET", "/healthz") { _ in .json(Health(status: "ok")) }
        router.addPublic("GET", "/readyz") { _ in .json(Health(status: "ready")) }
        // Prometheus scrapes without an API key, as for the health checks. Aggregates only, unless the
        // scraper presents the operator's metrics token: job ids and losses are the projects' business.
        router.addPublic("GET", "/metrics") { request in
            let presented = request.head.header("authorization").map { $0.hasPrefix("Bearer ") ? String($0.dropFirst(7)) : "" }
            let perJob = metricsToken.map { token in presented.map { SHA256.hex($0.utf8) == SHA256.hex(token.utf8) } ?? false } ?? false
            let text = telemetry.render(jobsByStatus: try jobs.countsByStatus(), followers: followers.count, perJob: perJob)
            return HTTPResponse(status: 200, headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")], body: .bytes(Array(text.utf8)))
        }
    }
}
