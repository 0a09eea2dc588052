import Diffusion
import Foundation
import Numerics

/// The validation loss reported at checkpoints.
extension Trainer {
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
}
