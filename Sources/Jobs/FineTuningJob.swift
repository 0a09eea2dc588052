import JSON

/// A job as the API shows it, in OpenAI's shape (`fine_tuning.job`), plus `progress`
/// and `estimated_finish`. Absent values are null; JSON columns are embedded as stored.
public struct FineTuningJob: Encodable, Sendable {
    public let id: String
    public let object = "fine_tuning.job"
    public let model: String
    public let createdAt: Int
    public let finishedAt: Int?
    public let status: JobStatus
    public let trainingFile: String
    public let validationFile: String?
    public let method: RawJSON
    public let hyperparameters: RawJSON
    public let seed: Int
    public let userProvidedSuffix: String?
    public let metadata: RawJSON
    public let fineTunedModel: String?
    public let error: JobError?
    public let estimatedFinish: Int?
    public let progress: Progress
    public let organizationID: String
    public let resultFiles: [String] = []
    public let trainedTokens: Int? = nil
    public let integrations: [JSONValue] = []

    public struct Progress: Encodable, Sendable {
        public let step: Int
        public let totalSteps: Int?
        public let samplesPerS: Double?

        enum CodingKeys: String, CodingKey {
            case step, totalSteps = "total_steps", samplesPerS = "samples_per_s"
        }
    }

    public init(_ job: JobRecord) {
        id = job.id
        model = ModelKey.name(of: job.model)
        createdAt = job.createdAt
        finishedAt = job.finishedAt
        status = job.status
        trainingFile = job.trainingFile
        validationFile = job.validationFile
        method = RawJSON(text: job.method)
        hyperparameters = RawJSON(text: job.hyperparameters)
        seed = job.seed
        userProvidedSuffix = job.suffix
        metadata = RawJSON(text: job.metadata)
        fineTunedModel = job.fineTunedModel
        error = job.error
        estimatedFinish = job.estimatedFinish
        progress = Progress(step: job.step, totalSteps: job.totalSteps, samplesPerS: job.samplesPerSecond)
        organizationID = job.projectID
    }

    enum CodingKeys: String, CodingKey {
        case id, object, model, createdAt = "created_at", finishedAt = "finished_at", status, trainingFile = "training_file"
        case validationFile = "validation_file", method, hyperparameters, seed, userProvidedSuffix = "user_provided_suffix", metadata
        case fineTunedModel = "fine_tuned_model", error, estimatedFinish = "estimated_finish", progress
        case organizationID = "organization_id", resultFiles = "result_files", trainedTokens = "trained_tokens", integrations
    }
}

/// One entry of a job's event list (`fine_tuning.job.event`).
public struct FineTuningJobEvent: Encodable, Sendable {
    public let object = "fine_tuning.job.event"
    public let id: String
    public let createdAt: Int
    public let level: String
    public let message: String
    public let type: String
    public let data: RawJSON?

    public init(_ event: EventRecord) {
        id = "ftevent-\(event.jobID.dropFirst("ftjob-".count))-\(event.sequence)"
        createdAt = event.createdAt
        level = event.level
        message = event.message
        type = event.type
        data = event.data.map(RawJSON.init)
    }

    enum CodingKeys: String, CodingKey {
        case object, id, createdAt = "created_at", level, message, type, data
    }
}

extension JobRecord {
    /// The id of the model a successful job registers: `ft:<base>:<suffix>:<job-id>`, named after
    /// the root base model when fine-tuning a fine-tuned model.
    public var resultModelID: String {
        let root = model.hasPrefix("ft:") ? String(model.split(separator: ":")[1]) : ModelKey.name(of: model)
        return "ft:\(root):\(suffix ?? "preftune"):\(id)"
    }
}
