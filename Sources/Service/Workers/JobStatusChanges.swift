import Foundation
import Jobs
import Synchronization

/// Tells whoever listens that a job's status changed — the worker pool (a queued
/// job to claim, a pause or cancel to pass to a running trainer at once), the
/// webhooks (terminal statuses), log followers (the end) — or that its log grew
/// (log followers). Posted by the API and by the workers.
///
/// Between processes (`serve` and its worker processes), `WorkerChannel` carries the
/// changes each side posts to the other, which posts them as `relayed`: a relay does not
/// observe relayed changes, so nothing goes back where it came from.
public final class JobStatusChanges: Sendable {
    typealias StatusObserver = @Sendable (_ jobID: String, _ status: JobStatus) -> Void
    typealias LogObserver = @Sendable (_ jobID: String) -> Void
    private let observers = Mutex<[(relayed: Bool, StatusObserver)]>([])
    private let logObservers = Mutex<[(relayed: Bool, LogObserver)]>([])

    public init() {}

    /// `includingRelayed: false` for a relay to another process.
    public func observe(includingRelayed: Bool = true, _ observer: @escaping @Sendable (_ jobID: String, _ status: JobStatus) -> Void) {
        observers.withLock { $0.append((includingRelayed, observer)) }
    }

    /// Observers run on the caller's thread, outside the lock (one may observe again).
    public func post(jobID: String, status: JobStatus, relayed: Bool = false) {
        for (includesRelayed, observer) in observers.withLock({ $0 }) where includesRelayed || !relayed { observer(jobID, status) }
    }

    public func observeLogs(includingRelayed: Bool = true, _ observer: @escaping @Sendable (_ jobID: String) -> Void) {
        logObservers.withLock { $0.append((includingRelayed, observer)) }
    }

    /// The job's `log.txt` has new lines.
    public func logAppended(jobID: String, relayed: Bool = false) {
        for (includesRelayed, observer) in logObservers.withLock({ $0 }) where includesRelayed || !relayed { observer(jobID) }
    }
}
