import Diffusion
import Foundation
import Numerics

/// Checkpoints, and the training state a resumed run starts from.
extension Trainer {
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
    let method: TrainingMethod
    let seed: UInt64
    let hyperparameters: Hyperparameters
    let config: String
}
