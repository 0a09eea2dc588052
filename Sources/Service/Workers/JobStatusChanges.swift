import Foundation
import Jobs
import Synchronization

/// Tells whoever listens that a job's status changed — the worker pool (a queued
/// job to claim, a pause or cancel to pass to a running trainer at once), the
/// webhooks (terminal statuses), log followers (the end) — or that its log grew
/// (log followers). Posted by the API and by the workers.
///
/// Changes cross process boundaries through relays, which post what they carry with its
/// `Origin`: `WorkerChannel` between `serve` and its worker processes (`relayed`), and
/// `FleetNotifications` between the nodes of a fleet, through the database (`fleet`). Each
/// relay observes only the origins it must carry on, so nothing goes back where it came from.
public final class JobStatusChanges: Sendable {
    public enum Origin: Sendable, Hashable {
        /// Made in this process.
        case local
        /// Carried from a worker process of this server, or from the server to its worker.
        case relayed
        /// Carried from another node of the fleet.
        case fleet
    }
    public static let everyOrigin: Set<Origin> = [.local, .relayed, .fleet]

    typealias StatusObserver = @Sendable (_ jobID: String, _ status: JobStatus) -> Void
    typealias LogObserver = @Sendable (_ jobID: String) -> Void
    private let observers = Mutex<[(origins: Set<Origin>, StatusObserver)]>([])
    private let logObservers = Mutex<[(origins: Set<Origin>, LogObserver)]>([])

    public init() {}

    public func observe(origins: Set<Origin> = everyOrigin, _ observer: @escaping @Sendable (_ jobID: String, _ status: JobStatus) -> Void) {
        observers.withLock { $0.append((origins, observer)) }
    }

    /// Observers run on the caller's thread, outside the lock (one may observe again).
    public func post(jobID: String, status: JobStatus, origin: Origin = .local) {
        for (origins, observer) in observers.withLock({ $0 }) where origins.contains(origin) { observer(jobID, status) }
    }

    public func observeLogs(origins: Set<Origin> = everyOrigin, _ observer: @escaping @Sendable (_ jobID: String) -> Void) {
        logObservers.withLock { $0.append((origins, observer)) }
    }

    /// The job's `log.txt` has new lines.
    public func logAppended(jobID: String, origin: Origin = .local) {
        for (origins, observer) in logObservers.withLock({ $0 }) where origins.contains(origin) { observer(jobID) }
    }
}
