import Diffusion
import Numerics

/// sft — L = mean_b mse(ε_θ(x_t, t, c), ε), mse = per-sample mean over D.
/// Fine-tuning and pretraining are the same objective. Statistics: loss.
public struct SFTObjective: Objective {
    public init() {}
    public var rowsPerExample: Int { 1 }
    public var needsReference: Bool { false }

    public func lossAndGradient(_ c: ObjectiveContext) -> ObjectiveResult {
        let rows = c.examples
        c.runTheta(rows: rows)
        var loss = 0.0
        for b in 0..<rows {
            loss += c.scratch.thetaMSE[b]
            c.scratch.dMSE[b] = 1 / Double(rows)
        }
        c.backpropagateMSE(rows: rows)
        return ObjectiveResult(loss: loss / Double(rows), statistics: [:])
    }
}
