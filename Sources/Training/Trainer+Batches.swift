import Diffusion
import Foundation
import Numerics

/// Batch assembly: the data order, noised rows for each objective, prompt dropout, and DRO's
/// rows drawn from the replay buffer.
extension Trainer {
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
        let fields = job.method.sampleFields
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
}
