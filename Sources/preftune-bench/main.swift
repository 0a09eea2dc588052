import CCeilings
import Diffusion
import Foundation
import JSON
import Numerics
import Training

// The benchmark runs on the kernels the service would use.
KernelSelection.ensureFastestKernels()

/// One JSON object per line on stdout: {"name", "value", "unit", …extra fields}.
func emit(_ name: String, _ value: Double, _ unit: String, _ extra: [String: Any] = [:]) {
    var object: [String: Any] = ["name": name, "value": (value * 100).rounded() / 100, "unit": unit]
    object.merge(extra) { a, _ in a }
    let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
    fflush(nil)
}

func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 }

/// Runs `body` in windows of at least `seconds`, returns the median rate (work units per second).
func measure(windows: Int = 3, seconds: Double, warmup: Int = 2, work: Double, _ body: () -> Void) -> (median: Double, low: Double, high: Double) {
    for _ in 0..<warmup { body() }
    var rates: [Double] = []
    for _ in 0..<windows {
        var iterations = 0
        let start = now()
        var elapsed = 0.0
        repeat { body(); iterations += 1; elapsed = now() - start } while elapsed < seconds
        rates.append(work * Double(iterations) / elapsed)
    }
    rates.sort()
    return (rates[rates.count / 2], rates.first!, rates.last!)
}

struct BenchConfig {
    let name: String
    let config: ModelConfig
    let batch: Int
}

let benchConfigs = [
    BenchConfig(name: "bench-s", config: ModelConfig(sampleShape: [1, 8, 8], hidden: 256, depth: 4, mlpRatio: 2, timeFreqDim: 128,
                                                      condition: .text(vocab: 1024, maxTokens: 16)), batch: 64),
    BenchConfig(name: "bench-m", config: ModelConfig(sampleShape: [3, 16, 16], hidden: 512, depth: 6, mlpRatio: 4, timeFreqDim: 256,
                                                      condition: .text(vocab: 4096, maxTokens: 16)), batch: 128),
]

/// Multiply-adds per row the model needs: forward, weight gradients, and input
/// gradients except where the input needs none (φ(t), x, the condition vector input).
func usefulFLOPsPerRow(_ c: ModelConfig) -> Double {
    let H = c.hidden, F = c.timeFreqDim, D = c.sampleSize, M = c.mlpHidden
    var conditionInputs = 0
    if case let .vector(dim) = c.condition { conditionInputs = dim }
    let forward = F * H + H * H + conditionInputs * H + D * H + c.depth * (2 * H * H + H * M + M * H) + H * D
    let backward = 2 * forward - F * H - D * H - conditionInputs * H
    return 2 * Double(forward + backward)
}

/// The GEMMs one training step issues: (m, n, k, transA, transB).
func gemmShapes(_ c: ModelConfig, batch B: Int) -> [(Int, Int, Int, Bool, Bool)] {
    let H = c.hidden, F = c.timeFreqDim, D = c.sampleSize, M = c.mlpHidden
    let layers = [(F, H), (H, H), (D, H), (H, 2 * H * c.depth), (H, M), (M, H), (H, D)]  // (in, out)
    var shapes: [(Int, Int, Int, Bool, Bool)] = []
    for (inputs, outputs) in layers {
        shapes.append((B, outputs, inputs, false, true))   // y = x·Wᵀ
        shapes.append((outputs, inputs, B, true, false))   // dW = dyᵀ·x
        shapes.append((B, inputs, outputs, false, false))  // dx = dy·W
    }
    var seen = Set<String>()
    return shapes.filter { seen.insert("\($0.0)x\($0.1)x\($0.2)\($0.3)\($0.4)").inserted }
}

func benchSGEMM(m: Int, n: Int, k: Int, transA: Bool, transB: Bool, packedB: Bool = false) -> Double {
    benchSGEMMWithKernel(m: m, n: n, k: k, transA: transA, transB: transB, packedB: packedB).rate
}

/// A product's best rate (GFLOP/s), and the kernel that ran it (`BLAS.kernel`).
func benchSGEMMWithKernel(m: Int, n: Int, k: Int, transA: Bool, transB: Bool, packedB: Bool = false) -> (rate: Double, kernel: String) {
    let a = FloatBuffer(count: m * k), b = FloatBuffer(count: k * n), c = FloatBuffer(count: m * n)
    var random = Philox(seed: 1)
    random.fillUniform(a.pointer, count: a.count, low: -1, high: 1)
    random.fillUniform(b.pointer, count: b.count, low: -1, high: 1)
    func rate() -> Double {
        measure(windows: 3, seconds: 0.15, work: 2 * Double(m * n * k) / 1e9) {
            BLAS.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a.pointer, lda: transA ? m : k,
                       b: b.pointer, ldb: transB ? k : n, c: c.pointer, ldc: n)
        }.median
    }
    // With `packedB`, B is packed once (and in bf16, converted once), as sampling and the
    // reference model read their weights (`PackedWeights`); without, per call, as θ is read.
    func measured() -> (Double, String) { (rate(), BLAS.kernel(transA: transA, transB: transB, m: m, n: n, k: k, b: b.pointer)) }
    return packedB ? PackedWeights(b).using { measured() } : measured()
}

/// The last-level cache's bytes (64 MB when the system does not say).
let lastLevelCacheBytes: Int = {
    let reported = sysconf(Int32(_SC_LEVEL3_CACHE_SIZE))
    return reported > 0 ? reported : 64 << 20
}()

