import Numerics

/// EMA of θ, as diffusers' EMAModel: ema ← ema − (1 − d)·(ema − θ), where the trainer's n-th
/// update uses d = min(decay, n / (9 + n)) (the first copies θ): a short job's EMA follows θ
/// instead of staying near the base, and a long one's settles at `decay`. Checkpoints may
/// publish these weights instead of θ.
public final class ExponentialMovingAverage {
    public let decay: Double
    public let weights: FloatBuffer

    public init(copying parameters: FloatBuffer, decay: Double) throws(AllocationError) {
        precondition(decay >= 0 && decay < 1, "EMA decay must be in [0, 1)")
        self.decay = decay
        weights = try parameters.checkedCopy()
    }

    /// diffusers' EMAModel.get_decay with update_after_step 0 and no inverse-gamma warmup.
    public static func decay(_ decay: Double, update n: Int) -> Double { n <= 1 ? 0 : min(decay, Double(n) / Double(9 + n)) }

    /// The n-th update (1-based, the optimizer step just taken), with the warm-up schedule.
    public func update(from parameters: FloatBuffer, update n: Int) {
        update(from: parameters, decay: Self.decay(decay, update: n))
    }

    /// An update with the fixed `decay`.
    public func update(from parameters: FloatBuffer) { update(from: parameters, decay: decay) }

    func update(from parameters: FloatBuffer, decay: Double) {
        precondition(parameters.count == weights.count)
        let rate = Float(1 - decay)
        let e = weights.pointer, p = parameters.pointer
        for i in 0..<weights.count { e[i] -= rate * (e[i] - p[i]) }
    }
}
