import Foundation
import Jobs
import Store
import Training
import Synchronization
import TestSupport
import Testing

/// Priorities and the operator's per-project limits, on both engines.
@Suite(.ownThread) struct SchedulingStoreTests {
    static func insert(_ store: SQLJobStore, _ id: String, project: String = "p", createdAt: Int, priority: Int = 0) throws {
        var job = JobRecord(id: id, projectID: project, model: "m", trainingFile: "f", validationFile: nil, method: "{}", hyperparameters: "{}",
                            seed: 1, suffix: nil, metadata: "{}", webhookURL: nil, status: .queued, createdAt: createdAt)
        job.priority = priority
        try store.insert(job, firstEvent: "created")
    }

    @Test(arguments: SQLDialect.allCases)
    func higherPriorityIsClaimedFirstAndTheQueueSaysWhere(dialect: SQLDialect) throws {
        let (store, _) = try JobStoreTests.store(dialect)
        try Self.insert(store, "ftjob-oldest-low", createdAt: 1, priority: -1)
        try Self.insert(store, "ftjob-old", createdAt: 2)
        try Self.insert(store, "ftjob-new-high", createdAt: 3, priority: 5)
        try Self.insert(store, "ftjob-newer", createdAt: 4)
        #expect(try ["ftjob-new-high", "ftjob-old", "ftjob-newer", "ftjob-oldest-low"].map { try store.job($0, project: nil)?.queuePosition } == [1, 2, 3, 4])
        var order: [String] = []
        while let job = try store.claimNext(worker: "w", leaseSeconds: 60) { order.append(job.id) }
        #expect(order == ["ftjob-new-high", "ftjob-old", "ftjob-newer", "ftjob-oldest-low"])
        #expect(try store.job("ftjob-old", project: nil)?.queuePosition == nil, "a running job has no place in the queue")
    }

    @Test(arguments: SQLDialect.allCases)
    func aProjectRunsNoMoreThanItsLimit(dialect: SQLDialect) throws {
        let (store, database) = try JobStoreTests.store(dialect)
        let projects = SQLProjectStore(database: database)
        try projects.set(project: "team", maxPriority: nil, maxRunning: .some(1))
        try database.write { try $0.run("INSERT INTO projects (id, name, created_at) VALUES ('q', 'other', 0)", []) }
        try Self.insert(store, "ftjob-p1", createdAt: 1)
        try Self.insert(store, "ftjob-p2", createdAt: 2)
        try Self.insert(store, "ftjob-q1", project: "q", createdAt: 3)
        #expect(try store.claimNext(worker: "w1", leaseSeconds: 60)?.id == "ftjob-p1")
        #expect(try store.claimNext(worker: "w2", leaseSeconds: 60)?.id == "ftjob-q1", "team is at its limit: the other project's job goes first")
        #expect(try store.claimNext(worker: "w3", leaseSeconds: 60) == nil)
        #expect(try store.release("ftjob-p1", worker: "w1", status: .succeeded, error: nil, event: "done", level: "info"))
        #expect(try store.claimNext(worker: "w3", leaseSeconds: 60)?.id == "ftjob-p2", "room again")
        #expect(try projects.limits(project: "p") == ProjectLimits(maxPriority: 0, maxRunning: 1))
        try projects.set(project: "team", maxPriority: 7, maxRunning: .some(nil))
        #expect(try projects.limits(project: "p") == ProjectLimits(maxPriority: 7, maxRunning: nil))
        #expect(try projects.list().map(\.name) == ["other", "team"])
    }

    /// Workers claiming at once cannot push a project past its limit (PostgreSQL's claims are concurrent).
    @Test(arguments: SQLDialect.allCases)
    func simultaneousClaimsKeepTheLimit(dialect: SQLDialect) throws {
        let (store, database) = try JobStoreTests.store(dialect)
        try SQLProjectStore(database: database).set(project: "team", maxPriority: nil, maxRunning: .some(2))
        for index in 0..<10 { try Self.insert(store, "ftjob-l\(index)", createdAt: index) }
        let claimed = Mutex(0)
        FleetStoreTests.concurrently(8) { worker in
            if (try? store.claimNext(worker: "w\(worker)", leaseSeconds: 60)) != nil { claimed.withLock { $0 += 1 } }
        }
        #expect(claimed.withLock { $0 } == 2)
        #expect(try store.countsByStatus()[.running] == 2)
    }
}

