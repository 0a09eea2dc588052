import Diffusion
import Foundation
import JSON
import Numerics
import TestSupport
import Testing
@testable import Training

/// Collects what a trainer reports.
final class RecordingSink: TrainingSink {
    var lines: [String] = []
    var points: [(step: Int, metrics: [String: Double])] = []
    var checkpoints: [CheckpointRecord] = []
    func log(_ message: String) { lines.append(message) }
    func record(step: Int, metrics: [String: Double], summary: String) {
        points.append((step, metrics))
        lines.append(summary)
    }
    func checkpointSaved(_ checkpoint: CheckpointRecord) { checkpoints.append(checkpoint) }
}

enum TinyJob {
    static let config = ModelConfig(sampleShape: [1, 4, 4], hidden: 16, depth: 1, mlpRatio: 2, timeFreqDim: 8,
                                    condition: .text(vocab: 32, maxTokens: 4))

    /// A JSONL dataset of `count` examples for `method`, deterministic in `seed`.
    static func jsonl(_ method: TrainingMethod, count: Int, seed: UInt64 = 1) -> Data {
        var random = Philox(seed: seed)
        var lines: [String] = []
        for i in 0..<count {
            func sample() -> String { "[" + (0..<16).map { _ in String(format: "%.3f", random.nextUniform() * 2 - 1) }.joined(separator: ",") + "]" }
            let prompt = ["a red dot", "a blue dot", "green", ""][i % 4]
            switch method {
            case .sft, .dro: lines.append(#"{"prompt":"\#(prompt)","sample":\#(sample())}"#)
            case .dpo, .rpo: lines.append(#"{"prompt":"\#(prompt)","chosen":\#(sample()),"rejected":\#(sample())}"#)
            case .kto: lines.append(#"{"prompt":"\#(prompt)","sample":\#(sample()),"desirable":\#(i % 3 == 0 ? "false" : "true")}"#)
            }
        }
        return Data(lines.joined(separator: "\n").utf8)
    }

    static func job(_ method: TrainingMethod, _ hyper: JSONObject, count: Int = 24, validation: Bool = false) throws -> TrainingJob {
        let model = ResMLP(config: config)
        let base = model.initialParameters(seed: 3)
        // Give the zero-initialised layers weights, so every objective has a gradient everywhere.
        var random = Philox(seed: 4)
        for entry in model.layout.entries where entry.name.hasPrefix("out_proj") || entry.name.contains("fc2") || entry.name.contains("mod") {
            random.fillUniform(base.pointer + entry.offset, count: entry.count, low: -0.1, high: 0.1)
        }
        let data = try Dataset.parse(jsonl(method, count: count), method: method, config: config)
        let held = validation ? try Dataset.parse(jsonl(method, count: 8, seed: 9), method: method, config: config) : nil
        return TrainingJob(method: method, hyperparameters: try Hyperparameters.resolve(hyper, method: method), seed: 11,
                           config: config, base: base, training: data, validation: held)
    }

    static func directory() -> String {
        let path = temporaryPath("preftune-job")
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}

@Suite(.computeThread) struct TrainerTests {
    @Test("a resumed run is bit-identical to one that never stopped, in fp32 and in bf16",
          arguments: [TrainingMethod.dro, .dpo], MathPrecision.allCases)
    func resumeIsBitIdentical(method: TrainingMethod, precision: MathPrecision) throws {
        let hyper: JSONObject = ["n_steps": 12, "batch_size": 4, "learning_rate": 1e-3, "checkpoint_every": 5,
                                    "log_every": 2, "lr_scheduler": "cosine", "warmup_steps": 2, "ema_decay": 0.9,
                                    "gradient_accumulation_steps": 2, "prompt_dropout": 0.25]
        var extra = hyper
        if method == .dro { extra["policy_steps"] = 4; extra["buffer_size"] = 6; extra["policy_sync_every"] = 3 }
        var job = try TinyJob.job(method, extra)
        job.precision = precision

        // bf16 on oneDNN at every size where the CPU has bf16 instructions: the tiny model's products
        // are native, and θ's read its bf16 copy, which the resumed run makes afresh.
        func onBackend<T>(_ body: () throws -> T) rethrows -> T {
            precision == .bf16 && MathPrecision.nativeBF16 ? try MathBackend.withBackend(.onednn, body) : try body()
        }
        let straightDirectory = TinyJob.directory()
        let straightSink = RecordingSink()
        let straight = try Trainer(job: job, directory: straightDirectory, sink: straightSink)
        guard case let .succeeded(straightModel) = try onBackend({ try straight.run() }) else { Issue.record("did not finish"); return }

        let stoppedDirectory = TinyJob.directory()
        let firstSink = RecordingSink()
        var asked = 0
        let first = try Trainer(job: job, directory: stoppedDirectory, sink: firstSink)
        let outcome = try onBackend { try first.run(control: { asked += 1; return asked == 7 ? .pause : .proceed }) }
        #expect(outcome == .paused(step: 7))
        let secondSink = RecordingSink()
        let second = try Trainer(job: job, directory: stoppedDirectory, sink: secondSink)
        guard case let .succeeded(resumedModel) = try onBackend({ try second.run(resume: true) }) else { Issue.record("did not finish"); return }

        let a = try ModelFile.load(straightModel), b = try ModelFile.load(resumedModel)
        #expect(a.parameters.array == b.parameters.array, "\(method) in \(precision): resumed weights differ")
        #expect(straightSink.lines.first?.contains(precision == .bf16 ? " in bf16" : "math on ") == true, "\(straightSink.lines.first ?? "")")
        // Metric steps continue strictly increasing across the pause, with no duplicates.
        let steps = (firstSink.points + secondSink.points).map(\.step)
        #expect(steps == steps.sorted() && Set(steps).count == steps.count)
        #expect(steps.last == 12)
        if method == .dro {
            // Some pairs were inactive, so both runs took backward passes over fewer pairs
            // (`ResMLPWorkspace.narrowed`), and resuming holds bit for bit through them too.
            #expect(straightSink.points.contains { ($0.metrics["active"] ?? 1) < 1 }, "every DRO pair stayed active")
        }
    }

    @Test func checkpointsAndMetricsAppearOnSchedule() throws {
        let sink = RecordingSink()
        let job = try TinyJob.job(.sft, ["n_steps": 10, "batch_size": 4, "checkpoint_every": 4, "log_every": 3], validation: true)
        let trainer = try Trainer(job: job, directory: TinyJob.directory(), sink: sink)
        _ = try trainer.run()
        #expect(sink.checkpoints.map(\.step) == [4, 8, 10])
        #expect(sink.points.map(\.step) == [3, 4, 6, 8, 9, 10])
        for checkpoint in sink.checkpoints {
            #expect(checkpoint.metrics["val_loss"] != nil)
            #expect(try ModelFile.load(checkpoint.modelPath).config == TinyJob.config)
        }
        let last = sink.points.last!.metrics
        for name in ["loss", "lr", "grad_norm", "samples_per_s", "val_loss"] { #expect(last[name] != nil, "\(name)") }
    }

    @Test("every method trains and reports its statistics", arguments: TrainingMethod.allCases)
    func everyMethodRuns(method: TrainingMethod) throws {
        let sink = RecordingSink()
        var hyper: JSONObject = ["n_steps": 3, "batch_size": 4, "log_every": 1]
        if method == .dro { hyper["policy_steps"] = 3 }
        let trainer = try Trainer(job: try TinyJob.job(method, hyper), directory: TinyJob.directory(), sink: sink)
        #expect(try trainer.run() == .succeeded(modelPath: trainer.finalModelPath))
        let expected: [TrainingMethod: [String]] = [
            .dpo: ["implicit_acc", "reward_margin"], .rpo: ["implicit_acc", "reward_margin"],
            .dro: ["diff", "expert_gain", "policy_gain", "active"], .kto: ["reference_point"], .sft: [],
        ]
        for name in expected[method]! + ["loss"] { #expect(sink.points.last?.metrics[name] != nil, "\(method) \(name)") }
    }

    @Test func anAbsurdLearningRateEndsInTrainingDiverged() throws {
        let directory = TinyJob.directory()
        let trainer = try Trainer(job: try TinyJob.job(.sft, ["n_steps": 50, "batch_size": 4, "learning_rate": 1e30, "max_grad_norm": 1e6,
                                                          "checkpoint_every": 1, "weight_decay": 0]),
                              directory: directory, sink: RecordingSink())
        do {
            _ = try trainer.run()
            Issue.record("training with lr 1e30 did not diverge")
        } catch let failure as TrainingFailure {
            #expect(failure.code == "training_diverged")
            let step = try #require(failure.step)
            #expect(failure.message.contains("step \(step)"))
            // The last good checkpoint stays.
            #expect(FileManager.default.fileExists(atPath: String(format: "%@/checkpoints/step-%07d.safetensors", directory, step - 1)))
        }
    }

    @Test func cancelStopsBetweenSteps() throws {
        var asked = 0
        let trainer = try Trainer(job: try TinyJob.job(.sft, ["n_steps": 100, "batch_size": 2]), directory: TinyJob.directory(),
                              sink: RecordingSink())
        #expect(try trainer.run(control: { asked += 1; return asked == 3 ? .cancel : .proceed }) == .cancelled(step: 3))
    }

    @Test func aStateFromAnotherJobIsRefused() throws {
        let directory = TinyJob.directory()
        let first = try Trainer(job: try TinyJob.job(.sft, ["n_steps": 4, "batch_size": 2, "checkpoint_every": 2]), directory: directory,
                            sink: RecordingSink())
        _ = try first.run(control: { .pause })
        let other = try Trainer(job: try TinyJob.job(.sft, ["n_steps": 4, "batch_size": 3]), directory: directory, sink: RecordingSink())
        #expect(throws: TrainingFailure.self) { try other.run(resume: true) }
    }

    @Test func emaWeightsArePublished() throws {
        let job = try TinyJob.job(.sft, ["n_steps": 5, "batch_size": 4, "ema_decay": 0.5])
        let trainer = try Trainer(job: job, directory: TinyJob.directory(), sink: RecordingSink())
        guard case let .succeeded(path) = try trainer.run() else { return }
        let published = try ModelFile.load(path).parameters.array
        #expect(published != job.base.array)
        // EMA lags θ: the published weights differ from the last state's θ.
        let state = try SafeTensorsFile(contentsOf: trainer.directory.state)
        #expect(try state.floats("theta") != published)
        #expect(try state.floats("ema") == published)
    }
}

@Suite(.computeThread) struct DatasetTests {
    static func error(_ text: String, _ method: TrainingMethod = .sft) -> String {
        do {
            _ = try Dataset.parse(Data(text.utf8), method: method, config: TinyJob.config)
            return "accepted"
        } catch {
            return "\(error)"
        }
    }

    static let zeros16 = "[" + Array(repeating: "0", count: 16).joined(separator: ",") + "]"

    @Test func badLinesAreReportedWithTheirNumber() {
        let good = #"{"prompt":"a","sample":\#(Self.zeros16)}"#
        #expect(Self.error("\(good)\n{not json") == "line 2: not valid JSON")
        #expect(Self.error("\(good)\n\(good)\n{\"prompt\":\"a\",\"sample\":[1,2,3]}")
                == "line 3: \"sample\" has 3 values; the model expects 16 (shape [1, 4, 4], C·H·W order)")
        #expect(Self.error(#"{"prompt":"a"}"#) == "line 1: missing field \"sample\"")
        #expect(Self.error(#"{"sample":\#(Self.zeros16)}"#).hasPrefix("line 1: missing field \"prompt\""))
        #expect(Self.error(#"{"prompt":"a","sample":[NaN,0]}"#) == "line 1: contains NaN or Infinity; every value must be a finite number")
        #expect(Self.error(#"{"prompt":"a","sample":\#(Self.zeros16.replacingOccurrences(of: "[0,", with: "[\"x\","))}"#) == "line 1: \"sample\"[0] is not a number")
        #expect(Self.error(#"{"prompt":"a","sample":\#(Self.zeros16.replacingOccurrences(of: "[0,", with: "[1e999,"))}"#).hasPrefix("line 1:"))
        #expect(Self.error(#"{"prompt":"a","sample":\#(Self.zeros16)}"#, .kto) == "line 1: missing field \"desirable\" (true or false)")
        #expect(Self.error(#"{"prompt":"a","sample":\#(Self.zeros16),"desirable":1}"#, .kto) == "line 1: \"desirable\" must be true or false")
        #expect(Self.error(#"{"prompt":"a","chosen":\#(Self.zeros16)}"#, .dpo) == "line 1: missing field \"rejected\"")
        #expect(Self.error("\n\n") == "the file has no examples")
    }

    @Test func blankLinesAreSkippedAndCountsKept() throws {
        let good = #"{"prompt":"a red dot","sample":\#(Self.zeros16)}"#
        let data = try Dataset.parse(Data("\(good)\n\n\(good)\r\n".utf8), method: .sft, config: TinyJob.config)
        #expect(data.count == 2)
        #expect(data.conditions.tokens.count == 8)
    }

    @Test func aFileOverTheMemoryBudgetIsRefused() throws {
        let path = TinyJob.directory() + "/big.jsonl"
        try TinyJob.jsonl(.sft, count: 100).write(to: URL(fileURLWithPath: path))
        #expect(throws: DatasetError.self) { try Dataset.load(path: path, method: .sft, config: TinyJob.config, memoryBudget: 1000) }
        #expect(try Dataset.load(path: path, method: .sft, config: TinyJob.config).count == 100)
    }
}

@Suite(.computeThread) struct HyperparameterTests {
    @Test func defaultsFollowTheSpec() throws {
        let dro = try Hyperparameters.resolve(["batch_size": 8], method: .dro)
        #expect(dro.margin == 1e-3 && dro.policySampler == .dpmpp2m && dro.policySteps == 20 && dro.policyGuidance == 1)
        #expect(dro.bufferSize == 8 && dro.bufferBatchSize == 8 && dro.policySyncEvery == 1 && dro.promptDropout == 0.2)
        #expect(dro.perturbTimesteps == true)
        #expect(try Hyperparameters.resolve([:], method: .dpo).beta == 5000)
        #expect(try Hyperparameters.resolve([:], method: .kto).beta == 1000)
        #expect(try Hyperparameters.resolve([:], method: .rpo).tau == 0.5)
        #expect(try Hyperparameters.resolve(["n_epochs": 2, "batch_size": 4], method: .sft, datasetSize: 10).nSteps == 5)
        // The official codes' defaults (docs/training.md): dro trains at 1e-4 with EMA; dpo's rate is
        // 1e-8 per example of the effective batch; ema_decay 0 turns EMA off.
        #expect(dro.learningRate == 1e-4 && dro.emaDecay == 0.9999)
        #expect(try Hyperparameters.resolve(["ema_decay": 0], method: .dro).emaDecay == nil)
        #expect(try Hyperparameters.resolve([:], method: .sft).emaDecay == nil)
        let dpo = try Hyperparameters.resolve(["batch_size": 32, "gradient_accumulation_steps": 4], method: .dpo)
        #expect(abs(dpo.learningRate - 1e-8 * 128) < 1e-20)
        #expect(try Hyperparameters.resolve(["batch_size": 32, "learning_rate_multiplier": 2], method: .dpo).learningRate == 2 * 1e-8 * 32)
    }

    /// Every hyperparameter may be null, meaning its default, as the API's schema says
    /// (schemathesis found lr_scheduler and perturb_timesteps refusing null).
    @Test(arguments: TrainingMethod.allCases)
    func nullMeansTheDefaultForEveryKey(method: TrainingMethod) throws {
        let keys = Hyperparameters.commonKeys.union(Hyperparameters.methodKeys(method)).map(\.rawValue)
        let nulls = JSONObject(keys.map { ($0, JSONValue.null) })
        #expect(try Hyperparameters.resolve(nulls, method: method) == Hyperparameters.resolve([:], method: method))
    }

    @Test func mistakesNameTheParameter() {
        let cases: [(JSONObject, TrainingMethod, String)] = [
            (["learning_rat": 1e-4], .sft, "learning_rat"),
            (["beta": 10], .sft, "beta"),
            (["margin": 1], .dpo, "margin"),
            (["batch_size": 0], .sft, "batch_size"),
            (["batch_size": 2.5], .sft, "batch_size"),
            (["learning_rate": -1], .sft, "learning_rate"),
            (["lr_scheduler": "exponential"], .sft, "lr_scheduler"),
            (["policy_sampler": "euler"], .dro, "policy_sampler"),
            (["buffer_size": 2, "buffer_batch_size": 4], .dro, "buffer_batch_size"),
            (["n_steps": 5, "n_epochs": 1], .sft, "n_steps"),
            (["prompt_dropout": 1.5], .sft, "prompt_dropout"),
            (["perturb_timesteps": 1], .dro, "perturb_timesteps"),
        ]
        for (values, method, param) in cases {
            #expect(throws: HyperparameterError.self) { try Hyperparameters.resolve(values, method: method) }
            do { _ = try Hyperparameters.resolve(values, method: method) } catch let error as HyperparameterError {
                #expect(error.param == param, "\(values): \(error.message)")
            } catch {}
        }
    }
}


/// A pause or cancel inside a step (DRO's rollout, a micro-batch) stops the run at the step's
/// start, and the resumed run is still bit-identical to one that never stopped.
@Suite(.computeThread) struct InterruptedStepTests {
    @Test("a pause inside a rollout resumes bit-identically", arguments: [1, 2])
    func pauseInsideARollout(accumulation: Int) throws {
        let hyper: JSONObject = ["n_steps": 6, "batch_size": 4, "learning_rate": 1e-3, "checkpoint_every": 4, "policy_steps": 8,
                                   "buffer_size": 6, "gradient_accumulation_steps": .init(accumulation), "prompt_dropout": 0.25]
        let job = try TinyJob.job(.dro, hyper)
        let straight = try Trainer(job: job, directory: TinyJob.directory(), sink: RecordingSink())
        guard case let .succeeded(straightModel) = try straight.run() else { Issue.record("did not finish"); return }

        let directory = TinyJob.directory()
        var asked = 0
        let first = try Trainer(job: job, directory: directory, sink: RecordingSink())
        // Asked before every micro-batch and sampling step (9 or 18 a step): call 30 falls inside a rollout of step 2 or 3.
        let outcome = try first.run(interrupt: { asked += 1; return asked == 30 ? .pause : .proceed })
        guard case let .paused(step) = outcome else { Issue.record("not paused: \(outcome)"); return }
        #expect(step > 0 && step < 6 && step != 4, "paused at step \(step), mid-run and between checkpoints")
        let second = try Trainer(job: job, directory: directory, sink: RecordingSink())
        guard case let .succeeded(resumedModel) = try second.run(resume: true) else { Issue.record("did not finish"); return }
        #expect(try ModelFile.load(straightModel).parameters.array == ModelFile.load(resumedModel).parameters.array)
    }

    @Test func aCancelInsideAStepStopsBeforeItsUpdate() throws {
        let job = try TinyJob.job(.dro, ["n_steps": 5, "batch_size": 4, "policy_steps": 50])
        var asked = 0
        let trainer = try Trainer(job: job, directory: TinyJob.directory(), sink: RecordingSink())
        #expect(try trainer.run(interrupt: { asked += 1; return asked == 10 ? .cancel : .proceed }) == .cancelled(step: 0))
        #expect(asked == 10, "asked between sampling steps, not only between optimizer steps")
    }
}

@Suite(.computeThread) struct MemoryEstimateTests {
    /// The estimate's activations come from the same per-row count the workspace allocates.
    @Test func theWorkspaceHoldsWhatTheEstimateCounts() {
        for config in [TinyJob.config,
                       ModelConfig(sampleShape: [3, 8, 8], hidden: 32, depth: 3, mlpRatio: 4, timeFreqDim: 16, condition: .vector(dim: 5)),
                       ModelConfig(sampleShape: [1, 2, 2], hidden: 8, depth: 2, mlpRatio: 1, timeFreqDim: 4, condition: .none)] {
            let workspace = ResMLPWorkspace(config: config, maxBatch: 3)
            var floats = 0, seen = Set<ObjectIdentifier>()
            func count(_ value: Any) {
                // A buffer held twice (the workspace's lists of activations) is memory once.
                if let buffer = value as? FloatBuffer {
                    if seen.insert(ObjectIdentifier(buffer)).inserted { floats += buffer.count }
                    return
                }
                for child in Mirror(reflecting: value).children { count(child.value) }
            }
            count(workspace)
            #expect(floats == 3 * ResMLPWorkspace.floatsPerRow(config), "\(config)")
        }
    }

    /// `bytesPerRow`, what memory budgets are computed from, counts the workspace's other per-row
    /// arrays too: token ids, null flags, token counts and the conditioning's row maps; its hash
    /// table at most four slots (16 bytes) a row.
    @Test func theEstimateCountsEveryArrayOfTheWorkspace() {
        let tableBytesPerRow = 16
        for config in [TinyJob.config,
                       ModelConfig(sampleShape: [3, 8, 8], hidden: 32, depth: 3, mlpRatio: 4, timeFreqDim: 16, condition: .vector(dim: 5)),
                       ModelConfig(sampleShape: [1, 2, 2], hidden: 8, depth: 2, mlpRatio: 1, timeFreqDim: 4, condition: .none)] {
            for rows in [1, 3, 8] {
                let workspace = ResMLPWorkspace(config: config, maxBatch: rows)
                var bytes = 0, tableBytes = 0, seen = Set<ObjectIdentifier>()
                func count(_ value: Any, label: String?) {
                    switch value {
                    case let buffer as FloatBuffer: if seen.insert(ObjectIdentifier(buffer)).inserted { bytes += 4 * buffer.count }
                    case let array as [Int32] where label == "conditioningTable": tableBytes += 4 * array.count
                    case let array as [Int32]: bytes += 4 * array.count
                    case let array as [Float]: bytes += 4 * array.count
                    case let array as [Int]: bytes += MemoryLayout<Int>.stride * array.count
                    case let array as [UInt8]: bytes += array.count
                    default: for child in Mirror(reflecting: value).children { count(child.value, label: child.label) }
                    }
                }
                count(workspace, label: nil)
                let perRow = ResMLPWorkspace.bytesPerRow(config)
                #expect(bytes == rows * (perRow - tableBytesPerRow), "\(config), \(rows) rows")
                #expect(tableBytes <= rows * tableBytesPerRow, "\(config), \(rows) rows")
            }
        }
    }

    @Test func sizesThatOverflowSaturateInsteadOfTrapping() throws {
        var h = try Hyperparameters.resolve(["buffer_size": 1_000_000, "policy_steps": 1000], method: .dro)
        h.batchSize = 4096
        let config = ModelConfig(sampleShape: [1, 1024, 1024], hidden: 8192, depth: 64, mlpRatio: 16, timeFreqDim: 8192,
                                 condition: .text(vocab: 1_000_000, maxTokens: 1024))
        let estimate = MemoryEstimate.training(config: config, method: .dro, hyperparameters: h, examples: Int.max / 2)
        #expect(estimate.total == Int.max)
        #expect(MemoryBudget(bytes: 1 << 40).refusal(estimate, what: "this job") != nil)
        #expect(throws: AllocationError.self) { _ = try FloatBuffer(allocating: Int.max / 2) }
        #expect(throws: AllocationError.self) { _ = try FloatBuffer(allocating: 1 << 50) }
    }

    @Test func theStepLimitCoversEpochs() throws {
        let h = try Hyperparameters.resolve(["n_epochs": 100_000, "batch_size": 1], method: .sft)
        #expect(throws: HyperparameterError.self) { _ = try h.checkedTotalSteps(datasetSize: 200) }
        #expect(try h.checkedTotalSteps(datasetSize: 100) == 10_000_000)
    }
}
