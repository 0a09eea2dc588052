import Diffusion
import Foundation
import Numerics

/// Scores samples: a reward model run in-process (`RewardMLP`), or a grader service the job
/// names (the service's HTTP grader). One score per sample, higher is better.
public protocol RewardScorer: AnyObject {
    /// One sample per label, each of the model's sample size; each label is the row's prompt
    /// (text models), condition vector (vector models) or none; `conditions` are the rows as the model took them.
    /// A scorer that waits (a grader over the network) gives up when `shouldStop` says so.
    func scores(samples: [[Float]], shape: [Int], conditions: Conditions, labels: [GradingLabel], step: Int,
                shouldStop: () -> Bool) throws -> [Double]
    /// For logs and events: "reward model file-…", "grader https://…".
    var name: String { get }
}

/// What a graded sample was drawn for.
public enum GradingLabel: Equatable, Sendable {
    case prompt(String)
    case vector([Float])
    case none
}

/// The fixed draws a job's checkpoints are graded on: `samplesPerPrompt` samples of each
/// prompt, prompt-major, from the noise of `seed` — exactly the samples `POST /v1/samples`
/// returns for the checkpoint with the same prompts, `n`, sampler, steps, guidance and seed.
public struct GradingPlan: Sendable, Equatable {
    public var labels: [GradingLabel]
    public var samplesPerPrompt: Int
    public var sampler: SamplerKind
    public var steps: Int
    public var guidance: Float
    public var seed: UInt64

    public init(labels: [GradingLabel], samplesPerPrompt: Int, sampler: SamplerKind = .dpmpp2m, steps: Int = 20, guidance: Float = 1,
                seed: UInt64 = 0) {
        self.labels = labels
        self.samplesPerPrompt = samplesPerPrompt
        self.sampler = sampler
        self.steps = steps
        self.guidance = guidance
        self.seed = seed
    }

    /// The rows drawn: each label `samplesPerPrompt` times.
    public var rows: [GradingLabel] { labels.flatMap { Array(repeating: $0, count: samplesPerPrompt) } }

    /// The rows' conditions in the form `config` takes.
    public func conditions(config: ModelConfig) -> Conditions {
        let rows = rows
        switch config.condition {
        case .text:
            return Conditions.prompts(rows.map { if case let .prompt(text) = $0 { text } else { "" } }, config: config)
        case let .vector(dim):
            var conditions = Conditions.null(count: rows.count, config: config)
            for (row, label) in rows.enumerated() {
                guard case let .vector(values) = label, values.count == dim else { continue }
                for i in 0..<dim { conditions.vectors[row * dim + i] = values[i] }
                conditions.isNull[row] = 0
            }
            return conditions
        case .none:
            return Conditions.null(count: rows.count, config: config)
        }
    }

    /// The samples of `weights` for this plan, one per row: drawn as the sample endpoint draws them.
    public func samples(config: ModelConfig, weights: FloatBuffer, shouldStop: () -> Bool = { false }) -> [[Float]]? {
        samples(config: config, weights: weights, conditions: conditions(config: config), shouldStop: shouldStop)
    }

    /// As above, with the rows' conditions made already (a grading makes them once per job).
    func samples(config: ModelConfig, weights: FloatBuffer, conditions: Conditions, shouldStop: () -> Bool) -> [[Float]]? {
        SampleDrawing.denoise(SampleDrawing.initialNoise(seed: seed, count: conditions.count, config: config),
                                     model: ModelFile(config: config, parameters: weights), conditions: conditions, sampler: sampler,
                                     steps: steps, guidance: guidance, seed: seed, shouldStop: shouldStop)
    }
}

/// Grades checkpoints: the plan's samples from each checkpoint's weights, scored; the base
/// model's samples are scored once, for the win rate. Metrics: `reward_mean` (mean score),
/// `reward_win_rate` (fraction of draws where the checkpoint's sample outscores the base
/// model's from the same noise; ties count half) and `reward_base_mean`.
public final class CheckpointGrading {
    public let plan: GradingPlan
    public let scorer: any RewardScorer
    let config: ModelConfig
    /// The plan's rows and their conditions: the same at every checkpoint.
    let rows: [GradingLabel]
    let conditions: Conditions
    private var baseScores: [Double]?

    public init(plan: GradingPlan, scorer: any RewardScorer, config: ModelConfig) {
        self.plan = plan
        self.scorer = scorer
        self.config = config
        rows = plan.rows
        conditions = plan.conditions(config: config)
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    func score(_ weights: FloatBuffer, step: Int, shouldStop: () -> Bool) throws -> [Double] {
        guard let samples = plan.samples(config: config, weights: weights, conditions: conditions, shouldStop: shouldStop) else {
            throw Failure(description: "stopped: the job is pausing or ending")
        }
        let scores = try scorer.scores(samples: samples, shape: config.sampleShape, conditions: conditions, labels: rows, step: step,
                                       shouldStop: shouldStop)
        guard scores.count == rows.count, scores.allSatisfy(\.isFinite) else {
            throw Failure(description: "\(scorer.name) returned \(scores.count) scores for \(rows.count) samples\(scores.allSatisfy(\.isFinite) ? "" : ", not all finite")")
        }
        return scores
    }

    /// The metrics of `weights` at `step`; throws when the scorer fails (the job goes on without
    /// them) or `shouldStop` ends it (a pause or cancel does not wait for a slow grader).
    public func grade(weights: FloatBuffer, base: FloatBuffer, step: Int, shouldStop: () -> Bool = { false }) throws -> [String: Double] {
        let reference = try baseScores ?? score(base, step: 0, shouldStop: shouldStop)
        baseScores = reference
        let scores = try score(weights, step: step, shouldStop: shouldStop)
        let wins = zip(scores, reference).reduce(0.0) { $0 + ($1.0 > $1.1 ? 1 : $1.0 == $1.1 ? 0.5 : 0) }
        let n = Double(scores.count)
        return ["reward_mean": scores.reduce(0, +) / n, "reward_win_rate": wins / n, "reward_base_mean": reference.reduce(0, +) / n]
    }
}
