import Numerics

/// Global-norm clipping as torch.nn.utils.clip_grad_norm_: the norm is taken
/// over all gradients together; when it exceeds `maxNorm` every gradient is
/// scaled by maxNorm / (norm + 1e−6). Returns the norm before clipping.
public enum GradientClipping {
    @discardableResult
    public static func clipGlobalNorm(_ gradients: FloatBuffer, maxNorm: Double) -> Double {
        let norm = Elementwise.sumOfSquares(gradients.pointer, count: gradients.count).squareRoot()
        let coefficient = maxNorm / (norm + 1e-6)
        if coefficient < 1 { Elementwise.scale(gradients.pointer, by: Float(coefficient), count: gradients.count) }
        return norm
    }
}