/// A product's rate with every operand cold, as a pass over more data than the caches hold meets
/// its products: A, B and C each cycled through copies that together outgrow the L3 twice over
/// (the warm rate's yardstick reads the same operands every call). With `packedB`, each B copy is
/// read packed, as sampling and the reference read their weights.
func benchSGEMMCold(m: Int, n: Int, k: Int, transA: Bool, transB: Bool, packedB: Bool = false) -> Double {
    let bytes = 4 * (m * k + k * n + m * n)
    let copies = max(2, min(64, (2 * lastLevelCacheBytes + bytes - 1) / bytes))
    // Written, not only allocated: untouched pages all read the one zero page, which stays cached.
    let a = (0..<copies).map { _ in FloatBuffer(count: m * k, value: 0.01) }, b = (0..<copies).map { _ in FloatBuffer(count: k * n, value: 0.02) }
    let c = (0..<copies).map { _ in FloatBuffer(count: m * n, value: 0) }
    let packs = packedB ? b.map { PackedWeights($0) } : nil
    var i = 0
    // The first pass over the copies makes the packed ones; it is warmup.
    return measure(windows: 3, seconds: 0.15, warmup: copies + 1, work: 2 * Double(m * n * k) / 1e9) {
        i = (i + 1) % copies
        let product = {
            BLAS.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a[i].pointer, lda: transA ? m : k,
                       b: b[i].pointer, ldb: transB ? k : n, c: c[i].pointer, ldc: n)
        }
        if let packs { packs[i].using(product) } else { product() }
    }.median
}

/// One SFT training step as SPEC §7: draw a batch, noise it, forward, backward, clip at 1.0, AdamW.
final class SFTStepBench {
    let model: ResMLP
    let schedule: NoiseSchedule
    let batch: Int
    let parameters: FloatBuffer, gradients: FloatBuffer
    let optimizer: AdamW
    let workspace: ResMLPWorkspace
    let dataset: FloatBuffer, prompts: [Int32], rows = 4096
    let x0: FloatBuffer, noise: FloatBuffer
    let scratch: ObjectiveScratch
    var random = Philox(seed: 2024)
    /// Packs θ's weight matrices afresh every step (`PackedWeights`, both layouts a step reads),
    /// to measure whether packing θ pays.
    var packTheta = false
    /// θ in bf16 beside it, written by AdamW, in a bf16 step (as the trainer does).
    let thetaBF16: BF16Shadow?

    init(_ bench: BenchConfig) {
        model = ResMLP(config: bench.config)
        schedule = NoiseSchedule(bench.config.schedule)
        batch = bench.batch
        parameters = model.initialParameters(seed: 0)
        // Random weights everywhere, so no layer is a zero shortcut.
        random.fillUniform(parameters.pointer, count: parameters.count, low: -0.05, high: 0.05)
        gradients = FloatBuffer(count: model.parameterCount)
        optimizer = try! AdamW(parameterCount: model.parameterCount)
        thetaBF16 = MathPrecision.active == .bf16 ? try! BF16Shadow(of: parameters) : nil
        workspace = model.makeWorkspace(maxBatch: batch)
        let D = bench.config.sampleSize
        dataset = FloatBuffer(count: rows * D)
        random.fillUniform(dataset.pointer, count: dataset.count, low: -1, high: 1)
        guard case let .text(vocab, maxTokens) = bench.config.condition else { fatalError("bench configs are text models") }
        prompts = (0..<rows * maxTokens).map { i in i % maxTokens < 6 ? Int32(1 + i % (vocab - 1)) : 0 }
        x0 = FloatBuffer(count: batch * D)
        noise = FloatBuffer(count: batch * D)
        scratch = ObjectiveScratch(config: bench.config, maxRows: batch)
    }

    func step() -> Double {
        let D = model.config.sampleSize
        guard case let .text(_, maxTokens) = model.config.condition else { return 0 }
        for b in 0..<batch {
            let row = random.nextInt(below: rows)
            (x0.pointer + b * D).update(from: dataset.pointer + row * D, count: D)
            for slot in 0..<maxTokens { workspace.tokens[b * maxTokens + slot] = prompts[row * maxTokens + slot] }
            workspace.timesteps[b] = Float(random.nextInt(below: schedule.count))
        }
        random.fillNormal(noise.pointer, count: batch * D)
        schedule.addNoise(x0: x0.pointer, noise: noise.pointer, timesteps: workspace.timesteps.pointer,
                          into: workspace.x.pointer, rows: batch, width: D)
        let context = ObjectiveContext(model: model, theta: parameters, reference: nil, workspace: workspace, examples: batch,
                                       targets: noise.pointer, scratch: scratch, gradients: gradients)
        let loss = packTheta
            ? PackedWeights(parameters, budget: 2 * PackedWeights.defaultBudget(parameters: parameters.count)).using {
                SFTObjective().lossAndGradient(context).loss
            }
            : BF16Shadow.using(thetaBF16) { SFTObjective().lossAndGradient(context).loss }
        let norm = GradientClipping.globalNorm(gradients, sharingWith: scratch.companion)
        optimizer.update(parameters, gradients: gradients, learningRate: 1e-4,
                         gradientScale: GradientClipping.coefficient(norm: norm, maxNorm: 1), sharingWith: scratch.companion,
                         shadow: thetaBF16)
        return loss
    }
}

/// Where a step's time goes, in milliseconds per step: forward, backward, clip_norm and adamw in
/// turn, and `products`, the part of forward and backward spent inside matrix products; and what
/// the products took per step.
func phases(_ bench: BenchConfig, steps: Int) -> (milliseconds: [String: Double], products: ProductClock.Tally) {
    let s = SFTStepBench(bench)
    for _ in 0..<3 { _ = s.step() }
    var totals: [String: Double] = [:], tally = ProductClock.Tally()
    for _ in 0..<steps {
        var mark = now()
        func lap(_ name: String) { let t = now(); totals[name, default: 0] += t - mark; mark = t }
        let (_, products) = ProductClock.measuring {
            BF16Shadow.using(s.thetaBF16) {
                s.model.forward(s.parameters, s.workspace, batch: s.batch); lap("forward")
                s.model.backward(s.parameters, s.workspace, batch: s.batch, dOutput: s.workspace.outputGradient.pointer,
                                 gradients: s.gradients); lap("backward")
            }
        }
        totals["products", default: 0] += products.seconds
        tally.add(products)
        let norm = GradientClipping.globalNorm(s.gradients, sharingWith: s.scratch.companion); lap("clip_norm")
        s.optimizer.update(s.parameters, gradients: s.gradients, learningRate: 1e-4,
                           gradientScale: GradientClipping.coefficient(norm: norm, maxNorm: 1), sharingWith: s.scratch.companion,
                           shadow: s.thetaBF16); lap("adamw")
    }
    return (totals.mapValues { $0 * 1000 / Double(steps) }, tally.perRun(steps))
}

