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
}

public struct CheckpointRecord: Sendable, Equatable {
    public let step: Int
    /// The model file (EMA weights when EMA is on), loadable with `ModelFile.load`.
    public let modelPath: String
    public let statePath: String
    public let metrics: [String: Double]
}

/// What the trainer should do next; asked between optimizer steps.
public enum TrainingCommand: Sendable { case proceed, pause, cancel }

public enum TrainingOutcome: Sendable, Equatable {
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
    public var method: Method
    public var hyperparameters: Hyperparameters
    public var seed: UInt64
    public var config: ModelConfig
    /// The starting weights: θ starts here, and the frozen reference is a copy.
    public var base: FloatBuffer
    public var training: Dataset
    public var validation: Dataset?

    public init(method: Method, hyperparameters: Hyperparameters, seed: UInt64, config: ModelConfig, base: FloatBuffer,
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
    public private(set) var step = 0
    /// Position in the data order: epoch and index within its permutation.
    var epoch = 0, cursor = 0
    var permutation: [Int] = []
    /// Noise, timesteps, dropout and buffer draws; DRO's rollouts have their own stream.
    var batchRandom: Philox
    var rolloutRandom: Philox

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
        let h = job.hyperparameters
        try FileManager.default.createDirectory(atPath: directory.checkpoints, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: directory.stateDirectory, withIntermediateDirectories: true)
        if resume {
            try restoreState()
            sink.log("resumed \(job.method.rawValue) at step \(step)/\(totalSteps)")
        } else {
            sink.log("training \(job.method.rawValue): \(totalSteps) steps, batch \(h.batchSize) × \(h.gradientAccumulationSteps) accumulation, \(job.training.count) examples, lr \(h.learningRate) (\(h.lrScheduler.rawValue))")
        }
        permutation = dataOrder(epoch: epoch)
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
                let result = objective.lossAndGradient(ObjectiveContext(
                    model: model, theta: theta, reference: reference, workspace: workspace, examples: examples,
                    targets: targets.pointer, desirable: desirable, scratch: scratch, gradients: gradients))
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
                             sharingWith: scratch.companion)
            ema?.update(from: theta)
            step += 1

