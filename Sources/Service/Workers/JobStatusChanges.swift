import Foundation
import Jobs
import Synchronization

/// Tells whoever listens that a job's status changed — the worker pool (a queued
/// job to claim, a pause or cancel to pass to a running trainer at once), the
/// webhooks (terminal statuses), log followers (the end) — or that its log grew
/// (log followers). Posted by the API and by the workers.
public final class JobStatusChanges: Sendable {
    private let observers = Mutex<[@Sendable (_ jobID: String, _ status: JobStatus) -> Void]>([])
    private let logObservers = Mutex<[@Sendable (_ jobID: String) -> Void]>([])

    public init() {}

    public func observe(_ observer: @escaping @Sendable (_ jobID: String, _ status: JobStatus) -> Void) {
        observers.withLock { $0.append(observer) }
    }

    /// Observers run on the caller's thread, outside the lock (one may observe again).
    public func post(jobID: String, status: JobStatus) {
        for observer in observers.withLock({ $0 }) { observer(jobID, status) }
    }

    public func observeLogs(_ observer: @escaping @Sendable (_ jobID: String) -> Void) {
        logObservers.withLock { $0.append(observer) }
    }

    /// The job's `log.txt` has new lines.
    public func logAppended(jobID: String) {
        for observer in logObservers.withLock({ $0 }) { observer(jobID) }
    }
}
