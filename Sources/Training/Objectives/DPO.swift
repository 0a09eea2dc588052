import Diffusion
import Foundation

/// dpo — Diffusion-DPO (Wallace et al. 2024). Rows [0, B) are the chosen x^w,
/// rows [B, 2B) the rejected x^l; a pair shares ε and t.
///   Δ_θ = mse_θ(w) − mse_θ(l),  Δ_ref likewise
///   z = −β/2·(Δ_θ − Δ_ref);  L = mean(−log σ(z))
/// Statistics: implicit_acc = mean(z > 0), reward_margin = mean(z).
public struct DPOObjective: Objective {
    public var beta: Double

    public init(beta: Double) { self.beta = beta }
    public var rowsPerExample: Int { 2 }
    public var needsReference: Bool { true }

    public func lossAndGradient(_ c: ObjectiveContext) -> ObjectiveResult {
        let B = c.examples, s = c.scratch
        c.runReferenceAndTheta(rows: 2 * B)
        var loss = 0.0, accurate = 0.0, margin = 0.0
        for b in 0..<B {
            let thetaDelta = s.thetaMSE[b] - s.thetaMSE[B + b]
            let referenceDelta = s.referenceMSE[b] - s.referenceMSE[B + b]
            let z = -beta / 2 * (thetaDelta - referenceDelta)
            loss -= logSigmoid(z)
            if z > 0 { accurate += 1 }
            margin += z
            // ∂L/∂z = −σ(−z)/B;  ∂z/∂mse_θ(w) = −β/2,  ∂z/∂mse_θ(l) = +β/2.
            let dZ = -sigmoid(-z) / Double(B)
            s.dMSE[b] = dZ * (-beta / 2)
            s.dMSE[B + b] = dZ * (beta / 2)
        }
        c.backpropagateMSE(rows: 2 * B)
        return ObjectiveResult(loss: loss / Double(B), statistics: [
            "implicit_acc": accurate / Double(B), "reward_margin": margin / Double(B),
        ])
    }
}
