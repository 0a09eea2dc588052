import Foundation
import JSON

/// What a webhook announces. The job's end keeps OpenAI's names; the rest are preftune's.
public enum WebhookEventType: String, Sendable, CaseIterable {
    case succeeded = "fine_tuning.job.succeeded"
    case failed = "fine_tuning.job.failed"
    case cancelled = "fine_tuning.job.cancelled"
    /// A checkpoint was recorded; data: the checkpoint object.
    case checkpointSaved = "fine_tuning.checkpoint.saved"
    /// The job gave its worker up to a waiting job, its training state saved; data: the job, queued again.
    case preempted = "fine_tuning.job.preempted"
    /// A job that had trained before (preempted, paused, or its worker lost) trains again; data: the job.
    case resumed = "fine_tuning.job.resumed"
    /// Validation metrics were computed; data: the step and its `val_*` metrics.
    case validationCompleted = "fine_tuning.validation.completed"
}

/// A webhook to send: the exact body, the same on every attempt.
public struct WebhookDelivery: Sendable, Equatable {
    public let id: String
    public let jobID: String
    public let projectID: String
    public let url: String
    public let type: String
    public let body: String
    /// Attempts made before this one.
    public let attempts: Int
}

/// Webhook deliveries, written in the transaction that makes what they announce (an outbox),
/// so that none is lost to a crash between the change and the send, and sent by whichever API
/// node takes them first.
public protocol WebhookOutbox: Sendable {
    /// Queues the job's terminal-status webhook, once per job however many nodes hear the end;
    /// true when this call queued it (false: no webhook, not ended, or queued already).
    func enqueueFinished(_ jobID: String) throws -> Bool
    /// Takes up to `limit` due deliveries for `holdSeconds`: no other caller gets them meanwhile.
    func takeDueWebhooks(limit: Int, holdSeconds: Int) throws -> [WebhookDelivery]
    func webhookDelivered(_ id: String) throws
    /// A failed attempt: tried again at `retryAtMilliseconds`, or given up when nil.
    func webhookFailed(_ id: String, retryAtMilliseconds: Int64?) throws
    /// The deliveries of a job, by the second they were queued: type and outcome, for tests and audits.
    func webhookDeliveries(_ jobID: String) throws -> [(type: String, delivered: Bool, abandoned: Bool, attempts: Int)]
    /// Forgets what only history needs: deliveries settled over `deliveriesDays` ago, and leases of
    /// finished jobs ended over `leasesDays` ago (fair share looks back an hour). Returns the rows removed.
    func pruneHistory(deliveriesDays: Int, leasesDays: Int) throws -> Int
}

/// A delivery's body: OpenAI's webhook `event` shape.
struct WebhookEnvelope: Encodable {
    let id: String
    let object = "event"
    let createdAt: Int
    let type: String
    let data: RawJSON

    enum CodingKeys: String, CodingKey { case id, object, createdAt = "created_at", type, data }
}

/// A `fine_tuning.validation.completed` webhook's data.
struct ValidationResult: Encodable {
    let object = "fine_tuning.job.validation"
    let fineTuningJobID: String
    let step: Int
    let metrics: SortedMembers<Double>

    enum CodingKeys: String, CodingKey { case object, fineTuningJobID = "fine_tuning_job_id", step, metrics }
}

extension SQLJobStore: WebhookOutbox {
    /// Queues a webhook for the job, inside the caller's write transaction, when the job has a
    /// `webhook_url` and `data` makes a body for it (nil: nothing to announce).
    func enqueueWebhook(_ connection: any SQLConnection, _ jobID: String, _ type: WebhookEventType,
                        data: (JobRecord) -> String?) throws {
        guard let job = try connection.rows(Self.selectByID, [.text(jobID)]).first.flatMap(Self.record) else { return }
        try enqueueWebhook(connection, job, type, data: data)
    }

    /// The same, for a job the caller has just read in its transaction.
    func enqueueWebhook(_ connection: any SQLConnection, _ job: JobRecord, _ type: WebhookEventType,
                        data: (JobRecord) -> String?) throws {
        guard let url = job.webhookURL, let data = data(job) else { return }
        let jobID = job.id
        let id = "evt_" + APIKeys.randomHex(bytes: 12)
        let body = JSONBodyEncoder.string(WebhookEnvelope(id: id, createdAt: Int(Self.now()), type: type.rawValue, data: RawJSON(text: data)))
        try connection.run("""
            INSERT INTO webhook_deliveries (id, job_id, project_id, url, type, body, created_at, next_attempt_at_ms)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
            """, [.text(id), .text(jobID), .text(job.projectID), .text(url), .text(type.rawValue), .text(body), .integer(Self.now()),
                  .integer(Self.nowMilliseconds())])
    }

    /// The job as the API shows it now: the data of the job's own events.
    static func jobData(_ job: JobRecord) -> String { JSONBodyEncoder.string(FineTuningJob(job)) }

