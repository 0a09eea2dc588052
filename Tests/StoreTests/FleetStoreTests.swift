import Foundation
import Store
import Synchronization
import TestSupport
import Testing

/// What a fleet relies on, on both engines: leases fence every write a worker makes,
/// the lease history shows who held a job when, and writers racing on the same rows (many
/// workers claiming, API nodes and a worker adding events, repeats of one Idempotency-Key)
/// each get a consistent answer.
@Suite(.ownThread) struct FleetStoreTests {
    /// `body` on `count` threads at once; returns when all have finished.
    static func concurrently(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        let start = DispatchSemaphore(value: 0)
        let threads = (0..<count).map { index in Thread { start.wait(); body(index) } }
        threads.forEach { $0.start() }
        for _ in 0..<count { start.signal() }
        while threads.contains(where: { !$0.isFinished }) { usleep(2_000) }
    }

    @Test(arguments: SQLDialect.allCases)
    func aWorkerThatLostItsLeaseCannotWrite(dialect: SQLDialect) throws {
        let (store, _) = try JobStoreTests.store(dialect)
        try JobStoreTests.insert(store, "ftjob-f", createdAt: 1)
        _ = try store.claimNext(worker: "old", leaseSeconds: -1)
        #expect(try store.recordStep("ftjob-f", worker: "old", step: 1, values: ["loss": 1], summary: "s1", samplesPerSecond: nil, estimatedFinish: nil))
        // Its lease expired and another worker took the job over.
        #expect(try store.claimNext(worker: "new", leaseSeconds: 60)?.id == "ftjob-f")
        #expect(throws: LeaseLost.self) {
            try store.recordStep("ftjob-f", worker: "old", step: 2, values: ["loss": 0.5], summary: "s2", samplesPerSecond: nil, estimatedFinish: nil)
        }
        #expect(throws: LeaseLost.self) { try store.addCheckpoint("ftjob-f", worker: "old", id: "ftckpt-f-2", step: 2, metrics: "{}", event: "ckpt", sampleGrid: false) }
        #expect(throws: LeaseLost.self) { try store.removeCheckpoint("ftjob-f", worker: "old", step: 1) }
        #expect(throws: LeaseLost.self) { try store.appendEvent("ftjob-f", fencedBy: "old", level: "info", type: "message", message: "late", data: nil) }
        #expect(try !store.release("ftjob-f", worker: "old", status: .failed, error: nil, event: "x", level: "error"))
        #expect(try !store.succeed("ftjob-f", worker: "old", model: "ft:m", config: "{}", parent: "m", event: "done") {})
        #expect(try !store.heartbeat("ftjob-f", worker: "old", leaseSeconds: 60))
        // Nothing of the old worker's after the takeover is in the record.
        #expect(try store.metrics("ftjob-f", names: nil, sinceStep: nil)["loss"]?.map(\.step) == [1])
        #expect(try store.checkpoints("ftjob-f", limit: 10).isEmpty)
        #expect(try !store.events("ftjob-f", before: nil, limit: 50).contains { $0.message == "late" })
        let job = try #require(try store.job("ftjob-f", project: nil))
        #expect(job.status == .running && job.step == 1)
        // The new holder writes.
        #expect(try store.recordStep("ftjob-f", worker: "new", step: 2, values: ["loss": 0.4], summary: "s2", samplesPerSecond: nil, estimatedFinish: nil))
    }

    @Test(arguments: SQLDialect.allCases)
    func theLeaseHistoryShowsWhoHeldTheJobWhen(dialect: SQLDialect) throws {
        let (store, _) = try JobStoreTests.store(dialect)
        try JobStoreTests.insert(store, "ftjob-h", createdAt: 1)
        _ = try store.claimNext(worker: "a", leaseSeconds: -1)
        _ = try store.claimNext(worker: "b", leaseSeconds: 60)
        #expect(try store.heartbeat("ftjob-h", worker: "b", leaseSeconds: 120))
        #expect(try store.release("ftjob-h", worker: "b", status: .queued, error: nil, event: "stopping", level: "info"))
        _ = try store.claimNext(worker: "c", leaseSeconds: 60)
        let history = try store.leaseHistory("ftjob-h")
        #expect(history.map(\.owner) == ["a", "b", "c"])
        #expect(history[0].endedAtMs == history[0].expiresAtMs, "a lease taken over ended when it expired")
        #expect(history[1].endedAtMs != nil && history[1].expiresAtMs >= history[1].claimedAtMs + 119_000, "renewed, then released")
        #expect(history[2].endedAtMs == nil, "held now")
        for (earlier, later) in zip(history, history.dropFirst()) { #expect(earlier.heldUntilMs <= later.claimedAtMs) }
    }

    /// Eight workers claiming 24 jobs at once: each job goes to exactly one of them.
    @Test(arguments: SQLDialect.allCases)
    func simultaneousClaimsTakeEachJobOnce(dialect: SQLDialect) throws {
        let (store, _) = try JobStoreTests.store(dialect)
        for index in 0..<24 { try JobStoreTests.insert(store, "ftjob-c\(index)", createdAt: index) }
        let claims = Mutex<[String: String]>([:]), problems = Mutex<[String]>([])
        Self.concurrently(8) { worker in
            while true {
                do {
                    guard let job = try store.claimNext(worker: "w\(worker)", leaseSeconds: 60) else { return }
                    claims.withLock { claimed in
                        if let other = claimed[job.id] { problems.withLock { $0.append("\(job.id) by w\(worker) and \(other)") } }
                        claimed[job.id] = "w\(worker)"
                    }
                } catch {
                    problems.withLock { $0.append("\(error)") }
                    return
                }
            }
        }
        #expect(problems.withLock { $0 } == [])
        #expect(claims.withLock { $0.count } == 24)
        #expect(try store.countsByStatus()[.running] == 24)
    }

    /// API nodes and the job's worker adding events at once: every event gets its own number.
    @Test(arguments: SQLDialect.allCases)
    func simultaneousEventsAreNumberedInOrder(dialect: SQLDialect) throws {
        let (store, _) = try JobStoreTests.store(dialect)
        try JobStoreTests.insert(store, "ftjob-e", createdAt: 1)
        let failures = Mutex<[String]>([])
        Self.concurrently(6) { writer in
            for index in 0..<20 {
                do { try store.appendEvent("ftjob-e", level: "info", type: "message", message: "\(writer)-\(index)", data: nil) } catch {
                    failures.withLock { $0.append("\(error)") }
                }
            }
        }
        #expect(failures.withLock { $0 } == [])
        let events = try store.events("ftjob-e", before: nil, limit: 500)
        #expect(events.count == 121)
        #expect(events.map(\.sequence) == Array((1...121).reversed()))
    }

    @Test(arguments: SQLDialect.allCases)
    func simultaneousRepeatsOfOneKeyRunOnce(dialect: SQLDialect) throws {
        let (_, database) = try JobStoreTests.store(dialect)
        let keys = SQLIdempotencyStore(database: database)
        let answers = Mutex<[IdempotencyReservation]>([])
        Self.concurrently(6) { _ in
            if let answer = try? keys.reserve(project: "p", key: "same", request: "POST /v1/x") { answers.withLock { $0.append(answer) } }
        }
        let all = answers.withLock { $0 }
        #expect(all.count == 6)
        #expect(all.filter { $0 == .reserved }.count == 1, "\(all)")
    }

    @Test(arguments: SQLDialect.allCases)
    func filesAndModelsOnBothEngines(dialect: SQLDialect) throws {
        let (_, database) = try JobStoreTests.store(dialect)
        let files = SQLFileStore(database: database)
        // Made in the same second: listed newest first all the same, and paged without gaps.
        for index in 0..<5 {
            try files.insert(FileRow(id: "file-\(["e", "a", "d", "b", "c"][index])", projectID: "p", filename: "f\(index)", purpose: "fine-tune",
                                     bytes: 1 << 40, createdAt: 100, lines: index, sha256: nil))
        }
        let listed = try files.files(project: "p", purpose: "fine-tune", after: nil, limit: 3).map(\.id)
        #expect(listed == ["file-c", "file-b", "file-d"])
        #expect(try files.files(project: "p", purpose: nil, after: "file-d", limit: 10).map(\.id) == ["file-a", "file-e", "f"])
        let usage = try files.usage(project: "p")
        #expect(usage.files == 6 && usage.bytes == 5 << 40 + 1, "a sum past 32 bits, as an integer on both engines")
        try files.markDeleted("file-a")
        #expect(try files.file("file-a", project: "p") == nil)

        let models = SQLModelStore(database: database)
        #expect(try models.create("mine", project: "p", config: "{\"a\":1}") { _ in })
        #expect(try !models.create("mine", project: "p", config: "{}") { _ in }, "the name is taken")
        #expect(try models.model("mine", visibleTo: "p")?.config == "{\"a\":1}")
        #expect(try models.models(visibleTo: "p").map(\.name) == ["m", "mine"])
        let raced = Mutex(0)
        Self.concurrently(4) { _ in if (try? models.create("raced", project: "p", config: "{}") { _ in }) == true { raced.withLock { $0 += 1 } } }
        #expect(raced.withLock { $0 } == 1, "of simultaneous creations of one name, one succeeds")
    }
}
