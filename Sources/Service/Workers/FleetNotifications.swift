import Foundation
import Synchronization
import Store

/// Carries job status changes and log growth between the nodes of a fleet (API servers and
/// workers on several machines sharing PostgreSQL), through LISTEN/NOTIFY on the channel
/// `preftune_jobs`. A cancel on one API node reaches the worker training the job on another
/// machine at once; a log line written by a worker wakes the log followers on every node.
///
/// What this process makes (and what its own worker processes relay to it) goes out; what
/// comes in is posted as `.fleet`, which this relay does not carry on. Each payload names the
/// process that sent it, which ignores its own. Log growth is sent at most every 200 ms per
/// job. Notifications are a fast path only: a node that misses some (while its listening
/// connection was down) still learns everything by polling the database and the files.
public final class FleetNotifications: Sendable {
    public static let channel = "preftune_jobs"
    let database: PostgresDatabase
    let changes: JobStatusChanges
    /// This process, in each payload it sends.
    let origin = APIKeys.randomHex(bytes: 6)
    private let listener: Mutex<PostgresListener?> = Mutex(nil)
    /// Sends leave the caller's thread (an event loop's, or a trainer's) at once.
    private let sending = DispatchQueue(label: "fleet-notify")
    private let pendingLogs = Mutex<Set<String>>([])
    static let logCoalescing = 0.2

    public init(database: PostgresDatabase, changes: JobStatusChanges) {
        self.database = database
        self.changes = changes
    }

    public func start() {
        let listener = PostgresListener(url: database.pool.url, channel: Self.channel, received: { [weak self] in self?.received($0) })
        self.listener.withLock { $0 = listener }
        listener.start()
        changes.observe(origins: [.local, .relayed]) { [weak self] jobID, status in self?.send("s \(jobID) \(status.rawValue)") }
        changes.observeLogs(origins: [.local, .relayed]) { [weak self] jobID in self?.logAppended(jobID) }
    }

    public func stop() { listener.withLock { $0 }?.stop() }

    private func logAppended(_ jobID: String) {
        let first = pendingLogs.withLock { $0.insert(jobID).inserted }
        guard first else { return }
        sending.asyncAfter(deadline: .now() + Self.logCoalescing) { [self] in
            pendingLogs.withLock { _ = $0.remove(jobID) }
            notify("l \(jobID)")
        }
    }

    private func send(_ message: String) {
        sending.async { [self] in notify(message) }
    }

    /// A notification lost to an unreachable database is not retried: pollers catch up.
    private func notify(_ message: String) {
        do {
            try database.withWriter { _ = try $0.rows("SELECT pg_notify(?1, ?2)", [.text(Self.channel), .text("\(origin) \(message)")]) }
        } catch {
            ServerLog.error("cannot notify the fleet of '\(message)'", error)
        }
    }

    /// `<origin> s <job> <status>` or `<origin> l <job>`.
    func received(_ payload: String) {
        let parts = payload.split(separator: " ")
        guard parts.count >= 3, parts[0] != Substring(origin) else { return }
        let jobID = String(parts[2])
        switch parts[1] {
        case "s": if parts.count == 4, let status = JobStatus(rawValue: String(parts[3])) { changes.post(jobID: jobID, status: status, origin: .fleet) }
        case "l": changes.logAppended(jobID: jobID, origin: .fleet)
        default: break
        }
    }
}
