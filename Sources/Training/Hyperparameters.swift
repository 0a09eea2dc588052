import Diffusion
import Foundation
import JSON
import Numerics

public struct HyperparameterError: Error, CustomStringConvertible, Equatable {
    /// The offending key, e.g. "learning_rate".
    public let param: String
    public let message: String
    /// Each value is allowed, but not together with another (the API answers 422, not 400).
    public var isConflict = false
    /// The key is not one of the method's (a fork's keys must fit its parent's method: 422 there).
    public var isUnknownKey = false
    public var description: String { message }

    public init(param: String, message: String, isConflict: Bool = false) {
        self.param = param
        self.message = message
        self.isConflict = isConflict
    }
}

/// A job's training settings with every default resolved. Keys are the API's
/// snake_case names; each method accepts the common keys plus its own.
public struct Hyperparameters: Equatable, Sendable, Codable {
    // Common.
    /// Optimizer steps to run; from `n_epochs` when only that is given.
    public var nSteps: Int?
    public var nEpochs: Int?
    public var batchSize = 16
    public var learningRate = 1e-4
    public var lrScheduler = LearningRateSchedule.constant
    public var warmupSteps = 0
    public var weightDecay = 1e-2
    public var maxGradNorm = 1.0
    public var gradientAccumulationSteps = 1
    /// EMA of θ; checkpoints publish the EMA weights when set.
    public var emaDecay: Double?
    public var checkpointEvery = 100
    public var logEvery = 10
    /// Checkpoints kept on disk: the newest N (older ones are deleted as new ones are written).
    /// Optional only so that jobs stored before it existed still decode; resolved to 5.
    public var keepCheckpoints: Int?
    /// Steps between evaluations on the validation set (checkpoints are evaluated too); nil: at checkpoints only.
    public var evalEvery: Int?
    public var promptDropout = 0.0
    // dpo, kto, rpo.
    public var beta: Double?
    public var lambdaDesirable: Double?
    public var lambdaUndesirable: Double?
    public var tau: Double?
    // dro.
    public var margin: Double?
    public var policySampler: SamplerKind?
    public var policySteps: Int?
    public var policyGuidance: Double?
    public var perturbTimesteps: Bool?
    public var bufferSize: Int?
    public var bufferBatchSize: Int?
    public var policySyncEvery: Int?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case nSteps = "n_steps", nEpochs = "n_epochs", batchSize = "batch_size", learningRate = "learning_rate"
        case lrScheduler = "lr_scheduler", warmupSteps = "warmup_steps", weightDecay = "weight_decay"
        case maxGradNorm = "max_grad_norm", gradientAccumulationSteps = "gradient_accumulation_steps"
        case emaDecay = "ema_decay", checkpointEvery = "checkpoint_every", logEvery = "log_every", keepCheckpoints = "keep_checkpoints"
        case evalEvery = "eval_every"
        case promptDropout = "prompt_dropout", beta, lambdaDesirable = "lambda_desirable"
        case lambdaUndesirable = "lambda_undesirable", tau, margin, policySampler = "policy_sampler"
        case policySteps = "policy_steps", policyGuidance = "policy_guidance", perturbTimesteps = "perturb_timesteps"
        case bufferSize = "buffer_size", bufferBatchSize = "buffer_batch_size", policySyncEvery = "policy_sync_every"
    }

    static let commonKeys: Set<CodingKeys> = [
        .nSteps, .nEpochs, .batchSize, .learningRate, .lrScheduler, .warmupSteps, .weightDecay, .maxGradNorm,
        .gradientAccumulationSteps, .emaDecay, .checkpointEvery, .logEvery, .keepCheckpoints, .evalEvery, .promptDropout,
    ]

    static func methodKeys(_ method: TrainingMethod) -> Set<CodingKeys> {
        switch method {
        case .sft: []
        case .dpo: [.beta]
        case .kto: [.beta, .lambdaDesirable, .lambdaUndesirable]
        case .rpo: [.beta, .tau]
        case .dro: [.margin, .policySampler, .policySteps, .policyGuidance, .perturbTimesteps, .bufferSize,
                    .bufferBatchSize, .policySyncEvery]
        }
    }

    public init() {}

    /// Validates `values` (the request's `hyperparameters` object) for `method` and
    /// fills in the defaults. Unknown keys and out-of-range values name the key.
    ///
    /// For clients of OpenAI's API: any key may be `"auto"`, which means the method's default
    /// (as absent does), and `learning_rate_multiplier` sets the learning rate to that multiple
    /// of the method's default (`learning_rate` and it together are a conflict).
    public static func resolve(_ given: JSONObject, method: TrainingMethod, datasetSize: Int? = nil) throws -> Hyperparameters {
        // Pairs that exclude each other do so whatever their values, "auto" included.
        if given.present(CodingKeys.nSteps.rawValue) != nil && given.present(CodingKeys.nEpochs.rawValue) != nil {
            throw HyperparameterError(param: "n_steps", message: "give n_steps or n_epochs, not both")
        }
        if given.present(multiplierKey) != nil && given.present(CodingKeys.learningRate.rawValue) != nil {
            throw HyperparameterError(param: multiplierKey, message: "give learning_rate or learning_rate_multiplier, not both")
        }
        var values = given
        for key in given.keys where given[key]?.string == "auto" { values[key] = nil }
        var multiplier: Double?
        if let value = values.present(multiplierKey) {
            guard let x = value.number, x.isFinite, x > 0, x <= 1e6 else {
                throw HyperparameterError(param: multiplierKey, message: "\(multiplierKey) must be a number in (0, 1000000]")
            }
            multiplier = x
        }
        values[multiplierKey] = nil
        var h = try resolveExact(values, method: method, datasetSize: datasetSize)
        if let multiplier { h.learningRate = defaultLearningRate(method, batchSize: h.batchSize, accumulation: h.gradientAccumulationSteps) * multiplier }
        return h
    }

    /// OpenAI's relative learning rate, accepted by `resolve` and stored as the learning rate it gives.
    public static let multiplierKey = "learning_rate_multiplier"

    static func resolveExact(_ values: JSONObject, method: TrainingMethod, datasetSize: Int?) throws -> Hyperparameters {
        let allowed = commonKeys.union(methodKeys(method))
        for key in values.keys.sorted() {
            guard let codingKey = CodingKeys(rawValue: key), allowed.contains(codingKey) else {
                let valid = allowed.map(\.rawValue).sorted().joined(separator: ", ")
                var error = HyperparameterError(param: key, message: "unknown hyperparameter '\(key)' for method \(method.rawValue); valid keys: \(valid)")
                error.isUnknownKey = true
                throw error
            }
        }
        func integer(_ key: CodingKeys, _ range: ClosedRange<Int>) throws -> Int? {
            guard let value = values.present(key.rawValue) else { return nil }
            guard let exact = value.exactInteger else {
                throw HyperparameterError(param: key.rawValue, message: "\(key.rawValue) must be an integer in \(range.lowerBound)...\(range.upperBound)")
            }
            guard range.contains(exact) else {
                throw HyperparameterError(param: key.rawValue, message: "\(key.rawValue) must be in \(range.lowerBound)...\(range.upperBound), got \(exact)")
            }
            return exact
        }
        func real(_ key: CodingKeys, _ range: ClosedRange<Double>, open: Bool = false) throws -> Double? {
            guard let value = values.present(key.rawValue) else { return nil }
            guard let x = value.number, x.isFinite else {
                throw HyperparameterError(param: key.rawValue, message: "\(key.rawValue) must be a number")
            }
            guard range.contains(x), !(open && x == range.lowerBound) else {
                let interval = open ? "(\(range.lowerBound), \(range.upperBound)]" : "[\(range.lowerBound), \(range.upperBound)]"
                throw HyperparameterError(param: key.rawValue, message: "\(key.rawValue) must be in \(interval), got \(x)")
            }
            return x
        }
        func text<T: RawRepresentable>(_ key: CodingKeys, _ type: T.Type) throws -> T? where T.RawValue == String {
            guard let value = values.present(key.rawValue) else { return nil }
            guard let string = value.string, let parsed = T(rawValue: string) else {
                throw HyperparameterError(param: key.rawValue, message: "\(key.rawValue) must be one of the supported names, got \(value.text)")
            }
            return parsed
        }

        var h = Hyperparameters()
        h.nSteps = try integer(.nSteps, 1...maximumSteps)
        h.nEpochs = try integer(.nEpochs, 1...100_000)
        if h.nSteps != nil && h.nEpochs != nil {
            throw HyperparameterError(param: "n_steps", message: "give n_steps or n_epochs, not both")
        }
        h.batchSize = try integer(.batchSize, 1...4096) ?? h.batchSize
        h.gradientAccumulationSteps = try integer(.gradientAccumulationSteps, 1...1024) ?? 1
        h.learningRate = try real(.learningRate, 0...1e30, open: true)
            ?? defaultLearningRate(method, batchSize: h.batchSize, accumulation: h.gradientAccumulationSteps)
        // null is absent, for every key (as the API's schema says each is nullable).
        if let schedule = values.present(CodingKeys.lrScheduler.rawValue) {
            guard let name = schedule.string, let parsed = LearningRateSchedule(rawValue: name) else {
                throw HyperparameterError(param: "lr_scheduler", message: "lr_scheduler must be one of \(LearningRateSchedule.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            h.lrScheduler = parsed
        }
        h.warmupSteps = try integer(.warmupSteps, 0...10_000_000) ?? 0
        h.weightDecay = try real(.weightDecay, 0...1) ?? h.weightDecay
        h.maxGradNorm = try real(.maxGradNorm, 0...1e6, open: true) ?? h.maxGradNorm
        // 0 turns EMA off (dro has it on by default, as the official code).
        h.emaDecay = try real(.emaDecay, 0...0.999_999) ?? Defaults.emaDecay(method)
        if h.emaDecay == 0 { h.emaDecay = nil }
        h.checkpointEvery = try integer(.checkpointEvery, 1...10_000_000) ?? h.checkpointEvery
        h.logEvery = try integer(.logEvery, 1...10_000_000) ?? h.logEvery
        h.keepCheckpoints = try integer(.keepCheckpoints, 1...10_000) ?? 5
        h.evalEvery = try integer(.evalEvery, 1...10_000_000)
        h.promptDropout = try real(.promptDropout, 0...1) ?? (method == .dro ? 0.2 : 0)
        switch method {
        case .sft:
            break
        case .dpo, .rpo:
            h.beta = try real(.beta, 0...1e7, open: true) ?? Defaults.beta(method)
            if method == .rpo { h.tau = try real(.tau, 0...1e3, open: true) ?? Defaults.tau }
        case .kto:
            h.beta = try real(.beta, 0...1e7, open: true) ?? Defaults.beta(method)
            h.lambdaDesirable = try real(.lambdaDesirable, 0...1e3) ?? Defaults.lambda
            h.lambdaUndesirable = try real(.lambdaUndesirable, 0...1e3) ?? Defaults.lambda
        case .dro:
            h.margin = try real(.margin, 0...1e6) ?? Defaults.margin
            h.policySampler = try text(.policySampler, SamplerKind.self) ?? .dpmpp2m
            h.policySteps = try integer(.policySteps, 1...1000) ?? 20
            h.policyGuidance = try real(.policyGuidance, 0...100) ?? 1
            if let value = values.present(CodingKeys.perturbTimesteps.rawValue) {
                guard let flag = value.bool else {
                    throw HyperparameterError(param: "perturb_timesteps", message: "perturb_timesteps must be true or false")
                }
                h.perturbTimesteps = flag
            } else {
                h.perturbTimesteps = true
            }
            h.bufferSize = try integer(.bufferSize, 1...1_000_000) ?? h.batchSize
            h.bufferBatchSize = try integer(.bufferBatchSize, 1...4096) ?? h.batchSize
            h.policySyncEvery = try integer(.policySyncEvery, 1...1_000_000) ?? 1
            if h.bufferBatchSize! > h.bufferSize! {
                throw HyperparameterError(param: "buffer_batch_size", message: "buffer_batch_size (\(h.bufferBatchSize!)) cannot exceed buffer_size (\(h.bufferSize!))",
                                          isConflict: true)
            }
        }
        if h.nSteps == nil && h.nEpochs == nil { h.nSteps = 1000 }
        if let datasetSize { h.nSteps = try h.checkedTotalSteps(datasetSize: datasetSize) }
        return h
    }

    /// Each method's own: dpo's is the official code's 1e-8 per example of the effective batch
    /// (its `--scale_lr`), dro's the official code's 1e-4; docs/training.md compares them all.
    static func defaultLearningRate(_ method: TrainingMethod, batchSize: Int, accumulation: Int) -> Double {
        switch method {
        case .sft, .dro: 1e-4
        case .dpo: 1e-8 * Double(batchSize * accumulation)
        case .kto, .rpo: 1e-5
        }
    }

    /// The objectives' own defaults (SPEC §5), written here only: `resolve` fills them in, and
    /// `objective(for:)` falls back on them for settings stored without them.
    public enum Defaults {
        public static func beta(_ method: TrainingMethod) -> Double { method == .kto ? 1000 : 5000 }
        public static let tau = 0.5, lambda = 1.0, margin = 1e-3
        /// dro trains with EMA (diffusers' EMAModel at its default decay), as the official code does.
        public static func emaDecay(_ method: TrainingMethod) -> Double? { method == .dro ? 0.9999 : nil }
    }

    /// The objective these settings train `method` with.
    public func objective(for method: TrainingMethod) -> any Objective {
        switch method {
        case .sft: SFTObjective()
        case .dpo: DPOObjective(beta: beta ?? Defaults.beta(.dpo))
        case .kto: KTOObjective(beta: beta ?? Defaults.beta(.kto), lambdaDesirable: lambdaDesirable ?? Defaults.lambda,
                                lambdaUndesirable: lambdaUndesirable ?? Defaults.lambda)
        case .dro: DROObjective(margin: margin ?? Defaults.margin)
        case .rpo: RPOObjective(beta: beta ?? Defaults.beta(.rpo), temperature: tau ?? Defaults.tau)
        }
    }

    /// The most optimizer steps a job may run, whether given as n_steps or implied by n_epochs.
    public static let maximumSteps = 10_000_000

    /// Optimizer steps for a dataset of `datasetSize` examples (saturating; see `checkedTotalSteps`).
    public func totalSteps(datasetSize: Int) -> Int {
        if let nSteps { return nSteps }
        let perStep = batchSize * gradientAccumulationSteps
        let examples = (nEpochs ?? 1).multipliedChecked(by: datasetSize) ?? Int.max
        return max(1, examples / perStep)
    }

    /// The steps for this dataset, or an error when n_epochs implies more than `maximumSteps`.
    public func checkedTotalSteps(datasetSize: Int) throws -> Int {
        let steps = totalSteps(datasetSize: datasetSize)
        guard steps <= Self.maximumSteps else {
            throw HyperparameterError(param: "n_epochs",
                                      message: "n_epochs \(nEpochs ?? 1) over \(datasetSize) examples makes \(steps) steps, over the limit of \(Self.maximumSteps); lower n_epochs or give n_steps")
        }
        return steps
    }
}
