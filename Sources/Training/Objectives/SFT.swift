import Diffusion
import Numerics

/// sft — L = mean_b mse(ε_θ(x_t, t, c), ε), mse = per-sample mean over D.
/// Fine-tuning and pretraining are the same objective. Statistics: loss.
public enum SFTObjective {
    /// Runs θ on the workspace inputs (x_t, t, condition already filled), adds
    /// ∂L/∂θ to `gradients`, and returns the loss.
    public static func lossAndGradient(model: ResMLP, parameters: FloatBuffer, workspace: ResMLPWorkspace,
                                       batch: Int, noise: UnsafePointer<Float>, gradients: FloatBuffer) -> Double {
        model.forward(parameters, workspace, batch: batch)
        let count = batch * model.config.sampleSize
        let out = workspace.output.pointer, dOut = workspace.outputGradient.pointer
        let scale = 2 / Float(count)
        var loss = 0.0
        for i in 0..<count {
            let difference = out[i] - noise[i]
            loss += Double(difference * difference)
            dOut[i] = scale * difference
        }
        model.backward(parameters, workspace, batch: batch, dOutput: dOut, gradients: gradients)
        return loss / Double(count)
    }
}
