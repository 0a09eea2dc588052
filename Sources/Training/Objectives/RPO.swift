import Diffusion
import Foundation

/// rpo — Diffusion-RPO (Gu et al. 2024): DPO over the full batch contrast.
/// Rows [0, B) are chosen, [B, 2B) rejected, pairs sharing ε, t and prompt.
///   r^w_i = −(mse_θ(w_i) − mse_ref(w_i)),  r^l_j likewise
///   ω_ij = softmax_j(cos(c_i, c_j)/τ), c the reference model's condition vectors (no gradient)
///   L = mean_i Σ_j ω_ij·(−log σ(β/2·(r^w_i − r^l_j)))
/// With cond.kind = none, ω = identity (plain DPO).
/// Statistics: implicit_acc and reward_margin over the matched pairs (i = j).
public struct RPOObjective: Objective {
    public var beta: Double
    public var temperature: Double

    public init(beta: Double, temperature: Double) {
        self.beta = beta
        self.temperature = temperature
    }
    public var rowsPerExample: Int { 2 }
    public var needsReference: Bool { true }

    public func lossAndGradient(_ c: ObjectiveContext) -> ObjectiveResult {
        let B = c.examples, s = c.scratch, H = c.model.config.hidden
        c.runReferenceAndTheta(rows: 2 * B)
        let weights = contrastWeights(c, examples: B, hidden: H)
        var rewardChosen = [Double](repeating: 0, count: B), rewardRejected = [Double](repeating: 0, count: B)
        for i in 0..<B {
            rewardChosen[i] = -(s.thetaMSE[i] - s.referenceMSE[i])
            rewardRejected[i] = -(s.thetaMSE[B + i] - s.referenceMSE[B + i])
        }
        var loss = 0.0, accurate = 0.0, margin = 0.0
        for i in 0..<B { s.dMSE[i] = 0; s.dMSE[B + i] = 0 }
        for i in 0..<B {
            for j in 0..<B where weights[i * B + j] != 0 {
                let u = beta / 2 * (rewardChosen[i] - rewardRejected[j])
                loss -= weights[i * B + j] * logSigmoid(u)
                // ∂L/∂u_ij = −ω_ij·σ(−u_ij)/B;  ∂u/∂mse_θ(w_i) = −β/2,  ∂u/∂mse_θ(l_j) = +β/2.
                let dU = -weights[i * B + j] * sigmoid(-u) / Double(B)
                s.dMSE[i] += dU * (-beta / 2)
                s.dMSE[B + j] += dU * (beta / 2)
            }
            let matched = beta / 2 * (rewardChosen[i] - rewardRejected[i])
            if matched > 0 { accurate += 1 }
            margin += matched
        }
        c.backpropagateMSE(rows: 2 * B)
        return ObjectiveResult(loss: loss / Double(B), statistics: [
            "implicit_acc": accurate / Double(B), "reward_margin": margin / Double(B),
        ])
    }

    /// ω, [B, B] row-major: a softmax over cosine similarities of the reference
    /// condition vectors of the chosen rows; the identity for unconditional models.
    func contrastWeights(_ c: ObjectiveContext, examples B: Int, hidden H: Int) -> [Double] {
        var weights = [Double](repeating: 0, count: B * B)
        if c.model.config.condition == .none {
            for i in 0..<B { weights[i * B + i] = 1 }
            return weights
        }
        let vectors = c.scratch.referenceCondition.pointer
        var norms = [Double](repeating: 0, count: B)
        for i in 0..<B {
            var sum = 0.0
            for k in 0..<H { sum += Double(vectors[i * H + k]) * Double(vectors[i * H + k]) }
            norms[i] = sum.squareRoot()
        }
        for i in 0..<B {
            var logits = [Double](repeating: 0, count: B)
            for j in 0..<B {
                var dot = 0.0
                for k in 0..<H { dot += Double(vectors[i * H + k]) * Double(vectors[j * H + k]) }
                // torch.nn.functional.cosine_similarity, eps 1e−8.
                logits[j] = dot / max(norms[i] * norms[j], 1e-8) / temperature
            }
            let largest = logits.max() ?? 0
            let exps = logits.map { Foundation.exp($0 - largest) }
            let total = exps.reduce(0, +)
            for j in 0..<B { weights[i * B + j] = exps[j] / total }
        }
        return weights
    }
}
