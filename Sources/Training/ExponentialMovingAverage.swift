import Numerics

/// EMA of θ, as diffusers' EMAModel with a fixed decay: ema ← ema − (1 − decay)·(ema − θ).
/// Checkpoints may publish these weights instead of θ.
public final class ExponentialMovingAverage {
    public let decay: Double
    public let weights: FloatBuffer

    public init(copying parameters: FloatBuffer, decay: Double) throws(AllocationError) {
        precondition(decay >= 0 && decay < 1, "EMA decay must be in [0, 1)")
        self.decay = decay
        weights = try parameters.checkedCopy()
    }

    public func update(from parameters: FloatBuffer) {
        precondition(parameters.count == weights.count)
        let rate = Float(1 - decay)
        let e = weights.pointer, p = parameters.pointer
        for i in 0..<weights.count { e[i] -= rate * (e[i] - p[i]) }
    }
}
