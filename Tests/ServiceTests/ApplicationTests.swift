import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import HTTP
import Service
import Store
import TestSupport
import Testing
import Training

/// The API served for real on a loopback port, over a fresh data directory.
final class LiveService {
    let directory: String
    let data: DataDirectory
    let application: Application
    let server: HTTPServer
    /// Workers training queued jobs, when asked for (`workers > 0` or `startWorkers`).
    private(set) var pool: WorkerPool?
    var base: String { "http://127.0.0.1:\(server.port)" }

    /// Settings for tests: the machine's defaults, and webhooks may reach this machine (the
    /// tests' receivers listen on loopback).
    static var testSettings: ServiceSettings {
        var settings = ServiceSettings.defaults()
        settings.webhookAllow = [IPNetwork("127.0.0.0/8")!]
        return settings
    }

    /// `database`: PostgreSQL's, in place of the data directory's SQLite.
    init(workers: Int = 0, webhookDelays: [Double] = [0, 0.2, 0.4], settings: ServiceSettings = LiveService.testSettings,
         database: (any StoreDatabase)? = nil) throws {
        directory = temporaryPath("preftune-data")
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../migrations").standardized.path
        data = if let database {
            try DataDirectory.open(directory, database: database, migrations: try Migration.load(database.dialect, root: root))
        } else {
            try DataDirectory.open(directory, migrations: try Migration.load(.sqlite, root: root))
        }
        application = Application(dataDirectory: data, settings: settings, webhookDelays: webhookDelays)
        var configuration = HTTPServer.Configuration()
        configuration.port = 0
        application.configure(&configuration)
        server = HTTPServer(configuration: configuration, answer: application.answer)
        application.serve(on: server)
        try server.start()
        if workers > 0 { startWorkers(workers) }
    }

    /// Where a model is stored: model ids are per project, under models/<project>/<id>.
    func modelPath(_ name: String) throws -> String {
        let rows = try data.database.read { try $0.rows("SELECT id FROM models WHERE id = ?1 OR id LIKE '%/' || ?1", [.text(name)]) }
        guard case let .text(key)? = rows.first?.first else { throw HTTPTestFailure("no model \(name)") }
        return data.modelPath(key)
    }

    /// Starts a worker pool (a restarted server's, when one ran and was stopped before).
    func startWorkers(_ count: Int = 1, memoryBudget: MemoryBudget? = nil, minimumRunSeconds: Int? = 60) {
        var configuration = WorkerPool.Configuration(workers: count, threadsPerJob: 1)
        configuration.minimumRunSeconds = minimumRunSeconds
        configuration.memoryBudget = memoryBudget ?? application.settings.memoryBudget
        configuration.egress = EgressPolicy(allowed: application.settings.webhookAllow)
        configuration.heartbeatSeconds = 0.5
        configuration.pollSeconds = 0.05
        let pool = WorkerPool(data: data, store: application.jobs, changes: application.statusChanges, configuration: configuration,
                              telemetry: application.telemetry)
        pool.start()
        self.pool = pool
    }

    /// A graceful stop of the workers, as on SIGTERM: running jobs save their state and are queued again.
    func stopWorkers() {
        pool?.stop()
        pool = nil
    }

