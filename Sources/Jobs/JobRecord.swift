import Foundation
import Numerics

/// A list's bounds on creation time, as OpenAI's SDK sends them (`created_after`, `created_before`):
/// strictly after / before, Unix seconds. Jobs, files and models take the same pair.
public struct CreatedRange: Sendable, Equatable {
    public var after: Int?
    public var before: Int?
    public init(after: Int? = nil, before: Int? = nil) {
        self.after = after
        self.before = before
    }
}

/// Which of a project's jobs a list shows: every condition given must hold.
public struct JobFilter: Sendable, Equatable {
    public var status: JobStatus?
    /// The base model's storage key.
    public var model: String?
    /// Metadata pairs the job must carry, exactly.
    public var metadata: [String: String] = [:]
    public var created = CreatedRange()
    /// A condition no job can meet was asked for (a model the project cannot see, a metadata
    /// value that is not a string): the list is empty, and no query is made.
    public var matchesNothing = false

    public init() {}
}

public struct JobRecord: Sendable, Equatable {
    public var id: String
    public var projectID: String
    public var model: String
    public var trainingFile: String
    public var validationFile: String?
    public var method: String
    public var hyperparameters: String
    public var seed: Int
    public var suffix: String?
    public var metadata: String
    public var webhookURL: String?
    public var status: JobStatus
    public var error: JobError?
    public var fineTunedModel: String?
    public var step: Int
    public var totalSteps: Int?
    public var samplesPerSecond: Double?
    public var estimatedFinish: Int?
    public var createdAt: Int
    public var startedAt: Int?
    public var finishedAt: Int?
    /// Higher is claimed first (within the bounds the operator sets for the project).
    public var priority = 0
    /// For a queued job, its place in the queue (1: claimed next), as read.
    public var queuePosition: Int?
    /// A queued job's expected start (Unix seconds), planned when the job is read (`QueueOutlook`), never stored.
    public var estimatedStart: Int?
    /// Takeovers allowed after a worker died or lost its lease, and how many there were.
    public var maxRetries = 3
    public var retries = 0
    /// The most the job may run (seconds of training, pauses and queueing not counted); nil: no limit.
    public var maxDuration: Int?
    /// Checkpoint selection, grading and the result choice (`EvaluationSettings` as JSON); nil: none.
    public var evaluation: String?
    /// The best checkpoint so far by the selection metric, and its value.
    public var bestStep: Int?
    public var bestValue: Double?
    /// A fork's lineage: the job and checkpoint step it continues from.
    public var parentJob: String?
    public var fromStep: Int?
    /// The checkpoint (`ft:…:ckpt-step-N`) a job was started from; `model` is then its base model's key.
    public var startCheckpoint: String?
    /// The arithmetic of the job's matrix products: "fp32" or "bf16" (`MathPrecision`).
    public var precision = "fp32"
    /// `precision` read; nil when the stored text is not one (a damaged row).
    public var mathPrecision: MathPrecision? { MathPrecision(rawValue: precision) }

    public init(id: String, projectID: String, model: String, trainingFile: String, validationFile: String?, method: String,
                hyperparameters: String, seed: Int, suffix: String?, metadata: String, webhookURL: String?, status: JobStatus,
                createdAt: Int) {
        self.id = id
        self.projectID = projectID
        self.model = model
        self.trainingFile = trainingFile
        self.validationFile = validationFile
        self.method = method
        self.hyperparameters = hyperparameters
        self.seed = seed
        self.suffix = suffix
        self.metadata = metadata
        self.webhookURL = webhookURL
        self.status = status
        self.createdAt = createdAt
        step = 0
    }
}

public struct EventRecord: Sendable, Equatable {
    public let jobID: String
    /// Strictly increasing per job.
    public let sequence: Int
    public let createdAt: Int
    public let level: String
    public let type: String
    public let message: String
    /// JSON text, for metrics events.
    public let data: String?

    public init(jobID: String, sequence: Int, createdAt: Int, level: String, type: String, message: String, data: String?) {
        self.jobID = jobID
        self.sequence = sequence
        self.createdAt = createdAt
        self.level = level
        self.type = type
        self.message = message
        self.data = data
    }
}

/// Model ids are per project: a project's model `alpha` is stored under the key
/// `<project-id>/alpha`, so another project may have its own `alpha`, and a 409 never tells
/// one project what another has named. Shared models (and models made before ids were per
/// project) keep their id as key; fine-tuned results (`ft:…:<job-id>`) are unique already.
public enum ModelKey {
    /// The characters of a model id: a letter or digit, then up to 63 letters, digits, `-`, `_` or `.`.
    public static func isValidName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, (1...64).contains(name.unicodeScalars.count) else { return false }
        func allowed(_ c: Unicode.Scalar) -> Bool { c.isASCII && (CharacterSet.alphanumerics.contains(c) || "-_.".unicodeScalars.contains(c)) }
        return first.isASCII && CharacterSet.alphanumerics.contains(first) && name.unicodeScalars.allSatisfy(allowed)
    }

    public static func key(project: String, name: String) -> String { "\(project)/\(name)" }

    public static func name(of key: String) -> String {
        guard !key.hasPrefix("ft:"), let slash = key.utf8.lastIndex(of: UInt8(ascii: "/")) else { return key }
        return String(key.utf8[key.utf8.index(after: slash)...])!
    }
}