/// `estimated_start`: the queue played forward from the running jobs' finishes and measured rates.
@Suite(.ownThread) struct QueueOutlookTests {
    @Test(arguments: SQLDialect.allCases)
    func queuedJobsStartAsTheWorkersFree(dialect: SQLDialect) throws {
        let (store, database) = try JobStoreTests.store(dialect)
        // batch 4 at 40 samples/s: 10 steps a second.
        var hyperparameters = Hyperparameters()
        hyperparameters.batchSize = 4
        let settings = JobSettings(method: .sft, hyperparameters: hyperparameters), unmeasured = JobSettings(method: .dpo, hyperparameters: hyperparameters)
        for (index, id) in ["ftjob-run-a", "ftjob-run-b", "ftjob-q1", "ftjob-q2", "ftjob-q3", "ftjob-other"].enumerated() {
            try store.insert(JobRecord(id: id, projectID: "p", model: "m", trainingFile: "f", validationFile: nil,
                                       method: (id == "ftjob-other" ? unmeasured : settings).methodJSON, hyperparameters: settings.hyperparametersJSON, seed: 1, suffix: nil,
                                       metadata: "{}", webhookURL: nil, status: .queued, createdAt: index), firstEvent: "created")
            try database.write { try $0.run("UPDATE jobs SET total_steps = 100 WHERE id = ?1", [.text(id)]) }
        }
        #expect(try store.claimNext(worker: "w1", leaseSeconds: 60)?.id == "ftjob-run-a")
        #expect(try store.claimNext(worker: "w2", leaseSeconds: 60)?.id == "ftjob-run-b")
        let now = Int(Date().timeIntervalSince1970)
        try store.recordStep("ftjob-run-a", worker: "w1", step: 50, values: ["loss": 1], summary: "", samplesPerSecond: 40, estimatedFinish: now + 5)
        try store.recordStep("ftjob-run-b", worker: "w2", step: 10, values: ["loss": 1], summary: "", samplesPerSecond: 40, estimatedFinish: now + 9)
        let outlook = try store.queueOutlook(queuedLimit: 100)
        #expect(outlook.running.count == 2 && outlook.queued.map(\.id) == ["ftjob-q1", "ftjob-q2", "ftjob-q3", "ftjob-other"])
        let starts = outlook.estimatedStarts(now: now)
        // q1 takes a's worker at +5, q2 b's at +9, q3 the worker q1 leaves after its 10 s; the job
        // of a method no job has measured starts after q3 (+15), and what follows it has no estimate.
        #expect(starts["ftjob-q1"] == now + 5 && starts["ftjob-q2"] == now + 9 && starts["ftjob-q3"] == now + 15, "\(starts)")
        #expect(starts["ftjob-other"] == now + 19)
        let unknownFirst = QueueOutlook(running: outlook.running, queued: outlook.queued.reversed(), rates: outlook.rates).estimatedStarts(now: now)
        #expect(unknownFirst.keys.sorted() == ["ftjob-other"], "behind a job of unknown length nothing is estimated: \(unknownFirst)")
        #expect(try store.job("ftjob-q1", project: nil)?.estimatedStart == nil, "planned when the API reads it, never stored")
    }
}

/// Fair share between projects, and which running job a waiting one displaces.
@Suite(.ownThread) struct FairShareStoreTests {
    /// Records `seconds` of worker time for the project's job `id`, ended a minute ago.
    static func used(_ database: any StoreDatabase, _ id: String, seconds: Int) throws {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        try database.write {
            try $0.run("INSERT INTO lease_history (job_id, owner, claimed_at_ms, expires_at_ms, ended_at_ms) VALUES (?1, 'old', ?2, ?3, ?3)",
                       [.text(id), .integer(now - 60_000 - Int64(seconds) * 1000), .integer(now - 60_000)])
        }
    }

    static func twoProjects(_ dialect: SQLDialect) throws -> (SQLJobStore, any StoreDatabase) {
        let (store, database) = try JobStoreTests.store(dialect)
        try database.write { try $0.run("INSERT INTO projects (id, name, created_at) VALUES ('q', 'other', 0)", []) }
        return (store, database)
    }

    @Test(arguments: SQLDialect.allCases)
    func theProjectThatHadLessOfTheWorkersGoesFirst(dialect: SQLDialect) throws {
        let (store, database) = try Self.twoProjects(dialect)
        try SchedulingStoreTests.insert(store, "ftjob-p-done", createdAt: 1)
        _ = try store.transition("ftjob-p-done", from: [.queued], to: .succeeded, error: nil, event: "done", level: "info")
        try Self.used(database, "ftjob-p-done", seconds: 600)
        try SchedulingStoreTests.insert(store, "ftjob-p-old", createdAt: 2)
        try SchedulingStoreTests.insert(store, "ftjob-q-new", project: "q", createdAt: 3)
        #expect(try store.claimNext(worker: "w1", leaseSeconds: 60)?.id == "ftjob-q-new", "p had ten minutes of the workers; q none")
        #expect(try store.claimNext(worker: "w2", leaseSeconds: 60)?.id == "ftjob-p-old")
        // Weight doubles a project's share: 600 s at weight 4 counts as 150 s.
        try SQLProjectStore(database: database).set(project: "team", maxPriority: nil, maxRunning: nil, weight: 4)
        try Self.used(database, "ftjob-q-new", seconds: 300)
        try SchedulingStoreTests.insert(store, "ftjob-q-2", project: "q", createdAt: 4)
        try SchedulingStoreTests.insert(store, "ftjob-p-2", createdAt: 5)
        #expect(try store.claimNext(worker: "w3", leaseSeconds: 60)?.id == "ftjob-p-2")
    }

