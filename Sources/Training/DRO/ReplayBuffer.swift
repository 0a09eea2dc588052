import Diffusion
import Numerics

/// The newest `capacity` policy trajectories. Each stores, per sampling step k,
/// the step's input x_{t_k}, its timestep t_k and the policy's own conditional
/// prediction ε^π_k — the input of step k, not its output — together with the
/// prompt's condition (after dropout) and which expert demonstration it was drawn for.
public final class ReplayBuffer {
    public let capacity: Int
    public let steps: Int
    public let width: Int
    let config: ModelConfig
    /// [capacity, steps, width]
    let inputs: FloatBuffer
    let predictions: FloatBuffer
    /// [capacity, steps]
    var timesteps: [Float]
    var experts: [Int]
    var conditions: Conditions
    /// Trajectories stored (≤ capacity) and the slot the next one goes to.
    public private(set) var count = 0
    private(set) var head = 0

    /// What the slots overwritten since `beginStep` held, so that an optimizer step
    /// interrupted half-way (a pause inside a long rollout) can go back to its start.
    let undo: (inputs: FloatBuffer, predictions: FloatBuffer)
    var undoTimesteps: [Float]
    var undoConditions: Conditions
    var undoSlots: [(slot: Int, expert: Int)] = []
    /// The slots in `undoSlots`, for a constant-time check (a step may rewrite thousands).
    var savedSlots: Set<Int> = []
    var stepStart = (count: 0, head: 0)
    /// More slots were overwritten in this step than the log holds: it cannot be rolled back.
    private(set) var undoOverflowed = false

    /// `undoSlots`: how many trajectories one optimizer step may write (rollout batch × accumulation).
    public init(capacity: Int, steps: Int, config: ModelConfig, undoSlots: Int) throws(AllocationError) {
        self.capacity = capacity
        self.steps = steps
        self.width = config.sampleSize
        self.config = config
        let floats = capacity.multipliedChecked(by: steps).flatMap { $0.multipliedChecked(by: config.sampleSize) } ?? -1
        inputs = try FloatBuffer(allocating: floats)
        predictions = try FloatBuffer(allocating: floats)
        let logged = min(capacity, undoSlots)
        undo = (try FloatBuffer(allocating: logged * steps * width), try FloatBuffer(allocating: logged * steps * width))
        undoTimesteps = [Float](repeating: 0, count: logged * steps)
        undoConditions = Conditions.null(count: logged, config: config)
        timesteps = [Float](repeating: 0, count: capacity * steps)
        experts = [Int](repeating: 0, count: capacity)
        conditions = Conditions.null(count: capacity, config: config)
    }

    /// Starts an optimizer step: `rollBack` returns here.
    func beginStep() {
        undoSlots.removeAll(keepingCapacity: true)
        savedSlots.removeAll(keepingCapacity: true)
        undoOverflowed = false
        stepStart = (count, head)
    }

    /// Restores the buffer as it was at `beginStep`; false when the step wrote more than the log holds.
    func rollBack() -> Bool {
        guard !undoOverflowed else { return false }
        for (u, saved) in undoSlots.enumerated().reversed() {
            let slot = saved.slot, block = steps * width
            (inputs.pointer + slot * block).update(from: undo.inputs.pointer + u * block, count: block)
            (predictions.pointer + slot * block).update(from: undo.predictions.pointer + u * block, count: block)
            for k in 0..<steps { timesteps[slot * steps + k] = undoTimesteps[u * steps + k] }
            experts[slot] = saved.expert
            conditions.setRow(slot, from: undoConditions, row: u, config: config)
        }
        (count, head) = stepStart
        undoSlots.removeAll(keepingCapacity: true)
        savedSlots.removeAll(keepingCapacity: true)
        return true
    }

    private func saveForUndo(_ slot: Int) {
        guard !savedSlots.contains(slot) else { return }
        let u = undoSlots.count
        guard u < undoConditions.count else { undoOverflowed = true; return }
        let block = steps * width
        (undo.inputs.pointer + u * block).update(from: inputs.pointer + slot * block, count: block)
        (undo.predictions.pointer + u * block).update(from: predictions.pointer + slot * block, count: block)
        for k in 0..<steps { undoTimesteps[u * steps + k] = timesteps[slot * steps + k] }
        undoConditions.setRow(u, from: conditions, row: slot, config: config)
        undoSlots.append((slot, experts[slot]))
        savedSlots.insert(slot)
    }

    /// Reserves the slot for a new trajectory (evicting the oldest when full).
    func beginTrajectory(expert: Int, condition: Conditions, row: Int) -> Int {
        let slot = head
        saveForUndo(slot)
        experts[slot] = expert
        conditions.setRow(slot, from: condition, row: row, config: config)
        head = (head + 1) % capacity
        count = min(count + 1, capacity)
        return slot
    }

    func record(slot: Int, step: Int, input: UnsafePointer<Float>, timestep: Float, prediction: UnsafePointer<Float>) {
        let offset = (slot * steps + step) * width
        (inputs.pointer + offset).update(from: input, count: width)
        (predictions.pointer + offset).update(from: prediction, count: width)
        timesteps[slot * steps + step] = timestep
    }

    // MARK: Saving and restoring (training state)

