import Foundation
import JSON
@_exported import Jobs

/// What the API and the workers need of job storage. SQLite implements it; a
/// store for worker pools spread over machines (PostgreSQL) can implement it
/// without touching handlers or workers.
public protocol JobStore: Sendable {
    func insert(_ job: JobRecord, firstEvent message: String) throws
    /// The job if it belongs to the project (nil project: any).
    func job(_ id: String, project: String?) throws -> JobRecord?
    /// Newest first, after the job `after` (cursor paging).
    func jobs(project: String, after: String?, limit: Int) throws -> [JobRecord]
    /// Every job in a status, oldest first.
    func jobs(status: JobStatus) throws -> [JobRecord]
    /// How many jobs are in each status.
    func countsByStatus() throws -> [JobStatus: Int]
    /// The project's jobs not yet finished (for its quota).
    func activeJobCount(project: String) throws -> Int
    /// Ids of the project's jobs whose base is the model with this key (unfinished ones only, if asked).
    func jobs(project: String, usingModel key: String, activeOnly: Bool) throws -> [String]
    /// Moves a job from one of `from` to `to`, with an event; false when it was in another state.
    func transition(_ id: String, from: Set<JobStatus>, to: JobStatus, error: JobError?, event: String, level: String) throws -> JobTransition
    func setTotalSteps(_ id: String, _ steps: Int) throws
    func appendEvent(_ jobID: String, level: String, type: String, message: String, data: String?) throws
    /// Newest first, older than sequence `before` when given.
    func events(_ jobID: String, before: Int?, limit: Int) throws -> [EventRecord]
    /// Newest first.
    func checkpoints(_ jobID: String, limit: Int) throws -> [CheckpointRow]
    /// One checkpoint of the job.
    func checkpoint(_ jobID: String, id: String) throws -> CheckpointRow?

    // Workers.
    /// Takes the oldest queued job, or a running one whose lease expired (its worker died),
    /// marks it running under `worker` until `now + leaseSeconds`; nil when there is none.
    func claimNext(worker: String, leaseSeconds: Int) throws -> JobRecord?
    /// Extends the lease; false when the job is no longer this worker's (then it must stop).
    func heartbeat(_ jobID: String, worker: String, leaseSeconds: Int) throws -> Bool
    /// Gives the job up: clears the lease and, when `status` is given, moves it there from `running`
    /// (re-queued on shutdown, or finished). False when the job is no longer this worker's.
    func release(_ jobID: String, worker: String, status: JobStatus?, error: JobError?, event: String, level: String) throws -> Bool
    /// Running jobs and the workers holding them, for recovering a dead process's jobs at start-up.
    func leases() throws -> [(job: String, owner: String)]
    /// Ends a lease at once, so that the job can be claimed now rather than when it would expire.
    func expireLease(_ jobID: String, owner: String) throws
    /// Fails the claimable jobs already claimed `maxClaims` times without progress (each claim
    /// ended with its worker dead): `worker_crashed`, so that one job cannot crash worker after
    /// worker. `claimNext` skips them. Returns the ids failed.
    func failCrashLoopingJobs(maxClaims: Int) throws -> [String]
    /// A step's metric points, its summary as a `metrics` event and the job's progress, in one
    /// transaction. A step already recorded (replayed after a resume) changes nothing; returns whether it was new.
    @discardableResult
    func recordStep(_ jobID: String, step: Int, values: [String: Double], summary: String, samplesPerSecond: Double?,
                    estimatedFinish: Int?) throws -> Bool
    /// A checkpoint record (once per step) with an event.
    func addCheckpoint(_ jobID: String, id: String, step: Int, metrics: String, event: String) throws
    /// Forgets a checkpoint (retention deletes its files).
    func removeCheckpoint(_ jobID: String, step: Int) throws
    /// The last step with metric points, if any.
    func lastMetricStep(_ jobID: String) throws -> Int?
    /// Registers the job's result as a model of its project and marks the job succeeded, atomically.
    /// False when the job is no longer this worker's (cancelled at the last moment, or its lease lost).
    func succeed(_ jobID: String, worker: String, model: String, config: String, parent: String, event: String,
                 writeWeights: () throws -> Void) throws -> Bool

