import Diffusion
import Foundation
import Numerics

/// Evaluation on the validation set: every `eval_every` steps and at checkpoints.
extension Trainer {
    /// The objective's loss and statistics on the validation set (no gradient), each as
    /// `val_<name>`, means over the set with each batch weighted by its examples: dpo and rpo
    /// give the implicit reward's accuracy and margin (`val_implicit_acc`, `val_reward_margin`),
    /// kto the desirable and undesirable split (`val_desirable_loss`, `val_undesirable_loss` and
    /// their gains), dro the hinge's active fraction and the expert–policy gap (`val_active`,
    /// `val_diff`, `val_expert_gain`, `val_policy_gain`). Noise comes from a fixed stream, so
    /// successive evaluations compare; DRO's policy rows come from the current θ.
    func validationMetrics() -> [String: Double] {
        guard let validation = job.validation, validation.count > 0 else { return [:] }
        let B = job.hyperparameters.batchSize
        var random = Philox(seed: job.seed, stream: Self.validationStream)
        var sums: [String: Double] = [:]
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
            let result = BF16Shadow.using(thetaBF16) { objective.lossAndGradient(ObjectiveContext(
                model: model, theta: theta, reference: reference, workspace: workspace, examples: examples,
                targets: targets.pointer, desirable: desirable, scratch: scratch, gradients: nil)) }
            sums["loss", default: 0] += result.loss * Double(examples)
            for (name, value) in result.statistics { sums[name, default: 0] += value * Double(examples) }
        }
        return Dictionary(uniqueKeysWithValues: sums.map { ("val_\($0.key)", $0.value / Double(validation.count)) })
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
