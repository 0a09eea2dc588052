import Foundation
import HTTP
import JSON
import Store

/// The API: the routes, each handler inside the request pipeline's wrappers (telemetry,
/// the error envelope, authentication, idempotency), around the stores. Handlers read like
/// the endpoint's documentation; the concerns every request shares live in the pipeline.
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
    let resources: Resources
    let pipeline: RequestPipeline
    let router: Router

    /// The stores and settings handlers share.
    struct Resources: Sendable {
        let data: DataDirectory
        let jobs: any JobStore
        let models: any ModelStore
        let files: any FileStore
        let projects: SQLProjectStore
        let settings: ServiceSettings
        let webhooks: Webhooks
        let heavyWork: HeavyWork
    }

    public init(dataDirectory: DataDirectory, settings: ServiceSettings = .defaults(), webhookDelays: [Double] = [0, 1, 2, 4, 8, 16, 32]) {
        self.dataDirectory = dataDirectory
        self.settings = settings
        let jobs = SQLJobStore(database: dataDirectory.database)
        self.jobs = jobs
        pipeline = RequestPipeline(database: dataDirectory.database, idempotency: SQLIdempotencyStore(database: dataDirectory.database),
                                   telemetry: telemetry)
        heavyWork = HeavyWork(threads: settings.heavyWorkThreads, queueCapacity: settings.heavyWorkQueue)
        let projects = SQLProjectStore(database: dataDirectory.database)
        let webhooks = Webhooks(store: jobs, egress: EgressPolicy(allowed: settings.webhookAllow), delays: webhookDelays,
                                secret: { try? projects.webhookSecret(project: $0) })
        let resources = Resources(data: dataDirectory, jobs: jobs, models: SQLModelStore(database: dataDirectory.database),
                                  files: SQLFileStore(database: dataDirectory.database), projects: projects,
                                  settings: settings, webhooks: webhooks,
                                  heavyWork: heavyWork)
        self.resources = resources
        var router = Router(pipeline: pipeline)
        // On PostgreSQL, logs may be written on other machines: followers poll as well.
        logFollowers = LogFollowers(changes: statusChanges,
                                    polling: dataDirectory.database.dialect == .postgres ? (store: jobs, seconds: settings.fleetPollSeconds) : nil)
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
        webhooks.start()
    }

    /// Jobs left in `validating_files` by a stopped server are validated again (the stage
    /// finds them on its own within a second; this looks at once).
    public func resumeValidations() { fileValidation.wake() }

    /// Stops heavy request work (samples, model builds: what runs is cancelled) and the
    /// validation stage (after the file it is reading).
    public func stop() {
        heavyWork.stop()
        fileValidation.stop()
        resources.webhooks.stop()
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

    /// Answers one request (tests call this in-process; the server calls `answer`).
    public func handle(_ request: HTTPRequest) async -> HTTPResponse {
        switch answer(request) {
        case let .now(response): response
        case let .later(work): await work()
        }
    }

    /// The server's entry: the route is found once, then its wrapped handler answers (a read
    /// at once, on the event loop; anything that may await from a task). A request that finds
    /// no route is answered at once, and counted under `unmatched`.
    public func answer(_ request: HTTPRequest) -> HTTPAnswer {
        let started = ContinuousClock.now
        if let part = request.malformedQueryPart {
            let error = APIError.invalid("the query string is not valid percent-encoded UTF-8 at '\(part.prefix(64))'", param: "query")
            return .now(pipeline.record(error.response, route: "unmatched", method: request.method, since: started))
        }
        switch router.match(method: request.method, path: request.path) {
        case let .failure(failure):
            var response = failure.error.response
            if !failure.allowed.isEmpty { response.headers.append(("Allow", failure.allowed.joined(separator: ", "))) }
            return .now(pipeline.record(response, route: "unmatched", method: request.method, since: started))
        case let .success((route, parameters)):
            return route.responder.answer(request, parameters)
        }
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
            let text = telemetry.render(jobsByStatus: try jobs.countsByStatus(), followers: followers.count,
                                        perJob: perJob ? try jobs.runningProgress() : nil)
            return HTTPResponse(status: 200, headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")], body: .bytes(Array(text.utf8)))
        }
    }
}
