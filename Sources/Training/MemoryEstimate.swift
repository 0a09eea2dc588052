import Diffusion
import Numerics

/// What a training job, a sample request or a new model will hold in memory, item by
/// item, computed before anything is allocated. Every product is overflow-checked: a
/// size that does not fit in an Int saturates the total, which no budget accepts.
/// docs/operations.md states the same formula.
public struct MemoryEstimate: Sendable, CustomStringConvertible {
    public private(set) var items: [(name: String, bytes: Int)] = []
    /// Int.max once any item overflowed.
    public private(set) var total = 0

    public init() {}

    /// Adds an item of `factors` multiplied together (bytes).
    public mutating func add(_ name: String, _ factors: Int...) {
        var bytes: Int? = 1
        for factor in factors { bytes = bytes.flatMap { factor >= 0 ? $0.multipliedChecked(by: factor) : nil } }
        let value = bytes ?? Int.max
        items.append((name, value))
        total = total.addingChecked(value) ?? Int.max
    }

    public var description: String {
        total == Int.max ? "more than \(ByteCount.describe(Int.max))" : ByteCount.describe(total)
    }

    /// The largest items, for error messages: "θ 1.2 GiB, replay buffer 760 GiB".
    public var breakdown: String {
        items.sorted { $0.bytes > $1.bytes }.prefix(3).map { "\($0.name) \(ByteCount.describe($0.bytes))" }.joined(separator: ", ")
    }

    // MARK: - Training

    /// What the trainer of a job holds at its peak: parameters × (θ, base, gradients, two
    /// moments, EMA, reference, DRO's policy), activations for the batch (θ's and the
    /// reference's), DRO's replay buffer and sampler, and the expanded datasets. (Checkpoints
    /// and training states are written from the buffers in place.) `examples` is the training set's size
    /// (and `validationExamples` the validation set's), when known.
    public static func training(config: ModelConfig, method: TrainingMethod, hyperparameters h: Hyperparameters,
                                examples: Int, validationExamples: Int? = nil, gradingSamples: Int = 0,
                                precision: MathPrecision = .fp32) -> MemoryEstimate {
        var estimate = MemoryEstimate()
        let P = ParameterLayout(config).totalCount, D = config.sampleSize, float = 4
        let needsReference = method != .sft
        let rowsPerExample = method == .sft || method == .kto ? 1 : 2
        let rows = h.batchSize.multipliedChecked(by: rowsPerExample) ?? Int.max
        let rowBytes = ResMLPWorkspace.bytesPerRow(config)

        var parameterCopies = 5  // θ, the loaded base, gradients, Adam's two moments
        if needsReference { parameterCopies += 1 }
        if h.emaDecay != nil { parameterCopies += 1 }
        if method == .dro { parameterCopies += 1 }  // the policy network
        estimate.add("parameters (\(parameterCopies) copies of \(P))", parameterCopies, P, float)
        estimate.add("activations (\(rows) rows)", needsReference ? 2 : 1, rows, rowBytes)
        estimate.add("batch targets and samples", 2, rows, D, float)
        // Packed weights (`PackedWeights`): the reference's for the whole job, and a sampler's model's
        // while it samples (DRO's rollouts and validation, gradings).
        let samples = method == .dro || gradingSamples > 0
        let packedCopies = (needsReference ? 1 : 0) + (samples ? 1 : 0)
        if packedCopies > 0 { estimate.add("packed weights (\(packedCopies) copies)", packedCopies, PackedWeights.defaultBudget(parameters: P)) }
        estimate.add("product operands converted (2 threads)", 2, productScratchBytes(config: config, rows: max(rows, gradingSamples * 2)))
        if precision == .bf16 { estimate.add("θ in bf16", BF16Shadow.bytes(parameters: P)) }

        if method == .dro {
            let steps = h.policySteps ?? 20, capacity = h.bufferSize ?? h.batchSize, rollout = h.bufferBatchSize ?? h.batchSize
            var replay = MemoryEstimate()
            replay.add("inputs and predictions", 2, capacity, steps, D, float)
            replay.add("timesteps", capacity, steps, float)
            estimate.add("replay buffer (\(capacity) trajectories × \(steps) steps)", replay.total)
            // Saving the training state copies the buffer's timesteps (its tensors are written in place).
            estimate.add("replay timesteps while saving", capacity, steps, 8)
            // Slots a step overwrites are kept until it completes, so a pause mid-step keeps the step's start.
            let undo = min(capacity, rollout.multipliedChecked(by: h.gradientAccumulationSteps) ?? Int.max)
            estimate.add("replay buffer undo log", 2, undo, steps, D, float)
            estimate.add("policy sampler (\(rollout) rows, guided)", 2, rollout, rowBytes)
            estimate.add("policy sampler buffers", 7, rollout, D, float)
            if validationExamples != nil {
                estimate.add("validation rollouts", 2, h.batchSize, steps, D, float)
                estimate.add("validation sampler", 2, h.batchSize, rowBytes)
            }
        }

        if gradingSamples > 0 {
            // Checkpoint grading: a sampler over every grading row at once, its samples as arrays, and a
            // reward model (at most RewardMLP.maximumParameters, with its file while loading).
            estimate.add("grading sampler (\(gradingSamples) rows, guided)", 2, gradingSamples, rowBytes)
            estimate.add("grading samples", 6, gradingSamples, D, float)
            estimate.add("reward model", 2, RewardMLP.maximumParameters, float)
        }
        estimate.add("training set (\(examples) examples)", examples, datasetBytesPerExample(config: config, method: method))
        if let validationExamples {
            estimate.add("validation set (\(validationExamples) examples)", validationExamples,
                         datasetBytesPerExample(config: config, method: method))
        }
        return estimate
    }

