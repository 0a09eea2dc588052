import Diffusion
import Foundation
import Numerics

/// Where the trainer reports; knows nothing of HTTP or SQL (the service writes
/// these to the job's log file, events and metric tables).
public protocol TrainingSink: AnyObject {
    func log(_ message: String)
    /// Metric points of one optimizer step: loss, the objective's statistics, lr, grad_norm, samples_per_s,
    /// val_loss; `summary` is the line for the log. After a resume, steps between the training state
    /// and the interruption come again with the same values, and a sink may skip what it has.
    func record(step: Int, metrics: [String: Double], summary: String)
    func checkpointSaved(_ checkpoint: CheckpointRecord)
    /// A message about step `step` (a validation or grading result); after a resume, the
    /// replayed steps' messages come again, and a sink may skip what it has.
    func note(step: Int, _ message: String)
}

extension TrainingSink {
    public func note(step: Int, _ message: String) { log(message) }
}

public struct CheckpointRecord: Sendable, Equatable {
    public let step: Int
    /// The model file (EMA weights when EMA is on), loadable with `ModelFile.load`.
    public let modelPath: String
    /// The full training state at this checkpoint, which a fork starts from.
    public let statePath: String
    public let metrics: [String: Double]
    /// The best checkpoint so far by the job's selection metric (this one, or an earlier one), and its value.
    public var best: (step: Int, value: Double)?

    public static func == (a: CheckpointRecord, b: CheckpointRecord) -> Bool {
        a.step == b.step && a.modelPath == b.modelPath && a.statePath == b.statePath && a.metrics == b.metrics
            && a.best?.step == b.best?.step && a.best?.value == b.best?.value
    }
}

/// What the trainer should do next; asked between optimizer steps.
public enum TrainingCommand: Sendable { case proceed, pause, cancel }

public enum TrainingOutcome: Sendable, Equatable {
    /// `modelPath` holds the weights to publish: the last, or the best checkpoint's (`TrainingJob.result`).
    case succeeded(modelPath: String)
    /// A training state was written at `step`; `run(resume: true)` continues from it.
    case paused(step: Int)
    case cancelled(step: Int)
}

public struct TrainingFailure: Error, CustomStringConvertible, Equatable {
    /// Machine-readable: `training_diverged`, `invalid_state`, `checkpoint_write_failed`.
    public let code: String
    public let message: String
    public let step: Int?
    public var description: String { message }

    public init(code: String, message: String, step: Int?) {
        self.code = code
        self.message = message
        self.step = step
    }
}

/// Everything a training run is made of.
public struct TrainingJob {
    public var method: TrainingMethod
    public var hyperparameters: Hyperparameters
    public var seed: UInt64
    public var config: ModelConfig
    /// The starting weights: θ starts here, and the frozen reference is a copy.
    public var base: FloatBuffer
    public var training: Dataset
    public var validation: Dataset?
    /// Which checkpoint is best, and when to stop early; nil: no selection.
    public var selection: EarlyStopping?
    /// The weights the job publishes when it succeeds.
    public var result = ResultChoice.last
    /// Scores each checkpoint's samples (`reward_*` metrics); nil: no grading.
    public var grading: CheckpointGrading?
    /// The arithmetic of every matrix product the job computes: training, validation, rollouts
    /// and grading samples (`MathPrecision`). Weights, optimizer state and checkpoints stay fp32.
    public var precision = MathPrecision.fp32

    public init(method: TrainingMethod, hyperparameters: Hyperparameters, seed: UInt64, config: ModelConfig, base: FloatBuffer,
                training: Dataset, validation: Dataset? = nil) {
        self.method = method
        self.hyperparameters = hyperparameters
        self.seed = seed
        self.config = config
        self.base = base
        self.training = training
        self.validation = validation
    }
}

/// Where a run starts: step 0, the job's own training state, or another job's state at one of
/// its checkpoints (a fork: the same method, seed and model, hyperparameters that may differ).
public enum StartingPoint: Sendable, Equatable {
    case fresh
    case resume
    case fork(statePath: String)
}

/// Runs a job: micro-batches with gradient accumulation, global-norm clipping,
/// AdamW under the LR schedule, optional EMA, prompt dropout, DRO's online policy
/// samples, validation loss, checkpoints and a full training state that resumes
/// bit for bit. All buffers are allocated here, once; a step allocates no tensors.
public final class Trainer {
    public let job: TrainingJob
    /// Where the job's checkpoints, training state and final model go.
    public let directory: JobDirectory
    public let totalSteps: Int
    let sink: TrainingSink
    let model: ResMLP
    let schedule: NoiseSchedule
    let objective: any Objective
    let theta: FloatBuffer
    /// θ rounded to bf16 for a bf16 job's products, written by AdamW's pass (nil in fp32, and
    /// where bf16 products are emulated).
    let thetaBF16: BF16Shadow?
    let reference: FloatBuffer?
    let gradients: FloatBuffer
    let optimizer: AdamW
    let ema: ExponentialMovingAverage?
    let rollouts: PolicyRollouts?
    let workspace: ResMLPWorkspace
    let scratch: ObjectiveScratch
    let targets: FloatBuffer
    let cleanSamples: FloatBuffer
    var desirable: [Bool]

