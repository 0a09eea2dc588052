import Foundation
import Jobs

/// Tells whoever listens that a job's status changed — the worker pool (a queued
/// job to claim, a pause or cancel to pass to a running trainer at once), the
/// webhooks (terminal statuses), log followers (the end) — or that its log grew
/// (log followers). Posted by the API and by the workers.
public final class JobStatusChanges: @unchecked Sendable {
    private let lock = NSLock()
    private var observers: [@Sendable (_ jobID: String, _ status: JobStatus) -> Void] = []
    private var logObservers: [@Sendable (_ jobID: String) -> Void] = []

    public init() {}

    public func observe(_ observer: @escaping @Sendable (_ jobID: String, _ status: JobStatus) -> Void) {
        lock.withLock { observers.append(observer) }
    }

    public func post(jobID: String, status: JobStatus) {
        for observer in lock.withLock({ observers }) { observer(jobID, status) }
    }

    public func observeLogs(_ observer: @escaping @Sendable (_ jobID: String) -> Void) {
        lock.withLock { logObservers.append(observer) }
    }

    /// The job's `log.txt` has new lines.
    public func logAppended(jobID: String) {
        for observer in lock.withLock({ logObservers }) { observer(jobID) }
    }
}
