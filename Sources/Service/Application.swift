import Foundation
import HTTP
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
    let idempotency: any IdempotencyStore
    let router: Router

    public init(dataDirectory: DataDirectory, webhookDelays: [Double] = [0, 1, 2, 4, 8, 16, 32]) {
        self.dataDirectory = dataDirectory
        let jobs = SQLiteJobStore(database: dataDirectory.database)
        self.jobs = jobs
        idempotency = SQLiteIdempotencyStore(database: dataDirectory.database)
        var router = Router()
        logFollowers = LogFollowers(changes: statusChanges)
        Self.addOperations(&router, jobs: jobs, telemetry: telemetry, followers: logFollowers)
        let files = SQLiteFileStore(database: dataDirectory.database), models = SQLiteModelStore(database: dataDirectory.database)
        ModelsAPI.add(to: &router, data: dataDirectory, store: models, files: files)
        FilesAPI.add(to: &router, data: dataDirectory, store: files)
        JobsAPI.add(to: &router, data: dataDirectory, store: jobs, models: models, files: files, changes: statusChanges)
        SamplesAPI.add(to: &router, data: dataDirectory, models: models, jobs: jobs)
        LogsAPI.add(to: &router, data: dataDirectory, store: jobs, followers: logFollowers)
        JobMetricsAPI.add(to: &router, store: jobs)
        Dashboard.add(to: &router)
        self.router = router
        let webhooks = Webhooks(store: jobs, delays: webhookDelays)
        statusChanges.observe { jobID, status in
            if JobStatus.terminal.contains(status) { webhooks.jobFinished(jobID) }
        }
    }

    /// Jobs left in `validating_files` by a stopped server are validated again.
    public func resumeValidations() {
        for job in (try? jobs.jobs(status: "validating_files")) ?? [] {
            JobsAPI.validateInBackground(job, data: dataDirectory, store: jobs, changes: statusChanges)
        }
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
        var principal: Principal?
        if route.authenticated {
            guard let header = request.head.header("authorization"), header.lowercased().hasPrefix("bearer ") else {
                return APIError.unauthorized.response
            }
            // Trimmed by hand: Foundation's trimming bridges through NSString on every request.
            var secret = Substring(header.dropFirst(7))
            while secret.first == " " || secret.first == "\t" { secret.removeFirst() }
            while secret.last == " " || secret.last == "\t" { secret.removeLast() }
            // A store failure is the server's fault, not a bad key: it must not read as 401.
            let found: Principal?
            do { found = try dataDirectory.database.read { try APIKeys(connection: $0).authenticate(String(secret)) } } catch {
                FileHandle.standardError.write(Data("preftune: authenticating: \(error)\n".utf8))
                return APIError(status: 503, message: "the key store is unavailable; retry shortly", type: "server_error",
                                code: "store_unavailable").response
            }
            guard let found else { return APIError.unauthorized.response }
            principal = found
        }
        do {
            let context = RequestContext(request: request, parameters: parameters, principal: principal)
            if request.method == "POST", let principal, let key = request.head.header("idempotency-key") {
                return try await idempotent(key: key, principal: principal, request: request) { try await route.handler(context) }
            }
            return try await route.handler(context)
        } catch let error as APIError {
            return error.response
        } catch {
            // Never a bare 500 body: the envelope, and the cause in the server log.
            FileHandle.standardError.write(Data("preftune: \(request.method) \(request.path): \(error)\n".utf8))
            return APIError(status: 500, message: "internal error; the server log has the details", type: "server_error").response
        }
    }

    /// `Idempotency-Key` on POST: the first response to a key is stored and returned
    /// again for a repeat of the same request; reusing a key for another request is 409.
    func idempotent(key: String, principal: Principal, request: HTTPRequest,
                    _ body: () async throws -> HTTPResponse) async throws -> HTTPResponse {
        guard (1...255).contains(key.count) else { throw APIError.invalid("Idempotency-Key must be 1-255 characters", param: "Idempotency-Key") }
        // The same key with another body is another request: it must not get this one's answer.
        // JSON bodies compare by content (a retry may serialise its keys in another order).
        var canonical = request.body
        if let object = try? JSONSerialization.jsonObject(with: Data(request.body)) { canonical = JSONWriter.encode(object) }
        let signature = "\(request.method) \(request.path) \(SHA256.hex(canonical))"
        if let stored = try idempotency.response(project: principal.projectID, key: key) {
            guard stored.request == signature else {
                throw APIError(status: 409, message: "Idempotency-Key \(key) was used for another request", param: "Idempotency-Key",
                               code: "idempotency_key_reused")
            }
            return HTTPResponse(status: stored.status, headers: [("Content-Type", "application/json"), ("Idempotent-Replayed", "true")],
                                body: .bytes(stored.body))
        }
        let response: HTTPResponse
        do { response = try await body() } catch let error as APIError { response = error.response }
        // Server errors are not remembered: the client may retry them.
        if case let .bytes(bytes) = response.body, response.status < 500 {
            try? idempotency.remember(project: principal.projectID, key: key,
                                      IdempotentResponse(request: signature, status: response.status, body: bytes))
        }
        return response
    }

    static func addOperations(_ router: inout Router, jobs: any JobStore, telemetry: Telemetry, followers: LogFollowers) {
        router.add("GET", "/healthz", authenticated: false) { _ in JSON.response(["status": "ok"]) }
        router.add("GET", "/readyz", authenticated: false) { _ in JSON.response(["status": "ready"]) }
        // Prometheus scrapes without a key, as for the health checks; deploy/nginx.conf keeps it off the public side.
        router.add("GET", "/metrics", authenticated: false) { _ in
            let text = telemetry.render(jobsByStatus: try jobs.countsByStatus(), followers: followers.count)
            return HTTPResponse(status: 200, headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")], body: .bytes(Array(text.utf8)))
        }
    }
}
