import DemoData
import Diffusion
import Foundation
import Numerics
import TestSupport
import Testing
import Training

/// The proof that training aligns: a small base pretrained with sft on the whole
/// ShapeWorld distribution, fine-tuned with dro on expert demonstrations only
/// (no labels), raises the reward of its samples over fixed seeds clearly, and
/// still draws what the prompts ask for.
@Suite(.computeThread) struct AlignmentTests {
    @Test func droRaisesTheRewardOverTheBase() throws {
        let world = ShapeWorld(size: 8)
        let pipeline = DemoPipeline(world: world, config: world.modelConfig(), examples: 3000)
        defer { pipeline.removeFiles() }
        let base = try pipeline.pretrain(steps: 2500)
        let tuned = try pipeline.fineTune(.dro, from: base, hyperparameters: [
            "n_steps": 150, "batch_size": 32, "learning_rate": 1e-4, "policy_steps": 10,
        ])
        let evaluation = ShapeEvaluation(world: world, samples: 192, steps: 10, guidance: 2)
        let before = evaluation.evaluate(config: pipeline.config, parameters: base)
        let after = evaluation.evaluate(config: pipeline.config, parameters: tuned)
        print("alignment: base reward \(before.meanReward) accuracy \(before.promptAccuracy); dro reward \(after.meanReward) accuracy \(after.promptAccuracy) win rate \(after.winRate(against: before))")
        #expect(before.promptAccuracy > 0.5, "the base model learned to follow prompts")
        #expect(after.meanReward > before.meanReward + 0.05, "dro raises the mean reward clearly")
        #expect(after.winRate(against: before) > 0.6)
        #expect(after.promptAccuracy >= before.promptAccuracy - 0.1, "prompt following does not collapse")
    }
}
