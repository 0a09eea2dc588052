/// Where a job is in its life (API.md): created jobs validate their files, then wait in
/// the queue, run, may pause, and end succeeded, failed or cancelled.
public enum JobStatus: String, Codable, CaseIterable, Sendable {
    case validatingFiles = "validating_files", queued, running, paused, succeeded, failed, cancelled

    /// A job that has ended: nothing changes it any more.
    public var isTerminal: Bool { self == .succeeded || self == .failed || self == .cancelled }

    public static let terminal: Set<JobStatus> = Set(allCases.filter(\.isTerminal))
    /// Every status a job can leave (cancel takes it from any of these).
    public static let active: Set<JobStatus> = Set(allCases.filter { !$0.isTerminal })
}
