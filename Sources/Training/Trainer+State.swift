import Diffusion
import Foundation
import Numerics

/// Checkpoints, and the training state a resumed run starts from.
extension Trainer {
    /// The checkpoint's weights, and the full training state beside them (which a fork starts
    /// from); the state is also the latest one, a hard link rather than a second copy.
    func saveCheckpoint(metrics: [String: Double]) throws {
        let modelPath = directory.checkpoint(step: step)
        let weights = ema?.weights ?? theta
        try write(ModelFile(config: job.config, parameters: weights, metadata: ["step": "\(step)"]), to: modelPath)
        let checkpointState = directory.state(step: step)
        try saveState(to: checkpointState)
        let staged = statePath + ".link"
        unlink(staged)
        guard link(checkpointState, staged) == 0, rename(staged, statePath) == 0 else {
            unlink(staged)
            throw TrainingFailure(code: "checkpoint_write_failed", message: "cannot link \(checkpointState) as the latest training state: \(String(cString: strerror(errno)))", step: step)
        }
        var record = CheckpointRecord(step: step, modelPath: modelPath, statePath: checkpointState, metrics: metrics)
        if let selection, let best = selection.bestStep, let value = selection.bestValue { record.best = (best, value) }
        sink.checkpointSaved(record)
    }

    /// Everything a resumed run needs to produce the same bits: θ, the reference, Adam's
    /// moments and step, EMA, DRO's policy and replay buffer, the RNG streams and the
    /// position in the data order.
    func saveState(to path: String? = nil) throws {
        let path = path ?? statePath
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
                                        seed: job.seed, hyperparameters: job.hyperparameters, config: job.config.json,
                                        selection: selection)
        writer.metadata["progress"] = String(decoding: try JSONEncoder().encode(progress), as: UTF8.self)
        do {
            try writer.write(to: path)
        } catch {
            throw TrainingFailure(code: "checkpoint_write_failed", message: "cannot write \(path): \(error)", step: step)
        }
    }

    /// Restores a training state: this job's own (`fork` false: everything must match), or a
    /// parent's at a checkpoint (a fork: method, seed and model must match, and DRO's replay
    /// buffer its size; the hyperparameters are this job's, and the best checkpoint starts afresh,
    /// since the parent's checkpoints are not this job's).
    func restoreState(from path: String, fork: Bool) throws {
        func invalid(_ message: String) -> TrainingFailure {
            TrainingFailure(code: "invalid_state", message: "cannot \(fork ? "fork" : "resume") from \(path): \(message)", step: nil)
        }
        let file: SafeTensorsFile
        do { file = try SafeTensorsFile(contentsOf: path) } catch { throw invalid("\(error)") }
        guard let text = file.metadata["progress"],
              let progress = try? JSONDecoder().decode(TrainingProgress.self, from: Data(text.utf8))
        else { throw invalid("no progress record") }
        guard progress.method == job.method, progress.seed == job.seed, fork || progress.hyperparameters == job.hyperparameters,
              progress.config == job.config.json
        else { throw invalid("it belongs to a different job (method, seed, hyperparameters or model differ)") }
        guard progress.step < totalSteps else { throw invalid("it is at step \(progress.step), not before this job's last step \(totalSteps)") }
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
        if !fork, let saved = progress.selection, saved.rule == job.selection { selection = saved }
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
    let method: TrainingMethod
    let seed: UInt64
    let hyperparameters: Hyperparameters
    let config: String
    /// Absent in states written before checkpoint selection existed.
    var selection: CheckpointSelection?
}
