import Foundation
import CKernels
import Numerics

/// AdamW with PyTorch's semantics (torch.optim.AdamW): decoupled weight decay
/// p ← p·(1 − lr·wd) before the Adam update, bias-corrected moments, and the
/// update written as torch writes it so the rounding matches:
///   m ← lerp(m, g, 1 − β1);  v ← β2·v + (1 − β2)·g²
///   p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + eps)
/// One loop over the whole parameter buffer, which also zeroes each gradient
/// once read: the buffer is ready for the next step's accumulation.
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

    public init(parameterCount: Int, hyperparameters: Hyperparameters = .init()) throws(AllocationError) {
        self.hyperparameters = hyperparameters
        firstMoment = try FloatBuffer(allocating: parameterCount)
        secondMoment = try FloatBuffer(allocating: parameterCount)
    }

    /// Restores a saved optimizer state (moments and step count).
    public func restore(step: Int, firstMoment m: [Float], secondMoment v: [Float]) {
        precondition(m.count == firstMoment.count && v.count == secondMoment.count, "optimizer state does not match the model")
        self.step = step
        firstMoment.pointer.update(from: m, count: m.count)
        secondMoment.pointer.update(from: v, count: v.count)
    }

    /// One update of every parameter. `gradientScale` multiplies each gradient as
    /// it is read — the clipping coefficient, applied without a pass of its own.
    /// The gradients are consumed: zero on return. A job passes its companion thread,
    /// which takes half of the parameters.
    /// `shadow`, θ's bf16 copy in a bf16 job, is written in the same pass.
    public func update(_ parameters: FloatBuffer, gradients: FloatBuffer, learningRate lr: Double,
                       gradientScale: Float = 1, sharingWith companion: CompanionThread? = nil, shadow: BF16Shadow? = nil) {
        precondition(parameters.count == gradients.count && parameters.count == firstMoment.count)
        precondition(shadow.map { $0.weights === parameters } ?? true, "the shadow is another buffer's")
        step += 1
        let h = hyperparameters
        let coefficients = Coefficients(
            decay: Float(1 - lr * h.weightDecay), oneMinusBeta1: Float(1 - h.beta1),
            beta2: Float(h.beta2), oneMinusBeta2: Float(1 - h.beta2),
            stepSize: Float(lr / (1 - pow(h.beta1, Double(step)))),
            correction2: Float((1 - pow(h.beta2, Double(step))).squareRoot()),
            epsilon: Float(h.epsilon), gradientScale: gradientScale)
        let buffers = UncheckedSendable((parameters.pointer, gradients.pointer, firstMoment.pointer, secondMoment.pointer,
                                         shadow?.values))
        Parallel.forEachChunk(count: parameters.count, sharingWith: companion) { range in
            let (p, g, m, v, shadow) = buffers.value
            Self.update(p + range.lowerBound, g + range.lowerBound, m + range.lowerBound, v + range.lowerBound,
                        shadow: shadow.map { $0 + range.lowerBound }, count: range.count, coefficients, kernel: .fastest)
        }
    }

    /// One chunk's pass, by the portable loop below or its AVX-512 or AVX2 transcription in CKernels
    /// (about 2× faster on a bench-m step with AVX-512: the SSE loop is bound by its divisions).
    static func update(_ p: UnsafeMutablePointer<Float>, _ g: UnsafeMutablePointer<Float>,
                       _ m: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>,
                       shadow: UnsafeMutablePointer<UInt16>? = nil, count: Int, _ c: Coefficients, kernel: VectorKernel) {
        switch kernel {
        case .portable:
            update(p, g, m, v, count: count, c)
            // A shadow exists only where the CPU rounds to bf16 in AVX-512 (`BF16Shadow.isAvailable`).
            if let shadow { preftune_convert_to_bf16(p, shadow, Int64(count)) }
        case .avx2:
            // No bf16 conversion in AVX2, and so no shadow (`BF16Shadow.isAvailable` needs AVX512-BF16).
            precondition(shadow == nil, "a bf16 shadow needs AVX512-BF16")
            var constants = Self.constants(c)
            preftune_adamw_update_avx2(p, g, m, v, Int64(count), &constants)
        case .avx512:
            var constants = Self.constants(c)
            if let shadow {
                preftune_adamw_update_avx512_bf16(p, g, m, v, shadow, Int64(count), &constants)
            } else {
                preftune_adamw_update_avx512(p, g, m, v, Int64(count), &constants)
            }
        }
    }

    static func constants(_ c: Coefficients) -> preftune_adamw_coefficients {
        preftune_adamw_coefficients(
            decay: c.decay, one_minus_beta1: c.oneMinusBeta1, beta2: c.beta2, one_minus_beta2: c.oneMinusBeta2,
            step_size: c.stepSize, correction2: c.correction2, epsilon: c.epsilon, gradient_scale: c.gradientScale)
    }

    /// Moments below the smallest normal Float32 become zero, as under
    /// torch.set_flush_denormal(True). A parameter whose gradient stays zero (an unused
    /// token's embedding row, a batch where DRO's hinge is inactive) has its first moment
    /// decay by β1 per step into subnormals within ~800 steps, and subnormal arithmetic
    /// made the whole update up to twice as slow; such a moment moves no parameter.
    @inline(__always)
    static func flushSubnormal(_ x: Float) -> Float { abs(x) < Float.leastNormalMagnitude ? 0 : x }

    struct Coefficients {
        let decay, oneMinusBeta1, beta2, oneMinusBeta2, stepSize, correction2, epsilon, gradientScale: Float
    }

    private static func update(_ p: UnsafeMutablePointer<Float>, _ g: UnsafeMutablePointer<Float>,
                               _ m: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>,
                               count: Int, _ c: Coefficients) {
        for i in 0..<count {
            let gi = g[i] * c.gradientScale
            let mi = flushSubnormal(m[i] + c.oneMinusBeta1 * (gi - m[i]))
            let vi = flushSubnormal(v[i] * c.beta2 + c.oneMinusBeta2 * gi * gi)
            m[i] = mi
            v[i] = vi
            p[i] = p[i] * c.decay - c.stepSize * (mi / (vi.squareRoot() / c.correction2 + c.epsilon))
            g[i] = 0
        }
    }
}