    /// Completed optimizer steps.
    public internal(set) var step = 0
    /// Position in the data order: epoch and index within its permutation.
    var epoch = 0, cursor = 0
    var permutation: [Int] = []
    /// Noise, timesteps, dropout and buffer draws; DRO's rollouts have their own stream.
    var batchRandom: Philox
    var rolloutRandom: Philox
    /// DRO's rollouts for validation loss, made at the first evaluation.
    var validationRolloutsStorage: PolicyRollouts?
    /// The best checkpoint so far and the early-stopping count, saved with the training state.
    var selection: CheckpointSelection?

    static let dataOrderStream: UInt64 = 0x0D0E
    static let batchStream: UInt64 = 0xBA7C
    static let rolloutStream: UInt64 = 0x7011
    static let validationStream: UInt64 = 0x7A11

    /// Allocates everything the job holds; throws when the system refuses memory (the service
    /// checks `MemoryEstimate.training` against its budget first, so this is the last line).
    public convenience init(job: TrainingJob, directory: String, sink: TrainingSink) throws(AllocationError) {
        try self.init(job: job, directory: JobDirectory(directory), sink: sink)
    }

    public init(job: TrainingJob, directory: JobDirectory, sink: TrainingSink) throws(AllocationError) {
        self.job = job
        self.directory = directory
        self.sink = sink
        let h = job.hyperparameters
        model = ResMLP(config: job.config)
        schedule = NoiseSchedule(job.config.schedule)
        totalSteps = h.totalSteps(datasetSize: job.training.count)
        objective = h.objective(for: job.method)
        theta = try job.base.checkedCopy()
        thetaBF16 = job.precision == .bf16 ? try BF16Shadow(of: theta) : nil
        reference = objective.needsReference ? try job.base.checkedCopy() : nil
        gradients = try FloatBuffer(allocating: model.parameterCount)
        optimizer = try AdamW(parameterCount: model.parameterCount,
                              hyperparameters: .init(weightDecay: h.weightDecay))
        ema = try h.emaDecay.map { (decay) throws(AllocationError) in try ExponentialMovingAverage(copying: job.base, decay: decay) }
        if job.method == .dro {
            let rolloutBatch = h.bufferBatchSize ?? h.batchSize
            rollouts = try PolicyRollouts(model: model, theta: theta, sampler: h.policySampler ?? .dpmpp2m,
                                          steps: h.policySteps ?? 20, guidance: Float(h.policyGuidance ?? 1),
                                          perturbTimesteps: h.perturbTimesteps ?? true,
                                          bufferSize: h.bufferSize ?? h.batchSize, rolloutBatch: rolloutBatch,
                                          rolloutsPerStep: rolloutBatch * h.gradientAccumulationSteps)
        } else {
            rollouts = nil
        }
        let rows = h.batchSize * objective.rowsPerExample
        workspace = model.makeWorkspace(maxBatch: rows)
        scratch = ObjectiveScratch(config: job.config, maxRows: rows)
        targets = FloatBuffer(count: rows * job.config.sampleSize)
        cleanSamples = FloatBuffer(count: rows * job.config.sampleSize)
        desirable = [Bool](repeating: false, count: h.batchSize)
        batchRandom = Philox(seed: job.seed, stream: Self.batchStream)
        rolloutRandom = Philox(seed: job.seed, stream: Self.rolloutStream)
        selection = job.selection.map(CheckpointSelection.init)
    }

    public var statePath: String { directory.state }
    public var finalModelPath: String { directory.finalModel }

    // MARK: - The loop

    /// Trains until the last step, or until `control` (asked after every step) says pause or
    /// cancel. `interrupt` is asked inside a step too — between micro-batches and between the
    /// policy's sampling steps — so that a long step need not finish first: the step is then
    /// abandoned and the run stops at its start. With `resume`, continues from the training
    /// state in the job directory.
    public func run(resume: Bool = false, control: () -> TrainingCommand = { .proceed },
                    interrupt: () -> TrainingCommand = { .proceed }) throws -> TrainingOutcome {
        try run(from: resume ? .resume : .fresh, control: control, interrupt: interrupt)
    }

