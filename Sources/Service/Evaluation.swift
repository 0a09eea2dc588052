import Diffusion
import Foundation
import JSON
import Jobs
import Store
import Training

/// A job's `early_stopping`, `grader` and `result` as a request gives them: each member
/// checked on its own here, and against the job (its method, validation file and model) by
/// `check`, before anything is stored.
enum EvaluationRequest {
    struct EarlyStoppingBody: Decodable {
        var value: EarlyStopping

        enum CodingKeys: String, CodingKey, CaseIterable { case metric, mode, patience, minDelta = "min_delta" }

        init(from decoder: any Decoder) throws {
            let body = try decoder.container(keyedBy: CodingKeys.self)
            guard let metric = try body.decodeIfPresent(String.self, forKey: .metric, explaining: "early_stopping.metric must be a metric name"),
                  !metric.isEmpty else {
                throw body.mistake(.metric, "early_stopping.metric is required, e.g. \"val_loss\" or \"reward_mean\"")
            }
            let modes = EarlyStopping.Mode.allCases.map(\.rawValue).joined(separator: " or ")
            let mode = try body.decodeIfPresent(EarlyStopping.Mode.self, forKey: .mode, explaining: "early_stopping.mode must be \(modes)")
            let patience = try body.decodeIfPresent(Int.self, forKey: .patience, in: 1...10_000)
            let deltaRule = "early_stopping.min_delta must be a number ≥ 0"
            let minDelta = try body.decodeIfPresent(Double.self, forKey: .minDelta, explaining: deltaRule) ?? 0
            guard minDelta.isFinite, minDelta >= 0 else { throw body.mistake(.minDelta, deltaRule) }
            value = EarlyStopping(metric: metric, mode: mode ?? EarlyStopping.defaultMode(for: metric), patience: patience, minDelta: minDelta)
        }
    }

    struct GraderBody: Decodable {
        var value: GraderSettings

        enum CodingKeys: String, CodingKey, CaseIterable {
            case type, file, url, timeoutSeconds = "timeout_seconds", maxAttempts = "max_attempts", prompts, conditions
            case samplesPerPrompt = "samples_per_prompt", sampler, steps, guidanceScale = "guidance_scale", seed
        }

        init(from decoder: any Decoder) throws {
            let body = try decoder.container(keyedBy: CodingKeys.self)
            let kinds = GraderSettings.Kind.allCases.map(\.rawValue).joined(separator: " or ")
            guard let type = try body.decodeIfPresent(GraderSettings.Kind.self, forKey: .type, explaining: "grader.type must be \(kinds)") else {
                throw body.mistake(.type, "grader.type is required: \(kinds)")
            }
            var grader = GraderSettings(type: type)
            switch type {
            case .rewardModel:
                guard let file = try body.decodeIfPresent(String.self, forKey: .file, explaining: "grader.file must be a file id") else {
                    throw body.mistake(.file, "a reward_model grader needs file: the id of an uploaded reward model (safetensors)")
                }
                for key in [CodingKeys.url, .timeoutSeconds, .maxAttempts] where try !body.isAbsent(key) {
                    throw body.mistake(key, "\(body.path(key)) is for http graders only")
                }
                grader.file = file
            case .http:
                guard let url = try body.decodeIfPresent(String.self, forKey: .url, explaining: "grader.url must be an http(s) URL") else {
                    throw body.mistake(.url, "an http grader needs url: where samples are POSTed")
                }
                if try !body.isAbsent(.file) { throw body.mistake(.file, "grader.file is for reward_model graders only") }
                grader.url = url
                let timeoutRule = "grader.timeout_seconds must be a number in [1, 120]"
                let timeout = try body.decodeIfPresent(Double.self, forKey: .timeoutSeconds, explaining: timeoutRule) ?? 30
                guard (1...120).contains(timeout) else { throw body.mistake(.timeoutSeconds, timeoutRule) }
                grader.timeoutSeconds = timeout
                grader.maxAttempts = try body.decodeIfPresent(Int.self, forKey: .maxAttempts, in: 1...5) ?? 3
            }
            let promptsRule = "grader.prompts must be 1-64 strings of at most 1000 characters"
            grader.prompts = try body.decodeIfPresent([String].self, forKey: .prompts, explaining: promptsRule)
            if let prompts = grader.prompts, !(1...64).contains(prompts.count) || prompts.contains(where: { $0.count > 1000 }) {
                throw body.mistake(.prompts, promptsRule)
            }
            let conditionsRule = "grader.conditions must be 1-64 condition vectors (arrays of numbers, or null)"
            grader.conditions = try body.decodeIfPresent([[Double]?].self, forKey: .conditions, explaining: conditionsRule)
            if let conditions = grader.conditions, !(1...64).contains(conditions.count) { throw body.mistake(.conditions, conditionsRule) }
            if grader.prompts != nil && grader.conditions != nil { throw body.mistake(.conditions, "give grader.prompts or grader.conditions, not both") }
            grader.samplesPerPrompt = try body.decodeIfPresent(Int.self, forKey: .samplesPerPrompt, in: 1...64) ?? 4
            grader.sampler = try body.decodeIfPresent(SamplerKind.self, forKey: .sampler,
                                                      explaining: "grader.sampler must be one of \(SamplerKind.allCases.map(\.rawValue).joined(separator: ", "))") ?? .dpmpp2m
            grader.steps = try body.decodeIfPresent(Int.self, forKey: .steps, in: 1...200) ?? 20
            let guidanceRule = "grader.guidance_scale must be a number in [0, 100]"
            grader.guidanceScale = try body.decodeIfPresent(Double.self, forKey: .guidanceScale, explaining: guidanceRule) ?? 1
            guard (0...100).contains(grader.guidanceScale) else { throw body.mistake(.guidanceScale, guidanceRule) }
            grader.seed = try body.decodeIfPresent(Int.self, forKey: .seed, in: 0...Int(Int32.max)) ?? 0
            let labels = grader.prompts?.count ?? grader.conditions?.count ?? GraderSettings.defaultLabels
            value = grader
            // Each is allowed on its own, not together: 422, as other conflicts.
            guard labels * grader.samplesPerPrompt <= GraderSettings.maximumRows else {
                throw APIError(status: 422, message: "a grading draws at most \(GraderSettings.maximumRows) samples (prompts × samples_per_prompt); this one would draw \(labels * grader.samplesPerPrompt)",
                               param: "grader.samples_per_prompt", code: "conflicting_grader_settings")
            }
        }
    }

