import Foundation
import Store
import Synchronization
import TestSupport
import Testing

/// Every store test runs on both engines: SQLite, and a real PostgreSQL (`PostgresServer`).
@Suite(.ownThread) struct JobStoreTests {
    /// A migrated database of the dialect (PostgreSQL: a new database on the shared test server).
    static func database(_ dialect: SQLDialect) throws -> any StoreDatabase {
        let database: any StoreDatabase = switch dialect {
        case .sqlite: try Database(path: MigratorTests.temporaryDatabase())
        case .postgres: PostgresDatabase(url: try PostgresServer.running().createDatabase(), connections: 8, timeout: 20)
        }
        _ = try database.withWriter { try Migrator.migrate($0, migrations: try Migration.load(dialect, root: PostgresTests.projectMigrationRoot)) }
        return database
    }

    static func store(_ dialect: SQLDialect = .sqlite) throws -> (SQLJobStore, any StoreDatabase) {
        let database = try database(dialect)
        try database.write { connection in
            try connection.execute(script: """
                INSERT INTO projects (id, name, created_at) VALUES ('p', 'team', 0);
                INSERT INTO models (id, project_id, config, created_at) VALUES ('m', 'p', '{}', 0);
                INSERT INTO files (id, project_id, filename, purpose, bytes, status, created_at) VALUES ('f', 'p', 'a', 'fine-tune', 1, 'processed', 0);
                """)
        }
        return (SQLJobStore(database: database), database)
    }

    static func insert(_ store: SQLJobStore, _ id: String, createdAt: Int) throws {
        try store.insert(JobRecord(id: id, projectID: "p", model: "m", trainingFile: "f", validationFile: nil, method: "{}",
                                   hyperparameters: "{}", seed: 1, suffix: nil, metadata: "{}", webhookURL: nil, status: .queued,
                                   createdAt: createdAt), firstEvent: "created")
    }

    /// Issue 15's columns: the evaluation settings, a fork's lineage and the checkpoint a job
    /// started from are kept as given; the best checkpoint moves with the checkpoint that is best.
    @Test(arguments: SQLDialect.allCases)
    func lineageAndTheBestCheckpointAreKept(dialect: SQLDialect) throws {
        let (store, _) = try Self.store(dialect)
        var job = JobRecord(id: "ftjob-fork", projectID: "p", model: "m", trainingFile: "f", validationFile: nil, method: "{}",
                            hyperparameters: "{}", seed: 1, suffix: nil, metadata: "{}", webhookURL: nil, status: .queued, createdAt: 1)
        job.evaluation = #"{"result":"best"}"#
        job.parentJob = "ftjob-parent"
        job.fromStep = 40
        job.startCheckpoint = "ft:m:preftune:ftjob-x:ckpt-step-8"
        try store.insert(job, firstEvent: "created")
        let read = try #require(try store.job("ftjob-fork", project: "p"))
        #expect(read.evaluation == job.evaluation && read.parentJob == "ftjob-parent" && read.fromStep == 40 && read.startCheckpoint == job.startCheckpoint)
        #expect(read.bestStep == nil && read.bestValue == nil)
        _ = try store.claimNext(worker: "w", leaseSeconds: 60)
        try store.addCheckpoint("ftjob-fork", worker: "w", id: "ftckpt-fork-50", step: 50, metrics: "{}", event: "ckpt", sampleGrid: false, best: (50, 0.25))
        try store.addCheckpoint("ftjob-fork", worker: "w", id: "ftckpt-fork-60", step: 60, metrics: "{}", event: "ckpt", sampleGrid: false, best: (50, 0.25))
        try store.addCheckpoint("ftjob-fork", worker: "w", id: "ftckpt-fork-70", step: 70, metrics: "{}", event: "ckpt", sampleGrid: false, best: (70, 0.125))
        let best = try #require(try store.job("ftjob-fork", project: "p"))
        #expect(best.bestStep == 70 && best.bestValue == 0.125)
    }