    /// As `run(resume:)`, from `start`: a fork restores another job's state at one of its
    /// checkpoints and continues with this job's hyperparameters.
    public func run(from start: StartingPoint, control: () -> TrainingCommand = { .proceed },
                    interrupt: () -> TrainingCommand = { .proceed }) throws -> TrainingOutcome {
        try MathPrecision.with(job.precision) { try train(from: start, control: control, interrupt: interrupt) }
    }

    /// Which library computes the products, and in what precision, for the log's first line.
    var mathDescription: String {
        job.precision == .fp32 ? MathBackend.description(of: MathBackend.active)
            : "\(MathBackend.description(of: .onednn)) in \(job.precision.rawValue)\(MathPrecision.nativeBF16 ? "" : " (emulated: this CPU has no bf16 instructions)")"
    }

    private func train(from start: StartingPoint, control: () -> TrainingCommand, interrupt: () -> TrainingCommand) throws -> TrainingOutcome {
        let h = job.hyperparameters
        try FileManager.default.createDirectory(atPath: directory.checkpoints, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: directory.stateDirectory, withIntermediateDirectories: true)
        switch start {
        case .resume:
            try restoreState(from: statePath, fork: false)
            sink.log("resumed \(job.method.rawValue) at step \(step)/\(totalSteps); math on \(mathDescription)")
        case let .fork(path):
            try restoreState(from: path, fork: true)
            sink.log("forked \(job.method.rawValue) at step \(step)/\(totalSteps): weights, optimizer moments, random streams and data order continue from the parent's training state; math on \(mathDescription)")
        case .fresh:
            sink.log("training \(job.method.rawValue): \(totalSteps) steps, batch \(h.batchSize) × \(h.gradientAccumulationSteps) accumulation, \(job.training.count) examples, lr \(h.learningRate) (\(h.lrScheduler.rawValue)); math on \(mathDescription)")
        }
        permutation = dataOrder(epoch: epoch)
        thetaBF16?.refresh()  // θ may come from a training state; from here only AdamW changes it
        var intervalStart = Date(), intervalExamples = 0
        var lastStateStep = -1

        while step < totalSteps {
            // Where this step starts: a pause or cancel that arrives inside it (a long rollout,
            // a large batch) abandons it and comes back here, so the training state stays exact.
            let stepStart = (epoch: epoch, cursor: cursor, batchRandom: batchRandom, rolloutRandom: rolloutRandom)
            rollouts?.buffer.beginStep()
            if let rollouts, step % (h.policySyncEvery ?? 1) == 0 { rollouts.synchronize(with: theta) }
            var loss = 0.0
            var statistics: [String: Double] = [:]
            var interruption: TrainingCommand?
            func interrupted() -> Bool {
                if interruption == nil, case let command = interrupt(), command != .proceed { interruption = command }
                return interruption != nil
            }
            for _ in 0..<h.gradientAccumulationSteps {
                guard !interrupted(), let examples = prepareBatch(random: &batchRandom, shouldStop: interrupted) else { break }
                let result = BF16Shadow.using(thetaBF16) { objective.lossAndGradient(ObjectiveContext(
                    model: model, theta: theta, reference: reference, workspace: workspace, examples: examples,
                    targets: targets.pointer, desirable: desirable, scratch: scratch, gradients: gradients)) }
                loss += result.loss / Double(h.gradientAccumulationSteps)
                for (name, value) in result.statistics { statistics[name, default: 0] += value / Double(h.gradientAccumulationSteps) }
                intervalExamples += examples
            }
            if let interruption {
                (epoch, cursor, batchRandom, rolloutRandom) = stepStart
                permutation = dataOrder(epoch: epoch)
                gradients.fill(0)
                let restored = rollouts?.buffer.rollBack() ?? true
                return try stop(interruption, lastStateStep: restored ? lastStateStep : step)
            }
            // The gradient is the mean over micro-batches: clip its norm, and let AdamW apply 1/accumulation.
            let norm = GradientClipping.globalNorm(gradients, sharingWith: scratch.companion) / Double(h.gradientAccumulationSteps)
            guard loss.isFinite, norm.isFinite else {
                throw TrainingFailure(code: "training_diverged",
                                      message: "training diverged at step \(step + 1): \(loss.isFinite ? "gradient norm" : "loss") is \(loss.isFinite ? norm : loss); lower learning_rate or max_grad_norm. The last checkpoint is kept.",
                                      step: step + 1)
            }
            let learningRate = h.learningRate * h.lrScheduler.multiplier(step: step, warmupSteps: h.warmupSteps, totalSteps: totalSteps)
            let scale = GradientClipping.coefficient(norm: norm, maxNorm: h.maxGradNorm) / Float(h.gradientAccumulationSteps)
            optimizer.update(theta, gradients: gradients, learningRate: learningRate, gradientScale: scale,
                             sharingWith: scratch.companion, shadow: thetaBF16)
            ema?.update(from: theta, update: step + 1)
            step += 1

            var metrics: [String: Double] = [:]
            if step % h.logEvery == 0 || step == totalSteps {
                let elapsed = Date().timeIntervalSince(intervalStart)
                metrics = statistics.merging(["loss": loss, "lr": learningRate, "grad_norm": norm,
                                              "samples_per_s": elapsed > 0 ? Double(intervalExamples) / elapsed : 0]) { $1 }
                intervalStart = Date()
                intervalExamples = 0
            }
            let evaluation = evaluate(checkpoint: step % h.checkpointEvery == 0 || step == totalSteps,
                                      interrupted: { interrupt() != .proceed })
            metrics.merge(evaluation.metrics) { $1 }
            if !metrics.isEmpty { report(metrics) }
            if evaluation.checkpoint {
                try saveCheckpoint(metrics: metrics)
                lastStateStep = step
            }
            if evaluation.verdict == .stop, let selection {
                sink.log("early stop at step \(step)/\(totalSteps): \(selection.stopReason)")
                return try finish()
            }
            if step < totalSteps, case let command = control(), command != .proceed {
                return try stop(command, lastStateStep: lastStateStep)
            }
        }
        sink.log("finished: \(totalSteps) steps")
        return try finish()
    }