    /// Points by name with steps strictly increasing, after `sinceStep` when given.
    func metrics(_ jobID: String, names: [String]?, sinceStep: Int?) throws -> [String: [(step: Int, value: Double)]]
}

public struct CheckpointRow: Sendable, Equatable {
    public let id: String
    public let step: Int
    public let metrics: String
    public let createdAt: Int
}

public final class SQLiteJobStore: JobStore {
    let database: Database

    public init(database: Database) { self.database = database }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970) }

    static let columns = """
        id, project_id, model, training_file, validation_file, method, hyperparameters, seed, suffix, metadata, webhook_url,
        status, error, fine_tuned_model, step, total_steps, samples_per_s, estimated_finish, created_at, started_at, finished_at
        """

    /// Built once: a job is read on every poll, and the statement cache looks its text up.
    static let selectInProject = "SELECT \(columns) FROM jobs WHERE id = ? AND project_id = ?"
    static let selectByID = "SELECT \(columns) FROM jobs WHERE id = ?"

    static func record(_ row: [SQLValue]) -> JobRecord? {
        func text(_ i: Int) -> String? { if case let .text(v) = row[i] { v } else { nil } }
        func int(_ i: Int) -> Int? { if case let .integer(v) = row[i] { Int(v) } else { nil } }
        guard let id = text(0), let project = text(1), let model = text(2), let training = text(3), let method = text(5),
              let hyper = text(6), let seed = int(7), let metadata = text(9), let status = text(11).flatMap(JobStatus.init(rawValue:)),
              let created = int(18)
        else { return nil }
        var job = JobRecord(id: id, projectID: project, model: model, trainingFile: training, validationFile: text(4), method: method,
                            hyperparameters: hyper, seed: seed, suffix: text(8), metadata: metadata, webhookURL: text(10),
                            status: status, createdAt: created)
        job.error = text(12).flatMap(JobError.init(json:))
        job.fineTunedModel = text(13)
        job.step = int(14) ?? 0
        job.totalSteps = int(15)
        if case let .real(rate) = row[16] { job.samplesPerSecond = rate }
        job.estimatedFinish = int(17)
        job.startedAt = int(19)
        job.finishedAt = int(20)
        return job
    }

    static func optional(_ text: String?) -> SQLValue { text.map(SQLValue.text) ?? .null }

    public func insert(_ job: JobRecord, firstEvent message: String) throws {
        try database.write { connection in
            let insert = try connection.prepare("""
                INSERT INTO jobs (id, project_id, model, training_file, validation_file, method, hyperparameters, seed, suffix,
                                  metadata, webhook_url, status, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """)
            try insert.bind([.text(job.id), .text(job.projectID), .text(job.model), .text(job.trainingFile), Self.optional(job.validationFile),
                             .text(job.method), .text(job.hyperparameters), .integer(Int64(job.seed)), Self.optional(job.suffix),
                             .text(job.metadata), Self.optional(job.webhookURL), .text(job.status.rawValue), .integer(Int64(job.createdAt))])
            try insert.step()
            try Self.appendEvent(connection, job.id, level: "info", type: "message", message: message, data: nil)
        }
    }

    public func job(_ id: String, project: String?) throws -> JobRecord? {
        try database.read { connection in
            let rows = try project.map { try connection.rows(Self.selectInProject, [.text(id), .text($0)]) }
                ?? connection.rows(Self.selectByID, [.text(id)])
            return rows.first.flatMap(Self.record)
        }
    }

    public func jobs(project: String, after: String?, limit: Int) throws -> [JobRecord] {
        try database.read { connection in
            var sql = "SELECT \(Self.columns) FROM jobs WHERE project_id = ?"
            var arguments: [SQLValue] = [.text(project)]
            if let after {
                sql += " AND (created_at, rowid) < (SELECT created_at, rowid FROM jobs WHERE id = ?)"
                arguments.append(.text(after))
            }
            sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
            arguments.append(.integer(Int64(limit)))
            return try connection.rows(sql, arguments).compactMap(Self.record)
        }
    }

    public func countsByStatus() throws -> [JobStatus: Int] {
        try database.read { connection in
            var counts: [JobStatus: Int] = [:]
            for row in try connection.rows("SELECT status, COUNT(*) FROM jobs GROUP BY status") {
                if case let .text(name) = row[0], let status = JobStatus(rawValue: name), case let .integer(count) = row[1] { counts[status] = Int(count) }
            }
            return counts
        }
    }

    public func activeJobCount(project: String) throws -> Int {
        let rows = try database.read {
            try $0.rows("SELECT COUNT(*) FROM jobs WHERE project_id = ? AND status NOT IN \(Self.terminalList)", [.text(project)])
        }
        if case let .integer(count)? = rows.first?.first { return Int(count) }
        return 0
    }

    public func jobs(project: String, usingModel key: String, activeOnly: Bool) throws -> [String] {
        let filter = activeOnly ? " AND status NOT IN \(Self.terminalList)" : ""
        return try database.read {
            try $0.rows("SELECT id FROM jobs WHERE project_id = ? AND model = ?" + filter + " ORDER BY created_at", [.text(project), .text(key)])
        }.compactMap { if case let .text(id) = $0[0] { id } else { nil } }
    }

    /// `('succeeded', 'failed', 'cancelled')`, for SQL.
    static let terminalList = "(" + JobStatus.allCases.filter(\.isTerminal).map { "'\($0.rawValue)'" }.joined(separator: ", ") + ")"

    public func jobs(status: JobStatus) throws -> [JobRecord] {
        try database.read { connection in
            try connection.rows("SELECT \(Self.columns) FROM jobs WHERE status = ? ORDER BY created_at, rowid", [.text(status.rawValue)])
                .compactMap(Self.record)
        }
    }

    @discardableResult
    public func transition(_ id: String, from: Set<JobStatus>, to: JobStatus, error: JobError?, event: String, level: String) throws -> JobTransition {
        try database.write { connection in
            let terminal = to.isTerminal
            let placeholders = from.map { _ in "?" }.joined(separator: ", ")
            let update = try connection.prepare("""
                UPDATE jobs SET status = ?, error = COALESCE(?, error), finished_at = CASE WHEN ? THEN ? ELSE finished_at END,
                       lease_owner = CASE WHEN ? THEN NULL ELSE lease_owner END
                WHERE id = ? AND status IN (\(placeholders))
                """)
            try update.bind([.text(to.rawValue), Self.optional(error?.json), .integer(terminal ? 1 : 0), .integer(Self.now()), .integer(terminal ? 1 : 0),
                             .text(id)] + from.map(\.rawValue).sorted().map(SQLValue.text))
            try update.step()
            let moved = connection.changes == 1
            guard let job = try connection.rows(Self.selectByID, [.text(id)]).first.flatMap(Self.record) else { return .missing }
            guard moved else { return .refused(job) }
            try Self.appendEvent(connection, id, level: level, type: "message", message: event, data: nil)
            return .moved(job)
        }
    }

    public func setTotalSteps(_ id: String, _ steps: Int) throws {
        try database.write { connection in
            let update = try connection.prepare("UPDATE jobs SET total_steps = ? WHERE id = ?")
            try update.bind([.integer(Int64(steps)), .text(id)])
            try update.step()
        }
    }

    public func appendEvent(_ jobID: String, level: String, type: String, message: String, data: String?) throws {
        try database.write { try Self.appendEvent($0, jobID, level: level, type: type, message: message, data: data) }
    }

    /// Inside a write transaction: the next sequence number is taken and used atomically.
    static func appendEvent(_ connection: SQLiteConnection, _ jobID: String, level: String, type: String, message: String, data: String?) throws {
        let insert = try connection.prepare("""
            INSERT INTO events (job_id, seq, created_at, level, type, message, data)
            VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id = ?), ?, ?, ?, ?, ?)
            """)
        try insert.bind([.text(jobID), .text(jobID), .integer(now()), .text(level), .text(type), .text(message), optional(data)])
        try insert.step()
    }

    public func events(_ jobID: String, before: Int?, limit: Int) throws -> [EventRecord] {
        try database.read { connection in
            try connection.rows("""
                SELECT seq, created_at, level, type, message, data FROM events
                WHERE job_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?
                """, [.text(jobID), .integer(Int64(before ?? Int.max)), .integer(Int64(limit))]).compactMap { row in
                guard case let .integer(seq) = row[0], case let .integer(created) = row[1], case let .text(level) = row[2],
                      case let .text(type) = row[3], case let .text(message) = row[4] else { return nil }
                let data: String? = if case let .text(d) = row[5] { d } else { nil }
                return EventRecord(jobID: jobID, sequence: Int(seq), createdAt: Int(created), level: level, type: type, message: message, data: data)
            }
        }
    }

    public func checkpoints(_ jobID: String, limit: Int) throws -> [CheckpointRow] {
        try database.read { connection in
            try connection.rows("SELECT id, step, metrics, created_at FROM checkpoints WHERE job_id = ? ORDER BY step DESC LIMIT ?",
                                [.text(jobID), .integer(Int64(limit))]).compactMap(Self.checkpoint)
        }
    }

    public func checkpoint(_ jobID: String, id: String) throws -> CheckpointRow? {
        try database.read { connection in
            try connection.rows("SELECT id, step, metrics, created_at FROM checkpoints WHERE id = ? AND job_id = ?", [.text(id), .text(jobID)])
                .first.flatMap(Self.checkpoint)
        }
    }

    static func checkpoint(_ row: [SQLValue]) -> CheckpointRow? {
        guard case let .text(id) = row[0], case let .integer(step) = row[1], case let .text(metrics) = row[2],
              case let .integer(created) = row[3] else { return nil }
        return CheckpointRow(id: id, step: Int(step), metrics: metrics, createdAt: Int(created))
    }

    /// Claims without progress after which a job fails instead of being claimed again.
    public static let maxClaimsWithoutProgress = 3

    /// Claimable: queued and not held (a paused job keeps its lease until its worker has written
    /// the training state), or running under an expired lease; and not crash-looping.
    static let claimableCondition = """
        ((status = '\(JobStatus.queued.rawValue)' AND (lease_owner IS NULL OR lease_expires_at < ?1))
         OR (status = '\(JobStatus.running.rawValue)' AND lease_expires_at < ?1))
        """
    static let claimable = """
        SELECT id, status FROM jobs WHERE \(claimableCondition) AND claims_without_progress < \(maxClaimsWithoutProgress)
        ORDER BY created_at, rowid LIMIT 1
        """

    public func failCrashLoopingJobs(maxClaims: Int = SQLiteJobStore.maxClaimsWithoutProgress) throws -> [String] {
        let find = "SELECT id FROM jobs WHERE \(Self.claimableCondition) AND claims_without_progress >= ?2"
        guard try !database.read({ try $0.rows(find, [.integer(Self.now()), .integer(Int64(maxClaims))]) }).isEmpty else { return [] }
        return try database.write { connection in
            let ids = try connection.rows(find, [.integer(Self.now()), .integer(Int64(maxClaims))]).compactMap { row -> String? in
                if case let .text(id) = row[0] { id } else { nil }
            }
            let message = "the job was claimed \(maxClaims) times and its worker stopped each time before one step completed (the process crashed or was killed); it is not retried. Check the job's log and settings, e.g. its memory needs"
            let error = JobError(code: "worker_crashed", message: message)
            for id in ids {
                let update = try connection.prepare("""
                    UPDATE jobs SET status = ?, error = ?, finished_at = ?, lease_owner = NULL, lease_expires_at = NULL WHERE id = ?
                    """)
                try update.bind([.text(JobStatus.failed.rawValue), .text(error.json), .integer(Self.now()), .text(id)])
                try update.step()
                try Self.appendEvent(connection, id, level: "error", type: "message", message: "Failed: \(message)", data: nil)
            }
            return ids
        }
    }

    public func claimNext(worker: String, leaseSeconds: Int) throws -> JobRecord? {
        // Idle workers poll: look on a reader first, and take the write lock only when there is work.
        guard try !database.read({ try $0.rows(Self.claimable, [.integer(Self.now())]) }).isEmpty else { return nil }
        let claimed: String? = try database.write { connection in
            let now = Self.now()
            let candidates = try connection.rows(Self.claimable, [.integer(now)])
            guard let row = candidates.first, case let .text(id) = row[0], case let .text(previous) = row[1] else { return nil }
            let update = try connection.prepare("""
                UPDATE jobs SET status = ?, lease_owner = ?, lease_expires_at = ?, started_at = COALESCE(started_at, ?),
                       claims_without_progress = claims_without_progress + 1
                WHERE id = ?
                """)
            try update.bind([.text(JobStatus.running.rawValue), .text(worker), .integer(now + Int64(leaseSeconds)), .integer(now), .text(id)])
            try update.step()
            let message = previous == JobStatus.queued.rawValue ? "Claimed by \(worker)" : "Claimed by \(worker): the previous worker's lease expired"
            try Self.appendEvent(connection, id, level: "info", type: "message", message: message, data: nil)
            return id
        }
        return try claimed.flatMap { try job($0, project: nil) }
    }

    public func heartbeat(_ jobID: String, worker: String, leaseSeconds: Int) throws -> Bool {
        try database.write { connection in
            let update = try connection.prepare(
                "UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND lease_owner = ? AND status = ?")
            try update.bind([.integer(Self.now() + Int64(leaseSeconds)), .text(jobID), .text(worker), .text(JobStatus.running.rawValue)])
            try update.step()
            return connection.changes == 1
        }
    }

    public func release(_ jobID: String, worker: String, status: JobStatus?, error: JobError?, event: String, level: String) throws -> Bool {
        try database.write { connection in
            let terminal = status?.isTerminal ?? false
            let update = try connection.prepare("""
                UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL, claims_without_progress = 0,
                       status = CASE WHEN ?1 IS NOT NULL AND status = ?7 THEN ?1 ELSE status END,
                       error = COALESCE(?2, error), finished_at = CASE WHEN ?3 THEN ?4 ELSE finished_at END
                WHERE id = ?5 AND lease_owner = ?6
                """)
            try update.bind([Self.optional(status?.rawValue), Self.optional(error?.json), .integer(terminal ? 1 : 0), .integer(Self.now()), .text(jobID),
                             .text(worker), .text(JobStatus.running.rawValue)])
            try update.step()
            guard connection.changes == 1 else { return false }
            try Self.appendEvent(connection, jobID, level: level, type: "message", message: event, data: nil)
            return true
        }
    }

    public func leases() throws -> [(job: String, owner: String)] {
        try database.read { connection in
            try connection.rows("SELECT id, lease_owner FROM jobs WHERE lease_owner IS NOT NULL").compactMap { row in
                guard case let .text(id) = row[0], case let .text(owner) = row[1] else { return nil }
                return (id, owner)
            }
        }
    }

    public func expireLease(_ jobID: String, owner: String) throws {
        try database.write { connection in
            let update = try connection.prepare("UPDATE jobs SET lease_expires_at = 0 WHERE id = ? AND lease_owner = ?")
            try update.bind([.text(jobID), .text(owner)])
            try update.step()
        }
    }

    public func recordStep(_ jobID: String, step: Int, values: [String: Double], summary: String, samplesPerSecond: Double?,
                           estimatedFinish: Int?) throws -> Bool {
        try database.write { connection in
            let insert = try connection.prepare("INSERT OR IGNORE INTO metric_points (job_id, name, step, value) VALUES (?, ?, ?, ?)")
            var added = 0
            for (name, value) in values.sorted(by: { $0.key < $1.key }) where value.isFinite {
                try insert.bind([.text(jobID), .text(name), .integer(Int64(step)), .real(value)])
                try insert.step()
                added += connection.changes
            }
            guard added > 0 else { return false }
            var data: [String: JSONValue] = ["step": .init(step)]
            for (name, value) in values where value.isFinite { data[name] = .number(value) }
            let json = JSONBodyEncoder.string(SortedMembers(data))
            try Self.appendEvent(connection, jobID, level: "info", type: "metrics", message: summary, data: json)
            let update = try connection.prepare("""
                UPDATE jobs SET step = MAX(step, ?), samples_per_s = COALESCE(?, samples_per_s), claims_without_progress = 0,
                       estimated_finish = COALESCE(?, estimated_finish) WHERE id = ?
                """)
            try update.bind([.integer(Int64(step)), samplesPerSecond.map(SQLValue.real) ?? .null,
                             estimatedFinish.map { .integer(Int64($0)) } ?? .null, .text(jobID)])
            try update.step()
            return true
        }
    }

    public func addCheckpoint(_ jobID: String, id: String, step: Int, metrics: String, event: String) throws {
        try database.write { connection in
            let insert = try connection.prepare(
                "INSERT OR IGNORE INTO checkpoints (id, job_id, step, metrics, created_at) VALUES (?, ?, ?, ?, ?)")
            try insert.bind([.text(id), .text(jobID), .integer(Int64(step)), .text(metrics), .integer(Self.now())])
            try insert.step()
            guard connection.changes == 1 else { return }
            let update = try connection.prepare("UPDATE jobs SET step = MAX(step, ?), claims_without_progress = 0 WHERE id = ?")
            try update.bind([.integer(Int64(step)), .text(jobID)])
            try update.step()
            try Self.appendEvent(connection, jobID, level: "info", type: "message", message: event, data: nil)
        }
    }

    public func removeCheckpoint(_ jobID: String, step: Int) throws {
        try database.write { connection in
            let delete = try connection.prepare("DELETE FROM checkpoints WHERE job_id = ? AND step = ?")
            try delete.bind([.text(jobID), .integer(Int64(step))])
            try delete.step()
        }
    }

    public func lastMetricStep(_ jobID: String) throws -> Int? {
        try database.read { connection in
            guard case let .integer(step) = try connection.rows("SELECT MAX(step) FROM metric_points WHERE job_id = ?", [.text(jobID)]).first?[0]
            else { return nil }
            return Int(step)
        }
    }

    public func succeed(_ jobID: String, worker: String, model: String, config: String, parent: String, event: String,
                        writeWeights: () throws -> Void) throws -> Bool {
        try database.write { connection in
            guard let row = try connection.rows("SELECT project_id FROM jobs WHERE id = ? AND lease_owner = ? AND status = ?",
                                                [.text(jobID), .text(worker), .text(JobStatus.running.rawValue)]).first,
                  case let .text(project) = row[0] else { return false }
            try writeWeights()
            let insert = try connection.prepare(
                "INSERT INTO models (id, project_id, config, parent, job_id, created_at) VALUES (?, ?, ?, ?, ?, ?)")
            try insert.bind([.text(model), .text(project), .text(config), .text(parent), .text(jobID), .integer(Self.now())])
            try insert.step()
            let update = try connection.prepare("""
                UPDATE jobs SET status = ?, fine_tuned_model = ?, finished_at = ?, lease_owner = NULL, lease_expires_at = NULL,
                       step = COALESCE(total_steps, step), estimated_finish = NULL
                WHERE id = ?
                """)
            try update.bind([.text(JobStatus.succeeded.rawValue), .text(model), .integer(Self.now()), .text(jobID)])
            try update.step()
            try Self.appendEvent(connection, jobID, level: "info", type: "message", message: event, data: nil)
            return true
        }
    }

    public func metrics(_ jobID: String, names: [String]?, sinceStep: Int?) throws -> [String: [(step: Int, value: Double)]] {
        // The primary key (job_id, name, step) serves each name's range directly.
        var sql = "SELECT name, step, value FROM metric_points WHERE job_id = ? AND step > ?"
        var arguments: [SQLValue] = [.text(jobID), .integer(Int64(sinceStep ?? -1))]
        if let names {
            guard !names.isEmpty else { return [:] }
            sql += " AND name IN (\(names.map { _ in "?" }.joined(separator: ", ")))"
            arguments += names.map(SQLValue.text)
        }
        let rows = try database.read { try $0.rows(sql + " ORDER BY name, step", arguments) }
        var series: [String: [(step: Int, value: Double)]] = [:]
        for row in rows {
            guard case let .text(name) = row[0], case let .integer(step) = row[1], case let .real(value) = row[2] else { continue }
            series[name, default: []].append((Int(step), value))
        }
        return series
    }
}