    public func enqueueFinished(_ jobID: String) throws -> Bool {
        try database.write { connection in
            guard try connection.run("""
                UPDATE jobs SET webhook_claimed_at = ?1 WHERE id = ?2 AND webhook_claimed_at IS NULL AND webhook_url IS NOT NULL
                  AND status IN \(Self.terminalList)
                """, [.integer(Self.now()), .text(jobID)]) == 1,
                  let job = try connection.rows(Self.selectByID, [.text(jobID)]).first.flatMap(Self.record),
                  let type = WebhookEventType(rawValue: "fine_tuning.job.\(job.status.rawValue)") else { return false }
            try enqueueWebhook(connection, job, type, data: Self.jobData)
            return true
        }
    }

    public func takeDueWebhooks(limit: Int, holdSeconds: Int) throws -> [WebhookDelivery] {
        let due = """
            SELECT id FROM webhook_deliveries WHERE delivered_at IS NULL AND abandoned_at IS NULL AND next_attempt_at_ms <= ?1
              AND (claimed_until_ms IS NULL OR claimed_until_ms < ?1) ORDER BY next_attempt_at_ms LIMIT ?2
            """
        let now = Self.nowMilliseconds()
        // Most polls find nothing: look on a reader first.
        guard try !database.read({ try $0.rows(due, [.integer(now), .integer(Int64(limit))]) }).isEmpty else { return [] }
        return try database.write { connection in
            let ids = try connection.rows(due + (dialect == .postgres ? " FOR UPDATE SKIP LOCKED" : ""), [.integer(now), .integer(Int64(limit))])
                .compactMap { row -> String? in if case let .text(id) = row[0] { id } else { nil } }
            return try ids.compactMap { id in
                try connection.run("UPDATE webhook_deliveries SET claimed_until_ms = ?1 WHERE id = ?2",
                                   [.integer(now + Int64(holdSeconds) * 1000), .text(id)])
                guard let row = try connection.rows("SELECT job_id, project_id, url, type, body, attempts FROM webhook_deliveries WHERE id = ?1",
                                                    [.text(id)]).first,
                      case let .text(job) = row[0], case let .text(project) = row[1], case let .text(url) = row[2], case let .text(type) = row[3],
                      case let .text(body) = row[4], case let .integer(attempts) = row[5] else { return nil }
                return WebhookDelivery(id: id, jobID: job, projectID: project, url: url, type: type, body: body, attempts: Int(attempts))
            }
        }
    }

    public func webhookDelivered(_ id: String) throws {
        _ = try database.write {
            try $0.run("UPDATE webhook_deliveries SET delivered_at = ?1, attempts = attempts + 1, claimed_until_ms = NULL WHERE id = ?2",
                       [.integer(Self.now()), .text(id)])
        }
    }

    public func webhookFailed(_ id: String, retryAtMilliseconds: Int64?) throws {
        try database.write {
            if let retry = retryAtMilliseconds {
                _ = try $0.run("UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at_ms = ?1, claimed_until_ms = NULL WHERE id = ?2",
                           [.integer(retry), .text(id)])
            } else {
                _ = try $0.run("UPDATE webhook_deliveries SET attempts = attempts + 1, abandoned_at = ?1, claimed_until_ms = NULL WHERE id = ?2",
                           [.integer(Self.now()), .text(id)])
            }
        }
    }

    public func webhookDeliveries(_ jobID: String) throws -> [(type: String, delivered: Bool, abandoned: Bool, attempts: Int)] {
        try database.read { connection in
            try connection.rows("""
                SELECT type, delivered_at IS NOT NULL, abandoned_at IS NOT NULL, attempts FROM webhook_deliveries
                WHERE job_id = ?1 ORDER BY created_at, id
                """, [.text(jobID)]).compactMap { row in
                func flag(_ value: SQLValue) -> Bool { value == .integer(1) }  // booleans read as 0 or 1 on both engines
                guard case let .text(type) = row[0], case let .integer(attempts) = row[3] else { return nil }
                return (type, flag(row[1]), flag(row[2]), Int(attempts))
            }
        }
    }

    public func pruneHistory(deliveriesDays: Int, leasesDays: Int) throws -> Int {
        let now = Self.now()
        return try database.write { connection in
            let deliveries = try connection.run("""
                DELETE FROM webhook_deliveries WHERE (delivered_at IS NOT NULL AND delivered_at < ?1) OR (abandoned_at IS NOT NULL AND abandoned_at < ?1)
                """, [.integer(now - Int64(deliveriesDays) * 86_400)])
            let leases = try connection.run("""
                DELETE FROM lease_history WHERE ended_at_ms < ?1
                  AND job_id IN (SELECT id FROM jobs WHERE status IN \(Self.terminalList))
                """, [.integer((now - Int64(leasesDays) * 86_400) * 1000)])
            return deliveries + leases
        }
    }
}
