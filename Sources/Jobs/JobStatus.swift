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

/// What asking a job to move from some statuses to another did: the job as the move left it,
/// or as it stands in a status the move does not start from, both read in the same transaction.
public enum JobTransition: Sendable {
    case moved(JobRecord)
    case refused(JobRecord)
    case missing

    public var moved: Bool {
        if case .moved = self { return true }
        return false
    }
}
