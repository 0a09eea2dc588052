import Foundation
import Jobs
import Store
import Synchronization
import TestSupport
import Testing

/// Webhooks are queued in the transaction that makes what they announce, and taken by one
/// sender at a time, on both engines.
@Suite(.ownThread) struct WebhookOutboxTests {
    static func insert(_ store: SQLJobStore, _ id: String, webhook: String?) throws {
        try store.insert(JobRecord(id: id, projectID: "p", model: "m", trainingFile: "f", validationFile: nil, method: #"{"type":"sft"}"#,
                                   hyperparameters: "{}", seed: 1, suffix: nil, metadata: "{}", webhookURL: webhook, status: .queued,
                                   createdAt: 1), firstEvent: "created")
    }

    @Test(arguments: SQLDialect.allCases)
    func everyAnnouncementIsQueuedWithItsChange(dialect: SQLDialect) throws {
        let (store, database) = try JobStoreTests.store(dialect)
        for id in ["ftjob-hooked", "ftjob-quiet"] {
            try Self.insert(store, id, webhook: id == "ftjob-hooked" ? "http://hooks.example/in" : nil)
            #expect(try store.claimNext(worker: "w-\(id)", leaseSeconds: 60)?.id == id)
            _ = try store.recordStep(id, worker: "w-\(id)", step: 10, values: ["loss": 1, "val_loss": 0.5], summary: "", samplesPerSecond: nil, estimatedFinish: nil)
            try store.addCheckpoint(id, worker: "w-\(id)", id: "ftckpt-\(id)-10", step: 10, metrics: #"{"val_loss":0.5}"#, event: "ckpt", sampleGrid: true)
            #expect(try store.release(id, worker: "w-\(id)", status: .queued, error: nil, event: "preempted", level: "info", webhook: .preempted))
            #expect(try store.claimNext(worker: "w2-\(id)", leaseSeconds: 60)?.id == id)
            #expect(try store.release(id, worker: "w2-\(id)", status: .failed, error: JobError(code: "x", message: "y"), event: "failed", level: "error"))
        }
        // Every node hears the end: only the first queues it.
        let queued = Mutex(0)
        FleetStoreTests.concurrently(4) { _ in if (try? store.enqueueFinished("ftjob-hooked")) == true { queued.withLock { $0 += 1 } } }
        #expect(queued.withLock { $0 } == 1)
        #expect(try store.enqueueFinished("ftjob-quiet") == false, "no webhook_url: nothing to send")
        #expect(try Set(store.webhookDeliveries("ftjob-hooked").map(\.type)) == [
            "fine_tuning.validation.completed", "fine_tuning.checkpoint.saved", "fine_tuning.job.preempted", "fine_tuning.job.resumed",
            "fine_tuning.job.failed",
        ])
        #expect(try store.webhookDeliveries("ftjob-quiet").isEmpty)

        // One sender takes each delivery; the bodies are OpenAI-shaped events.
        let taken = try store.takeDueWebhooks(limit: 10, holdSeconds: 60)
        #expect(taken.count == 5 && Set(taken.map(\.id)).count == 5)
        #expect(try store.takeDueWebhooks(limit: 10, holdSeconds: 60).isEmpty, "held while their sender tries them")

        // A sender that died mid-send: once its hold has run out, another sender takes the delivery.
        _ = try database.write { try $0.run("UPDATE webhook_deliveries SET claimed_until_ms = 0 WHERE id = ?1", [.text(taken[0].id)]) }
        #expect(try store.takeDueWebhooks(limit: 10, holdSeconds: 60).map(\.id) == [taken[0].id])
        let checkpoint = try #require(taken.first { $0.type == "fine_tuning.checkpoint.saved" })
        let body = try #require(try JSONSerialization.jsonObject(with: Data(checkpoint.body.utf8)) as? [String: Any])
        let data = try #require(body["data"] as? [String: Any])
        #expect(body["object"] as? String == "event" && body["id"] as? String == checkpoint.id)
        #expect(data["step_number"] as? Int == 10 && data["fine_tuning_job_id"] as? String == "ftjob-hooked")
        #expect((data["sample_grid_url"] as? String)?.hasSuffix("/samples.png") == true)
        let validation = try #require(taken.first { $0.type == "fine_tuning.validation.completed" })
        #expect(validation.body.contains(#""metrics":{"val_loss":0.5}"#), "\(validation.body)")

        // Outcomes: delivered; retried later; given up.
        try store.webhookDelivered(taken[0].id)
        try store.webhookFailed(taken[1].id, retryAtMilliseconds: 0)
        try store.webhookFailed(taken[2].id, retryAtMilliseconds: nil)
        let again = try store.takeDueWebhooks(limit: 10, holdSeconds: 60)
        #expect(again.map(\.id) == [taken[1].id] && again[0].attempts == 1, "only the failed one comes back, and only when due")
        let outcomes = try store.webhookDeliveries("ftjob-hooked")
        #expect(outcomes.filter(\.delivered).count == 1 && outcomes.filter(\.abandoned).count == 1)

        // Settled history goes after its time; nothing young does.
        #expect(try store.pruneHistory(deliveriesDays: 7, leasesDays: 30) == 0)
        #expect(try store.pruneHistory(deliveriesDays: -1, leasesDays: -1) == 2 + 4, "two settled deliveries, and both jobs' two leases")
        #expect(try store.webhookDeliveries("ftjob-hooked").count == 3)
    }
}
