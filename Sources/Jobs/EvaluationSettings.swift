import Diffusion
import Foundation
import JSON
import Training

/// How a job knows which checkpoint is best: `early_stopping`, `grader` and `result`, as
/// created and as stored (JSON in the job's `evaluation`), in the API's snake_case.
public struct EvaluationSettings: Codable, Equatable, Sendable {
    public var earlyStopping: EarlyStopping?
    public var grader: GraderSettings?
    public var result: ResultChoice

    public init(earlyStopping: EarlyStopping? = nil, grader: GraderSettings? = nil, result: ResultChoice = .last) {
        self.earlyStopping = earlyStopping
        self.grader = grader
        self.result = result
    }

    enum CodingKeys: String, CodingKey { case earlyStopping = "early_stopping", grader, result }

    /// The metric the best checkpoint is chosen by: early stopping's, else the grader's mean
    /// reward, else the validation loss; nil when the job measures none.
    public func selection(hasValidation: Bool) -> EarlyStopping? {
        if let earlyStopping { return earlyStopping }
        if grader != nil { return EarlyStopping(metric: "reward_mean", mode: .max, patience: nil) }
        if hasValidation { return EarlyStopping(metric: "val_loss", mode: .min, patience: nil) }
        return nil
    }

    public var json: String { JSONBodyEncoder.string(self, nilMembers: .omitted) }

    public init?(json: String) {
        guard let decoded = try? JSONDecoder().decode(EvaluationSettings.self, from: Data(json.utf8)) else { return nil }
        self = decoded
    }

    /// Every metric some job records at its evaluations.
    public static let allSelectableMetrics: [String] = {
        var names: [String] = []
        for method in TrainingMethod.allCases {
            for name in selectableMetrics(method: method, hasValidation: true, hasGrader: true) where !names.contains(name) { names.append(name) }
        }
        return names
    }()

    /// The metrics a job of `method` records at its evaluations, which early stopping may name.
    public static func selectableMetrics(method: TrainingMethod, hasValidation: Bool, hasGrader: Bool) -> [String] {
        var names: [String] = []
        if hasValidation {
            let statistics: [String] = switch method {
            case .sft: []
            case .dpo, .rpo: ["implicit_acc", "reward_margin"]
            case .kto: ["desirable_loss", "undesirable_loss", "desirable_gain", "undesirable_gain", "reference_point"]
            case .dro: ["active", "diff", "expert_gain", "policy_gain"]
            }
            names += (["loss"] + statistics).map { "val_\($0)" }
        }
        if hasGrader { names += ["reward_mean", "reward_win_rate"] }
        return names
    }
}

/// A job's grader: a reward model the project uploaded (`reward_model`, run in-process), or an
/// HTTP endpoint that scores samples (`http`), and the fixed draws each checkpoint is graded on.
public struct GraderSettings: Codable, Equatable, Sendable {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        case rewardModel = "reward_model"
        case http
    }

    public var type: Kind
    /// reward_model: the uploaded safetensors file.
    public var file: String?
    /// http: where samples are POSTed.
    public var url: String?
    public var timeoutSeconds: Double?
    public var maxAttempts: Int?
    /// What is sampled: prompts (text models) or condition vectors (vector models); nil: the
    /// first 8 distinct prompts (or rows) of the validation file, else of the training file.
    public var prompts: [String]?
    public var conditions: [[Double]?]?
    public var samplesPerPrompt: Int
    public var sampler: SamplerKind
    public var steps: Int
    public var guidanceScale: Double
    public var seed: Int

    public init(type: Kind, file: String? = nil, url: String? = nil) {
        self.type = type
        self.file = file
        self.url = url
        samplesPerPrompt = 4
        sampler = .dpmpp2m
        steps = 20
        guidanceScale = 1
        seed = 0
    }

    enum CodingKeys: String, CodingKey {
        case type, file, url, timeoutSeconds = "timeout_seconds", maxAttempts = "max_attempts", prompts, conditions
        case samplesPerPrompt = "samples_per_prompt", sampler, steps, guidanceScale = "guidance_scale", seed
    }

    /// Rows a grading may draw (labels × samples_per_prompt), and labels taken from a dataset by default.
    public static let maximumRows = 256, defaultLabels = 8

    /// The samples one grading draws.
    public var rows: Int { (prompts?.count ?? conditions?.count ?? Self.defaultLabels) * samplesPerPrompt }

    /// The plan for these settings, with `defaultLabels` when none were given.
    public func plan(defaultLabels: [GradingLabel]) -> GradingPlan {
        let labels: [GradingLabel] = prompts.map { $0.map(GradingLabel.prompt) }
            ?? conditions.map { $0.map { $0.map { .vector($0.map(Float.init)) } ?? .none } }
            ?? defaultLabels
        return GradingPlan(labels: labels, samplesPerPrompt: samplesPerPrompt, sampler: sampler, steps: steps, guidance: Float(guidanceScale),
                           seed: UInt64(seed))
    }
}