    /// One thread's scratch for a product's operands converted to bf16 (or, emulated, rounded fp32
    /// copies): the largest weight matrix and the widest activation of `rows` rows.
    static func productScratchBytes(config: ModelConfig, rows: Int) -> Int {
        let H = config.hidden, widest = max(config.mlpHidden, 2 * H * config.depth, config.sampleSize, config.timeFreqDim, H)
        let largestWeight = widest * max(H, config.mlpHidden)
        guard let activation = rows.multipliedChecked(by: widest), let floats = activation.addingChecked(largestWeight) else { return Int.max }
        return floats.multipliedChecked(by: 4) ?? Int.max
    }

    /// A parsed example: its samples and its condition (token ids or an embedding), plus
    /// the prompt and bookkeeping (a fixed allowance: prompts are short).
    public static func datasetBytesPerExample(config: ModelConfig, method: TrainingMethod) -> Int {
        let fields = method == .dpo || method == .rpo ? 2 : 1
        let condition: Int
        switch config.condition {
        case let .text(_, maxTokens): condition = 4 * maxTokens
        case let .vector(dim): condition = 4 * dim + 1
        case .none: condition = 0
        }
        return 4 * fields * config.sampleSize + condition + 64
    }

    // MARK: - Sampling and models

    /// A sample request: the model (and its file while loading), the sampler's activations
    /// for `count` rows with classifier-free guidance, its buffers, and the JSON answer.
    public static func sampling(config: ModelConfig, count: Int) -> MemoryEstimate {
        var estimate = MemoryEstimate()
        let P = ParameterLayout(config).totalCount, D = config.sampleSize
        estimate.add("model and its file", 2, P, 4)
        estimate.add("sampler activations (\(count) rows, guided)", 2, count, ResMLPWorkspace.bytesPerRow(config))
        // x, the guided prediction, DPM-Solver++'s two, DDPM's noise, and two rows a sample of the halves' outputs (`StepPasses`).
        estimate.add("sampler buffers", 7, count, D, 4)
        estimate.add("packed weights", PackedWeights.defaultBudget(parameters: P))
        estimate.add("product operands converted (2 threads)", 2, productScratchBytes(config: config, rows: 2 * count))
        estimate.add("answer (JSON text)", count, D, 24)
        return estimate
    }

    /// Creating or loading a model: its parameters, and the file read (a write streams from the parameters).
    public static func model(config: ModelConfig) -> MemoryEstimate {
        var estimate = MemoryEstimate()
        estimate.add("parameters and their file", 2, ParameterLayout(config).totalCount, 4)
        return estimate
    }
}

/// A limit on what one job, sample request or model may hold in memory.
public struct MemoryBudget: Sendable, Equatable {
    public let bytes: Int

    public init(bytes: Int) { self.bytes = bytes }

    /// Half the machine's memory, shared among the jobs trained at once: the server, the
    /// page cache and the other half's requests keep the rest.
    public static func defaultPerJob(physicalMemory: UInt64, workers: Int) -> MemoryBudget {
        let half = Int(min(physicalMemory / 2, UInt64(Int.max)))
        return MemoryBudget(bytes: max(64 << 20, half / max(1, workers)))
    }

    /// Nil when the estimate fits; otherwise the message naming the estimate and the limit.
    public func refusal(_ estimate: MemoryEstimate, what: String,
                        advice: String = "lower batch_size, buffer_size, policy_steps or the model's size") -> String? {
        guard estimate.total > bytes else { return nil }
        return "\(what) would need about \(estimate) of memory (\(estimate.breakdown)), over this server's limit of \(ByteCount.describe(bytes)) (--max-job-memory); \(advice)"
    }

    /// Why a training job would not fit, or nil: checked at creation, at validation and by the worker.
    public func trainingRefusal(config: ModelConfig, method: TrainingMethod, hyperparameters: Hyperparameters, examples: Int,
                                validationExamples: Int?, gradingSamples: Int = 0, precision: MathPrecision = .fp32) -> String? {
        refusal(MemoryEstimate.training(config: config, method: method, hyperparameters: hyperparameters, examples: examples,
                                        validationExamples: validationExamples, gradingSamples: gradingSamples, precision: precision),
                what: "this job")
    }
}