/// A training step of any objective as SPEC §7: the reference forward where the
/// objective needs it, θ forward and backward, clipping at 1.0, AdamW. Batch rows are
/// examples (a dpo/rpo/dro row is a pair). DRO's policy rows come from a replay
/// buffer filled once beforehand, as in training between refreshes.
final class ObjectiveStepBench {
    let model: ResMLP
    let objective: any Objective
    let batch: Int
    let theta: FloatBuffer, reference: FloatBuffer, gradients: FloatBuffer
    let thetaBF16: BF16Shadow?
    let optimizer: AdamW
    let workspace: ResMLPWorkspace
    let scratch: ObjectiveScratch
    let targets: FloatBuffer
    let desirable: [Bool]
    /// AdamW's learning rate. 0 keeps θ where it is while AdamW does all its work, so that the
    /// pairs a DRO margin leaves active stay those (at 1e-5 they all go inactive within a few steps).
    var learningRate = 1e-5

    init(_ bench: BenchConfig, objective: any Objective) {
        model = ResMLP(config: bench.config)
        self.objective = objective
        batch = bench.batch
        var random = Philox(seed: 99)
        theta = model.initialParameters(seed: 0)
        random.fillUniform(theta.pointer, count: theta.count, low: -0.05, high: 0.05)
        reference = theta.copy()
        // θ a little away from the reference, as during training.
        for i in stride(from: 0, to: theta.count, by: 7) { theta[i] += 1e-3 }
        thetaBF16 = MathPrecision.active == .bf16 ? try! BF16Shadow(of: theta) : nil
        gradients = FloatBuffer(count: model.parameterCount)
        optimizer = try! AdamW(parameterCount: model.parameterCount)
        let rows = batch * objective.rowsPerExample, D = bench.config.sampleSize
        workspace = model.makeWorkspace(maxBatch: rows)
        scratch = ObjectiveScratch(config: bench.config, maxRows: rows)
        targets = FloatBuffer(count: rows * D)
        random.fillNormal(workspace.x.pointer, count: rows * D)
        random.fillNormal(targets.pointer, count: rows * D)
        guard case let .text(vocab, maxTokens) = bench.config.condition else { fatalError("bench configs are text models") }
        for b in 0..<batch {
            let t = Float(random.nextInt(below: 1000))
            for copy in 0..<objective.rowsPerExample {
                let row = copy * batch + b
                workspace.timesteps[row] = t
                for slot in 0..<maxTokens { workspace.tokens[row * maxTokens + slot] = slot < 6 ? Int32(1 + (b * 7 + slot) % (vocab - 1)) : 0 }
            }
        }
        desirable = (0..<batch).map { $0 % 2 == 0 }
    }

    /// A DRO step whose margin leaves `fraction` of its pairs active (bisected on the loss
    /// alone), and a reading of the fraction active now.
    static func droPartlyActive(_ bench: BenchConfig, fraction: Double) -> (ObjectiveStepBench, active: () -> Double) {
        func active(_ s: ObjectiveStepBench, margin: Double) -> Double {
            BF16Shadow.using(s.thetaBF16) {
                DROObjective(margin: margin).lossAndGradient(ObjectiveContext(
                    model: s.model, theta: s.theta, reference: s.reference, workspace: s.workspace, examples: s.batch,
                    targets: s.targets.pointer, scratch: s.scratch, gradients: nil)).statistics["active"] ?? 0
            }
        }
        let probe = ObjectiveStepBench(bench, objective: DROObjective(margin: 0))
        var low = -1.0, high = 1.0  // active at low: none, at high: all (|d| is far below 1 here)
        for _ in 0..<60 where high - low > 1e-12 {
            let middle = (low + high) / 2
            if active(probe, margin: middle) < fraction { low = middle } else { high = middle }
        }
        let step = ObjectiveStepBench(bench, objective: DROObjective(margin: high))
        step.learningRate = 0
        return (step, { active(step, margin: high) })
    }

    func step() {
        _ = BF16Shadow.using(thetaBF16) {
            objective.lossAndGradient(ObjectiveContext(
                model: model, theta: theta, reference: reference, workspace: workspace, examples: batch,
                targets: targets.pointer, desirable: desirable, scratch: scratch, gradients: gradients))
        }
        let norm = GradientClipping.globalNorm(gradients, sharingWith: scratch.companion)
        optimizer.update(theta, gradients: gradients, learningRate: learningRate,
                         gradientScale: GradientClipping.coefficient(norm: norm, maxNorm: 1), sharingWith: scratch.companion,
                         shadow: thetaBF16)
    }
}

/// Policy sampling as DRO does it: dpmpp2m, 20 steps, guidance 1, a batch of prompts. With
/// `samplesPerPrompt` and `guidance`, as `/v1/samples` draws: n samples of each prompt, and
/// classifier-free guidance's null rows beside them.
final class SamplingBench {
    let bench: BenchConfig
    let guidance: Float
    let parameters: FloatBuffer
    let sampler: Sampler
    let x: FloatBuffer
    let conditions: Conditions
    var random = Philox(seed: 5)