    @Test(arguments: SQLDialect.allCases)
    func workersClaimTheOldestJobOneEach(dialect: SQLDialect) throws {
        let (store, _) = try Self.store(dialect)
        try Self.insert(store, "ftjob-new", createdAt: 20)
        try Self.insert(store, "ftjob-old", createdAt: 10)
        let first = try #require(try store.claimNext(worker: "w1", leaseSeconds: 60))
        #expect(first.id == "ftjob-old" && first.status == .running && first.startedAt != nil)
        #expect(try store.claimNext(worker: "w2", leaseSeconds: 60)?.id == "ftjob-new")
        #expect(try store.claimNext(worker: "w3", leaseSeconds: 60) == nil, "each job has one worker")
        #expect(try store.heartbeat("ftjob-old", worker: "w1", leaseSeconds: 60))
        #expect(try !store.heartbeat("ftjob-old", worker: "w2", leaseSeconds: 60), "only the owner extends a lease")
    }

    /// A transition answers with the job as it left it, or as it stands when it was in a status
    /// the transition does not start from, read in the same transaction (one query fewer for
    /// cancel, pause and resume, and no other writer's change in between).
    @Test(arguments: SQLDialect.allCases)
    func aTransitionAnswersWithTheJobItLeftOrFound(dialect: SQLDialect) throws {
        let (store, _) = try Self.store(dialect)
        try Self.insert(store, "ftjob-a", createdAt: 1)
        guard case let .moved(paused) = try store.transition("ftjob-a", from: [.queued, .running], to: .paused, error: nil, event: "Paused", level: "info")
        else { Issue.record("a queued job pauses"); return }
        #expect(paused.status == .paused)
        guard case let .refused(current) = try store.transition("ftjob-a", from: [.queued, .running], to: .paused, error: nil, event: "Paused", level: "info")
        else { Issue.record("a paused job does not pause again"); return }
        #expect(current.status == .paused)
        #expect(try store.events("ftjob-a", before: nil, limit: 10).map(\.message) == ["Paused", "created"], "only a move writes an event")
        #expect(try !store.transition("ftjob-none", from: JobStatus.active, to: .cancelled, error: nil, event: "x", level: "info").moved)
        if case .missing = try store.transition("ftjob-none", from: JobStatus.active, to: .cancelled, error: nil, event: "x", level: "info") {} else {
            Issue.record("an unknown job is missing")
        }
    }

    @Test(arguments: SQLDialect.allCases)
    func anExpiredLeaseIsTakenOver(dialect: SQLDialect) throws {
        let (store, _) = try Self.store(dialect)
        try Self.insert(store, "ftjob-a", createdAt: 1)
        _ = try store.claimNext(worker: "dead", leaseSeconds: -1)
        let taken = try #require(try store.claimNext(worker: "alive", leaseSeconds: 60))
        #expect(taken.id == "ftjob-a")
        #expect(try !store.heartbeat("ftjob-a", worker: "dead", leaseSeconds: 60), "the old worker learns it lost the job")
        let messages = try store.events("ftjob-a", before: nil, limit: 10).map(\.message)
        #expect(messages.first?.contains("lease expired") == true)
    }

    @Test(arguments: SQLDialect.allCases)
    func replayedMetricStepsAddNothing(dialect: SQLDialect) throws {
        let (store, _) = try Self.store(dialect)
        try Self.insert(store, "ftjob-m", createdAt: 1)
        _ = try store.claimNext(worker: "w", leaseSeconds: 60)
        func record(_ step: Int, _ values: [String: Double]) throws -> Bool {
            try store.recordStep("ftjob-m", worker: "w", step: step, values: values, summary: "step \(step)", samplesPerSecond: nil, estimatedFinish: nil)
        }
        #expect(try record(1, ["loss": 0.5, "lr": 1e-4]))
        #expect(try record(2, ["loss": 0.4, "lr": 1e-4]))
        #expect(try !record(2, ["loss": 9.9]), "a step replayed after a restart")
        #expect(try !record(3, ["loss": .nan]), "not a number: not a point")
        #expect(try store.events("ftjob-m", before: nil, limit: 10).filter { $0.type == "metrics" }.map(\.message) == ["step 2", "step 1"],
                "one metrics event per new step")
        #expect(try store.job("ftjob-m", project: nil)?.step == 2)
        let series = try store.metrics("ftjob-m", names: ["loss"], sinceStep: nil)
        #expect(series["loss"]?.map(\.step) == [1, 2])
        #expect(series["loss"]?.map(\.value) == [0.5, 0.4])
        #expect(try store.metrics("ftjob-m", names: nil, sinceStep: 1)["lr"]?.map(\.step) == [2])
    }
}

