import Diffusion
import Foundation
@testable import Numerics
import TestSupport
import Testing
@testable import Training

/// oneDNN chooses a kernel for each product when it first meets the product's shape, layout and
/// post-ops. Where its JIT kernels do not take a combination, it may refuse it (the product then
/// falls back to OpenBLAS or the bf16 emulation) or serve it with its reference kernel, a plain
/// loop one to two orders of magnitude slower: both would leave the results right and the speed
/// lost, and a new CPU (AMX, say) can meet either. These tests hold every product a training step
/// and a sampling pass make to a JIT kernel, in each precision the CPU computes natively.
@Suite(.computeThread, .enabled(if: OneDNN.supportsCPU, "oneDNN needs AVX2: \(OneDNN.isaName)"))
struct KernelChoiceTests {
    static let config = ModelConfig(sampleShape: [1, 8, 8], hidden: 64, depth: 2, mlpRatio: 2, timeFreqDim: 32,
                                    condition: .text(vocab: 64, maxTokens: 4))
    static let batch = 16

    /// An SFT step's forward and backward, a pass with no backward (SiLU as a post-op), and both
    /// again reading θ packed, on oneDNN at every size; returns the shapes this thread's products
    /// met, with their kernels, and the shapes oneDNN refused.
    static func productsOfAStep(_ precision: MathPrecision) -> (kernels: [OneDNN.ProductShape: String], refused: Set<OneDNN.ProductShape>) {
        let context = ThreadMath.context
        let before = Set(context.primitives.keys), refusedBefore = context.refusedShapes
        MathBackend.withBackend(.onednn) {
            MathPrecision.with(precision) {
                let model = ResMLP(config: config)
                let theta = model.initialParameters(seed: 3)
                var random = Philox(seed: 4)
                random.fillUniform(theta.pointer, count: theta.count, low: -0.1, high: 0.1)
                let workspace = model.makeWorkspace(maxBatch: batch), scratch = ObjectiveScratch(config: config, maxRows: batch)
                let targets = FloatBuffer(count: batch * config.sampleSize), gradients = FloatBuffer(count: theta.count)
                random.fillNormal(workspace.x.pointer, count: batch * config.sampleSize)
                random.fillNormal(targets.pointer, count: targets.count)
                for b in 0..<batch {
                    workspace.timesteps[b] = Float(b * 61 % 1000)
                    for slot in 0..<4 { workspace.tokens[b * 4 + slot] = Int32(1 + (b + slot) % 63) }
                }
                let step = ObjectiveContext(model: model, theta: theta, reference: nil, workspace: workspace, examples: batch,
                                            targets: targets.pointer, scratch: scratch, gradients: gradients)
                func stepAndPass() {
                    _ = SFTObjective().lossAndGradient(step)
                    model.forward(theta, workspace, batch: batch, keepingActivations: false)
                }
                stepAndPass()
                PackedWeights(theta).using(stepAndPass)
            }
        }
        let kernels = context.primitives.filter { !before.contains($0.key) }.mapValues(\.implementation)
        return (kernels, context.refusedShapes.subtracting(refusedBefore))
    }

    @Test(arguments: OneDNN.supportsBF16 ? [MathPrecision.fp32, .bf16] : [.fp32])
    func everyProductOfAStepAndASamplingPassRunsOnAJITKernel(_ precision: MathPrecision) {
        let (kernels, refused) = Self.productsOfAStep(precision)
        // Forward, input and weight gradients, each epilogue (bias, SiLU, sum, multiply), packed or not.
        #expect(kernels.count >= 12, "only \(kernels.count) shapes reached oneDNN")
        #expect(kernels.keys.contains { $0.multiplied } || refused.contains { $0.multiplied }, "no product was multiplied")
        #expect(kernels.keys.contains { $0.packedB } && kernels.keys.contains { $0.silu } && kernels.keys.contains { $0.bias })
        #expect(kernels.keys.allSatisfy { $0.bf16 == (precision == .bf16) })
        #expect(!kernels.values.contains { OneDNN.Product.isReference($0) }, "\(kernels.values)")
        // The one refusal a step can absorb without leaving oneDNN: a multiply post-op, the product
        // then run without it (`BLAS.sgemm`).
        for shape in refused {
            var unfused = shape
            unfused.multiplied = false
            #expect(shape.multiplied && kernels[unfused] != nil, "oneDNN refused \(shape)")
        }
    }

    /// A CPU whose kernels refuse the multiply post-op still runs the product on oneDNN, and
    /// multiplies as a pass: the same bits, as the post-op rounds the product before multiplying.
    @Test(arguments: OneDNN.supportsBF16 ? [MathPrecision.fp32, .bf16] : [.fp32])
    func aRefusedMultiplyPostOpBecomesAPassAfterTheProduct(_ precision: MathPrecision) {
        let m = 48, n = 80, k = 64
        var random = Philox(seed: 12)
        let a = FloatBuffer(count: m * k), b = FloatBuffer(count: k * n), multiplier = FloatBuffer(count: m * n)
        for buffer in [a, b, multiplier] { random.fillUniform(buffer.pointer, count: buffer.count, low: -1, high: 1) }
        func product() -> FloatBuffer {
            let c = FloatBuffer(count: m * n)
            MathBackend.withBackend(.onednn) {
                MathPrecision.with(precision) {
                    BLAS.sgemm(m: m, n: n, k: k, a: a.pointer, lda: k, b: b.pointer, ldb: n, c: c.pointer, ldc: n,
                               multipliedBy: multiplier.pointer)
                }
            }
            return c
        }
        let fused = product()
        let context = ThreadMath.context
        let shape = OneDNN.ProductShape(transA: false, transB: false, m: m, n: n, k: k, lda: k, ldb: n, ldc: n, alpha: 1, beta: 0,
                                        bf16: precision == .bf16, multiplied: true)
        #expect(context.primitives[shape] != nil, "the fused product did not run on oneDNN")
        context.primitives.removeValue(forKey: shape)?.release()
        context.refusedShapes.insert(shape)
        defer { context.refusedShapes.remove(shape) }
        let unfused = product()
        var plain = shape
        plain.multiplied = false
        #expect(context.primitives[plain] != nil, "the product left oneDNN")
        #expect(fused.array.map(\.bitPattern) == unfused.array.map(\.bitPattern))
    }
}
