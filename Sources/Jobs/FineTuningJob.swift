import JSON

/// A job as the API shows it, in OpenAI's shape (`fine_tuning.job`), plus `progress`
/// `estimated_finish`, and the queue's `queue_position` and `estimated_start`. Absent values are null; JSON columns are embedded as stored.
/// Written member by member (`JSONMembers`): every poll of a job writes one.
public struct FineTuningJob: JSONMembers, Sendable {
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
    public let priority: Int
    public let queuePosition: Int?
    public let estimatedStart: Int?
    public let maxRetries: Int
    public let retries: Int
    public let maxDuration: Int?
    public let evaluation: EvaluationSettings?
    public let bestCheckpoint: BestCheckpoint?
    public let parentJob: String?
    public let fromStep: Int?
    /// "fp32" or "bf16": the arithmetic of the job's matrix products.
    public let precision: String
    public let organizationID: String
    public let resultFiles: [String] = []
    public let trainedTokens: Int? = nil
    public let integrations: [JSONValue] = []

    public struct Progress: JSONMembers, Sendable {
        public let step: Int
        public let totalSteps: Int?
        public let samplesPerS: Double?

        public func writeMembers(to object: inout JSONObjectWriter) {
            object.member("step", step)
            object.member("total_steps", totalSteps)
            object.member("samples_per_s", samplesPerS)
        }
    }

    /// The best checkpoint so far by the job's selection metric.
    public struct BestCheckpoint: JSONMembers, Sendable {
        public let id: String
        public let stepNumber: Int
        public let metric: String
        public let value: Double
        public let fineTunedModelCheckpoint: String

        public func writeMembers(to object: inout JSONObjectWriter) {
            object.member("id", id)
            object.member("step_number", stepNumber)
            object.member("metric", metric)
            object.member("value", value)
            object.member("fine_tuned_model_checkpoint", fineTunedModelCheckpoint)
        }
    }

    public init(_ job: JobRecord) {
        id = job.id
        model = job.startCheckpoint ?? ModelKey.name(of: job.model)
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
        priority = job.priority
        queuePosition = job.queuePosition
        estimatedStart = job.estimatedStart
        maxRetries = job.maxRetries
        retries = job.retries
        maxDuration = job.maxDuration
        evaluation = job.evaluation.flatMap(EvaluationSettings.init(json:))
        let selection = evaluation?.selection(hasValidation: job.validationFile != nil)
        if let step = job.bestStep, let value = job.bestValue, let selection {
            bestCheckpoint = BestCheckpoint(id: FineTuningCheckpoint.id(job: job.id, step: step), stepNumber: step, metric: selection.metric,
                                            value: value, fineTunedModelCheckpoint: FineTuningCheckpoint.modelID(job: job, step: step))
        } else {
            bestCheckpoint = nil
        }
        parentJob = job.parentJob
        fromStep = job.fromStep
        precision = job.precision
    }

    public func writeMembers(to object: inout JSONObjectWriter) {
        object.member("id", id)
        object.member("object", self.object)
        object.member("model", model)
        object.member("created_at", createdAt)
        object.member("finished_at", finishedAt)
        object.member("status", status.rawValue)
        object.member("training_file", trainingFile)
        object.member("validation_file", validationFile)
        object.member("method", method)
        object.member("hyperparameters", hyperparameters)
        object.member("seed", seed)
        object.member("user_provided_suffix", userProvidedSuffix)
        object.member("metadata", metadata)
        object.member("fine_tuned_model", fineTunedModel)
        object.member("error", error)
        object.member("estimated_finish", estimatedFinish)
        object.member("progress", progress)
        object.member("priority", priority)
        object.member("queue_position", queuePosition)
        object.member("estimated_start", estimatedStart)
        object.member("max_retries", maxRetries)
        object.member("retries", retries)
        object.member("max_duration", maxDuration)
        // Unset members left out, as stored (a reward_model grader has no url, not a null one).
        object.member("early_stopping", evaluation?.earlyStopping.map { RawJSON(text: JSONBodyEncoder.string($0, nilMembers: .omitted)) })
        object.member("grader", evaluation?.grader.map { RawJSON(text: JSONBodyEncoder.string($0, nilMembers: .omitted)) })
        object.member("result", (evaluation?.result ?? .last).rawValue)
        object.member("best_checkpoint", bestCheckpoint)
        object.member("parent_job", parentJob)
        object.member("from_step", fromStep)
        object.member("precision", precision)
        object.member("organization_id", organizationID)
        object.member("result_files", encoding: resultFiles)
        object.member("trained_tokens", trainedTokens)
        object.member("integrations", encoding: integrations)
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
