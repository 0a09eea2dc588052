import Diffusion
import Foundation
import Numerics

/// How well a model's samples do in a `ShapeWorld`: samples for fixed prompts from
/// fixed noise, so two models are compared on exactly the same draws.
public struct ShapeEvaluation: Sendable {
    public struct Report: Sendable {
        public let meanReward: Double
        public let promptAccuracy: Double
        /// Reward of each sample, in prompt order.
        public let rewards: [Double]

        /// Fraction of draws where this model's sample has a higher reward than `other`'s (ties count half).
        public func winRate(against other: Report) -> Double {
            let wins = zip(rewards, other.rewards).reduce(0.0) { $0 + ($1.0 > $1.1 ? 1 : $1.0 == $1.1 ? 0.5 : 0) }
            return wins / Double(max(rewards.count, 1))
        }
    }

    public let world: ShapeWorld
    public let scenes: [ShapeWorld.Scene]
    public let seed: UInt64
    public let sampler: SamplerKind
    public let steps: Int
    public let guidance: Float

    public init(world: ShapeWorld, samples: Int, seed: UInt64 = 2024, sampler: SamplerKind = .dpmpp2m, steps: Int = 20,
                guidance: Float = 1) {
        self.world = world
        var random = Philox(seed: seed, stream: 0xE7A1)
        scenes = (0..<samples).map { _ in world.randomScene(&random) }
        self.seed = seed
        self.sampler = sampler
        self.steps = steps
        self.guidance = guidance
    }

    public func evaluate(config: ModelConfig, parameters: FloatBuffer, batch: Int = 64) -> Report {
        let model = ResMLP(config: config)
        let runner = Sampler(model: model, kind: sampler, maxBatch: batch)
        let D = world.sampleSize
        var rewards: [Double] = [], followed = 0
        var start = 0
        while start < scenes.count {
            let chunk = Array(scenes[start..<min(scenes.count, start + batch)])
            let x = FloatBuffer(count: chunk.count * D)
            var noise = Philox(seed: seed, stream: 0x0150, counter: UInt64(start * D))
            noise.fillNormal(x.pointer, count: chunk.count * D)
            let noiseSeed = seed &+ UInt64(start)
            runner.sample(parameters: parameters, x: x.pointer, batch: chunk.count,
                          conditions: Conditions.prompts(chunk.map(\.prompt), config: config), guidance: guidance, steps: steps,
                          fillNoise: DDPMNoise(seed: noiseSeed).fill)
            for (b, scene) in chunk.enumerated() {
                rewards.append(world.reward(x.pointer + b * D))
                if world.followsPrompt(x.pointer + b * D, scene: scene) { followed += 1 }
            }
            start += batch
        }
        return Report(meanReward: rewards.reduce(0, +) / Double(max(rewards.count, 1)),
                      promptAccuracy: Double(followed) / Double(max(rewards.count, 1)), rewards: rewards)
    }
}
