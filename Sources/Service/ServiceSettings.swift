import Foundation
import Training

/// What an operator sets for the whole service: the memory budget of each job, sample
/// request and model; per-project quotas; where webhooks may go; who may read per-job
/// metrics; and how much heavy request work (samples, model creation) runs at once.
/// docs/operations.md describes each, with its flag.
public struct ServiceSettings: Sendable {
    /// What one job, sample request or model may hold in memory (`--max-job-memory`).
    public var memoryBudget: MemoryBudget
    public var quotas = ProjectQuotas()
    /// Destinations webhooks may reach although they are private (`--webhook-allow CIDR,…`).
    public var webhookAllow: [IPNetwork] = []
    /// With a token, `/metrics` given `Authorization: Bearer <token>` adds per-job series
    /// (ids and losses); without one, or without the header, it shows aggregates only.
    public var metricsToken: String?
    /// Threads that run samples and model creation, apart from the request threads.
    public var heavyWorkThreads = 1
    /// Heavy requests that may wait for those threads; more get 429.
    public var heavyWorkQueue = 8
    /// The most arithmetic one sample request may ask for: n × steps × the model's FLOPs per
    /// sample (`--max-sample-flops`). The default is about a minute on two cores.
    public var maxSampleFLOPs = 5e12
    /// On PostgreSQL (a fleet): how often log followers look for lines written on other
    /// machines, should a notification not arrive.
    public var fleetPollSeconds = 1.0

    public init(memoryBudget: MemoryBudget) {
        self.memoryBudget = memoryBudget
    }

    /// Defaults for this machine: half its memory, shared by `workers` jobs.
    public static func defaults(workers: Int = 1) -> ServiceSettings {
        ServiceSettings(memoryBudget: .defaultPerJob(physicalMemory: ProcessInfo.processInfo.physicalMemory, workers: workers))
    }
}

/// Per-project limits (`--quota-*` flags). Over one, a request gets 403 `quota_exceeded`
/// naming the usage and the limit.
public struct ProjectQuotas: Sendable, Equatable {
    /// Bytes of uploaded files and of the project's models (their weights).
    public var storageBytes = 50 << 30
    public var files = 1_000
    public var models = 200
    /// Jobs not yet finished (validating, queued, running or paused).
    public var activeJobs = 20

    public init() {}
}