    @Test(arguments: SQLDialect.allCases)
    func aWaitingJobDisplacesTheRightRunningOne(dialect: SQLDialect) throws {
        let (store, database) = try Self.twoProjects(dialect)
        try SchedulingStoreTests.insert(store, "ftjob-p-run", createdAt: 1)
        _ = try store.claimNext(worker: "w1", leaseSeconds: 600)
        #expect(try store.preemption(minimumRunSeconds: 60, waitingSeconds: 3) == nil, "nothing waits")
        try SchedulingStoreTests.insert(store, "ftjob-q-wait", project: "q", createdAt: 2)
        try database.write { try $0.run("UPDATE jobs SET queued_at = ?1 WHERE id = 'ftjob-q-wait'", [.integer(Int64(Date().timeIntervalSince1970) - 10)]) }
        #expect(try store.preemption(minimumRunSeconds: 60, waitingSeconds: 3) == nil, "the running job has not run its minimum yet")
        try database.write { try $0.run("UPDATE lease_history SET claimed_at_ms = claimed_at_ms - 120000 WHERE job_id = 'ftjob-p-run'", []) }
        let fair = try #require(try store.preemption(minimumRunSeconds: 60, waitingSeconds: 3))
        #expect(fair.victim == "ftjob-p-run" && fair.waiting == "ftjob-q-wait" && fair.reason.contains("fair share"), "\(fair)")
        #expect(try store.preemption(minimumRunSeconds: 60, waitingSeconds: 30) == nil, "not waiting long enough to mean no worker is free")
        // Of the same project and priority, a waiting job displaces nothing.
        try database.write { try $0.run("UPDATE jobs SET project_id = 'p' WHERE id = 'ftjob-q-wait'", []) }
        #expect(try store.preemption(minimumRunSeconds: 60, waitingSeconds: 3) == nil)
        // A higher priority does, in any project.
        try database.write { try $0.run("UPDATE jobs SET priority = 3 WHERE id = 'ftjob-q-wait'", []) }
        let urgent = try #require(try store.preemption(minimumRunSeconds: 60, waitingSeconds: 3))
        #expect(urgent.victim == "ftjob-p-run" && urgent.reason.contains("priority 3"))
    }
}

/// The job list's filters, on both engines.
@Suite(.ownThread) struct JobFilterStoreTests {
    @Test(arguments: SQLDialect.allCases)
    func filtersNarrowTheList(dialect: SQLDialect) throws {
        let (store, _) = try JobStoreTests.store(dialect)
        for (index, team) in ["vision", "audio", "vision"].enumerated() {
            let job = JobRecord(id: "ftjob-f\(index)", projectID: "p", model: "m", trainingFile: "f", validationFile: nil, method: "{}",
                                hyperparameters: "{}", seed: 1, suffix: nil, metadata: #"{"team":"\#(team)","n":"\#(index)"}"#, webhookURL: nil,
                                status: .queued, createdAt: 100 + index)
            try store.insert(job, firstEvent: "created")
        }
        _ = try store.transition("ftjob-f2", from: [.queued], to: .cancelled, error: nil, event: "x", level: "info")
        func ids(_ configure: (inout JobFilter) -> Void) throws -> [String] {
            var filter = JobFilter()
            configure(&filter)
            return try store.jobs(project: "p", after: nil, limit: 10, filter: filter).map(\.id)
        }
        #expect(try ids { _ in } == ["ftjob-f2", "ftjob-f1", "ftjob-f0"])
        #expect(try ids { $0.status = .queued } == ["ftjob-f1", "ftjob-f0"])
        #expect(try ids { $0.metadata = ["team": "vision"] } == ["ftjob-f2", "ftjob-f0"])
        #expect(try ids { $0.metadata = ["team": "vision", "n": "0"] } == ["ftjob-f0"])
        #expect(try ids { $0.created = CreatedRange(after: 100, before: 102) } == ["ftjob-f1"])
        #expect(try ids { $0.metadata = [#"te"am"#: "vision"] }.isEmpty, "a key with a quote is a key like any other")
        #expect(try ids { $0.model = "m" }.count == 3)
        #expect(try ids { $0.model = "other" }.isEmpty)
        #expect(try store.jobs(project: "p", after: "ftjob-f2", limit: 10, filter: { var f = JobFilter(); f.metadata = ["team": "vision"]; return f }()).map(\.id) == ["ftjob-f0"])
    }
}
