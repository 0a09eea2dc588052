import Numerics

/// Global-norm clipping as torch.nn.utils.clip_grad_norm_: the norm is taken
/// over all gradients together; when it exceeds `maxNorm` every gradient is
/// scaled by maxNorm / (norm + 1e−6).
public enum GradientClipping {
    /// The global L2 norm of the gradients (a job passes its companion thread to share the pass).
    public static func globalNorm(_ gradients: FloatBuffer, sharingWith companion: CompanionThread? = nil) -> Double {
        Elementwise.sumOfSquares(gradients.pointer, count: gradients.count, sharingWith: companion).squareRoot()
    }

    /// The factor clipping multiplies every gradient by (1 when the norm is within bounds).
    public static func coefficient(norm: Double, maxNorm: Double) -> Float {
        let coefficient = maxNorm / (norm + 1e-6)
        return coefficient < 1 ? Float(coefficient) : 1
    }

    /// Clips in place and returns the norm before clipping. The trainer instead
    /// hands `coefficient` to AdamW, which applies it while reading the gradients.
    @discardableResult
    public static func clipGlobalNorm(_ gradients: FloatBuffer, maxNorm: Double) -> Double {
        let norm = globalNorm(gradients)
        let scale = coefficient(norm: norm, maxNorm: maxNorm)
        if scale < 1 { Elementwise.scale(gradients.pointer, by: scale, count: gradients.count) }
        return norm
    }
}