@Suite(.ownThread) struct HardeningStoreTests {
    @Test(arguments: SQLDialect.allCases)
    func claimsWithoutProgressEndInWorkerCrashed(dialect: SQLDialect) throws {
        let (store, _) = try JobStoreTests.store(dialect)
        try JobStoreTests.insert(store, "ftjob-crashy", createdAt: 1)
        for worker in ["w1", "w2", "w3"] { #expect(try store.claimNext(worker: worker, leaseSeconds: -1)?.id == "ftjob-crashy") }
        #expect(try store.claimNext(worker: "w4", leaseSeconds: 60) == nil, "not claimed a fourth time")
        #expect(try store.failCrashLoopingJobs(maxClaims: 3) == ["ftjob-crashy"])
        let failed = try #require(try store.job("ftjob-crashy", project: nil))
        #expect(failed.status == .failed && failed.error?.code == "worker_crashed")
    }

    @Test(arguments: SQLDialect.allCases)
    func progressResetsTheClaimCount(dialect: SQLDialect) throws {
        let (store, database) = try JobStoreTests.store(dialect)
        try JobStoreTests.insert(store, "ftjob-steady", createdAt: 1)
        _ = try database.write { try $0.run("UPDATE jobs SET max_retries = 10", []) }
        for (step, worker) in ["w1", "w2", "w3", "w4"].enumerated() {
            #expect(try store.claimNext(worker: worker, leaseSeconds: -1)?.id == "ftjob-steady", "\(worker)")
            _ = try store.recordStep("ftjob-steady", worker: worker, step: step + 1, values: ["loss": 1], summary: "step", samplesPerSecond: nil, estimatedFinish: nil)
        }
        #expect(try store.failCrashLoopingJobs(maxClaims: 3).isEmpty)
    }

    /// A job whose workers die after making progress is taken over at most `max_retries` times.
    @Test(arguments: SQLDialect.allCases)
    func takeoversStopAtMaxRetries(dialect: SQLDialect) throws {
        let (store, database) = try JobStoreTests.store(dialect)
        try JobStoreTests.insert(store, "ftjob-r", createdAt: 1)
        _ = try database.write { try $0.run("UPDATE jobs SET max_retries = 1", []) }
        for (step, worker) in ["w1", "w2"].enumerated() {
            #expect(try store.claimNext(worker: worker, leaseSeconds: -1)?.id == "ftjob-r", "\(worker)")
            _ = try store.recordStep("ftjob-r", worker: worker, step: step + 1, values: ["loss": 1], summary: "s", samplesPerSecond: nil, estimatedFinish: nil)
        }
        #expect(try store.job("ftjob-r", project: nil)?.retries == 1)
        #expect(try store.claimNext(worker: "w3", leaseSeconds: 60) == nil, "no retries left")
        #expect(try store.failCrashLoopingJobs(maxClaims: 3) == ["ftjob-r"])
        let failed = try #require(try store.job("ftjob-r", project: nil))
        #expect(failed.status == .failed && failed.error?.code == "worker_crashed" && failed.error?.message.contains("max_retries") == true)
    }

    @Test(arguments: SQLDialect.allCases)
    func anIdempotencyKeyIsReservedOnce(dialect: SQLDialect) throws {
        let (_, database) = try JobStoreTests.store(dialect)
        let keys = SQLIdempotencyStore(database: database)
        #expect(try keys.reserve(project: "p", key: "k", request: "POST /x 1") == .reserved)
        #expect(try keys.reserve(project: "p", key: "k", request: "POST /x 1") == .inProgress(request: "POST /x 1"))
        let answer = IdempotentResponse(request: "POST /x 1", status: 200, body: Array("{}".utf8))
        try keys.complete(project: "p", key: "k", answer)
        #expect(try keys.reserve(project: "p", key: "k", request: "POST /x 1") == .completed(answer))
        #expect(try keys.reserve(project: "p", key: "other", request: "POST /x 2") == .reserved)
        try keys.release(project: "p", key: "other")
        #expect(try keys.reserve(project: "p", key: "other", request: "POST /x 2") == .reserved, "a released key is free again")
        let stale = SQLIdempotencyStore(database: database, abandonedAfterSeconds: -1)
        #expect(try stale.reserve(project: "p", key: "other", request: "POST /x 3") == .reserved, "a reservation left by a stopped server lapses")
    }
}
