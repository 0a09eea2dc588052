import Diffusion
import Foundation
import JSON
import Numerics
import Training

/// Pretrains a base model on a `ShapeWorld` and fine-tunes it with any method,
/// through the real trainer, in a scratch directory.
public struct DemoPipeline {
    public let world: ShapeWorld
    public let config: ModelConfig
    public let seed: UInt64
    public let directory: String
    public let examples: Int

    public init(world: ShapeWorld, config: ModelConfig, seed: UInt64 = 7, examples: Int = 4000, directory: String? = nil) {
        self.world = world
        self.config = config
        self.seed = seed
        self.examples = examples
        self.directory = directory ?? FileManager.default.temporaryDirectory
            .appendingPathComponent("preftune-demo-\(UUID().uuidString)").path
    }

    /// The dataset a method trains on: the whole distribution for pretraining,
    /// experts for sft fine-tuning and dro, pairs for dpo and rpo, labels for kto.
    public func dataset(for method: TrainingMethod, pretraining: Bool = false) throws -> Dataset {
        let kind: ShapeWorld.Kind
        switch method {
        case .sft: kind = pretraining ? .pretrain : .expert
        case .dro: kind = .expert
        case .dpo, .rpo: kind = .pairs
        case .kto: kind = .labelled
        }
        let text = world.dataset(kind, count: examples, seed: seed)
        return try Dataset.parse(Data(text.utf8), method: method, config: config)
    }

    public func pretrain(steps: Int, batchSize: Int = 64, learningRate: Double = 2e-3, log: ((String) -> Void)? = nil) throws -> FloatBuffer {
        let base = ResMLP(config: config).initialParameters(seed: seed)
        return try train(.sft, from: base, data: dataset(for: .sft, pretraining: true), name: "pretrain", log: log, hyperparameters: [
            "n_steps": .init(steps), "batch_size": .init(batchSize), "learning_rate": .init(learningRate), "lr_scheduler": "cosine",
            "warmup_steps": .init(min(100, steps / 10)), "checkpoint_every": .init(steps), "log_every": .init(max(1, steps / 10)),
            // Unconditional rows teach the null condition, which classifier-free guidance needs.
            "prompt_dropout": 0.1,
        ])
    }

    /// A fine-tuning job from `base`; `seed` is the job's (data order, noise, rollouts), the pipeline's by default.
    public func fineTune(_ method: TrainingMethod, from base: FloatBuffer, hyperparameters: JSONObject, seed: UInt64? = nil,
                         precision: MathPrecision = .fp32, log: ((String) -> Void)? = nil) throws -> FloatBuffer {
        try train(method, from: base, data: dataset(for: method), name: "\(method.rawValue)-\(seed ?? self.seed)-\(precision.rawValue)",
                  log: log, hyperparameters: hyperparameters, seed: seed, precision: precision)
    }

    func train(_ method: TrainingMethod, from base: FloatBuffer, data: Dataset, name: String, log: ((String) -> Void)?,
               hyperparameters: JSONObject, seed: UInt64? = nil, precision: MathPrecision = .fp32) throws -> FloatBuffer {
        var job = TrainingJob(method: method, hyperparameters: try Hyperparameters.resolve(hyperparameters, method: method),
                              seed: seed ?? self.seed, config: config, base: base, training: data)
        job.precision = precision
        let trainer = try Trainer(job: job, directory: "\(directory)/\(name)", sink: LogSink(log: log))
        guard case let .succeeded(path) = try trainer.run() else { throw TrainingFailure(code: "interrupted", message: "\(name) stopped", step: nil) }
        return try ModelFile.load(path).parameters
    }

    public func removeFiles() { try? FileManager.default.removeItem(atPath: directory) }
}

/// Passes log lines on (or drops them); metrics and checkpoints are in the lines.
final class LogSink: TrainingSink {
    let log: ((String) -> Void)?
    init(log: ((String) -> Void)?) { self.log = log }
    func log(_ message: String) { log?(message) }
    func record(step: Int, metrics: [String: Double], summary: String) { log?(summary) }
    func checkpointSaved(_ checkpoint: CheckpointRecord) {}
}