    func save(into writer: inout SafeTensorsWriter) {
        writer.add("replay.inputs", shape: [capacity, steps, width], borrowing: UnsafeBufferPointer(inputs.buffer))
        writer.add("replay.predictions", shape: [capacity, steps, width], borrowing: UnsafeBufferPointer(predictions.buffer))
        writer.add("replay.timesteps", shape: [capacity, steps], floats: timesteps)
        writer.add("replay.experts", shape: [capacity], int64s: experts.map(Int64.init))
        writer.add("replay.tokens", shape: [conditions.tokens.count], int64s: conditions.tokens.map(Int64.init))
        writer.add("replay.vectors", shape: [conditions.vectors.count], floats: conditions.vectors)
        writer.add("replay.is_null", shape: [conditions.isNull.count], uint8s: conditions.isNull)
        writer.add("replay.position", shape: [2], int64s: [Int64(count), Int64(head)])
    }

    func restore(from file: SafeTensorsFile) throws {
        try file.copyFloats("replay.inputs", shape: [capacity, steps, width], into: inputs.pointer)
        try file.copyFloats("replay.predictions", shape: [capacity, steps, width], into: predictions.pointer)
        timesteps = try file.floats("replay.timesteps", shape: [capacity, steps])
        experts = try file.integers("replay.experts", shape: [capacity])
        conditions.tokens = try file.integers("replay.tokens", shape: [conditions.tokens.count]).map { Int32($0) }
        conditions.vectors = try file.floats("replay.vectors", shape: [conditions.vectors.count])
        conditions.isNull = try file.integers("replay.is_null", shape: [conditions.isNull.count]).map { UInt8($0) }
        let position = try file.integers("replay.position", shape: [2])
        count = position[0]
        head = position[1]
    }
}

/// DRO's online policy samples (as the official implementation): a copy of θ,
/// refreshed every `policy_sync_every` optimizer steps, samples trajectories for
/// the prompts of the expert rows drawn at each micro-step, from x_T ~ N(0, I),
/// with a per-sample timestep grid (the leading grid plus an offset in [0, ⌊T/N⌋))
/// when `perturb_timesteps` is on.
public final class PolicyRollouts {
    public let policy: FloatBuffer
    public let buffer: ReplayBuffer
    let sampler: Sampler
    let steps: Int
    let guidance: Float
    let perturbTimesteps: Bool
    let noise: FloatBuffer
    var grid: [Int]

    /// `rolloutsPerStep`: trajectories one optimizer step samples (rollout batch × accumulation).
    public init(model: ResMLP, theta: FloatBuffer, sampler kind: SamplerKind, steps: Int, guidance: Float,
                perturbTimesteps: Bool, bufferSize: Int, rolloutBatch: Int, rolloutsPerStep: Int) throws(AllocationError) {
        policy = try theta.checkedCopy()
        buffer = try ReplayBuffer(capacity: bufferSize, steps: steps, config: model.config, undoSlots: rolloutsPerStep)
        sampler = Sampler(model: model, kind: kind, maxBatch: rolloutBatch)
        self.steps = steps
        self.guidance = guidance
        self.perturbTimesteps = perturbTimesteps
        noise = FloatBuffer(count: rolloutBatch * model.config.sampleSize)
        grid = [Int](repeating: 0, count: rolloutBatch * steps)
    }

    public func synchronize(with theta: FloatBuffer) { policy.copy(from: theta) }

    /// Samples one trajectory per expert row (for its condition) and stores every step;
    /// false when `shouldStop` ended it early (the buffer then holds a partial trajectory
    /// until the step is rolled back).
    func rollout(experts: [Int], conditions: Conditions, random: inout Philox, shouldStop: () -> Bool = { false }) -> Bool {
        let batch = experts.count, D = sampler.model.config.sampleSize
        random.fillNormal(noise.pointer, count: batch * D)
        let trainSteps = sampler.schedule.count
        let leading = Sampler.leadingTimesteps(steps: steps, trainSteps: trainSteps)
        let ratio = trainSteps / steps
        for b in 0..<batch {
            let offset = perturbTimesteps ? random.nextInt(below: max(ratio, 1)) : 0
            let base = perturbTimesteps ? leading : sampler.timesteps(steps: steps)
            for k in 0..<steps { grid[b * steps + k] = base[k] + offset }
        }
        slots = (0..<batch).map { buffer.beginTrajectory(expert: experts[$0], condition: conditions, row: $0) }
        return sample(batch: batch, conditions: conditions, noiseSeed: random.nextUInt64(), shouldStop: shouldStop)
    }

    private var slots: [Int] = []

    private func sample(batch: Int, conditions: Conditions, noiseSeed: UInt64, shouldStop: () -> Bool) -> Bool {
        sampler.sample(parameters: policy, x: noise.pointer, batch: batch, conditions: conditions, guidance: guidance,
                       steps: steps, grid: Array(grid.prefix(batch * steps)),
                       fillNoise: DDPMNoise(seed: noiseSeed).fill,
                       observe: { [unowned self] step in self.record(step) }, shouldStop: shouldStop)
    }

    private func record(_ step: SamplerStep) {
        let D = sampler.model.config.sampleSize
        for b in 0..<step.batch {
            buffer.record(slot: slots[b], step: step.index, input: step.x + b * D, timestep: step.timesteps[b],
                          prediction: step.conditionalPrediction + b * D)
        }
    }
}
