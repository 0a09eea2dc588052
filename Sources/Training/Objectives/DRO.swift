import Diffusion
import Foundation

/// dro — Diffusion-DRO (Wu et al., NeurIPS 2025): ranking expert demonstrations
/// above the policy's own samples, without labels. Rows [0, B) are experts x̄_t
/// (x̄₀ noised with ε̄ at t, target ε̄); rows [B, 2B) are policy samples x_t^π at
/// the same t and prompt, with target ε^π, the policy network's own conditional
/// prediction at x_t^π (no gradient).
///   d = [mse_θ(x̄_t, ε̄) − mse_ref(x̄_t, ε̄)] − [mse_θ(x_t^π, ε^π) − mse_ref(x_t^π, ε^π)]
///   L = mean(max(0, d + m)),  margin m default 1e−3
/// Statistics: diff = mean(d), expert_gain = mean(mse_θ − mse_ref) on experts,
/// policy_gain likewise on policy samples, active = fraction of d + m > 0.
/// The policy network, replay buffer and perturbed grids that produce the policy
/// rows live in `PolicySampler`.
public struct DROObjective: Objective {
    public var margin: Double

    public init(margin: Double) { self.margin = margin }
    public var rowsPerExample: Int { 2 }
    public var needsReference: Bool { true }

    public func lossAndGradient(_ c: ObjectiveContext) -> ObjectiveResult {
        let B = c.examples, s = c.scratch
        c.runReferenceAndTheta(rows: 2 * B)
        var loss = 0.0, diff = 0.0, expertGain = 0.0, policyGain = 0.0, active = 0.0
        for b in 0..<B {
            let expert = s.thetaMSE[b] - s.referenceMSE[b]
            let policy = s.thetaMSE[B + b] - s.referenceMSE[B + b]
            let d = expert - policy
            diff += d
            expertGain += expert
            policyGain += policy
            let isActive = d + margin > 0
            if isActive { loss += d + margin; active += 1 }
            // ∂L/∂d = 1[d + m > 0]/B;  ∂d/∂mse_θ(expert) = 1,  ∂d/∂mse_θ(policy) = −1.
            let dD = isActive ? 1 / Double(B) : 0
            s.dMSE[b] = dD
            s.dMSE[B + b] = -dD
        }
        c.backpropagateMSE(rows: 2 * B)
        let n = Double(B)
        return ObjectiveResult(loss: loss / n, statistics: [
            "diff": diff / n, "expert_gain": expertGain / n, "policy_gain": policyGain / n, "active": active / n,
        ])
    }
}