    deinit {
        pool?.stop()
        server.shutdown()
        server.wait()
        application.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    var adminKey: String { (try? String(contentsOfFile: data.adminKeyPath, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "" }

    func request(_ method: String, _ path: String, key: String? = nil) async throws -> (status: Int, json: [String: Any]) {
        let answer = try await handle(method, path, key: key)
        return (answer.status, (try? JSONSerialization.jsonObject(with: answer.body)) as? [String: Any] ?? [:])
    }

    /// Answers a request in-process, through `Application.handle` as the event loop calls it:
    /// the same routing, authentication, handlers and envelope, without a socket. (Uploads, the
    /// HTTP layer's own limits and streaming are tested over real sockets: FilesTests, HTTPTests,
    /// HardeningTests, ExecutableTests.) A streamed body is read to its end; a file body is read.
    func handle(_ method: String, _ path: String, key: String? = nil, contentType: String? = nil,
                body: [UInt8] = []) async throws -> (status: Int, body: Data, type: String?) {
        var headers: [(name: String, value: String)] = [("Host", "127.0.0.1")]
        if let key { headers.append(("Authorization", "Bearer \(key)")) }
        if let contentType { headers.append(("Content-Type", contentType)) }
        if !body.isEmpty { headers.append(("Content-Length", "\(body.count)")) }
        let head = HTTPRequestHead(method: method, target: path, minorVersion: 1, headers: headers)
        let response = await application.handle(HTTPRequest(head: head, body: body))
        let type = response.headers.first { $0.0.lowercased() == "content-type" }?.1
        switch response.body {
        case let .bytes(bytes):
            return (response.status, Data(bytes), type)
        case let .file(path, offset, size):
            let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
            defer { try? handle.close() }
            try handle.seek(toOffset: UInt64(offset))
            return (response.status, try handle.read(upToCount: size) ?? Data(), type)
        case let .stream(stream):
            var collected = Data()
            for await piece in stream { collected.append(contentsOf: piece) }
            return (response.status, collected, type)
        }
    }
}

func errorCode(_ json: [String: Any]) -> String? { (json["error"] as? [String: Any])?["code"] as? String }

@Suite(.ownThread) struct ApplicationTests {
    @Test func healthNeedsNoKeyButTheAPIDoes() async throws {
        let service = try LiveService()
        #expect(try await service.request("GET", "/healthz").status == 200)
        let anonymous = try await service.request("GET", "/v1/models")
        #expect(anonymous.status == 401 && errorCode(anonymous.json) == "invalid_api_key")
        #expect(try await service.request("GET", "/v1/models", key: "sk-pt-wrong").status == 401)
        let admin = try await service.request("GET", "/v1/models", key: service.adminKey)
        #expect(admin.status == 200 && admin.json["object"] as? String == "list")
    }

    @Test func errorsComeInTheEnvelope() async throws {
        let service = try LiveService()
        let missing = try await service.request("GET", "/v1/nothing", key: service.adminKey)
        #expect(missing.status == 404 && errorCode(missing.json) == "unknown_url")
        let error = try #require(missing.json["error"] as? [String: Any])
        #expect(Set(error.keys) == ["message", "type", "param", "code"])
        let wrongMethod = try await service.request("DELETE", "/healthz")
        #expect(wrongMethod.status == 405 && errorCode(wrongMethod.json) == "method_not_allowed")
    }

    @Test func aRevokedKeyStopsWorking() async throws {
        let service = try LiveService()
        let (id, secret) = try service.data.database.withWriter { try APIKeys(connection: $0).create(project: "team") }
        #expect(try await service.request("GET", "/v1/models", key: secret).status == 200)
        try service.data.database.withWriter { _ = try APIKeys(connection: $0).revoke(id) }
        #expect(try await service.request("GET", "/v1/models", key: secret).status == 401)
    }

    @Test func projectsSeeOnlyTheirOwnModels() async throws {
        let service = try LiveService()
        let a = try service.data.database.withWriter { try APIKeys(connection: $0).create(project: "a") }
        let b = try service.data.database.withWriter { try APIKeys(connection: $0).create(project: "b") }
        try service.data.database.write { connection in
            let projectA = try APIKeys(connection: connection).project(named: "a")
            let insert = "INSERT INTO models (id, project_id, config, created_at) VALUES (?1, ?2, '{}', 1)"
            try connection.run(insert, [.text("ft:base:a"), .text(projectA)])
            try connection.run(insert, [.text("shared-base"), .null])
        }
        func ids(_ key: String) async throws -> Set<String> {
            let listed = try await service.request("GET", "/v1/models", key: key).json["data"] as? [[String: Any]] ?? []
            return Set(listed.compactMap { $0["id"] as? String })
        }
        #expect(try await ids(a.secret) == ["ft:base:a", "shared-base"])
        #expect(try await ids(b.secret) == ["shared-base"])
    }

    @Test func theFirstStartWritesAPrivateAdminKeyOnce() throws {
        let service = try LiveService()
        #expect(service.data.createdAdminKey)
        let attributes = try FileManager.default.attributesOfItem(atPath: service.data.adminKeyPath)
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        let migrations = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../migrations/sqlite").standardized.path
        let again = try DataDirectory.open(service.directory, migrations: try Migration.load(directory: migrations))
        #expect(!again.createdAdminKey)
    }
}