    /// Writes the last weights as the final model, and answers the weights to publish.
    func finish() throws -> TrainingOutcome {
        try write(ModelFile(config: job.config, parameters: ema?.weights ?? theta, metadata: ["step": "\(step)"]), to: finalModelPath)
        if job.result == .best, let best = selection?.bestStep, best != step {
            sink.log("result: the best checkpoint, step \(best) (\(selection!.rule.metric) \(String(format: "%.6g", selection!.bestValue!)))")
            return .succeeded(modelPath: directory.checkpoint(step: best))
        }
        return .succeeded(modelPath: finalModelPath)
    }

    /// What happens after a step besides training: validation every `eval_every` steps and at
    /// checkpoints, grading at checkpoints, and the selection metric judged. A step whose
    /// evaluation is a new best becomes a checkpoint, so the best is always one; so does a step
    /// where the job stops early.
    func evaluate(checkpoint: Bool, interrupted: () -> Bool = { false }) -> (metrics: [String: Double], checkpoint: Bool, verdict: CheckpointSelection.Verdict?) {
        let h = job.hyperparameters
        var metrics: [String: Double] = [:]
        if job.validation != nil, checkpoint || step % (h.evalEvery ?? h.checkpointEvery) == 0 {
            metrics = validationMetrics()
            sink.note(step: step, "validation at step \(step): " + Self.describe(metrics))
        }
        if checkpoint, let grading = job.grading {
            do {
                // A pause or cancel stops the grading, not the step: the checkpoint is written without rewards.
                let rewards = try grading.grade(weights: ema?.weights ?? theta, base: job.base, step: step, shouldStop: interrupted)
                metrics.merge(rewards) { $1 }
                sink.note(step: step, "graded step \(step) by \(grading.scorer.name): " + Self.describe(rewards))
            } catch {
                sink.note(step: step, "grading at step \(step) failed (\(grading.scorer.name)): \(error); training goes on")
            }
        }
        guard let rule = selection?.rule, let value = metrics[rule.metric] else { return (metrics, checkpoint, nil) }
        let verdict = selection!.observe(value, step: step)
        return (metrics, checkpoint || verdict != .notImproved, verdict)
    }

    static func describe(_ metrics: [String: Double]) -> String {
        metrics.sorted { $0.key < $1.key }.map { "\($0.key) \(String(format: "%.4g", $0.value))" }.joined(separator: ", ")
    }

    /// Ends the run at the current step boundary: a pause writes the training state there
    /// (unless a checkpoint just did); a cancel writes nothing.
    func stop(_ command: TrainingCommand, lastStateStep: Int) throws -> TrainingOutcome {
        switch command {
        case .proceed, .pause:
            if lastStateStep != step { try saveState() }
            sink.log("paused at step \(step)/\(totalSteps)")
            return .paused(step: step)
        case .cancel:
            sink.log("cancelled at step \(step)/\(totalSteps)")
            return .cancelled(step: step)
        }
    }

    func report(_ metrics: [String: Double]) {
        let shown = ["loss", "lr", "grad_norm", "samples_per_s", "val_loss"].compactMap { name in
            metrics[name].map { "\(name) \(String(format: name == "samples_per_s" ? "%.0f" : "%.4g", $0))" }
        }
        sink.record(step: step, metrics: metrics, summary: "step \(step)/\(totalSteps) " + shown.joined(separator: " "))
    }
}