            var metrics: [String: Double] = [:]
            if step % h.logEvery == 0 || step == totalSteps {
                let elapsed = Date().timeIntervalSince(intervalStart)
                metrics = statistics.merging(["loss": loss, "lr": learningRate, "grad_norm": norm,
                                              "samples_per_s": elapsed > 0 ? Double(intervalExamples) / elapsed : 0]) { $1 }
                intervalStart = Date()
                intervalExamples = 0
            }
            if step % h.checkpointEvery == 0 || step == totalSteps {
                if let validationLoss = validationLoss() { metrics["val_loss"] = validationLoss }
                if !metrics.isEmpty { report(metrics) }
                try saveCheckpoint(metrics: metrics)
                lastStateStep = step
            } else if !metrics.isEmpty {
                report(metrics)
            }
            if step < totalSteps, case let command = control(), command != .proceed {
                return try stop(command, lastStateStep: lastStateStep)
            }
        }
        try write(ModelFile(config: job.config, parameters: ema?.weights ?? theta, metadata: ["step": "\(step)"]), to: finalModelPath)
        sink.log("finished: \(totalSteps) steps")
        return .succeeded(modelPath: finalModelPath)
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

    // MARK: - Data order and batches

    /// The examples of `epoch` in a seeded random order.
    func dataOrder(epoch: Int) -> [Int] {
        var random = Philox(seed: job.seed, stream: Self.dataOrderStream &+ UInt64(epoch) << 16)
        var order = Array(0..<job.training.count)
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, random.nextInt(below: i + 1)) }
        return order
    }

    func nextExamples(_ count: Int) -> [Int] {
        var result: [Int] = []
        result.reserveCapacity(count)
        while result.count < count {
            if cursor == permutation.count {
                epoch += 1
                cursor = 0
                permutation = dataOrder(epoch: epoch)
            }
            result.append(permutation[cursor])
            cursor += 1
        }
        return result
    }

    /// Fills the workspace inputs and targets for one micro-batch; returns its number of examples,
    /// or nil when `shouldStop` interrupted DRO's rollout.
    func prepareBatch(random: inout Philox, shouldStop: () -> Bool) -> Int? {
        let h = job.hyperparameters
        if job.method == .dro { return prepareDROBatch(random: &random, shouldStop: shouldStop) }
        return prepareBatch(indices: nextExamples(h.batchSize), from: job.training, random: &random)
    }

    /// Noised rows for sft, kto (one row per example) and dpo, rpo (chosen rows, then
    /// rejected rows sharing ε and t).
    func prepareBatch(indices: [Int], from data: Dataset, random: inout Philox) -> Int {
        let B = indices.count, D = job.config.sampleSize
        var conditions = data.conditions.selecting(indices, config: job.config)
        applyDropout(&conditions, random: &random)
        let fields = job.method == .dpo || job.method == .rpo ? ["chosen", "rejected"] : ["sample"]
        for b in 0..<B { workspace.timesteps[b] = Float(random.nextInt(below: schedule.count)) }
        random.fillNormal(targets.pointer, count: B * D)
        for (half, field) in fields.enumerated() {
            let samples = data.samples[field]!
            let offset = half * B
            samples.withUnsafeBufferPointer { source in
                for (b, index) in indices.enumerated() {
                    (cleanSamples.pointer + (offset + b) * D).update(from: source.baseAddress! + index * D, count: D)
                }
            }
            if half > 0 {
                (targets.pointer + offset * D).update(from: targets.pointer, count: B * D)
                (workspace.timesteps.pointer + offset).update(from: workspace.timesteps.pointer, count: B)
            }
            conditions.write(into: workspace, at: offset, config: job.config)
        }
        let rows = B * fields.count
        schedule.addNoise(x0: cleanSamples.pointer, noise: targets.pointer, timesteps: workspace.timesteps.pointer,
                          into: workspace.x.pointer, rows: rows, width: D)
        if job.method == .kto { for (b, index) in indices.enumerated() { desirable[b] = data.desirable[index] } }
        return B
    }

    func applyDropout(_ conditions: inout Conditions, random: inout Philox) {
        let p = job.hyperparameters.promptDropout
        guard p > 0 else { return }
        for row in 0..<conditions.count where Double(random.nextUniform()) < p {
            conditions.setNull(row, config: job.config)
        }
    }

    /// DRO: refresh the replay buffer with policy trajectories for freshly drawn
    /// expert rows, then draw trajectories and a random step k each. Rows [0, B) are
    /// the experts noised at t_k, rows [B, 2B) the stored policy inputs with ε^π_k.
    func prepareDROBatch(random: inout Philox, shouldStop: () -> Bool) -> Int? {
        guard let rollouts else { preconditionFailure("dro needs rollouts") }
        let B = job.hyperparameters.batchSize
        let experts = nextExamples(job.hyperparameters.bufferBatchSize ?? B)
        var conditions = job.training.conditions.selecting(experts, config: job.config)
        applyDropout(&conditions, random: &random)
        guard rollouts.rollout(experts: experts, conditions: conditions, random: &rolloutRandom, shouldStop: shouldStop) else { return nil }

        let drawn = drawTrajectories(B, from: rollouts.buffer.count, random: &random)
        fillDRORows(slots: drawn, buffer: rollouts.buffer, data: job.training, random: &random)
        return B
    }

    /// Rows [0, B) are the trajectories' experts noised with fresh ε̄ at a random step's t_k,
    /// rows [B, 2B) the stored policy inputs at that step with target ε^π_k; both under the
    /// trajectory's (dropped-out) condition.
    func fillDRORows(slots: [Int], buffer: ReplayBuffer, data: Dataset, random: inout Philox) {
        let B = slots.count, D = job.config.sampleSize
        var rowConditions = Conditions.null(count: B, config: job.config)
        let samples = data.samples["sample"]!
        random.fillNormal(targets.pointer, count: B * D)
        for (b, slot) in slots.enumerated() {
            let k = random.nextInt(below: buffer.steps)
            let t = buffer.timesteps[slot * buffer.steps + k]
            workspace.timesteps[b] = t
            workspace.timesteps[B + b] = t
            samples.withUnsafeBufferPointer { source in
                (cleanSamples.pointer + b * D).update(from: source.baseAddress! + buffer.experts[slot] * D, count: D)
            }
            let offset = (slot * buffer.steps + k) * D
            (workspace.x.pointer + (B + b) * D).update(from: buffer.inputs.pointer + offset, count: D)
            (targets.pointer + (B + b) * D).update(from: buffer.predictions.pointer + offset, count: D)
            rowConditions.setRow(b, from: buffer.conditions, row: slot, config: job.config)
        }
        schedule.addNoise(x0: cleanSamples.pointer, noise: targets.pointer, timesteps: workspace.timesteps.pointer,
                          into: workspace.x.pointer, rows: B, width: D)
        rowConditions.write(into: workspace, at: 0, config: job.config)
        rowConditions.write(into: workspace, at: B, config: job.config)
    }

    /// `count` distinct slots when the buffer holds enough, otherwise with replacement.
    func drawTrajectories(_ count: Int, from available: Int, random: inout Philox) -> [Int] {
        if available >= count {
            var slots = Array(0..<available)
            for i in 0..<count { slots.swapAt(i, i + random.nextInt(below: available - i)) }
            return Array(slots.prefix(count))
        }
        return (0..<count).map { _ in random.nextInt(below: available) }
    }

    // MARK: - Validation

    /// The objective's loss on the validation set (no gradient), with noise from a
    /// fixed stream so successive evaluations are comparable. DRO's policy rows come
    /// from the current θ.
    func validationLoss() -> Double? {
        guard let validation = job.validation else { return nil }
        let B = job.hyperparameters.batchSize
        var random = Philox(seed: job.seed, stream: Self.validationStream)
        var total = 0.0, batches = 0
        var start = 0
        let validator = job.method == .dro ? validationRollouts() : nil
        while start < validation.count {
            let indices = Array(start..<min(validation.count, start + B))
            start += B
            let examples: Int
            if let validator {
                examples = prepareDROValidation(indices: indices, data: validation, rollouts: validator, random: &random)
            } else {
                examples = prepareBatch(indices: indices, from: validation, random: &random)
            }
            total += objective.lossAndGradient(ObjectiveContext(
                model: model, theta: theta, reference: reference, workspace: workspace, examples: examples,
                targets: targets.pointer, desirable: desirable, scratch: scratch, gradients: nil)).loss
            batches += 1
        }
        return batches > 0 ? total / Double(batches) : nil
    }

    private var validationRolloutsStorage: PolicyRollouts?

    func validationRollouts() -> PolicyRollouts {
        let h = job.hyperparameters
        // Within the job's memory estimate ("validation rollouts"), so a refusal here is a bug.
        let rollouts = try! validationRolloutsStorage ?? PolicyRollouts(
            model: model, theta: theta, sampler: h.policySampler ?? .dpmpp2m, steps: h.policySteps ?? 20,
            guidance: Float(h.policyGuidance ?? 1), perturbTimesteps: h.perturbTimesteps ?? true,
            bufferSize: h.batchSize, rolloutBatch: h.batchSize, rolloutsPerStep: 0)
        validationRolloutsStorage = rollouts
        rollouts.synchronize(with: theta)
        return rollouts
    }

    func prepareDROValidation(indices: [Int], data: Dataset, rollouts: PolicyRollouts, random: inout Philox) -> Int {
        let B = indices.count
        _ = rollouts.rollout(experts: indices, conditions: data.conditions.selecting(indices, config: job.config), random: &random)
        let buffer = rollouts.buffer
        let newest = (0..<B).map { (buffer.head - B + $0 + buffer.capacity) % buffer.capacity }
        fillDRORows(slots: newest, buffer: buffer, data: data, random: &random)
        return B
    }

    // MARK: - Checkpoints and training state

    func saveCheckpoint(metrics: [String: Double]) throws {
        let modelPath = directory.checkpoint(step: step)
        let weights = ema?.weights ?? theta
        try write(ModelFile(config: job.config, parameters: weights, metadata: ["step": "\(step)"]), to: modelPath)
        try saveState()
        sink.checkpointSaved(CheckpointRecord(step: step, modelPath: modelPath, statePath: statePath, metrics: metrics))
    }

    /// Everything a resumed run needs to produce the same bits: θ, the reference, Adam's
    /// moments and step, EMA, DRO's policy and replay buffer, the RNG streams and the
    /// position in the data order.
    func saveState() throws {
        let layout = model.layout
        var writer = SafeTensorsWriter()
        // Borrowed, not copied: the buffers outlive the write, and a copy of each would double the memory a save needs.
        func add(_ name: String, _ buffer: FloatBuffer) {
            writer.add(name, shape: [layout.totalCount], borrowing: UnsafeBufferPointer(buffer.buffer))
        }
        add("theta", theta)
        add("adam.first_moment", optimizer.firstMoment)
        add("adam.second_moment", optimizer.secondMoment)
        if let reference { add("reference", reference) }
        if let ema { add("ema", ema.weights) }
        if let rollouts {
            add("policy", rollouts.policy)
            rollouts.buffer.save(into: &writer)
        }
        let progress = TrainingProgress(step: step, adamStep: optimizer.step, epoch: epoch, cursor: cursor,
                                        batchRandom: batchRandom, rolloutRandom: rolloutRandom, method: job.method,
                                        seed: job.seed, hyperparameters: job.hyperparameters, config: job.config.json)
        writer.metadata["progress"] = String(decoding: try JSONEncoder().encode(progress), as: UTF8.self)
        do {
            try writer.write(to: statePath)
        } catch {
            throw TrainingFailure(code: "checkpoint_write_failed", message: "cannot write \(statePath): \(error)", step: step)
        }
    }

    func restoreState() throws {
        func invalid(_ message: String) -> TrainingFailure {
            TrainingFailure(code: "invalid_state", message: "cannot resume from \(statePath): \(message)", step: nil)
        }
        let file: SafeTensorsFile
        do { file = try SafeTensorsFile(contentsOf: statePath) } catch { throw invalid("\(error)") }
        guard let text = file.metadata["progress"],
              let progress = try? JSONDecoder().decode(TrainingProgress.self, from: Data(text.utf8))
        else { throw invalid("no progress record") }
        guard progress.method == job.method, progress.seed == job.seed, progress.hyperparameters == job.hyperparameters,
              progress.config == job.config.json
        else { throw invalid("it belongs to a different job (method, seed, hyperparameters or model differ)") }
        let count = model.layout.totalCount
        do {
            try file.copyFloats("theta", shape: [count], into: theta.pointer)
            let m = try file.floats("adam.first_moment", shape: [count]), v = try file.floats("adam.second_moment", shape: [count])
            optimizer.restore(step: progress.adamStep, firstMoment: m, secondMoment: v)
            if let reference { try file.copyFloats("reference", shape: [count], into: reference.pointer) }
            if let ema { try file.copyFloats("ema", shape: [count], into: ema.weights.pointer) }
            if let rollouts {
                try file.copyFloats("policy", shape: [count], into: rollouts.policy.pointer)
                try rollouts.buffer.restore(from: file)
            }
        } catch let error as TrainingFailure {
            throw error
        } catch {
            throw invalid("\(error)")
        }
        step = progress.step
        epoch = progress.epoch
        cursor = progress.cursor
        batchRandom = progress.batchRandom
        rolloutRandom = progress.rolloutRandom
    }

    func write(_ model: ModelFile, to path: String) throws {
        do {
            try model.write(to: path)
        } catch {
            throw TrainingFailure(code: "checkpoint_write_failed", message: "cannot write \(path): \(error)", step: step)
        }
    }
}

/// The scalar part of a training state (stored as JSON in the state file's metadata).
struct TrainingProgress: Codable {
    let step: Int
    let adamStep: Int
    let epoch: Int
    let cursor: Int
    let batchRandom: Philox
    let rolloutRandom: Philox
    let method: Method
    let seed: UInt64
    let hyperparameters: Hyperparameters
    let config: String
}
