import DemoData
import Diffusion
import Foundation
import JSON
import Numerics
import Training

// Compares the five objectives on ShapeWorld: pretrain a base with sft on the
// whole distribution, fine-tune it with each method on its kind of data, with
// several job seeds, and sample every model from the same prompts and noise.
KernelSelection.ensureFastestKernels()

let arguments = Array(CommandLine.arguments.dropFirst())
func option(_ name: String, _ fallback: Int) -> Int {
    guard let i = arguments.firstIndex(of: name), i + 1 < arguments.count, let value = Int(arguments[i + 1]) else { return fallback }
    return value
}

// `make demo` drives a server with these: the data files it uploads, and the reward of samples it gets back.
switch arguments.first {
case "demo-data":
    DemoCommands.writeData(arguments)
    exit(0)
case "score":
    DemoCommands.score(arguments)
    exit(0)
default:
    break
}
let pretrainSteps = option("--pretrain-steps", 4000)
let fineTuneSteps = option("--steps", 300)
let samples = option("--samples", 512)
let seeds = (1...max(1, option("--seeds", 3))).map(UInt64.init)
// fp32, bf16 (fine-tuning and sampling in bf16 from the fp32 base), or both side by side.
let precisions: [MathPrecision] = {
    guard let i = arguments.firstIndex(of: "--precision") else { return [.fp32] }
    let value = i + 1 < arguments.count ? arguments[i + 1] : ""
    if value == "both" { return [.fp32, .bf16] }
    guard let precision = MathPrecision(rawValue: value) else {
        FileHandle.standardError.write(Data("--precision takes fp32, bf16 or both\n".utf8))
        exit(2)
    }
    return [precision]
}()
if precisions.contains(.bf16), let refusal = MathPrecision.bf16Refusal {
    FileHandle.standardError.write(Data("--precision: \(refusal)\n".utf8))
    exit(2)
}

func progress(_ line: String) { FileHandle.standardError.write(Data("\(line)\n".utf8)) }

let world = ShapeWorld(size: 8)
let pipeline = DemoPipeline(world: world, config: world.modelConfig(), examples: 6000)
defer { pipeline.removeFiles() }
progress("pretraining the base (\(pretrainSteps) sft steps)…")
let base = try pipeline.pretrain(steps: pretrainSteps)

let evaluation = ShapeEvaluation(world: world, samples: samples, steps: 20, guidance: 2)
let baseReport = evaluation.evaluate(config: pipeline.config, parameters: base)

/// Mean and sample standard deviation over the seeds.
func summary(_ values: [Double]) -> String {
    let mean = values.reduce(0, +) / Double(values.count)
    guard values.count > 1 else { return String(format: "%.3f", mean) }
    let spread = (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(values.count - 1)).squareRoot()
    return String(format: "%.3f ± %.3f", mean, spread)
}

/// Mean and sample standard deviation of differences, signed, to four places.
func signedSummary(_ values: [Double]) -> String {
    let mean = values.reduce(0, +) / Double(values.count)
    guard values.count > 1 else { return String(format: "%+.4f", mean) }
    let spread = (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(values.count - 1)).squareRoot()
    return String(format: "%+.4f ± %.4f", mean, spread)
}

// Every method with its defaults (docs/training.md: the official codes' where they are known),
// at this budget: the step count and batch size only.
let both = precisions.count > 1
print("| model |\(both ? " precision |" : "") mean reward | prompt accuracy | win rate vs base |\(both ? " reward − fp32's |" : "")")
print("|---|---|---|---|\(both ? "---|---|" : "")")
print(String(format: "| base |\(both ? " fp32 |" : "") %.3f | %.3f | — |\(both ? " — |" : "")", baseReport.meanReward, baseReport.promptAccuracy))
for method in [TrainingMethod.sft, .dpo, .kto, .rpo, .dro] {
    var fp32Rewards: [Double] = []
    for precision in precisions {
        var reports: [ShapeEvaluation.Report] = []
        for seed in seeds {
            progress("fine-tuning with \(method.rawValue) in \(precision.rawValue), seed \(seed) (\(fineTuneSteps) steps)…")
            let hyperparameters: JSONObject = ["n_steps": .init(fineTuneSteps), "batch_size": 32, "checkpoint_every": .init(fineTuneSteps)]
            let tuned = try pipeline.fineTune(method, from: base, hyperparameters: hyperparameters, seed: seed, precision: precision)
            reports.append(MathPrecision.with(precision) { evaluation.evaluate(config: pipeline.config, parameters: tuned) })
        }
        let rewards = reports.map(\.meanReward)
        if precision == .fp32 { fp32Rewards = rewards }
        // The same seeds in both precisions: the difference of the means, and its spread over seeds.
        let difference = both && precision == .bf16 ? " \(signedSummary(zip(rewards, fp32Rewards).map { $0 - $1 })) |" : (both ? " — |" : "")
        print("| \(method.rawValue) |\(both ? " \(precision.rawValue) |" : "") \(summary(rewards)) | \(summary(reports.map(\.promptAccuracy))) | \(summary(reports.map { $0.winRate(against: baseReport) })) |\(difference)")
        fflush(nil)
    }
}
print("")
print("\(seeds.count) job seeds per method (mean ± sample standard deviation); \(pretrainSteps) pretraining steps (fp32), \(fineTuneSteps) fine-tuning steps at batch 32, \(samples) samples at guidance 2\(precisions == [.bf16] || both ? "; bf16 rows fine-tune and sample in bf16" : "").")
