import Foundation
import GoldenFixtures
import Numerics
import TestSupport
import Testing
import Training

@Suite(.computeThread) struct OptimizerGoldenTests {
    @Test("AdamW matches torch.optim.AdamW", arguments: GoldenFixtures.files("adamw"))
    func adamW(path: String) throws {
        let file = try SafeTensorsFile(contentsOf: path)
        let metadata = file.metadata
        let steps = Int(metadata["steps"]!)!
        let betas = try JSONDecoder().decode([Double].self, from: Data(metadata["betas"]!.utf8))
        let parameters = FloatBuffer(try file.floats("param0"))
        let grads = try file.floats("grads")
        #expect(grads.count == steps * parameters.count)
        let optimizer = try AdamW(parameterCount: parameters.count, hyperparameters: .init(
            beta1: betas[0], beta2: betas[1], epsilon: Double(metadata["eps"]!)!, weightDecay: Double(metadata["weight_decay"]!)!))
        let gradients = FloatBuffer(count: parameters.count)
        for step in 0..<steps {
            gradients.pointer.update(from: Array(grads[(step * parameters.count)..<((step + 1) * parameters.count)]), count: parameters.count)
            optimizer.update(parameters, gradients: gradients, learningRate: Double(metadata["lr"]!)!)
        }
        let expected = try file.floats("expected.param")
        let mismatch = GoldenFixtures.forwardMismatch(parameters.array, expected)
        #expect(mismatch == nil, "\(mismatch ?? "")")
        #expect(optimizer.step == steps)
        #expect(gradients.array.allSatisfy { $0 == 0 }, "AdamW leaves the gradients zeroed for the next step")
    }

    @Test("AdamW with a gradient scale equals AdamW on clipped gradients", arguments: GoldenFixtures.files("adamw"))
    func fusedClipping(path: String) throws {
        let file = try SafeTensorsFile(contentsOf: path)
        let start = try file.floats("param0"), grads = try file.floats("grads")
        let count = start.count
        let clipped = FloatBuffer(start), fused = FloatBuffer(start)
        let first = try AdamW(parameterCount: count), second = try AdamW(parameterCount: count)
        let g1 = FloatBuffer(count: count), g2 = FloatBuffer(count: count)
        for step in 0..<(grads.count / count) {
            let slice = Array(grads[(step * count)..<((step + 1) * count)])
            g1.pointer.update(from: slice, count: count)
            g2.pointer.update(from: slice, count: count)
            let norm = GradientClipping.clipGlobalNorm(g1, maxNorm: 0.1)
            first.update(clipped, gradients: g1, learningRate: 0.01)
            second.update(fused, gradients: g2, learningRate: 0.01,
                          gradientScale: GradientClipping.coefficient(norm: norm, maxNorm: 0.1))
        }
        #expect(clipped.array == fused.array, "the same float operations in the same order")
    }

    @Test("global-norm clipping matches clip_grad_norm_", arguments: GoldenFixtures.files("clip_grad_norm"))
    func clipping(path: String) throws {
        let file = try SafeTensorsFile(contentsOf: path)
        let a = try file.floats("grad.a"), b = try file.floats("grad.b")
        let gradients = FloatBuffer(a + b)
        let norm = GradientClipping.clipGlobalNorm(gradients, maxNorm: Double(file.metadata["max_norm"]!)!)
        let expectedNorm = Double(file.metadata["expected_total_norm"]!)!
        #expect(abs(norm - expectedNorm) <= 1e-4 * expectedNorm)
        let expected = try file.floats("expected.a") + file.floats("expected.b")
        let mismatch = GoldenFixtures.forwardMismatch(gradients.array, expected)
        #expect(mismatch == nil, "\(mismatch ?? "")")
    }
}

@Suite(.computeThread) struct ScheduleAndEMATests {
    @Test func warmupRampsLinearlyThenHolds() {
        let schedule = LearningRateSchedule.constantWithWarmup
        #expect(schedule.multiplier(step: 0, warmupSteps: 4, totalSteps: 10) == 0)
        #expect(schedule.multiplier(step: 2, warmupSteps: 4, totalSteps: 10) == 0.5)
        #expect(schedule.multiplier(step: 4, warmupSteps: 4, totalSteps: 10) == 1)
        #expect(LearningRateSchedule.constant.multiplier(step: 0, warmupSteps: 4, totalSteps: 10) == 1)
    }