    init(_ bench: BenchConfig, samplesPerPrompt: Int = 1, guidance: Float = 1) {
        self.bench = bench
        self.guidance = guidance
        let model = ResMLP(config: bench.config)
        parameters = model.initialParameters(seed: 0)
        random.fillUniform(parameters.pointer, count: parameters.count, low: -0.05, high: 0.05)
        sampler = Sampler(model: model, kind: .dpmpp2m, maxBatch: bench.batch)
        x = FloatBuffer(count: bench.batch * bench.config.sampleSize)
        let prompts = (0..<bench.batch).map { "prompt number \($0 / samplesPerPrompt) with some words" }
        conditions = Conditions.prompts(prompts, config: bench.config)
    }

    /// One batch of samples from fresh noise.
    func sample() {
        random.fillNormal(x.pointer, count: x.count)
        sampler.sample(parameters: parameters, x: x.pointer, batch: bench.batch, conditions: conditions, guidance: guidance, steps: 20)
    }
}

func benchSampling(_ bench: BenchConfig, seconds: Double, samplesPerPrompt: Int = 1, guidance: Float = 1)
    -> (median: Double, low: Double, high: Double) {
    let sampling = SamplingBench(bench, samplesPerPrompt: samplesPerPrompt, guidance: guidance)
    return measure(windows: 3, seconds: seconds, warmup: 1, work: Double(bench.batch)) { sampling.sample() }
}

/// `run` timed `runs` times after one unmeasured run: the milliseconds of a run, and the time and
/// work of its products (`ProductClock`), a run's worth.
func timedWithProducts(runs: Int, _ run: () -> Void) -> (totalMilliseconds: Double, products: ProductClock.Tally) {
    run()
    var total = 0.0, products = ProductClock.Tally()
    for _ in 0..<runs {
        let start = now()
        let (_, tally) = ProductClock.measuring(run)
        total += now() - start
        products.add(tally)
    }
    return (total * 1000 / Double(runs), products.perRun(runs))
}