    /// The settings checked against the job: early stopping names a metric the job records, the
    /// grader fits the model (its reward model read and checked, its URL allowed), and a `best`
    /// result has something to be best by. Nil when none of the three was given.
    static func check(earlyStopping: EarlyStopping?, grader: GraderSettings?, result: ResultChoice?, method: TrainingMethod,
                      hasValidation: Bool, config: ModelConfig, project: String, _ resources: Application.Resources) async throws -> EvaluationSettings? {
        guard earlyStopping != nil || grader != nil || result != nil else { return nil }
        let settings = EvaluationSettings(earlyStopping: earlyStopping, grader: grader, result: result ?? (earlyStopping != nil ? .best : .last))
        if let earlyStopping {
            // A name no job measures is a mistake (400); one this job does not measure does not fit it (422).
            guard EvaluationSettings.allSelectableMetrics.contains(earlyStopping.metric) else {
                throw APIError.invalid("early_stopping.metric must be one of \(EvaluationSettings.allSelectableMetrics.joined(separator: ", "))", param: "early_stopping.metric")
            }
            let names = EvaluationSettings.selectableMetrics(method: method, hasValidation: hasValidation, hasGrader: grader != nil)
            guard names.contains(earlyStopping.metric) else {
                let hint = names.isEmpty ? "this job measures none: give a validation_file or a grader" : "this job measures \(names.joined(separator: ", "))"
                throw APIError(status: 422, message: "early_stopping.metric \(earlyStopping.metric) is not measured by this job; \(hint)",
                               param: "early_stopping.metric", code: "does_not_fit_job")
            }
        }
        if settings.result == .best, settings.selection(hasValidation: hasValidation) == nil {
            throw APIError(status: 422, message: "result \"best\" needs something to be best by: early_stopping, a validation_file or a grader",
                           param: "result", code: "does_not_fit_job")
        }
        if let grader { try await checkGrader(grader, config: config, project: project, resources) }
        return settings
    }

    static func checkGrader(_ grader: GraderSettings, config: ModelConfig, project: String, _ resources: Application.Resources) async throws {
        switch config.condition {
        case .text where grader.conditions != nil:
            throw APIError(status: 422, message: "this model takes text: give grader.prompts", param: "grader.conditions", code: "does_not_fit_model")
        case let .vector(dim):
            if grader.prompts != nil {
                throw APIError(status: 422, message: "this model takes condition vectors: give grader.conditions", param: "grader.prompts", code: "does_not_fit_model")
            }
            if let conditions = grader.conditions, conditions.contains(where: { $0 != nil && ($0!.count != dim || !$0!.allSatisfy(\.isFinite)) }) {
                throw APIError(status: 422, message: "each grader condition must have \(dim) finite numbers", param: "grader.conditions", code: "does_not_fit_model")
            }
        case .none where grader.prompts != nil || grader.conditions != nil:
            throw APIError(status: 422, message: "this model is unconditional: give neither grader.prompts nor grader.conditions",
                           param: grader.prompts != nil ? "grader.prompts" : "grader.conditions", code: "does_not_fit_model")
        default:
            break
        }
        switch grader.type {
        case .rewardModel:
            let id = grader.file ?? ""
            guard try resources.files.file(id, project: project) != nil, resources.data.artifacts.exists(.upload(id)) else {
                throw APIError.notFound("file \(id)", param: "grader.file")
            }
            let path = resources.data.artifacts.localPath(.upload(id))
            let checked = try await resources.heavyWork.run { _ in
                Result { try RewardMLP(path: path, config: config, name: id) }.map { _ in () }
            }
            if case let .failure(error) = checked {
                throw APIError(status: 422, message: "grader.file \(id) is not a reward model for this job's model: \(error)", param: "grader.file",
                               code: "invalid_grader")
            }
        case .http:
            do { _ = try resources.webhooks.validate(grader.url ?? "", field: "grader.url") } catch {
                throw APIError.invalid("grader.url: \(error)", param: "grader.url")
            }
        }
    }
}
