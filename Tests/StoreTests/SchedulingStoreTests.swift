import Foundation
import Store
import Synchronization
import TestSupport
import Testing

/// Priorities and the operator's per-project limits, on both engines.
@Suite struct SchedulingStoreTests {
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
