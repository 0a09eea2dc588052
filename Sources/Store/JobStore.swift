import Foundation
import JSON
@_exported import Jobs

/// What the API and the workers need of job storage. `SQLJobStore` implements it on
/// SQLite and on PostgreSQL; handlers and workers see only this.
public protocol JobStore: Sendable {
    func insert(_ job: JobRecord, firstEvent message: String) throws
    /// The job if it belongs to the project (nil project: any).
    func job(_ id: String, project: String?) throws -> JobRecord?
    /// Newest first, after the job `after` (cursor paging), those that pass `filter`.
    func jobs(project: String, after: String?, limit: Int, filter: JobFilter) throws -> [JobRecord]
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
    /// An event from the job's worker, written only while `worker` holds the lease (else `LeaseLost`).
    func appendEvent(_ jobID: String, fencedBy worker: String, level: String, type: String, message: String, data: String?) throws
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
    /// `webhook`, when the job has a webhook_url, is queued with the release (a preemption's).
    func release(_ jobID: String, worker: String, status: JobStatus?, error: JobError?, event: String, level: String,
                 webhook: WebhookEventType?) throws -> Bool
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
    /// Written only while `worker` holds the lease (else `LeaseLost`), as are checkpoints.
    @discardableResult
    func recordStep(_ jobID: String, worker: String, step: Int, values: [String: Double], summary: String, samplesPerSecond: Double?,
                    estimatedFinish: Int?) throws -> Bool
    /// A checkpoint record (once per step) with an event, and its webhook (`sampleGrid`: one was drawn).
    func addCheckpoint(_ jobID: String, worker: String, id: String, step: Int, metrics: String, event: String, sampleGrid: Bool,
                       best: (step: Int, value: Double)?) throws
    /// Forgets a checkpoint (retention deletes its files).
    func removeCheckpoint(_ jobID: String, worker: String, step: Int) throws
    /// The last step with metric points, if any.
    func lastMetricStep(_ jobID: String) throws -> Int?
    /// Registers the job's result as a model of its project and marks the job succeeded, atomically.
    /// False when the job is no longer this worker's (cancelled at the last moment, or its lease lost).
    func succeed(_ jobID: String, worker: String, model: String, config: String, parent: String, event: String,
                 writeWeights: () throws -> Void) throws -> Bool

    /// The running job that should give its worker up to a waiting one, if any: a job waits
    /// (claimable for `waitingSeconds`, so no worker is free) that comes before a running job in
    /// the scheduler's order — a higher priority, or the same from a project that has had less of
    /// the workers for its weight — and that running job has run `minimumRunSeconds` at least.
    /// Of those, the victim is the lowest priority, then the most served project, then the
    /// latest claimed. Every worker asks; only the victim's yields.
    func preemption(minimumRunSeconds: Int, waitingSeconds: Int) throws -> Preemption?
    /// The running jobs, the first `queuedLimit` queued ones in queue order and the newest measured
    /// step rates, read together: what `estimated_start` is planned from.
    func queueOutlook(queuedLimit: Int) throws -> QueueOutlook
    /// Each running job's last recorded step and loss, for per-job metrics on any node.
    func runningProgress() throws -> [(id: String, step: Int, loss: Double?)]
    /// How long the job has trained, over all its leases (a held one up to now), in seconds.
    func runSeconds(_ jobID: String) throws -> Int
    /// Every lease ever taken on the job, oldest first: who held it and when, for audits.
    func leaseHistory(_ jobID: String) throws -> [LeaseRecord]

    /// Points by name with steps strictly increasing, after `sinceStep` when given.
    func metrics(_ jobID: String, names: [String]?, sinceStep: Int?) throws -> [String: [(step: Int, value: Double)]]
}

/// A running job to preempt, for a waiting one, and why.
public struct Preemption: Sendable, Equatable {
    public let victim: String
    public let waiting: String
    public let reason: String
}

/// One lease a worker held on a job: from its claim until it ended — released by its worker,
/// the job ended, or taken over once expired (then it ended when it expired) — or, not ended
/// yet, until it expires (moved on by each heartbeat). Milliseconds since 1970.
public struct LeaseRecord: Sendable, Equatable {
    public let owner: String
    public let claimedAtMs: Int
    public let expiresAtMs: Int
    public let endedAtMs: Int?
    /// When the lease stopped being the owner's.
    public var heldUntilMs: Int { endedAtMs ?? expiresAtMs }
}

public struct CheckpointRow: Sendable, Equatable {
    public let id: String
    public let step: Int
    public let metrics: String
    public let createdAt: Int
}

extension JobStore {
    /// A release that announces nothing.
    public func release(_ jobID: String, worker: String, status: JobStatus?, error: JobError?, event: String, level: String) throws -> Bool {
        try release(jobID, worker: worker, status: status, error: error, event: event, level: level, webhook: nil)
    }
}

extension JobStore {
    /// A checkpoint of a job without checkpoint selection.
    public func addCheckpoint(_ jobID: String, worker: String, id: String, step: Int, metrics: String, event: String, sampleGrid: Bool) throws {
        try addCheckpoint(jobID, worker: worker, id: id, step: step, metrics: metrics, event: event, sampleGrid: sampleGrid, best: nil)
    }
}
