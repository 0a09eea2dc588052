import Foundation
import Numerics

/// AdamW with PyTorch's semantics (torch.optim.AdamW): decoupled weight decay
/// p ← p·(1 − lr·wd) before the Adam update, bias-corrected moments, and the
/// update written as torch writes it so the rounding matches:
///   m ← lerp(m, g, 1 − β1);  v ← β2·v + (1 − β2)·g²
///   p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + eps)
/// One loop over the whole parameter buffer.
public final class AdamW {
    public struct Hyperparameters: Codable, Equatable, Sendable {
        public var beta1: Double = 0.9
        public var beta2: Double = 0.999
        public var epsilon: Double = 1e-8
        public var weightDecay: Double = 1e-2

        public init(beta1: Double = 0.9, beta2: Double = 0.999, epsilon: Double = 1e-8, weightDecay: Double = 1e-2) {
            self.beta1 = beta1
            self.beta2 = beta2
            self.epsilon = epsilon
            self.weightDecay = weightDecay
        }
    }

    public let hyperparameters: Hyperparameters
    /// First and second moments, in the parameter layout.
    public let firstMoment: FloatBuffer
    public let secondMoment: FloatBuffer
    /// Number of updates applied so far (t of the bias correction).
    public private(set) var step: Int = 0

    public init(parameterCount: Int, hyperparameters: Hyperparameters = .init()) {
        self.hyperparameters = hyperparameters
        firstMoment = FloatBuffer(count: parameterCount)
        secondMoment = FloatBuffer(count: parameterCount)
    }

    /// Restores a saved optimizer state (moments and step count).
    public func restore(step: Int, firstMoment m: [Float], secondMoment v: [Float]) {
        precondition(m.count == firstMoment.count && v.count == secondMoment.count, "optimizer state does not match the model")
        self.step = step
        firstMoment.pointer.update(from: m, count: m.count)
        secondMoment.pointer.update(from: v, count: v.count)
    }

    public func update(_ parameters: FloatBuffer, gradients: FloatBuffer, learningRate lr: Double) {
        precondition(parameters.count == gradients.count && parameters.count == firstMoment.count)
        step += 1
        let h = hyperparameters
        let decay = Float(1 - lr * h.weightDecay)
        let oneMinusBeta1 = Float(1 - h.beta1), beta2 = Float(h.beta2), oneMinusBeta2 = Float(1 - h.beta2)
        let stepSize = Float(lr / (1 - pow(h.beta1, Double(step))))
        let correction2 = Float((1 - pow(h.beta2, Double(step))).squareRoot())
        let epsilon = Float(h.epsilon)
        let p = parameters.pointer, g = gradients.pointer, m = firstMoment.pointer, v = secondMoment.pointer
        for i in 0..<parameters.count {
            p[i] *= decay
            let gi = g[i]
            m[i] = m[i] + oneMinusBeta1 * (gi - m[i])
            v[i] = v[i] * beta2 + oneMinusBeta2 * gi * gi
            p[i] -= stepSize * (m[i] / (v[i].squareRoot() / correction2 + epsilon))
        }
    }
}
