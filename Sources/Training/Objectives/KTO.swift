import Diffusion
import Foundation

/// kto — Diffusion-KTO (Li et al. 2024), utility `sigmoid`. One row per sample,
/// labelled desirable or undesirable.
///   g = mse_ref − mse_θ;  z₀ = max(0, mean_b g)  (no gradient)
///   h = σ(±β·(g − z₀))  (+ desirable, − undesirable);  L = mean(λ·(1 − h)),  λ = λ_D or λ_U
/// Statistics: reference_point = z₀, desirable_gain / undesirable_gain = mean g per label,
/// desirable_loss / undesirable_loss = mean λ·(1 − h) per label (the loss split by label).
public struct KTOObjective: Objective {
    public var beta: Double
    public var lambdaDesirable: Double
    public var lambdaUndesirable: Double

    public init(beta: Double, lambdaDesirable: Double, lambdaUndesirable: Double) {
        self.beta = beta
        self.lambdaDesirable = lambdaDesirable
        self.lambdaUndesirable = lambdaUndesirable
    }
    public var rowsPerExample: Int { 1 }
    public var needsReference: Bool { true }

    public func lossAndGradient(_ c: ObjectiveContext) -> ObjectiveResult {
        let B = c.examples, s = c.scratch
        precondition(c.desirable.count >= B, "kto needs a desirable flag per sample")
        c.runReferenceAndTheta(rows: B)
        var meanGain = 0.0
        for b in 0..<B { meanGain += s.referenceMSE[b] - s.thetaMSE[b] }
        let referencePoint = max(0, meanGain / Double(B))
        var loss = 0.0
        var gains = (desirable: 0.0, undesirable: 0.0), losses = (desirable: 0.0, undesirable: 0.0)
        var counts = (desirable: 0, undesirable: 0)
        for b in 0..<B {
            let gain = s.referenceMSE[b] - s.thetaMSE[b]
            let sign: Double = c.desirable[b] ? 1 : -1
            let weight = c.desirable[b] ? lambdaDesirable : lambdaUndesirable
            let h = sigmoid(sign * beta * (gain - referencePoint))
            loss += weight * (1 - h)
            if c.desirable[b] {
                gains.desirable += gain; losses.desirable += weight * (1 - h); counts.desirable += 1
            } else {
                gains.undesirable += gain; losses.undesirable += weight * (1 - h); counts.undesirable += 1
            }
            // ∂L/∂g = −λ·h(1−h)·(±β)/B and ∂g/∂mse_θ = −1.
            s.dMSE[b] = weight * h * (1 - h) * sign * beta / Double(B)
        }
        c.backpropagateMSE(rows: B)
        return ObjectiveResult(loss: loss / Double(B), statistics: [
            "reference_point": referencePoint,
            "desirable_gain": counts.desirable > 0 ? gains.desirable / Double(counts.desirable) : 0,
            "undesirable_gain": counts.undesirable > 0 ? gains.undesirable / Double(counts.undesirable) : 0,
            "desirable_loss": counts.desirable > 0 ? losses.desirable / Double(counts.desirable) : 0,
            "undesirable_loss": counts.undesirable > 0 ? losses.undesirable / Double(counts.undesirable) : 0,
        ])
    }
}
