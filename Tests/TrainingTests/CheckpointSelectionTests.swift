import Diffusion
import Foundation
import JSON
import Numerics
import TestSupport
import Testing
@testable import Training

/// Validation during training, the best checkpoint and early stopping, forks, and grading.
@Suite(.computeThread) struct CheckpointSelectionTests {
    @Test("validation reports each method's own metrics every eval_every steps", arguments: TrainingMethod.allCases)
    func validationMetricsPerMethod(method: TrainingMethod) throws {
        var hyper: JSONObject = ["n_steps": 6, "batch_size": 4, "checkpoint_every": 6, "eval_every": 2, "log_every": 100]
        if method == .dro { hyper["policy_steps"] = 3 }
        let sink = RecordingSink()
        _ = try Trainer(job: try TinyJob.job(method, hyper, validation: true), directory: TinyJob.directory(), sink: sink).run()
        let evaluated = sink.points.filter { $0.metrics["val_loss"] != nil }
        #expect(evaluated.map(\.step) == [2, 4, 6])
        let expected: [String] = switch method {
        case .sft: []
        case .dpo, .rpo: ["val_implicit_acc", "val_reward_margin"]
        case .kto: ["val_desirable_loss", "val_undesirable_loss", "val_desirable_gain", "val_undesirable_gain"]
        case .dro: ["val_active", "val_diff", "val_expert_gain", "val_policy_gain"]
        }
        for point in evaluated {
            for name in expected { #expect(point.metrics[name]?.isFinite == true, "\(method): \(name) at step \(point.step)") }
        }
        // Each evaluation is an event too.
        #expect(sink.lines.filter { $0.hasPrefix("validation at step") }.count == 3)
        if method == .kto, let last = evaluated.last?.metrics {
            // Each label's loss is a mean of λ·(1 − h), with h in (0, 1) and λ 1.
            for name in ["val_desirable_loss", "val_undesirable_loss"] { #expect(last[name]! > 0 && last[name]! < 1) }
        }
    }

    @Test func selectionJudgesByModeAndMinDelta() {
        var lower = CheckpointSelection(rule: EarlyStopping(metric: "val_loss", mode: .min, patience: 2, minDelta: 0.1))
        #expect(lower.observe(1.0, step: 10) == .improved)
        #expect(lower.observe(0.95, step: 20) == .notImproved)  // not by more than min_delta
        #expect(lower.observe(0.5, step: 30) == .improved)
        #expect(lower.observe(0.45, step: 40) == .notImproved)
        #expect(lower.observe(.nan, step: 50) == .stop)
        #expect(lower.bestStep == 30 && lower.bestValue == 0.5)
        var higher = CheckpointSelection(rule: EarlyStopping(metric: "reward_mean", mode: .max, patience: nil))
        #expect(higher.observe(.nan, step: 1) == .notImproved)
        #expect(higher.observe(-3, step: 2) == .improved)
        #expect(higher.observe(-4, step: 3) == .notImproved)
        #expect(higher.observe(-2, step: 4) == .improved)
        for step in 5...50 { #expect(higher.observe(-5, step: step) == .notImproved) }  // no patience: never stops
        #expect(EarlyStopping.defaultMode(for: "val_loss") == .min && EarlyStopping.defaultMode(for: "reward_win_rate") == .max)
    }

    @Test func earlyStoppingEndsTheJobAndPublishesTheBestCheckpoint() throws {
        // A learning rate high enough that validation loss gets worse after the first evaluations,
        // and a metric that cannot improve by min_delta 1e9: patience 2 stops at the third evaluation.
        var job = try TinyJob.job(.sft, ["n_steps": 100, "batch_size": 4, "checkpoint_every": 10, "eval_every": 3, "log_every": 100,
                                         "keep_checkpoints": 1], validation: true)
        job.selection = EarlyStopping(metric: "val_loss", mode: .min, patience: 2, minDelta: 1e9)
        job.result = .best
        let sink = RecordingSink()
        let trainer = try Trainer(job: job, directory: TinyJob.directory(), sink: sink)
        let outcome = try trainer.run()
        #expect(trainer.step == 9)
        #expect(outcome == .succeeded(modelPath: trainer.directory.checkpoint(step: 3)))
        #expect(sink.lines.contains { $0.hasPrefix("early stop at step 9/100: val_loss did not improve") })
        // The best evaluation and the stopping one became checkpoints, though neither is a multiple of 10.
        #expect(sink.checkpoints.map(\.step) == [3, 9])
        #expect(sink.checkpoints.allSatisfy { $0.best?.step == 3 })
        // "last" publishes the weights where it stopped.
        job.result = .last
        let last = try Trainer(job: job, directory: TinyJob.directory(), sink: RecordingSink())
        #expect(try last.run() == .succeeded(modelPath: last.finalModelPath))
    }

    @Test("a paused job with early stopping resumes to the same decision")
    func selectionSurvivesAResume() throws {
        var job = try TinyJob.job(.dpo, ["n_steps": 40, "batch_size": 4, "checkpoint_every": 4, "eval_every": 2, "log_every": 100,
                                         "learning_rate": 3e-3], validation: true)
        job.selection = EarlyStopping(metric: "val_implicit_acc", mode: .max, patience: 3, minDelta: 0.01)
        let straight = RecordingSink()
        let whole = try Trainer(job: job, directory: TinyJob.directory(), sink: straight)
        _ = try whole.run()
        let directory = TinyJob.directory()
        var asked = 0
        #expect(try Trainer(job: job, directory: directory, sink: RecordingSink()).run(control: { asked += 1; return asked == 5 ? .pause : .proceed }) == .paused(step: 5))
        let resumed = try Trainer(job: job, directory: directory, sink: RecordingSink())
        _ = try resumed.run(resume: true)
        #expect(resumed.step == whole.step)
        #expect(resumed.selection == whole.selection)
    }

    @Test("a fork with the parent's hyperparameters reproduces its later steps bit for bit", arguments: [TrainingMethod.dro, .kto])
    func forkReproducesTheParent(method: TrainingMethod) throws {
        var hyper: JSONObject = ["n_steps": 12, "batch_size": 4, "learning_rate": 1e-3, "checkpoint_every": 4, "log_every": 1,
                                 "ema_decay": 0.9, "lr_scheduler": "cosine"]
        if method == .dro { hyper["policy_steps"] = 3; hyper["buffer_size"] = 6; hyper["policy_sync_every"] = 2 }
        let job = try TinyJob.job(method, hyper)
        let parentSink = RecordingSink()
        let parent = try Trainer(job: job, directory: TinyJob.directory(), sink: parentSink)
        guard case let .succeeded(parentModel) = try parent.run() else { Issue.record("parent did not finish"); return }
        let forkSink = RecordingSink()
        let fork = try Trainer(job: job, directory: TinyJob.directory(), sink: forkSink)
        guard case let .succeeded(forkModel) = try fork.run(from: .fork(statePath: parent.directory.state(step: 4))) else {
            Issue.record("fork did not finish"); return
        }
        #expect(try ModelFile.load(parentModel).parameters.array == ModelFile.load(forkModel).parameters.array)
        let later = parentSink.points.filter { $0.step > 4 }
        #expect(forkSink.points.map(\.step) == later.map(\.step))
        #expect(zip(forkSink.points, later).allSatisfy { $0.metrics["loss"] == $1.metrics["loss"] })
        // Its checkpoints' states are bit-identical to the parent's too.
        for step in [8, 12] {
            #expect(FileManager.default.contentsEqual(atPath: parent.directory.checkpoint(step: step), andPath: fork.directory.checkpoint(step: step)))
        }

        // With a changed learning rate, it trains on from the same state to different weights.
        var changed = job
        changed.hyperparameters.learningRate = 1e-2
        let other = try Trainer(job: changed, directory: TinyJob.directory(), sink: RecordingSink())
        guard case let .succeeded(otherModel) = try other.run(from: .fork(statePath: parent.directory.state(step: 4))) else { return }
        #expect(try ModelFile.load(otherModel).parameters.array != ModelFile.load(parentModel).parameters.array)
    }

    @Test func aForkRefusesAnotherMethodsState() throws {
        let parent = try Trainer(job: try TinyJob.job(.sft, ["n_steps": 4, "batch_size": 4, "checkpoint_every": 2]), directory: TinyJob.directory(),
                                 sink: RecordingSink())
        _ = try parent.run()
        let other = try Trainer(job: try TinyJob.job(.dpo, ["n_steps": 4, "batch_size": 4]), directory: TinyJob.directory(), sink: RecordingSink())
        #expect(throws: TrainingFailure.self) { try other.run(from: .fork(statePath: parent.directory.state(step: 2))) }
        let short = try Trainer(job: try TinyJob.job(.sft, ["n_steps": 2, "batch_size": 4]), directory: TinyJob.directory(), sink: RecordingSink())
        #expect(throws: TrainingFailure.self) { try short.run(from: .fork(statePath: parent.directory.state(step: 2))) }
    }

    /// A one-layer reward model: the score is w·x + b·(token bag) + c, computed here by hand.
    static func linearRewardModel(path: String, weights: [Float], tokenWeight: Float, bias: Float, config: ModelConfig) throws {
        guard case let .text(vocab, _) = config.condition else { return }
        var writer = SafeTensorsWriter()
        writer.metadata = ["format": RewardMLP.format, "condition": "tokens"]
        writer.add("layers.0.weight", shape: [1, weights.count + vocab], floats: weights + [Float](repeating: tokenWeight, count: vocab))
        writer.add("layers.0.bias", shape: [1], floats: [bias])
        try writer.write(to: path)
    }

    /// The yardstick does not move with the job's precision: a bf16 job's samples are scored in fp32.
    @Test func aRewardModelScoresInFP32WhateverThePrecision() throws {
        let path = temporaryPath("reward") + ".safetensors"
        let w = (0..<16).map { Float($0 % 7) * 0.1234567 - 0.3 }
        try Self.linearRewardModel(path: path, weights: w, tokenWeight: 0.3333333, bias: 0.1, config: TinyJob.config)
        let scorer = try RewardMLP(path: path, config: TinyJob.config, name: "reward model")
        var random = Philox(seed: 3)
        let samples = (0..<4).map { _ in (0..<16).map { _ in random.nextUniform() * 2 - 1.0000001 } }
        let labels: [GradingLabel] = [.prompt("a red dot"), .prompt("green"), .prompt("a blue dot"), .prompt("")]
        let conditions = Conditions.prompts(["a red dot", "green", "a blue dot", ""], config: TinyJob.config)
        func score() throws -> [Double] {
            try scorer.scores(samples: samples, shape: TinyJob.config.sampleShape, conditions: conditions, labels: labels, step: 1,
                              shouldStop: { false })
        }
        let fp32 = try score()
        #expect(try MathPrecision.with(.bf16) { try score() } == fp32)
        // And on oneDNN's kernels, where bf16 would run natively (against oneDNN's own fp32 sums).
        let onOneDNN = try MathBackend.withBackend(.onednn) { try score() }
        let bf16OnOneDNN = try MathBackend.withBackend(.onednn) { try MathPrecision.with(.bf16) { try score() } }
        #expect(bf16OnOneDNN == onOneDNN)
    }

    @Test func checkpointsAreGradedAgainstTheBaseModel() throws {
        var job = try TinyJob.job(.sft, ["n_steps": 4, "batch_size": 4, "checkpoint_every": 2, "learning_rate": 1e-2])
        let path = temporaryPath("reward") + ".safetensors"
        let w = (0..<16).map { Float($0 % 5) - 2 }
        try Self.linearRewardModel(path: path, weights: w, tokenWeight: 0.25, bias: 0.5, config: TinyJob.config)
        let scorer = try RewardMLP(path: path, config: TinyJob.config, name: "reward model")
        let plan = GradingPlan(labels: [.prompt("a red dot"), .prompt("green")], samplesPerPrompt: 3, steps: 5, seed: 7)
        job.grading = CheckpointGrading(plan: plan, scorer: scorer, config: TinyJob.config)
        let sink = RecordingSink()
        let trainer = try Trainer(job: job, directory: TinyJob.directory(), sink: sink)
        _ = try trainer.run()
        let tokenizer = PromptTokenizer(vocab: 32, maxTokens: 4)
        func expectedScores(_ weights: FloatBuffer) -> [Double] {
            let samples = plan.samples(config: TinyJob.config, weights: weights)!
            return zip(samples, plan.rows).map { sample, label in
                guard case let .prompt(text) = label else { return .nan }
                let tokens = tokenizer.tokenize(text).filter { $0 > 0 }.count
                return Double(zip(sample, w).reduce(Float(0)) { $0 + $1.0 * $1.1 } + 0.25 * Float(tokens) + 0.5)
            }
        }
        let base = expectedScores(job.base)
        for checkpoint in sink.checkpoints {
            let scores = expectedScores(try ModelFile.load(checkpoint.modelPath).parameters)
            #expect(abs(checkpoint.metrics["reward_mean"]! - scores.reduce(0, +) / 6) < 1e-4)
            #expect(abs(checkpoint.metrics["reward_base_mean"]! - base.reduce(0, +) / 6) < 1e-4)
            let wins = zip(scores, base).map { $0 > $1 ? 1.0 : $0 == $1 ? 0.5 : 0 }.reduce(0, +) / 6
            #expect(checkpoint.metrics["reward_win_rate"] == wins)
        }
        #expect(sink.lines.filter { $0.hasPrefix("graded step") }.count == 2)
    }

    @Test func rewardModelsThatDoNotFitAreRefusedWithTheReason() throws {
        let path = temporaryPath("reward") + ".safetensors"
        func write(_ metadata: [String: String], _ layers: [(Int, Int)]) throws {
            var writer = SafeTensorsWriter()
            writer.metadata = metadata
            for (i, (inputs, outputs)) in layers.enumerated() {
                writer.add("layers.\(i).weight", shape: [outputs, inputs], floats: [Float](repeating: 0.1, count: inputs * outputs))
                writer.add("layers.\(i).bias", shape: [outputs], floats: [Float](repeating: 0, count: outputs))
            }
            try writer.write(to: path)
        }
        func reason() -> String {
            do { _ = try RewardMLP(path: path, config: TinyJob.config, name: "r"); return "accepted" } catch { return "\(error)" }
        }
        try write(["format": RewardMLP.format], [(16, 8), (8, 1)])
        #expect(reason() == "accepted")
        try write(["format": "something else"], [(16, 1)])
        #expect(reason().contains("metadata format"))
        try write(["format": RewardMLP.format], [(17, 1)])
        #expect(reason().contains("takes 17 inputs"))
        try write(["format": RewardMLP.format], [(16, 2)])
        #expect(reason().contains("1 output"))
        try write(["format": RewardMLP.format, "condition": "vector"], [(16, 1)])
        #expect(reason().contains("does not fit"))
        try write(["format": RewardMLP.format, "activation": "swish"], [(16, 1)])
        #expect(reason().contains("activation"))
    }
}
