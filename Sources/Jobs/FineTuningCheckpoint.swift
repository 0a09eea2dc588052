import JSON

/// A checkpoint as the API shows it (`fine_tuning.job.checkpoint`, OpenAI's shape), plus where
/// its weights and sample grid are served; also the data of a `fine_tuning.checkpoint.saved` webhook.
public struct FineTuningCheckpoint: Encodable, Sendable {
    public let object = "fine_tuning.job.checkpoint"
    public let id: String
    public let createdAt: Int
    public let stepNumber: Int
    public let metrics: RawJSON
    public let fineTuningJobID: String
    public let fineTunedModelCheckpoint: String
    public let contentURL: String
    public let sampleGridURL: String?

    public init(id: String, createdAt: Int, step: Int, metrics: String, job: JobRecord, hasSampleGrid: Bool) {
        self.id = id
        self.createdAt = createdAt
        stepNumber = step
        self.metrics = RawJSON(text: metrics)
        fineTuningJobID = job.id
        fineTunedModelCheckpoint = Self.modelID(job: job, step: step)
        contentURL = "/v1/fine_tuning/jobs/\(job.id)/checkpoints/\(id)/content"
        sampleGridURL = hasSampleGrid ? "/v1/fine_tuning/jobs/\(job.id)/checkpoints/\(id)/samples.png" : nil
    }

    /// A checkpoint's id: `ftckpt-<job hex>-<step>`.
    public static func id(job: String, step: Int) -> String { "ftckpt-\(job.dropFirst("ftjob-".count))-\(step)" }

    /// The model id a checkpoint is sampled and fine-tuned from: `ft:…:<job-id>:ckpt-step-N`.
    public static func modelID(job: JobRecord, step: Int) -> String { job.resultModelID + ":ckpt-step-\(step)" }

    enum CodingKeys: String, CodingKey {
        case object, id, createdAt = "created_at", stepNumber = "step_number", metrics, fineTuningJobID = "fine_tuning_job_id"
        case fineTunedModelCheckpoint = "fine_tuned_model_checkpoint", contentURL = "content_url", sampleGridURL = "sample_grid_url"
    }
}
