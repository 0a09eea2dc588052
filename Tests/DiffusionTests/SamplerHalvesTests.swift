@testable import Diffusion
import GoldenFixtures
import Numerics
import TestSupport
import Testing

/// A sampler that splits each step's rows into two halves, one forward pass per core
/// (`StepPasses`), draws what one pass over all the rows draws: every row keeps its own noise,
/// timestep and condition, guidance's null rows included, whichever half they land in.
@Suite(.computeThread) struct SamplerHalvesTests {
    static let config = ModelConfig(sampleShape: [1, 4, 4], hidden: 32, depth: 2, mlpRatio: 2, timeFreqDim: 16,
                                    condition: .text(vocab: 64, maxTokens: 4))

    @Test("two halves draw what one pass draws", arguments: SamplerKind.allCases, [(1, Float(1)), (5, 1), (8, 1), (5, 2.5), (1, 3)])
    func halvesDrawWhatOnePassDraws(kind: SamplerKind, shape: (batch: Int, guidance: Float)) {
        let model = ResMLP(config: Self.config), D = Self.config.sampleSize, batch = shape.batch
        let theta = model.initialParameters(seed: 5)
        var random = Philox(seed: 6)
        random.fillUniform(theta.pointer, count: theta.count, low: -0.2, high: 0.2)
        var conditions = Conditions.null(count: batch, config: Self.config)
        for b in 0..<batch {
            for slot in 0..<4 { conditions.tokens[b * 4 + slot] = b % 3 == 2 ? 0 : Int32(1 + (7 * b + slot) % 63) }
        }
        let xT = FloatBuffer(count: batch * D)
        random.fillNormal(xT.pointer, count: xT.count)

        func draw(inHalves: Bool, sideBySide: Bool = true) -> [Float] {
            let x = FloatBuffer(xT.array)
            let sampler = Sampler(model: model, kind: kind, maxBatch: batch, inHalves: inHalves, sideBySide: sideBySide)
            // Each row on a grid of its own, as DRO's rollouts are.
            let grid = (0..<batch).flatMap { b in sampler.timesteps(steps: 6).map { max(0, $0 - 3 * b) } }
            sampler.sample(parameters: theta, x: x.pointer, batch: batch, conditions: conditions, guidance: shape.guidance, steps: 6,
                           grid: grid, fillNoise: DDPMNoise(seed: 7).fill)
            return x.array
        }
        let whole = draw(inHalves: false), halves = draw(inHalves: true)
        #expect(whole.contains { $0 != 0 } && whole != xT.array)
        let mismatch = GoldenFixtures.forwardMismatch(halves, whole, relative: 1e-5, absolute: 1e-6)
        #expect(mismatch == nil, "\(kind), batch \(batch), guidance \(shape.guidance): \(mismatch ?? "")")
        // With one thread the halves run in turn: the same bits, so a rollout does not depend on
        // the worker's thread count.
        #expect(draw(inHalves: true, sideBySide: false) == halves, "\(kind), batch \(batch): halves in turn differ from side by side")
    }
}
