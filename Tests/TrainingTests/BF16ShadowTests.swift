import Diffusion
import Foundation
@testable import Numerics
import TestSupport
import Testing
@testable import Training

/// θ's bf16 copy (`BF16Shadow`) replaces the per-product conversion of θ in a bf16 job. It must
/// change no result: its rounding must be oneDNN's, and AdamW must keep it equal to θ rounded.
@Suite(.computeThread, .enabled(if: BF16Shadow.isAvailable, "bf16 products are emulated on this CPU: no shadow is read"))
struct BF16ShadowTests {
    static let config = ModelConfig(sampleShape: [1, 8, 8], hidden: 64, depth: 2, mlpRatio: 2, timeFreqDim: 32,
                                    condition: .text(vocab: 64, maxTokens: 4))
    static let batch = 16

    /// A few SFT steps in bf16 on oneDNN at every size (so every product is native), θ's products
    /// reading the shadow or converting θ per product; returns θ, and the shadow if there was one.
    static func train(steps: Int, shadowed: Bool, spoil: Bool = false) throws -> (theta: [Float], shadow: [UInt16]?) {
        try MathBackend.withBackend(.onednn) {
            try MathPrecision.with(.bf16) {
                let model = ResMLP(config: config)
                let theta = model.initialParameters(seed: 3)
                var random = Philox(seed: 9)
                random.fillUniform(theta.pointer, count: theta.count, low: -0.1, high: 0.1)
                // Values whose rounding is delicate: subnormal, halfway between two bf16 values, NaN-free.
                theta[5] = 1e-40
                theta[6] = Float(bitPattern: 0x3F80_8000)
                theta[7] = Float(bitPattern: 0x3F81_8000)
                let gradients = FloatBuffer(count: theta.count)
                let optimizer = try AdamW(parameterCount: theta.count)
                let shadow = shadowed ? try BF16Shadow(of: theta) : nil
                let workspace = model.makeWorkspace(maxBatch: batch), scratch = ObjectiveScratch(config: config, maxRows: batch)
                let targets = FloatBuffer(count: batch * config.sampleSize)
                for step in 0..<steps {
                    random.fillNormal(workspace.x.pointer, count: batch * config.sampleSize)
                    random.fillNormal(targets.pointer, count: targets.count)
                    for b in 0..<batch {
                        workspace.timesteps[b] = Float((step * 37 + b * 11) % 1000)
                        for slot in 0..<4 { workspace.tokens[b * 4 + slot] = Int32(1 + (b + slot + step) % 63) }
                    }
                    if spoil, let shadow { shadow.values.update(repeating: 0, count: theta.count) }
                    let context = ObjectiveContext(model: model, theta: theta, reference: nil, workspace: workspace, examples: batch,
                                                   targets: targets.pointer, scratch: scratch, gradients: gradients)
                    _ = BF16Shadow.using(shadow) { SFTObjective().lossAndGradient(context) }
                    let norm = GradientClipping.globalNorm(gradients)
                    optimizer.update(theta, gradients: gradients, learningRate: 1e-3,
                                     gradientScale: GradientClipping.coefficient(norm: norm, maxNorm: 1), shadow: shadow)
                }
                return (theta.array, shadow.map { Array(UnsafeBufferPointer(start: $0.values, count: theta.count)) })
            }
        }
    }

    @Test func trainingWithTheShadowGivesTheSameBitsAsConvertingPerProduct() throws {
        let converted = try Self.train(steps: 4, shadowed: false), shadowed = try Self.train(steps: 4, shadowed: true)
        #expect(converted.theta.map(\.bitPattern) == shadowed.theta.map(\.bitPattern))
    }

    @Test func adamWKeepsTheShadowEqualToThetaRounded() throws {
        let (theta, written) = try Self.train(steps: 3, shadowed: true)
        let fresh = try #require(try BF16Shadow(of: FloatBuffer(theta)))
        #expect(written == Array(UnsafeBufferPointer(start: fresh.values, count: theta.count)))
        // And the rounding is bf16's: to nearest, ties to even.
        #expect(theta.enumerated().allSatisfy { i, value in
            value.isSubnormal || UInt32(fresh.values[i]) << 16 == BFloat16.round(value).bitPattern
        })
    }

    /// The equality above would hold if products ignored the shadow; a spoiled one shows they read it.
    @Test func productsReadTheShadow() throws {
        let honest = try Self.train(steps: 2, shadowed: true), spoiled = try Self.train(steps: 2, shadowed: true, spoil: true)
        #expect(honest.theta != spoiled.theta)
    }

    @Test func aBF16JobCountsItsShadowInItsMemory() {
        let h = Hyperparameters()
        let fp32 = MemoryEstimate.training(config: Self.config, method: .sft, hyperparameters: h, examples: 100)
        let bf16 = MemoryEstimate.training(config: Self.config, method: .sft, hyperparameters: h, examples: 100, precision: .bf16)
        #expect(bf16.total - fp32.total == BF16Shadow.bytes(parameters: ParameterLayout(Self.config).totalCount))
    }
}
