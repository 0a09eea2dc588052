import Foundation
import JSON

/// `JobStore` on SQL, the same code on SQLite and PostgreSQL. Where the engines differ:
/// - a claim locks its row with `FOR UPDATE SKIP LOCKED` on PostgreSQL, where workers claim at
///   once; SQLite's single writer serializes them anyway;
/// - a write that numbers a job's events, or that a lease fences, first locks the job's row
///   (`FOR UPDATE`) on PostgreSQL; SQLite's write transaction holds the whole file;
/// - `GREATEST` is SQLite's two-argument `MAX`.
///
/// A worker's writes are fenced by its lease: each transaction starts with the check that the
/// worker still holds it, and (on PostgreSQL) holds the job's row from then until it commits, so
/// no claim can come between the check and the write.
public final class SQLJobStore: JobStore {
    let database: any StoreDatabase
    let dialect: SQLDialect
    /// The engine's spellings, fixed at start (statements are looked up by their text).
    private let greatest: String
    private let forUpdate: String
    private let lockCandidate: String
    private let least: String
    /// How far back a project's use of the workers counts against its fair share.
    public let fairShareWindowSeconds: Int
    private let lockJob: String
    private let fence: String

    public init(database: any StoreDatabase, fairShareWindowSeconds: Int = 3600) {
        self.database = database
        self.fairShareWindowSeconds = fairShareWindowSeconds
        dialect = database.dialect
        greatest = dialect == .postgres ? "GREATEST" : "MAX"
        least = dialect == .postgres ? "LEAST" : "MIN"
        forUpdate = dialect == .postgres ? " FOR UPDATE" : ""
        lockCandidate = """
            SELECT id, status, project_id FROM jobs WHERE id = ?2 AND \(Self.claimableCondition) AND claims_without_progress < \(Self.maxClaimsWithoutProgress) AND \(Self.retriesLeft)
            \(dialect == .postgres ? "FOR UPDATE SKIP LOCKED" : "")
            """
        lockJob = "SELECT 1 FROM jobs WHERE id = ?1\(forUpdate)"
        fence = "SELECT 1 FROM jobs WHERE id = ?1 AND lease_owner = ?2\(forUpdate)"
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970) }
    static func nowMilliseconds() -> Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)) }

    /// A queued job's place: the queued jobs ahead of it (higher priority, or the same and older), plus one.
    static let queuePosition = """
        CASE WHEN status = '\(JobStatus.queued.rawValue)' THEN 1 + (SELECT COUNT(*) FROM jobs ahead WHERE ahead.status = '\(JobStatus.queued.rawValue)'
            AND (ahead.priority > jobs.priority OR (ahead.priority = jobs.priority
                 AND (ahead.created_at < jobs.created_at OR (ahead.created_at = jobs.created_at AND ahead.rowid < jobs.rowid))))) END
        """

    static let columns = """
        id, project_id, model, training_file, validation_file, method, hyperparameters, seed, suffix, metadata, webhook_url,
        status, error, fine_tuned_model, step, total_steps, samples_per_s, estimated_finish, created_at, started_at, finished_at,
        priority, \(queuePosition), max_retries, retries, max_duration, evaluation, best_step, best_value, parent_job, from_step,
        start_checkpoint, math_precision
        """

    /// Built once: a job is read on every poll, and the statement cache looks its text up.
    static let selectInProject = "SELECT \(columns) FROM jobs WHERE id = ?1 AND project_id = ?2"
    static let selectByID = "SELECT \(columns) FROM jobs WHERE id = ?1"

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
        job.priority = int(21) ?? 0
        job.queuePosition = int(22)
        job.maxRetries = int(23) ?? 3
        job.retries = int(24) ?? 0
        job.maxDuration = int(25)
        job.evaluation = text(26)
        job.bestStep = int(27)
        if case let .real(value) = row[28] { job.bestValue = value }
        job.parentJob = text(29)
        job.fromStep = int(30)
        job.startCheckpoint = text(31)
        job.precision = text(32) ?? "fp32"
        return job
    }

    static func optional(_ text: String?) -> SQLValue { text.map(SQLValue.text) ?? .null }

    // MARK: - The API's side

    public func insert(_ job: JobRecord, firstEvent message: String) throws {
        try database.write { connection in
            try connection.run("""
                INSERT INTO jobs (id, project_id, model, training_file, validation_file, method, hyperparameters, seed, suffix,
                                  metadata, webhook_url, status, created_at, priority, queued_at, max_retries, max_duration,
                                  evaluation, parent_job, from_step, start_checkpoint, math_precision)
                VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, CASE WHEN ?12 = '\(JobStatus.queued.rawValue)' THEN CAST(?13 AS BIGINT) END,
                        ?15, ?16, ?17, ?18, ?19, ?20, ?21)
                """, [.text(job.id), .text(job.projectID), .text(job.model), .text(job.trainingFile), Self.optional(job.validationFile),
                      .text(job.method), .text(job.hyperparameters), .integer(Int64(job.seed)), Self.optional(job.suffix),
                      .text(job.metadata), Self.optional(job.webhookURL), .text(job.status.rawValue), .integer(Int64(job.createdAt)),
                      .integer(Int64(job.priority)), .integer(Int64(job.maxRetries)), job.maxDuration.map { .integer(Int64($0)) } ?? .null,
                      Self.optional(job.evaluation), Self.optional(job.parentJob), job.fromStep.map { .integer(Int64($0)) } ?? .null,
                      Self.optional(job.startCheckpoint), .text(job.precision)])
            try appendEvent(connection, job.id, level: "info", type: "message", message: message, data: nil)
        }
    }

    public func job(_ id: String, project: String?) throws -> JobRecord? {
        try database.read { connection in
            let rows = try project.map { try connection.rows(Self.selectInProject, [.text(id), .text($0)]) }
                ?? connection.rows(Self.selectByID, [.text(id)])
            return rows.first.flatMap(Self.record)
        }
    }

    public func jobs(project: String, after: String?, limit: Int, filter: JobFilter = JobFilter()) throws -> [JobRecord] {
        if filter.matchesNothing { return [] }
        return try database.read { connection in
            var sql = "SELECT \(Self.columns) FROM jobs WHERE project_id = ?1"
            var arguments: [SQLValue] = [.text(project), .integer(Int64(limit))]
            func parameter(_ value: SQLValue) -> String {
                arguments.append(value)
                return "?\(arguments.count)"
            }
            if let after {
                // rowid breaks ties between jobs made in the same second, in creation order.
                sql += " AND (created_at, rowid) < (SELECT created_at, rowid FROM jobs WHERE id = \(parameter(.text(after))))"
            }
            if let status = filter.status { sql += " AND status = \(parameter(.text(status.rawValue)))" }
            if let model = filter.model { sql += " AND model = \(parameter(.text(model)))" }
            sql += filter.created.conditions(appendingTo: &arguments)
            for (key, value) in filter.metadata.sorted(by: { $0.key < $1.key }) {
                // The key as a value, never spliced into a JSON path: any key is matched exactly.
                sql += dialect == .postgres
                    ? " AND (metadata::jsonb ->> \(parameter(.text(key)))) = \(parameter(.text(value)))"
                    : " AND EXISTS (SELECT 1 FROM json_each(jobs.metadata) WHERE key = \(parameter(.text(key))) AND value = \(parameter(.text(value))))"
            }
            sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?2"
            return try connection.rows(sql, arguments).compactMap(Self.record)
        }
    }

    public func countsByStatus() throws -> [JobStatus: Int] {
        try database.read { connection in
            var counts: [JobStatus: Int] = [:]
            for row in try connection.rows("SELECT status, COUNT(*) FROM jobs GROUP BY status", []) {
                if case let .text(name) = row[0], let status = JobStatus(rawValue: name), case let .integer(count) = row[1] { counts[status] = Int(count) }
            }
            return counts
        }
    }

    public func activeJobCount(project: String) throws -> Int {
        let rows = try database.read {
            try $0.rows("SELECT COUNT(*) FROM jobs WHERE project_id = ?1 AND status NOT IN \(Self.terminalList)", [.text(project)])
        }
        if case let .integer(count)? = rows.first?.first { return Int(count) }
        return 0
    }

    public func jobs(project: String, usingModel key: String, activeOnly: Bool) throws -> [String] {
        let filter = activeOnly ? " AND status NOT IN \(Self.terminalList)" : ""
        return try database.read {
            try $0.rows("SELECT id FROM jobs WHERE project_id = ?1 AND model = ?2" + filter + " ORDER BY created_at, rowid", [.text(project), .text(key)])
        }.compactMap { if case let .text(id) = $0[0] { id } else { nil } }
    }

    /// `('succeeded', 'failed', 'cancelled')`, for SQL.
    static let terminalList = "(" + JobStatus.allCases.filter(\.isTerminal).map { "'\($0.rawValue)'" }.joined(separator: ", ") + ")"

    public func jobs(status: JobStatus) throws -> [JobRecord] {
        try database.read { connection in
            try connection.rows("SELECT \(Self.columns) FROM jobs WHERE status = ?1 ORDER BY created_at, rowid", [.text(status.rawValue)])
                .compactMap(Self.record)
        }
    }

    @discardableResult
    public func transition(_ id: String, from: Set<JobStatus>, to: JobStatus, error: JobError?, event: String, level: String) throws -> JobTransition {
        try database.write { connection in
            let terminal = to.isTerminal
            let placeholders = (0..<from.count).map { "?\($0 + 6)" }.joined(separator: ", ")
            let moved = try connection.run("""
                UPDATE jobs SET status = ?1, error = COALESCE(CAST(?2 AS TEXT), error), finished_at = CASE WHEN ?3 = 1 THEN ?4 ELSE finished_at END,
                       lease_owner = CASE WHEN ?3 = 1 THEN NULL ELSE lease_owner END,
                       queued_at = CASE WHEN ?1 = '\(JobStatus.queued.rawValue)' THEN ?4 ELSE queued_at END
                WHERE id = ?5 AND status IN (\(placeholders))
                """, [.text(to.rawValue), Self.optional(error?.json), .integer(terminal ? 1 : 0), .integer(Self.now()), .text(id)]
                    + from.map(\.rawValue).sorted().map(SQLValue.text)) == 1
            guard let job = try connection.rows(Self.selectByID, [.text(id)]).first.flatMap(Self.record) else { return .missing }
            guard moved else { return .refused(job) }
            if terminal { try endLease(connection, id) }
            try appendEvent(connection, id, level: level, type: "message", message: event, data: nil)
            return .moved(job)
        }
    }

    public func setTotalSteps(_ id: String, _ steps: Int) throws {
        try database.write { try $0.run("UPDATE jobs SET total_steps = ?1 WHERE id = ?2", [.integer(Int64(steps)), .text(id)]) }
    }

    public func appendEvent(_ jobID: String, level: String, type: String, message: String, data: String?) throws {
        try database.write { connection in
            if dialect == .postgres { _ = try connection.rows(lockJob, [.text(jobID)]) }
            try appendEvent(connection, jobID, level: level, type: type, message: message, data: data)
        }
    }

    public func appendEvent(_ jobID: String, fencedBy worker: String, level: String, type: String, message: String, data: String?) throws {
        try database.write { connection in
            try checkLease(connection, jobID, worker: worker)
            try appendEvent(connection, jobID, level: level, type: type, message: message, data: data)
        }
    }

    /// Inside a write transaction that holds the job's row (it inserted or updated it, or
    /// locked it: a lease's fence, a claim), so that two writers cannot take the same event
    /// number; SQLite's write transaction holds the whole file.
    func appendEvent(_ connection: any SQLConnection, _ jobID: String, level: String, type: String, message: String, data: String?) throws {
        try connection.run("""
            INSERT INTO events (job_id, seq, created_at, level, type, message, data)
            VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id = ?1), ?2, ?3, ?4, ?5, ?6)
            """, [.text(jobID), .integer(Self.now()), .text(level), .text(type), .text(message), Self.optional(data)])
    }

    public func events(_ jobID: String, before: Int?, limit: Int) throws -> [EventRecord] {
        try database.read { connection in
            try connection.rows("""
                SELECT seq, created_at, level, type, message, data FROM events
                WHERE job_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3
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
            try connection.rows("SELECT id, step, metrics, created_at FROM checkpoints WHERE job_id = ?1 ORDER BY step DESC LIMIT ?2",
                                [.text(jobID), .integer(Int64(limit))]).compactMap(Self.checkpoint)
        }
    }

    public func checkpoint(_ jobID: String, id: String) throws -> CheckpointRow? {
        try database.read { connection in
            try connection.rows("SELECT id, step, metrics, created_at FROM checkpoints WHERE id = ?1 AND job_id = ?2", [.text(id), .text(jobID)])
                .first.flatMap(Self.checkpoint)
        }
    }

    static func checkpoint(_ row: [SQLValue]) -> CheckpointRow? {
        guard case let .text(id) = row[0], case let .integer(step) = row[1], case let .text(metrics) = row[2],
              case let .integer(created) = row[3] else { return nil }
        return CheckpointRow(id: id, step: Int(step), metrics: metrics, createdAt: Int(created))
    }

    public func runningProgress() throws -> [(id: String, step: Int, loss: Double?)] {
        try database.read { connection in
            try connection.rows("""
                SELECT id, step, (SELECT value FROM metric_points WHERE job_id = jobs.id AND name = 'loss' ORDER BY step DESC LIMIT 1)
                FROM jobs WHERE status = ?1 ORDER BY id
                """, [.text(JobStatus.running.rawValue)]).compactMap { row in
                guard case let .text(id) = row[0], case let .integer(step) = row[1] else { return nil }
                let loss: Double? = if case let .real(value) = row[2] { value } else { nil }
                return (id, Int(step), loss)
            }
        }
    }

    public func queueOutlook(queuedLimit: Int) throws -> QueueOutlook {
        func entry(_ row: [SQLValue]) -> QueueOutlook.Entry? {
            guard case let .text(id) = row[0], case let .text(model) = row[1], case let .text(method) = row[2],
                  case let .text(hyperparameters) = row[3], case let .integer(step) = row[4] else { return nil }
            let total: Int? = if case let .integer(v) = row[5] { Int(v) } else { nil }
            let rate: Double? = if case let .real(v) = row[6] { v } else { nil }
            let finish: Int? = if case let .integer(v) = row[7] { Int(v) } else { nil }
            return QueueOutlook.Entry(id: id, model: model, method: method, hyperparameters: hyperparameters, step: Int(step),
                                      totalSteps: total, samplesPerSecond: rate, estimatedFinish: finish)
        }
        let columns = "id, model, method, hyperparameters, step, total_steps, samples_per_s, estimated_finish"
        return try database.read { connection in
            let running = try connection.rows("SELECT \(columns) FROM jobs WHERE status = ?1", [.text(JobStatus.running.rawValue)])
            let queued = try connection.rows("SELECT \(columns) FROM jobs WHERE status = ?1 ORDER BY priority DESC, created_at, rowid LIMIT ?2",
                                             [.text(JobStatus.queued.rawValue), .integer(Int64(queuedLimit))])
            // Rates of the newest jobs that measured one; a few hundred cover every model and method in use.
            let rates = try connection.rows("SELECT model, method, samples_per_s FROM jobs WHERE samples_per_s IS NOT NULL ORDER BY rowid DESC LIMIT 200", [])
                .compactMap { row -> QueueOutlook.MeasuredRate? in
                    guard case let .text(model) = row[0], case let .text(method) = row[1], case let .real(rate) = row[2],
                          let type = JSONValue.parse(method)?.object?["type"]?.string else { return nil }
                    return QueueOutlook.MeasuredRate(model: model, methodType: type, samplesPerSecond: rate)
                }
            return QueueOutlook(running: running.compactMap(entry), queued: queued.compactMap(entry), rates: rates)
        }
    }


    // MARK: - Leases

    /// Claims without progress after which a job fails instead of being claimed again.
    public static let maxClaimsWithoutProgress = 3

    /// Claimable: queued and not held (a paused job keeps its lease until its worker has written
    /// the training state), or running under an expired lease; and not crash-looping.
    static let claimableCondition = """
        ((status = '\(JobStatus.queued.rawValue)' AND (lease_owner IS NULL OR lease_expires_at < ?1))
         OR (status = '\(JobStatus.running.rawValue)' AND lease_expires_at < ?1))
        """

    /// Refuses the write (`LeaseLost`) unless `worker` holds the job's lease, and on PostgreSQL
    /// holds the job's row until the transaction ends.
    func checkLease(_ connection: any SQLConnection, _ jobID: String, worker: String) throws {
        guard try !connection.rows(fence, [.text(jobID), .text(worker)]).isEmpty else { throw LeaseLost(jobID: jobID, worker: worker) }
    }

    /// Ends the job's open lease in the history: now (its worker released it, or the job ended),
    /// or `atExpiry` (a lease taken over, or a dead worker's job failed, ended when it expired).
    func endLease(_ connection: any SQLConnection, _ jobID: String, atExpiry: Bool = false) throws {
        try connection.run("UPDATE lease_history SET ended_at_ms = \(atExpiry ? "expires_at_ms" : "?2") WHERE job_id = ?1 AND ended_at_ms IS NULL",
                           atExpiry ? [.text(jobID)] : [.text(jobID), .integer(Self.nowMilliseconds())])
    }

    /// A takeover (a running job whose worker died or lost its lease) is left while the job has retries left.
    static let retriesLeft = "NOT (status = '\(JobStatus.running.rawValue)' AND retries >= max_retries)"

    public func failCrashLoopingJobs(maxClaims: Int = SQLJobStore.maxClaimsWithoutProgress) throws -> [String] {
        let find = """
            SELECT id, claims_without_progress >= ?2, retries FROM jobs WHERE \(Self.claimableCondition)
              AND (claims_without_progress >= ?2 OR NOT \(Self.retriesLeft)) ORDER BY created_at, rowid
            """
        guard try !database.read({ try $0.rows(find, [.integer(Self.now()), .integer(Int64(maxClaims))]) }).isEmpty else { return [] }
        return try database.write { connection in
            let failing = try connection.rows(find + forUpdate, [.integer(Self.now()), .integer(Int64(maxClaims))]).compactMap { row -> (String, JobError)? in
                guard case let .text(id) = row[0], case let .integer(retries) = row[2] else { return nil }
                if case .integer(1) = row[1] {
                    return (id, JobError(code: "worker_crashed", message: "the job was claimed \(maxClaims) times and its worker stopped each time before one step completed (the process crashed or was killed); it is not retried. Check the job's log and settings, e.g. its memory needs"))
                }
                return (id, JobError(code: "worker_crashed", message: "the job's worker died or lost its lease \(retries + 1) times, past its max_retries of \(retries); it is not retried"))
            }
            for (id, error) in failing {
                let message = error.message
                try connection.run("""
                    UPDATE jobs SET status = ?1, error = ?2, finished_at = ?3, lease_owner = NULL, lease_expires_at = NULL WHERE id = ?4
                    """, [.text(JobStatus.failed.rawValue), .text(error.json), .integer(Self.now()), .text(id)])
                try endLease(connection, id, atExpiry: true)
                try appendEvent(connection, id, level: "error", type: "message", message: "Failed: \(message)", data: nil)
            }
            return failing.map(\.0)
        }
    }

    static let anyClaimable = """
        SELECT id FROM jobs WHERE \(claimableCondition) AND claims_without_progress < \(maxClaimsWithoutProgress) AND \(retriesLeft) AND \(withinProjectLimit) LIMIT 1
        """

    /// The job's project is under its operator's limit of jobs running at once (under a live lease).
    static let withinProjectLimit = """
        ((SELECT max_running FROM projects WHERE projects.id = jobs.project_id) IS NULL
         OR (SELECT COUNT(*) FROM jobs running WHERE running.project_id = jobs.project_id AND running.status = '\(JobStatus.running.rawValue)'
             AND running.lease_expires_at >= ?1) < (SELECT max_running FROM projects WHERE projects.id = jobs.project_id))
        """

    /// On PostgreSQL, claims run at once: the project's row is locked and its running jobs
    /// counted again, so that two workers cannot both take its last free place.
    func projectHasRoom(_ connection: any SQLConnection, _ project: String, now: Int64) throws -> Bool {
        guard dialect == .postgres else { return true }
        guard case let .integer(limit)? = try connection.rows("SELECT max_running FROM projects WHERE id = ?1 FOR UPDATE", [.text(project)]).first?.first
        else { return true }
        guard case let .integer(running)? = try connection.rows("""
            SELECT COUNT(*) FROM jobs WHERE project_id = ?1 AND status = '\(JobStatus.running.rawValue)' AND lease_expires_at >= ?2
            """, [.text(project), .integer(now)]).first?.first else { return true }
        return running < limit
    }

    // MARK: - The queue: priority, then fair share, then age

    /// A job waiting for a worker, as the scheduler weighs it.
    struct Candidate {
        let id: String, project: String, priority: Int, queuedAt: Int
    }

    /// The first few claimable jobs of each project (by priority, then age): every project with
    /// work is weighed, however many jobs another has queued.
    static let candidatesByProject = """
        SELECT id, project_id, priority, COALESCE(queued_at, created_at) FROM (
            SELECT id, project_id, priority, queued_at, created_at,
                   ROW_NUMBER() OVER (PARTITION BY project_id ORDER BY priority DESC, created_at, rowid) AS place
            FROM jobs WHERE \(claimableCondition) AND claims_without_progress < \(maxClaimsWithoutProgress) AND \(retriesLeft) AND \(withinProjectLimit)
        ) AS candidates WHERE place <= ?2
        """

    func candidates(_ connection: any SQLConnection, now: Int64, perProject: Int) throws -> [Candidate] {
        try connection.rows(Self.candidatesByProject, [.integer(now), .integer(Int64(perProject))]).compactMap { row in
            guard case let .text(id) = row[0], case let .text(project) = row[1], case let .integer(priority) = row[2],
                  case let .integer(queued) = row[3] else { return nil }
            return Candidate(id: id, project: project, priority: Int(priority), queuedAt: Int(queued))
        }
    }

    /// Each project's use of the workers over the fair-share window, in worker-seconds divided by
    /// its weight: leases held (a lease still held counts up to now), clipped to the window.
    /// Only leases that ended inside the window or are open are read (lease_history_by_end).
    func weightedUsage(_ connection: any SQLConnection, nowMs: Int64) throws -> [String: Double] {
        let windowStart = nowMs - Int64(fairShareWindowSeconds) * 1000
        var usage: [String: Double] = [:]
        for row in try connection.rows("""
            SELECT jobs.project_id,
                   SUM(COALESCE(h.ended_at_ms, \(least)(h.expires_at_ms, ?2)) - \(greatest)(h.claimed_at_ms, ?1)), MAX(projects.weight)
            FROM lease_history h JOIN jobs ON jobs.id = h.job_id JOIN projects ON projects.id = jobs.project_id
            WHERE (h.ended_at_ms > ?1 OR (h.ended_at_ms IS NULL AND h.expires_at_ms > ?1))
            GROUP BY jobs.project_id
            """, [.integer(windowStart), .integer(nowMs)]) {
            guard case let .text(project) = row[0] else { continue }
            let milliseconds: Double = switch row[1] { case let .integer(v): Double(v); case let .real(v): v; default: 0 }
            let weight: Double = switch row[2] { case let .real(v): v; case let .integer(v): Double(v); default: 1 }
            usage[project] = milliseconds / 1000 / max(weight, 1e-9)
        }
        return usage
    }

    /// The scheduler's order: higher priority first; among equals, the project that has had the
    /// least of the workers for its weight; then the job that has waited longest.
    static func ordered(_ candidates: [Candidate], usage: [String: Double]) -> [Candidate] {
        candidates.sorted { a, b in
            if a.priority != b.priority { return a.priority > b.priority }
            let (ua, ub) = (usage[a.project] ?? 0, usage[b.project] ?? 0)
            if ua != ub { return ua < ub }
            if a.queuedAt != b.queuedAt { return a.queuedAt < b.queuedAt }
            return a.id < b.id
        }
    }

    public func preemption(minimumRunSeconds: Int, waitingSeconds: Int) throws -> Preemption? {
        try database.read { connection in
            let now = Self.now(), nowMs = Self.nowMilliseconds()
            let waiting = try candidates(connection, now: now, perProject: 1).filter { $0.queuedAt <= Int(now) - waitingSeconds }
            guard !waiting.isEmpty else { return nil }
            let usage = try weightedUsage(connection, nowMs: nowMs)
            guard let first = Self.ordered(waiting, usage: usage).first else { return nil }
            let running = try connection.rows("""
                SELECT jobs.id, jobs.project_id, jobs.priority, h.claimed_at_ms FROM jobs
                JOIN lease_history h ON h.job_id = jobs.id AND h.ended_at_ms IS NULL
                WHERE jobs.status = '\(JobStatus.running.rawValue)' AND jobs.lease_expires_at >= ?1 AND h.claimed_at_ms <= ?2
                """, [.integer(now), .integer(nowMs - Int64(minimumRunSeconds) * 1000)]).compactMap { row -> (Candidate, claimed: Int)? in
                guard case let .text(id) = row[0], case let .text(project) = row[1], case let .integer(priority) = row[2],
                      case let .integer(claimed) = row[3] else { return nil }
                return (Candidate(id: id, project: project, priority: Int(priority), queuedAt: 0), Int(claimed))
            }
            let firstUsage = usage[first.project] ?? 0
            let displaceable = running.filter { job, _ in
                job.priority < first.priority
                    || (job.priority == first.priority && job.project != first.project && (usage[job.project] ?? 0) > firstUsage)
            }
            guard let victim = displaceable.min(by: { a, b in
                if a.0.priority != b.0.priority { return a.0.priority < b.0.priority }
                let (ua, ub) = (usage[a.0.project] ?? 0, usage[b.0.project] ?? 0)
                if ua != ub { return ua > ub }
                return a.claimed > b.claimed
            })?.0 else { return nil }
            let reason = victim.priority < first.priority
                ? "job \(first.id) of priority \(first.priority) is waiting (this job's is \(victim.priority))"
                : "job \(first.id) of a project that has had less of the workers is waiting (fair share over \(fairShareWindowSeconds / 60) minutes)"
            return Preemption(victim: victim.id, waiting: first.id, reason: reason)
        }
    }

    public func claimNext(worker: String, leaseSeconds: Int) throws -> JobRecord? {
        // Idle workers poll: look on a reader first, and take a writer only when there is work.
        guard try !database.read({ try $0.rows(Self.anyClaimable, [.integer(Self.now())]) }).isEmpty else { return nil }
        return try database.write { connection in
            let now = Self.now()
            let usage = try weightedUsage(connection, nowMs: Self.nowMilliseconds())
            // The first in order that is still claimable (on PostgreSQL, not being claimed by another worker now).
            var taken: (id: String, previous: String)?
            for candidate in Self.ordered(try candidates(connection, now: now, perProject: 3), usage: usage) {
                guard let row = try connection.rows(lockCandidate, [.integer(now), .text(candidate.id)]).first, case let .text(previous) = row[1],
                      try projectHasRoom(connection, candidate.project, now: now) else { continue }
                taken = (candidate.id, previous)
                break
            }
            guard let (id, previous) = taken else { return nil }
            let expires = now + Int64(leaseSeconds)
            try connection.run("""
                UPDATE jobs SET status = ?1, lease_owner = ?2, lease_expires_at = ?3, started_at = COALESCE(started_at, ?4),
                       claims_without_progress = claims_without_progress + 1,
                       retries = retries + CASE WHEN status = ?1 THEN 1 ELSE 0 END
                WHERE id = ?5
                """, [.text(JobStatus.running.rawValue), .text(worker), .integer(expires), .integer(now), .text(id)])
            // A lease taken over ended when it expired.
            try endLease(connection, id, atExpiry: true)
            try connection.run("INSERT INTO lease_history (job_id, owner, claimed_at_ms, expires_at_ms) VALUES (?1, ?2, ?3, ?4)",
                               [.text(id), .text(worker), .integer(Self.nowMilliseconds()), .integer(expires * 1000)])
            let message = previous == JobStatus.queued.rawValue ? "Claimed by \(worker)" : "Claimed by \(worker): the previous worker's lease expired"
            try appendEvent(connection, id, level: "info", type: "message", message: message, data: nil)
            // Read once, as the claim left it: the worker's copy, and a resumption's webhook.
            guard let job = try connection.rows(Self.selectByID, [.text(id)]).first.flatMap(Self.record) else { return nil }
            // A job that trained before goes on from its saved state (or its last checkpoint).
            try enqueueWebhook(connection, job, .resumed) { job in job.step > 0 ? Self.jobData(job) : nil }
            return job
        }
    }

    public func heartbeat(_ jobID: String, worker: String, leaseSeconds: Int) throws -> Bool {
        try database.write { connection in
            let expires = Self.now() + Int64(leaseSeconds)
            guard try connection.run("UPDATE jobs SET lease_expires_at = ?1 WHERE id = ?2 AND lease_owner = ?3 AND status = ?4",
                                     [.integer(expires), .text(jobID), .text(worker), .text(JobStatus.running.rawValue)]) == 1 else { return false }
            try connection.run("UPDATE lease_history SET expires_at_ms = ?1 WHERE job_id = ?2 AND owner = ?3 AND ended_at_ms IS NULL",
                               [.integer(expires * 1000), .text(jobID), .text(worker)])
            return true
        }
    }

    public func release(_ jobID: String, worker: String, status: JobStatus?, error: JobError?, event: String, level: String,
                        webhook: WebhookEventType?) throws -> Bool {
        try database.write { connection in
            let terminal = status?.isTerminal ?? false
            guard try connection.run("""
                UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL, claims_without_progress = 0,
                       status = CASE WHEN CAST(?1 AS TEXT) IS NOT NULL AND status = ?7 THEN CAST(?1 AS TEXT) ELSE status END,
                       error = COALESCE(CAST(?2 AS TEXT), error), finished_at = CASE WHEN ?3 = 1 THEN ?4 ELSE finished_at END,
                       queued_at = CASE WHEN CAST(?1 AS TEXT) = '\(JobStatus.queued.rawValue)' THEN ?4 ELSE queued_at END
                WHERE id = ?5 AND lease_owner = ?6
                """, [Self.optional(status?.rawValue), Self.optional(error?.json), .integer(terminal ? 1 : 0), .integer(Self.now()), .text(jobID),
                      .text(worker), .text(JobStatus.running.rawValue)]) == 1 else { return false }
            try endLease(connection, jobID)
            try appendEvent(connection, jobID, level: level, type: "message", message: event, data: nil)
            if let webhook { try enqueueWebhook(connection, jobID, webhook, data: Self.jobData) }
            return true
        }
    }

    public func leases() throws -> [(job: String, owner: String)] {
        try database.read { connection in
            try connection.rows("SELECT id, lease_owner FROM jobs WHERE lease_owner IS NOT NULL", []).compactMap { row in
                guard case let .text(id) = row[0], case let .text(owner) = row[1] else { return nil }
                return (id, owner)
            }
        }
    }

    public func expireLease(_ jobID: String, owner: String) throws {
        try database.write { connection in
            guard try connection.run("UPDATE jobs SET lease_expires_at = 0 WHERE id = ?1 AND lease_owner = ?2", [.text(jobID), .text(owner)]) == 1
            else { return }
            try connection.run("UPDATE lease_history SET ended_at_ms = ?1 WHERE job_id = ?2 AND owner = ?3 AND ended_at_ms IS NULL",
                               [.integer(Self.nowMilliseconds()), .text(jobID), .text(owner)])
        }
    }

    public func runSeconds(_ jobID: String) throws -> Int {
        try database.read { connection in
            let now = Self.nowMilliseconds()
            let row = try connection.rows("""
                SELECT CAST(COALESCE(SUM(COALESCE(ended_at_ms, \(least)(expires_at_ms, ?2)) - claimed_at_ms), 0) AS BIGINT) FROM lease_history WHERE job_id = ?1
                """, [.text(jobID), .integer(now)]).first
            guard case let .integer(milliseconds)? = row?.first else { return 0 }
            return Int(milliseconds / 1000)
        }
    }

    public func leaseHistory(_ jobID: String) throws -> [LeaseRecord] {
        try database.read { connection in
            try connection.rows("""
                SELECT owner, claimed_at_ms, expires_at_ms, ended_at_ms FROM lease_history WHERE job_id = ?1 ORDER BY claimed_at_ms, owner
                """, [.text(jobID)]).compactMap { row in
                guard case let .text(owner) = row[0], case let .integer(claimed) = row[1], case let .integer(expires) = row[2] else { return nil }
                let ended: Int? = if case let .integer(value) = row[3] { Int(value) } else { nil }
                return LeaseRecord(owner: owner, claimedAtMs: Int(claimed), expiresAtMs: Int(expires), endedAtMs: ended)
            }
        }
    }

    // MARK: - The worker's writes, each fenced by its lease

    public func recordStep(_ jobID: String, worker: String, step: Int, values: [String: Double], summary: String, samplesPerSecond: Double?,
                           estimatedFinish: Int?) throws -> Bool {
        try database.write { connection in
            try checkLease(connection, jobID, worker: worker)
            var added = 0
            for (name, value) in values.sorted(by: { $0.key < $1.key }) where value.isFinite {
                added += try connection.run("INSERT INTO metric_points (job_id, name, step, value) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                                            [.text(jobID), .text(name), .integer(Int64(step)), .real(value)])
            }
            guard added > 0 else { return false }
            var data: [String: JSONValue] = ["step": .init(step)]
            for (name, value) in values where value.isFinite { data[name] = .number(value) }
            let json = JSONBodyEncoder.string(SortedMembers(data))
            try appendEvent(connection, jobID, level: "info", type: "metrics", message: summary, data: json)
            try connection.run("""
                UPDATE jobs SET step = \(greatest)(step, ?1), samples_per_s = COALESCE(?2, samples_per_s), claims_without_progress = 0,
                       estimated_finish = COALESCE(?3, estimated_finish) WHERE id = ?4
                """, [.integer(Int64(step)), samplesPerSecond.map(SQLValue.real) ?? .null,
                      estimatedFinish.map { .integer(Int64($0)) } ?? .null, .text(jobID)])
            let validation = values.filter { $0.key.hasPrefix("val_") && $0.value.isFinite }
            if !validation.isEmpty {
                try enqueueWebhook(connection, jobID, .validationCompleted) { _ in
                    JSONBodyEncoder.string(ValidationResult(fineTuningJobID: jobID, step: step, metrics: SortedMembers(validation)))
                }
            }
            return true
        }
    }

    public func addCheckpoint(_ jobID: String, worker: String, id: String, step: Int, metrics: String, event: String, sampleGrid: Bool,
                              best: (step: Int, value: Double)?) throws {
        try database.write { connection in
            try checkLease(connection, jobID, worker: worker)
            guard try connection.run("""
                INSERT INTO checkpoints (id, job_id, step, metrics, created_at) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING
                """, [.text(id), .text(jobID), .integer(Int64(step)), .text(metrics), .integer(Self.now())]) == 1 else { return }
            try connection.run("UPDATE jobs SET step = \(greatest)(step, ?1), claims_without_progress = 0 WHERE id = ?2",
                               [.integer(Int64(step)), .text(jobID)])
            if let best {
                try connection.run("UPDATE jobs SET best_step = ?1, best_value = ?2 WHERE id = ?3",
                                   [.integer(Int64(best.step)), .real(best.value), .text(jobID)])
            }
            try appendEvent(connection, jobID, level: "info", type: "message", message: event, data: nil)
            try enqueueWebhook(connection, jobID, .checkpointSaved) { job in
                JSONBodyEncoder.string(FineTuningCheckpoint(id: id, createdAt: Int(Self.now()), step: step, metrics: metrics, job: job,
                                                            hasSampleGrid: sampleGrid))
            }
        }
    }

    public func removeCheckpoint(_ jobID: String, worker: String, step: Int) throws {
        try database.write { connection in
            try checkLease(connection, jobID, worker: worker)
            try connection.run("DELETE FROM checkpoints WHERE job_id = ?1 AND step = ?2", [.text(jobID), .integer(Int64(step))])
        }
    }

    public func lastMetricStep(_ jobID: String) throws -> Int? {
        try database.read { connection in
            guard case let .integer(step) = try connection.rows("SELECT MAX(step) FROM metric_points WHERE job_id = ?1", [.text(jobID)]).first?[0]
            else { return nil }
            return Int(step)
        }
    }

    public func succeed(_ jobID: String, worker: String, model: String, config: String, parent: String, event: String,
                        writeWeights: () throws -> Void) throws -> Bool {
        try database.write { connection in
            guard let row = try connection.rows("SELECT project_id FROM jobs WHERE id = ?1 AND lease_owner = ?2 AND status = ?3\(forUpdate)",
                                                [.text(jobID), .text(worker), .text(JobStatus.running.rawValue)]).first,
                  case let .text(project) = row[0] else { return false }
            try writeWeights()
            try connection.run("INSERT INTO models (id, project_id, config, parent, job_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                               [.text(model), .text(project), .text(config), .text(parent), .text(jobID), .integer(Self.now())])
            try connection.run("""
                UPDATE jobs SET status = ?1, fine_tuned_model = ?2, finished_at = ?3, lease_owner = NULL, lease_expires_at = NULL,
                       estimated_finish = NULL
                WHERE id = ?4
                """, [.text(JobStatus.succeeded.rawValue), .text(model), .integer(Self.now()), .text(jobID)])
            try endLease(connection, jobID)
            try appendEvent(connection, jobID, level: "info", type: "message", message: event, data: nil)
            return true
        }
    }

    public func metrics(_ jobID: String, names: [String]?, sinceStep: Int?) throws -> [String: [(step: Int, value: Double)]] {
        // The primary key (job_id, name, step) serves each name's range directly.
        var sql = "SELECT name, step, value FROM metric_points WHERE job_id = ?1 AND step > ?2"
        var arguments: [SQLValue] = [.text(jobID), .integer(Int64(sinceStep ?? -1))]
        if let names {
            guard !names.isEmpty else { return [:] }
            sql += " AND name IN (\(names.indices.map { "?\($0 + 3)" }.joined(separator: ", ")))"
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