    @Test func linearAndCosineDecayToZero() {
        #expect(LearningRateSchedule.linear.multiplier(step: 2, warmupSteps: 2, totalSteps: 10) == 1)
        #expect(LearningRateSchedule.linear.multiplier(step: 6, warmupSteps: 2, totalSteps: 10) == 0.5)
        #expect(LearningRateSchedule.linear.multiplier(step: 10, warmupSteps: 2, totalSteps: 10) == 0)
        #expect(abs(LearningRateSchedule.cosine.multiplier(step: 6, warmupSteps: 2, totalSteps: 10) - 0.5) < 1e-12)
        #expect(abs(LearningRateSchedule.cosine.multiplier(step: 10, warmupSteps: 2, totalSteps: 10)) < 1e-12)
        #expect(abs(LearningRateSchedule.cosine.multiplier(step: 1, warmupSteps: 2, totalSteps: 10) - 0.5) < 1e-12)
    }

    @Test func emaMovesTowardTheParameters() throws {
        let parameters = FloatBuffer([0, 0])
        let ema = try ExponentialMovingAverage(copying: parameters, decay: 0.9)
        parameters.pointer.update(from: [1, -2], count: 2)
        ema.update(from: parameters)
        #expect(abs(ema.weights[0] - 0.1) < 1e-7 && abs(ema.weights[1] + 0.2) < 1e-7)
        ema.update(from: parameters)
        #expect(abs(ema.weights[0] - 0.19) < 1e-6)
    }

    /// The trainer's schedule is diffusers' EMAModel.get_decay: the first update copies θ, the
    /// n-th uses min(decay, n / (9 + n)).
    @Test func emaWarmsUpAsDiffusersDoes() throws {
        #expect(ExponentialMovingAverage.decay(0.9999, update: 1) == 0)
        #expect(ExponentialMovingAverage.decay(0.9999, update: 2) == 2.0 / 11)
        #expect(ExponentialMovingAverage.decay(0.9999, update: 300) == 300.0 / 309)
        #expect(ExponentialMovingAverage.decay(0.9, update: 1000) == 0.9)
        let parameters = FloatBuffer([0, 0])
        let ema = try ExponentialMovingAverage(copying: parameters, decay: 0.9999)
        parameters.pointer.update(from: [1, -2], count: 2)
        ema.update(from: parameters, update: 1)
        #expect(ema.weights.array == [1, -2])
        parameters.pointer.update(from: [12, -2], count: 2)
        ema.update(from: parameters, update: 2)
        #expect(abs(ema.weights[0] - (1 + 9.0 / 11 * 11)) < 1e-5)
    }

    /// A gradient that stops (an unused token's embedding) lets the first moment decay by
    /// β1 per step; it must reach zero, not linger in slow subnormal arithmetic.
    @Test func momentsOfParametersWithoutGradientFlushToZero() throws {
        let parameters = FloatBuffer([0.5, 0.5]), gradients = FloatBuffer(count: 2)
        let optimizer = try AdamW(parameterCount: 2)
        gradients.pointer.update(from: [1e-3, 1], count: 2)
        optimizer.update(parameters, gradients: gradients, learningRate: 1e-3)
        var sawSubnormal = false
        for _ in 0..<1_000 {
            gradients[1] = 1  // the second parameter keeps learning
            optimizer.update(parameters, gradients: gradients, learningRate: 1e-3)
            sawSubnormal = sawSubnormal || optimizer.firstMoment[0].isSubnormal || optimizer.secondMoment[0].isSubnormal
        }
        #expect(!sawSubnormal)
        #expect(optimizer.firstMoment[0] == 0)
        #expect(optimizer.secondMoment[0] > 0, "v decays by β2 = 0.999 only, and is still normal")
        #expect(abs(optimizer.firstMoment[1] - 1) < 1e-6)
    }

    @Test func clippingLeavesSmallGradientsAlone() {
        let gradients = FloatBuffer([0.3, 0.4])
        let norm = GradientClipping.clipGlobalNorm(gradients, maxNorm: 1)
        #expect(abs(norm - 0.5) < 1e-7)
        #expect(gradients.array == [0.3, 0.4])
    }
}