/// DRO training end to end with the default buffer settings: every micro-step samples
/// fresh policy trajectories for the batch's experts, then trains on them. Timed from
/// the first step's end to the last's (the trainer's metric records), so neither the
/// set-up nor the final checkpoint and training state (~400 MB for bench-m) count.
func benchDROEndToEnd(_ bench: BenchConfig, steps: Int) -> Double {
    let model = ResMLP(config: bench.config)
    let D = bench.config.sampleSize
    var random = Philox(seed: 8)
    let examples = 4 * bench.batch
    var lines: [String] = []
    for i in 0..<examples {
        var sample = [Float](repeating: 0, count: D)
        sample.withUnsafeMutableBufferPointer { random.fillUniform($0.baseAddress!, count: D, low: -1, high: 1) }
        lines.append(#"{"prompt":"prompt \#(i % 50) of the bench","sample":[\#(sample.map { String($0) }.joined(separator: ","))]}"#)
    }
    let data = try! Dataset.parse(Data(lines.joined(separator: "\n").utf8), method: .dro, config: bench.config)
    let base = model.initialParameters(seed: 0)
    random.fillUniform(base.pointer, count: base.count, low: -0.05, high: 0.05)
    let hyperparameters = try! Hyperparameters.resolve(["n_steps": .init(steps), "batch_size": .init(bench.batch), "checkpoint_every": 1_000_000,
                                                       "log_every": 1], method: .dro)
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("preftune-bench-\(UUID())").path
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let sink = StepClock()
    var job = TrainingJob(method: .dro, hyperparameters: hyperparameters, seed: 1, config: bench.config, base: base, training: data)
    // The trainer computes in its job's precision, whatever its thread's: the bench's must be the job's.
    job.precision = MathPrecision.active
    let trainer = try! Trainer(job: job, directory: directory, sink: sink)
    _ = try! trainer.run()
    let (first, last) = (sink.steps.first!, sink.steps.last!)
    return Double((last.step - first.step) * bench.batch) / (last.time - first.time)
}

/// A sink that only notes when each step ended.
final class StepClock: TrainingSink {
    var steps: [(step: Int, time: Double)] = []
    func log(_ message: String) {}
    func record(step: Int, metrics: [String: Double], summary: String) { steps.append((step, now())) }
    func checkpointSaved(_ checkpoint: CheckpointRecord) {}
}

let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.contains("--help") {
    print("""
    usage: preftune-bench [--quick] [--only TEXT [--exact]] [--math onednn|openblas] [--precision fp32|bf16]
                          [--profile bench-s|bench-m [--sampling | --objective dpo|kto|dro|rpo]]
      (default)   every measurement, one JSON object per line: fp32, then bf16 (names ending _bf16)
                  where the CPU computes bf16 natively
      --math      the library of the fp32 matrix products (default: the process's, PREFTUNE_MATH);
                  run with OMP_WAIT_POLICY=passive for oneDNN, as preftune's workers do
      --precision only this precision's measurements (for --profile: the precision profiled)
      --quick     shorter measuring windows
      --only      only the measurements whose name contains TEXT (e.g. bench-s/sft, sgemm, adamw)
      --exact     only the measurement named TEXT (make bench-ratios times one at a time)
      --profile   run 200 SFT steps (or 200 steps of --objective, or 15 s of --sampling) of one config,
                  nothing else (for perf record)
    """)
    exit(0)
}
// Refuse what this tool does not know, so a misspelt flag never measures the wrong thing.
do {
    let valued: Set = ["--only", "--math", "--precision", "--profile", "--objective"], bare: Set = ["--quick", "--sampling", "--exact", "--help"]
    var index = 0
    while index < arguments.count {
        let argument = arguments[index]
        if valued.contains(argument), index + 1 < arguments.count {
            index += 2
        } else if bare.contains(argument) {
            index += 1
        } else {
            FileHandle.standardError.write(Data("preftune-bench: unknown or incomplete argument '\(argument)' (see --help)\n".utf8))
            exit(2)
        }
    }
}
var precisions = MathPrecision.nativeBF16 ? MathPrecision.allCases : [.fp32]
if let index = arguments.firstIndex(of: "--precision") {
    guard let precision = MathPrecision(rawValue: arguments[index + 1]) else {
        FileHandle.standardError.write(Data("--precision takes fp32 or bf16\n".utf8))
        exit(2)
    }
    if let refusal = precision == .bf16 ? MathPrecision.bf16Refusal : nil {
        FileHandle.standardError.write(Data("--precision bf16: \(refusal)\n".utf8))
        exit(2)
    }
    precisions = [precision]
}
if let index = arguments.firstIndex(of: "--math") {
    guard index + 1 < arguments.count, let backend = MathBackend(rawValue: arguments[index + 1]) else {
        FileHandle.standardError.write(Data("--math takes onednn or openblas\n".utf8))
        exit(2)
    }
    do { try MathBackend.select(backend) } catch {
        FileHandle.standardError.write(Data("--math \(backend.rawValue): \(error)\n".utf8))
        exit(2)
    }
}
if let index = arguments.firstIndex(of: "--profile"), index + 1 < arguments.count {
    guard let bench = benchConfigs.first(where: { $0.name == arguments[index + 1] }) else {
        FileHandle.standardError.write(Data("unknown config \(arguments[index + 1])\n".utf8))
        exit(2)
    }
    let precision = arguments.contains("--precision") ? precisions[0] : .fp32
    MathPrecision.with(precision) { profile(bench) }
    exit(0)
}

/// What --profile runs: nothing but the work, for perf record.
func profile(_ bench: BenchConfig) {
    if arguments.contains("--sampling") {
        _ = benchSampling(bench, seconds: 5)
    } else if let flag = arguments.firstIndex(of: "--objective"), flag + 1 < arguments.count {
        let objectives: [String: any Objective] = Dictionary(uniqueKeysWithValues: [TrainingMethod.dpo, .kto, .dro, .rpo].map { ($0.rawValue, defaultObjective($0)) })
        guard let objective = objectives[arguments[flag + 1]] else {
            FileHandle.standardError.write(Data("unknown objective \(arguments[flag + 1])\n".utf8))
            exit(2)
        }
        let step = ObjectiveStepBench(bench, objective: objective)
        for _ in 0..<200 { step.step() }
    } else {
        let sft = SFTStepBench(bench)
        for _ in 0..<200 { _ = sft.step() }
    }
}
let quick = arguments.contains("--quick")
let window = quick ? 0.5 : 2.0
let exact = arguments.contains("--exact")
let only = arguments.firstIndex(of: "--only").flatMap { $0 + 1 < arguments.count ? arguments[$0 + 1] : nil }
/// Whether any of the measurements named was asked for.
func wanted(_ names: String...) -> Bool { wanted(names) }
func wanted(_ names: [String]) -> Bool {
    guard let only else { return true }
    return names.contains { exact ? $0 == only : $0.contains(only) }
}

emit("blas/threads", Double(BLASRuntime.threadCount), "threads", ["core": BLASRuntime.coreName, "math": MathBackend.current.rawValue,
                                                                   "math_library": MathBackend.description])

// SGEMM: a 1024³ reference and every shape a training step issues, named by M×N×K
// (rate over all transpose layouts of that shape; each layout's rate alongside).
if wanted("sgemm/1024x1024x1024") {
    emit("sgemm/1024x1024x1024", benchSGEMM(m: 1024, n: 1024, k: 1024, transA: false, transB: false), "GFLOP/s",
         ["trans": ["NN"], "note": "reference shape, not used by the model"])
}
// MARK: The machine's ceilings, measured in the same run as the figures they bound

/// The FMA units' peak with `threads` threads at once, in GFLOP/s: the best of three windows
/// (a ceiling, so the most seen), in the widest FMA the CPU has. nil where it has no FMA.
func benchFMAPeak(threads: Int) -> Double? {
    let flopsPerRound = Double(preftune_ceilings_fma_flops_per_round())
    guard flopsPerRound > 0 else { return nil }
    // About 0.1 s a window (18 AVX-512 FMAs a round; half as many rounds' worth of time in AVX2).
    let rounds: Int64 = (quick ? 10_000_000 : 40_000_000) * (flopsPerRound < 576 ? 2 : 1)
    var best = 0.0
    for _ in 0..<3 {
        let start = now()
        DispatchQueue.concurrentPerform(iterations: threads) { _ in _ = preftune_ceilings_fma_rounds(rounds) }
        best = max(best, Double(threads) * Double(rounds) * flopsPerRound / (now() - start) / 1e9)
    }
    return best
}

/// One AdamW pass over `parameters` values of state, and the same memory traffic without the
/// arithmetic (read p, g, m, v; write p, m, v, g), each split over two threads as the trainer
/// splits AdamW: medians in milliseconds, taken in alternation so both see the same machine.
func benchAdamWAgainstMemory(parameters count: Int, passes: Int) -> (adamw: Double, floor: Double) {
    let companion = CompanionThread(name: "bench companion")
    let parameters = FloatBuffer(count: count, value: 0.01), gradients = FloatBuffer(count: count)
    let optimizer = try! AdamW(parameterCount: count)
    let m = FloatBuffer(count: count), v = FloatBuffer(count: count)
    let buffers = UncheckedSendable((parameters.pointer, gradients.pointer, m.pointer, v.pointer))
    func traffic() {
        Parallel.forEachChunk(count: count, sharingWith: companion) { range in
            let (p, g, m, v) = buffers.value
            preftune_ceilings_adamw_traffic(p + range.lowerBound, g + range.lowerBound, m + range.lowerBound, v + range.lowerBound,
                                            Int64(range.count))
        }
    }
    func adamw() { optimizer.update(parameters, gradients: gradients, learningRate: 1e-4, sharingWith: companion) }
    adamw(); traffic()
    var adamwTimes: [Double] = [], floorTimes: [Double] = []
    for _ in 0..<passes {
        var start = now()
        adamw()
        adamwTimes.append(now() - start)
        start = now()
        traffic()
        floorTimes.append(now() - start)
    }
    return (adamwTimes.sorted()[passes / 2] * 1e3, floorTimes.sorted()[passes / 2] * 1e3)
}

/// The passes whose `/products` line bounds them (bench-m): every training step, and sampling.
func boundedPasses(_ suffix: String) -> [String] {
    ["sft", "dpo", "kto", "dro", "rpo"].map { "bench-m/\($0)_step\(suffix)/products" } + ["bench-m/sample_dpmpp2m_20\(suffix)/products"]
}

let fmaPeak = wanted(["cpu/fma_peak", "bench-m/sft_step_useful"] + boundedPasses("")) ? benchFMAPeak(threads: BLASRuntime.threadCount) : nil
if let fmaPeak, wanted("cpu/fma_peak") {
    emit("cpu/fma_peak", fmaPeak, "GFLOP/s", ["threads": BLASRuntime.threadCount,
         "isa": preftune_ceilings_fma_flops_per_round() == 576 ? "avx512" : "avx2",
         "note": "independent FMA chains a thread (18 in AVX-512, 9 in AVX2), operands in registers: the most any fp32 product can reach"])
}
/// One AdamW pass over bench-m's state and its memory floor (ms), measured for their own lines
/// and for the ceiling that bench-m/sft_step_useful reports.
let adamwOnBenchM: (parameters: Int, adamw: Double, floor: Double)? = {
    guard let bench = benchConfigs.first(where: { $0.name == "bench-m" }),
          wanted(["bench-m/adamw", "bench-m/sft_step_useful", "bench-m/sft_step_useful_bf16"]) else { return nil }
    let count = ResMLP(config: bench.config).parameterCount
    let (adamw, floor) = benchAdamWAgainstMemory(parameters: count, passes: quick ? 5 : 21)
    return (count, adamw, floor)
}()
if let (count, adamw, floor) = adamwOnBenchM, wanted("bench-m/adamw") {
    let bytes = Double(count) * 4 * 8  // four arrays read, four written
    emit("bench-m/adamw", adamw, "ms", ["parameters": count, "note": "one AdamW pass alone, two threads"])
    emit("bench-m/adamw_memory_floor", floor, "ms", ["parameters": count, "GB/s": (bytes / floor / 1e6).rounded(),
         "note": "AdamW's memory traffic without its arithmetic, timed in alternation with bench-m/adamw"])
}

/// What every `/products` line carries about a pass of `milliseconds` that held `products`: their
/// rate, share and fraction of the FMA peak (fp32), and on bench-m, with the yardstick `bestRate`,
/// the pass's bound: items a second with the products at that rate and the rest as it was, as
/// `<unit>_at_best_rate` ("rows/s" gives `rows_per_s_at_best_rate`). Beside it `fraction_of_bound`,
/// the pass's own rate in the same runs over that bound: how close it is, with no PyTorch run in
/// it. The yardstick is measured seconds before, so the machine's drift in between still is.
func productsFields(unit: String, items: Int, milliseconds: Double, products: ProductClock.Tally,
                    precision: MathPrecision, bestRate: Double?, bestColdRate: Double? = nil) -> [String: Any] {
    var fields: [String: Any] = ["GFLOP/s": products.rate.rounded(),
                                 "share": (products.seconds * 1000 / milliseconds * 1000).rounded() / 1000]
    if let fmaPeak, precision == .fp32 { fields["fraction_of_fma_peak"] = (products.rate / fmaPeak * 1000).rounded() / 1000 }
    // The bound with the products at the best warm rate, and with them at the best rate they reach
    // on cold operands, which is all a pass over more weights and gradients than the caches hold can have.
    let rate = Double(items) * 1000 / milliseconds, perUnit = unit.replacingOccurrences(of: "/", with: "_per_")
    for (best, sgemmField, boundField, fractionField) in [
        (bestRate, "best_model_sgemm", "\(perUnit)_at_best_rate", "fraction_of_bound"),
        (bestColdRate, "best_model_sgemm_cold", "\(perUnit)_at_best_cold_rate", "fraction_of_cold_bound"),
    ] {
        guard let best, best > 0 else { continue }
        let bound = products.itemsPerSecond(items, inRunOf: milliseconds / 1000, productsAt: best)
        fields[sgemmField] = (best * 10).rounded() / 10
        fields[boundField] = bound.rounded()
        fields[fractionField] = (rate / bound * 1000).rounded() / 1000
    }
    return fields
}

/// Every measurement below in one precision: fp32 names as they are, bf16 ones with `_bf16`
/// after the name (`bench-m/sft_step_bf16`, `sgemm_bf16/256x512x2048`), as `make bench-pytorch`
/// names its autocast runs.
func measureModels(_ precision: MathPrecision) {
    let suffix = precision == .fp32 ? "" : "_\(precision.rawValue)"
    let gemm = precision == .fp32 ? "sgemm" : "sgemm_\(precision.rawValue)"
    var bestModelSGEMM = 0.0, bestModelSGEMMCold = 0.0
    /// One model shape's rates (GFLOP/s) by layout ("NT", "TN", "NN"): warm with B as it is and
    /// packed, cold likewise (bench-m), and the kernel that ran it.
    struct ShapeRates {
        let name, config: String
        var warm: [String: Double] = [:], packed: [String: Double] = [:], cold: [String: Double] = [:], coldPacked: [String: Double] = [:]
        var kernels: [String: String] = [:]
    }
    var shapeRates: [ShapeRates] = []
    // The best model-shape rate is the yardstick of bench-m/sft_step_useful and of the bounds on
    // the products lines, so it is measured for those too: the best of B read as it is and, where
    // B is a weight, packed once, so that no product inside a pass can beat it by reading packed
    // weights. The bench-m bounds have a second yardstick, the best rate on cold operands.
    for bench in benchConfigs where wanted(["\(gemm)/", "bench-m/sft_step_useful\(suffix)"] + boundedPasses(suffix)) {
        for (m, n, k, transA, transB) in gemmShapes(bench.config, batch: bench.batch) {
            let name = "\(gemm)/\(m)x\(n)x\(k)", layout = (transA ? "T" : "N") + (transB ? "T" : "N")
            if !shapeRates.contains(where: { $0.name == name }) { shapeRates.append(ShapeRates(name: name, config: bench.name)) }
            let i = shapeRates.firstIndex { $0.name == name }!
            let (rate, kernel) = benchSGEMMWithKernel(m: m, n: n, k: k, transA: transA, transB: transB)
            shapeRates[i].warm[layout] = rate
            shapeRates[i].kernels[layout] = kernel
            // B is a weight matrix in y = x·Wᵀ and dx = dy·W, which may be read packed; in
            // dW = dyᵀ·x (transA) it is activations, which never are.
            if !transA { shapeRates[i].packed[layout] = benchSGEMM(m: m, n: n, k: k, transA: transA, transB: transB, packedB: true) }
            if bench.name == "bench-m", wanted(["\(gemm)/"] + boundedPasses(suffix)) {
                shapeRates[i].cold[layout] = benchSGEMMCold(m: m, n: n, k: k, transA: transA, transB: transB)
                if !transA {
                    shapeRates[i].coldPacked[layout] = benchSGEMMCold(m: m, n: n, k: k, transA: transA, transB: transB, packedB: true)
                }
            }
            bestModelSGEMM = max(bestModelSGEMM, rate, shapeRates[i].packed[layout] ?? 0)
            bestModelSGEMMCold = max(bestModelSGEMMCold, shapeRates[i].cold[layout] ?? 0, shapeRates[i].coldPacked[layout] ?? 0)
        }
    }
    for shape in shapeRates where wanted(shape.name) {
        // The same work in each layout: the combined rate is the harmonic mean.
        let combined = Double(shape.warm.count) / shape.warm.values.reduce(0) { $0 + 1 / $1 }
        func rounded(_ rates: [String: Double]) -> [String: Double] { rates.mapValues { ($0 * 10).rounded() / 10 } }
        var extra: [String: Any] = ["config": shape.config, "by_trans": rounded(shape.warm), "kernel_by_trans": shape.kernels]
        if !shape.packed.isEmpty { extra["packed_b_by_trans"] = rounded(shape.packed) }
        if !shape.cold.isEmpty { extra["cold_by_trans"] = rounded(shape.cold) }
        if !shape.coldPacked.isEmpty { extra["cold_packed_b_by_trans"] = rounded(shape.coldPacked) }
        emit(shape.name, combined, "GFLOP/s", extra)
    }

    for bench in benchConfigs {
        let sftName = "\(bench.name)/sft_step\(suffix)", usefulName = "\(bench.name)/sft_step_useful\(suffix)"
        if wanted(sftName, usefulName) {
            let sft = SFTStepBench(bench)
            let rate = measure(seconds: window, work: Double(bench.batch)) { _ = sft.step() }
            if wanted(sftName) {
                emit(sftName, rate.median, "rows/s", ["batch": bench.batch, "low": rate.low.rounded(), "high": rate.high.rounded()])
            }
            if bench.name == "bench-m", wanted(usefulName) {
                let useful = rate.median * usefulFLOPsPerRow(bench.config) / 1e9
                var extra: [String: Any] = [
                    "best_model_sgemm": (bestModelSGEMM * 10).rounded() / 10,
                    "fraction_of_best_sgemm": (useful / bestModelSGEMM * 1000).rounded() / 1000,
                    "flops_per_row": usefulFLOPsPerRow(bench.config),
                ]
                // The most this fraction can be on this machine: every product at the best rate, and
                // nothing else in the step but AdamW's memory traffic, which fp32 optimizer state
                // makes a pass of its own after the gradient norm (what `fraction_of_best_sgemm`'s
                // target is to be read against).
                if let floor = adamwOnBenchM?.floor {
                    let stepFLOPs = usefulFLOPsPerRow(bench.config) * Double(bench.batch) / 1e9
                    let fastestStep = stepFLOPs / bestModelSGEMM + floor / 1000
                    extra["ceiling_fraction"] = (stepFLOPs / fastestStep / bestModelSGEMM * 1000).rounded() / 1000
                    extra["adamw_memory_floor_ms"] = (floor * 100).rounded() / 100
                }
                // The FMA peak bounds fp32 work; bf16 products run on AMX, which it does not measure.
                if let fmaPeak, precision == .fp32 {
                    extra["fma_peak"] = (fmaPeak * 10).rounded() / 10
                    extra["fraction_of_fma_peak"] = (useful / fmaPeak * 1000).rounded() / 1000
                }
                emit(usefulName, useful, "GFLOP/s", extra)
            }
        }
        // Whether packing θ after every optimizer step would pay: the same step with θ packed afresh.
        let packedName = "\(bench.name)/sft_step_theta_packed\(suffix)"
        if bench.name == "bench-m", wanted(packedName) {
            let sft = SFTStepBench(bench)
            sft.packTheta = true
            let rate = measure(seconds: window, work: Double(bench.batch)) { _ = sft.step() }
            emit(packedName, rate.median, "rows/s", ["batch": bench.batch, "note": "θ packed by oneDNN reorders at every step, then the step"])
        }
        let phaseNames = ["forward", "backward", "products", "clip_norm", "adamw"]
        if phaseNames.contains(where: { wanted("\(bench.name)/sft_step\(suffix)/\($0)") }) {
            let (split, products) = phases(bench, steps: quick ? 5 : 20)
            for (phase, milliseconds) in split.sorted(by: { $0.key < $1.key })
            where phaseNames.contains(phase) && wanted("\(bench.name)/sft_step\(suffix)/\(phase)") {
                var extra: [String: Any] = ["batch": bench.batch]
                if phase == "products" {
                    let step = ["forward", "backward", "clip_norm", "adamw"].reduce(0) { $0 + (split[$1] ?? 0) }
                    extra["step_ms"] = (step * 10).rounded() / 10
                    extra.merge(productsFields(unit: "rows/s", items: bench.batch, milliseconds: step, products: products,
                                               precision: precision, bestRate: bench.name == "bench-m" ? bestModelSGEMM : nil,
                                               bestColdRate: bench.name == "bench-m" ? bestModelSGEMMCold : nil)) { $1 }
                }
                emit("\(bench.name)/sft_step\(suffix)/\(phase)", milliseconds, "ms", extra)
            }
        }
        let objectives: [(String, any Objective, String)] = [
            ("dpo", defaultObjective(.dpo), "pairs/s"), ("kto", defaultObjective(.kto), "rows/s"),
            ("dro", defaultObjective(.dro), "pairs/s"), ("rpo", defaultObjective(.rpo), "pairs/s"),
        ]
        for (name, objective, unit) in objectives {
            let stepName = "\(bench.name)/\(name)_step\(suffix)", productsName = "\(stepName)/products"
            let wantsProducts = bench.name == "bench-m" && wanted(productsName)
            guard wanted(stepName) || wantsProducts else { continue }
            let step = ObjectiveStepBench(bench, objective: objective)
            if wanted(stepName) {
                let rate = measure(seconds: window, work: Double(bench.batch)) { step.step() }
                emit(stepName, rate.median, unit, ["batch": bench.batch, "low": rate.low.rounded(), "high": rate.high.rounded()])
            }
            if wantsProducts {
                // As for the sft step: the time inside products, and the step's bound with them at
                // the best warm rate ("pairs_per_s_at_best_rate", or rows for kto).
                let (total, products) = timedWithProducts(runs: quick ? 5 : 20) { step.step() }
                var extra: [String: Any] = ["batch": bench.batch, "step_ms": (total * 10).rounded() / 10]
                extra.merge(productsFields(unit: unit, items: bench.batch, milliseconds: total, products: products,
                                           precision: precision, bestRate: bestModelSGEMM, bestColdRate: bestModelSGEMMCold)) { $1 }
                emit(productsName, products.seconds * 1000, "ms", extra)
            }
        }
        // The dro step above has every pair active (θ is a hair from the reference, so d ≈ 0 < m);
        // fine-tuning on ShapeWorld leaves 62-81 % active, and the backward pass skips the rest.
        let partlyActiveName = "\(bench.name)/dro_step_70_active\(suffix)"
        if wanted(partlyActiveName) {
            let (step, active) = ObjectiveStepBench.droPartlyActive(bench, fraction: 0.7)
            let rate = measure(seconds: window, work: Double(bench.batch)) { step.step() }
            emit(partlyActiveName, rate.median, "pairs/s", ["batch": bench.batch, "low": rate.low.rounded(), "high": rate.high.rounded(),
                 "active": (active() * 1000).rounded() / 1000,
                 "note": "dro_step with its margin set so that 70 % of the pairs are active and a learning rate of 0, which keeps them so; active: the fraction after the runs"])
        }
        if wanted("\(bench.name)/sample_dpmpp2m_20\(suffix)") {
            let sampling = benchSampling(bench, seconds: window)
            emit("\(bench.name)/sample_dpmpp2m_20\(suffix)", sampling.median, "samples/s", ["batch": bench.batch, "guidance": 1])
        }
        let samplingProductsName = "\(bench.name)/sample_dpmpp2m_20\(suffix)/products"
        if bench.name == "bench-m", wanted(samplingProductsName) {
            // Sampling is nearly all products: their rate inside it, against the best the bench
            // measured warm at the same shapes, bounds how fast it can go in this precision.
            let sampling = SamplingBench(bench)
            let (total, products) = timedWithProducts(runs: quick ? 2 : 6) { sampling.sample() }
            var extra: [String: Any] = ["batch": bench.batch, "total_ms": (total * 10).rounded() / 10]
            extra.merge(productsFields(unit: "samples/s", items: bench.batch, milliseconds: total, products: products,
                                       precision: precision, bestRate: bestModelSGEMM, bestColdRate: bestModelSGEMMCold)) { $1 }
            emit(samplingProductsName, products.seconds * 1000, "ms", extra)
        }
        if wanted("\(bench.name)/sample_dpmpp2m_20_request\(suffix)") {
            let sampling = benchSampling(bench, seconds: window, samplesPerPrompt: 4, guidance: 7.5)
            emit("\(bench.name)/sample_dpmpp2m_20_request\(suffix)", sampling.median, "samples/s",
                 ["batch": bench.batch, "samples_per_prompt": 4, "guidance": 7.5,
                  "note": "as /v1/samples draws: n = 4 of each prompt, with classifier-free guidance (a forward pass of 2 rows a sample)"])
        }
        if wanted("\(bench.name)/dro_train_end_to_end\(suffix)") {
            let endToEnd = benchDROEndToEnd(bench, steps: quick ? 4 : 10)
            emit("\(bench.name)/dro_train_end_to_end\(suffix)", endToEnd, "pairs/s",
                 ["batch": bench.batch, "note": "policy sampling (dpmpp2m, 20 steps) every micro-step, buffer_size = buffer_batch_size = batch; steady state, checkpoint writes excluded"])
        }
    }
}

// bf16 where the CPU computes it natively (elsewhere it is an emulation, slower than fp32).
for precision in precisions {
    MathPrecision.with(precision) { measureModels(precision) }
}

/// A method's objective with the service's defaults.
func defaultObjective(_ method: TrainingMethod) -> any Objective {
    (try! Hyperparameters.resolve([:], method: method)).objective(for: method)
}
