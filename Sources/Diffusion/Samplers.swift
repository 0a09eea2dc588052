import Foundation
import Numerics

public enum SamplerKind: String, Codable, Sendable, CaseIterable {
    /// DDIM, η = 0, no clipping (diffusers DDIMScheduler, leading spacing, ᾱ_prev = 1 past the end).
    case ddim
    /// Ancestral DDPM with `fixed_small` variance, no clipping, no noise at the last step.
    case ddpm
    /// DPM-Solver++ multistep, order 2, midpoint, lower order at the final step, final σ = 0.
    case dpmpp2m
}

/// A sampling step, as the sampler saw it: the input x of step k, its timesteps,
/// the model's conditional prediction and the guided one. DRO's replay buffer
/// stores exactly these (the input of step k, not its output).
public struct SamplerStep {
    public let index: Int
    public let batch: Int
    /// x_{t_k}, [B, D] — the input of this step.
    public let x: UnsafePointer<Float>
    /// t_k for each row.
    public let timesteps: UnsafePointer<Float>
    /// ε(x, t, c), [B, D].
    public let conditionalPrediction: UnsafePointer<Float>
    /// ε(x, t, ∅) + w·(ε(x, t, c) − ε(x, t, ∅)), [B, D] (the conditional prediction when w = 1).
    public let guidedPrediction: UnsafePointer<Float>
}

/// Runs a sampler over a batch. Reproduces diffusers' schedulers with the
/// settings of SPEC §4; classifier-free guidance runs the conditional and the
/// null rows in one forward pass of 2B rows. Buffers are allocated once, for
/// `maxBatch` rows, when the sampler is made.
public final class Sampler {
    public let model: ResMLP
    public let kind: SamplerKind
    public let schedule: NoiseSchedule
    public let maxBatch: Int
    /// A step's forward passes: its rows in one, or in two halves, one per core.
    let passes: StepPasses
    let guided: FloatBuffer
    /// x̂₀ of the previous step (DPM-Solver++ keeps one model output of history).
    let previousPrediction: FloatBuffer
    let current: FloatBuffer
    let stepNoise: FloatBuffer
    var rowTimesteps: [Float]

    /// A sampler of at least `StepPasses.fewestRowsToSplit` rows runs its forward passes in two
    /// halves, one per core where the process's products use two threads or more.
    public convenience init(model: ResMLP, kind: SamplerKind, maxBatch: Int) {
        self.init(model: model, kind: kind, maxBatch: maxBatch, inHalves: maxBatch >= StepPasses.fewestRowsToSplit)
    }

    /// `sideBySide`: the halves on two cores (else one after the other, with the same bits).
    init(model: ResMLP, kind: SamplerKind, maxBatch: Int, inHalves: Bool, sideBySide: Bool = BLASRuntime.configuredThreadCount >= 2) {
        self.model = model
        self.kind = kind
        self.schedule = NoiseSchedule(model.config.schedule)
        self.maxBatch = maxBatch
        let D = model.config.sampleSize
        passes = StepPasses(model: model, maxBatch: maxBatch, inHalves: inHalves, sideBySide: sideBySide)
        guided = FloatBuffer(count: maxBatch * D)
        previousPrediction = FloatBuffer(count: maxBatch * D)
        current = FloatBuffer(count: maxBatch * D)
        stepNoise = FloatBuffer(count: maxBatch * D)
        rowTimesteps = [Float](repeating: 0, count: maxBatch)
    }

    // MARK: - Timestep grids

    /// The grid this sampler uses for `steps` steps: leading spacing for DDIM and
    /// DDPM (t_i = (N−1−i)·⌊T/N⌋), round(linspace(0, T−1, N+1)) reversed without
    /// its last entry for DPM-Solver++.
    public func timesteps(steps: Int) -> [Int] {
        let T = schedule.count
        switch kind {
        case .ddim, .ddpm:
            return Self.leadingTimesteps(steps: steps, trainSteps: T)
        case .dpmpp2m:
            let points = (0...steps).map { i -> Int in
                let value = Double(T - 1) * Double(i) / Double(steps)
                return Int(value.rounded(.toNearestOrEven))
            }
            return Array(points.reversed().dropLast())
        }
    }

    public static func leadingTimesteps(steps: Int, trainSteps: Int) -> [Int] {
        let ratio = trainSteps / steps
        return (0..<steps).map { (steps - 1 - $0) * ratio }
    }

    // MARK: - Sampling

    /// Denoises `x` (x_T in, x₀ out) for `batch` rows.
    /// - grid: per-row timesteps, [B, N] row-major; nil for this sampler's own grid with `steps` steps.
    /// - fillNoise: DDPM's per-step noise; called with the step index and a [B, D] buffer to fill.
    /// - observe: called at every step, before the update.
    /// - shouldStop: asked before every step; true abandons the sampling (a cancelled job or
    ///   request must not wait for hundreds of steps). Returns false when it stopped early.
    @discardableResult
    public func sample(
        parameters: FloatBuffer, x: UnsafeMutablePointer<Float>, batch: Int, conditions: Conditions,
        guidance: Float, steps: Int, grid: [Int]? = nil,
        fillNoise: ((Int, UnsafeMutablePointer<Float>, Int) -> Void)? = nil,
        observe: ((SamplerStep) -> Void)? = nil,
        shouldStop: () -> Bool = { false }
    ) -> Bool {
        precondition(batch <= maxBatch, "batch \(batch) exceeds the sampler's \(maxBatch)")
        precondition(conditions.count == batch, "one condition per row")
        let config = model.config
        let rows = guidance == 1 ? batch : 2 * batch
        let grid = grid ?? Array(repeating: timesteps(steps: steps), count: batch).flatMap { $0 }
        precondition(grid.count == batch * steps, "the timestep grid must be [B, steps]")
        passes.write(conditions, rows: rows, config: config)
        // The weights do not change during a sampling: their products read them packed once
        // (`PackedWeights`; counted in the memory estimates as one more copy of the parameters).
        let packed = PackedWeights(parameters)
        return packed.using {
            denoise(parameters: parameters, packed: packed, x: x, batch: batch, rows: rows, guidance: guidance, steps: steps, grid: grid,
                    fillNoise: fillNoise, observe: observe, shouldStop: shouldStop)
        }
    }

    private func denoise(
        parameters: FloatBuffer, packed: PackedWeights, x: UnsafeMutablePointer<Float>, batch: Int, rows: Int, guidance: Float,
        steps: Int, grid: [Int], fillNoise: ((Int, UnsafeMutablePointer<Float>, Int) -> Void)?, observe: ((SamplerStep) -> Void)?,
        shouldStop: () -> Bool
    ) -> Bool {
        let D = model.config.sampleSize
        for step in 0..<steps {
            if shouldStop() { return false }
            for b in 0..<batch { rowTimesteps[b] = Float(grid[b * steps + step]) }
            let conditional = passes.forward(model, parameters, packed: packed, x: x, timesteps: rowTimesteps, batch: batch, rows: rows)
            if rows > batch {
                let unconditional = conditional + batch * D
                for i in 0..<(batch * D) { guided[i] = unconditional[i] + guidance * (conditional[i] - unconditional[i]) }
            } else {
                guided.pointer.update(from: conditional, count: batch * D)
            }
            if let observe {
                rowTimesteps.withUnsafeBufferPointer { t in
                    observe(SamplerStep(index: step, batch: batch, x: x, timesteps: t.baseAddress!,
                                        conditionalPrediction: conditional, guidedPrediction: guided.pointer))
                }
            }
            if kind == .ddpm, step < steps - 1 {
                if let fillNoise { fillNoise(step, stepNoise.pointer, batch * D) } else { stepNoise.fill(0) }
            }
            for b in 0..<batch {
                let t = grid[b * steps + step]
                let previous = step + 1 < steps ? grid[b * steps + step + 1] : -1
                let earlier = step > 0 ? grid[b * steps + step - 1] : -1
                let row = b * D
                switch kind {
                case .ddim: ddimStep(x + row, epsilon: guided.pointer + row, t: t, previous: previous, width: D)
                case .ddpm: ddpmStep(x + row, epsilon: guided.pointer + row, noise: step < steps - 1 ? stepNoise.pointer + row : nil,
                                     t: t, previous: previous, width: D)
                case .dpmpp2m:
                    dpmSolverStep(x + row, epsilon: guided.pointer + row, history: previousPrediction.pointer + row,
                                  prediction: current.pointer + row, t: t, previous: previous, earlier: earlier,
                                  firstOrder: step == 0 || step == steps - 1, width: D)
                }
            }
        }
        return true
    }

    /// ᾱ at t, or 1 before the start of the schedule.
    @inline(__always) func alphaBar(_ t: Int) -> Float { t >= 0 ? schedule.alphasCumprod[t] : 1 }

    /// DDIM (η = 0): x̂₀ = (x − √(1−ᾱ_t)·ε)/√ᾱ_t;  x_prev = √ᾱ_prev·x̂₀ + √(1−ᾱ_prev)·ε.
    func ddimStep(_ x: UnsafeMutablePointer<Float>, epsilon: UnsafePointer<Float>, t: Int, previous: Int, width: Int) {
        let alpha = alphaBar(t), alphaPrevious = alphaBar(previous)
        let noiseScale = (1 - alpha).squareRoot(), signalScale = alpha.squareRoot()
        let previousSignal = alphaPrevious.squareRoot(), previousNoise = (1 - alphaPrevious).squareRoot()
        for j in 0..<width {
            let x0 = (x[j] - noiseScale * epsilon[j]) / signalScale
            x[j] = previousSignal * x0 + previousNoise * epsilon[j]
        }
    }

    /// DDPM posterior mean plus √(fixed_small variance)·noise:
    /// mean = √ᾱ_prev·β_t/(1−ᾱ_t)·x̂₀ + √α_t·(1−ᾱ_prev)/(1−ᾱ_t)·x_t,
    /// variance = (1−ᾱ_prev)/(1−ᾱ_t)·β_t (clamped at 1e−20), with α_t = ᾱ_t/ᾱ_prev, β_t = 1 − α_t.
    func ddpmStep(_ x: UnsafeMutablePointer<Float>, epsilon: UnsafePointer<Float>, noise: UnsafePointer<Float>?,
                  t: Int, previous: Int, width: Int) {
        let alpha = alphaBar(t), alphaPrevious = alphaBar(previous)
        let beta = 1 - alpha, betaPrevious = 1 - alphaPrevious
        let currentAlpha = alpha / alphaPrevious, currentBeta = 1 - currentAlpha
        let x0Coefficient = alphaPrevious.squareRoot() * currentBeta / beta
        let sampleCoefficient = currentAlpha.squareRoot() * betaPrevious / beta
        let std = max(betaPrevious / beta * currentBeta, 1e-20).squareRoot()
        let noiseScale = beta.squareRoot(), signalScale = alpha.squareRoot()
        for j in 0..<width {
            let x0 = (x[j] - noiseScale * epsilon[j]) / signalScale
            var next = x0Coefficient * x0 + sampleCoefficient * x[j]
            if let noise { next += std * noise[j] }
            x[j] = next
        }
    }

    /// DPM-Solver++(2M), data prediction. With σ = √((1−ᾱ)/ᾱ), α_σ = 1/√(σ²+1), σ_σ = σ·α_σ,
    /// λ = log α_σ − log σ_σ, h = λ_t − λ_s:
    ///   first order:  x_t = (σ_t/σ_s)·x − α_t·(e^{−h} − 1)·D0
    ///   second order: … − ½·α_t·(e^{−h} − 1)·D1,  D1 = (D0 − D_prev)·h/h₀
    /// where D0 = x̂₀ of this step and D_prev that of the previous step.
    func dpmSolverStep(_ x: UnsafeMutablePointer<Float>, epsilon: UnsafePointer<Float>,
                       history: UnsafeMutablePointer<Float>, prediction: UnsafeMutablePointer<Float>,
                       t: Int, previous: Int, earlier: Int, firstOrder: Bool, width: Int) {
        func sigma(_ step: Int) -> Float {
            let a = schedule.alphasCumprod[step]
            return ((1 - a) / a).squareRoot()
        }
        func alphaSigma(_ s: Float) -> (alpha: Float, sigma: Float) {
            let alpha = 1 / (s * s + 1).squareRoot()
            return (alpha, s * alpha)
        }
        let source = alphaSigma(sigma(t))
        // Convert ε to the data prediction x̂₀ = (x − σ_s·ε)/α_s.
        for j in 0..<width { prediction[j] = (x[j] - source.sigma * epsilon[j]) / source.alpha }

        if previous < 0 {
            // Final σ = 0: the first-order update reduces to x̂₀ exactly.
            x.update(from: prediction, count: width)
        } else {
            let target = alphaSigma(sigma(previous))
            let lambdaT = Foundation.log(target.alpha) - Foundation.log(target.sigma)
            let lambdaS = Foundation.log(source.alpha) - Foundation.log(source.sigma)
            let h = lambdaT - lambdaS
            let ratio = target.sigma / source.sigma
            let d0Coefficient = target.alpha * (Foundation.exp(-h) - 1)
            if firstOrder || earlier < 0 {
                for j in 0..<width { x[j] = ratio * x[j] - d0Coefficient * prediction[j] }
            } else {
                let before = alphaSigma(sigma(earlier))
                let lambdaEarlier = Foundation.log(before.alpha) - Foundation.log(before.sigma)
                let r0 = (lambdaS - lambdaEarlier) / h
                for j in 0..<width {
                    let d1 = (1 / r0) * (prediction[j] - history[j])
                    x[j] = ratio * x[j] - d0Coefficient * prediction[j] - 0.5 * d0Coefficient * d1
                }
            }
        }
        history.update(from: prediction, count: width)
    }
}

/// A sampling step's forward passes over its rows — the conditional rows, then guidance's null
/// rows, row r reading x's row r mod batch — in one pass, or in two halves, each half's pass on a
/// core of its own with single-threaded products (`CompanionThread.sideBySide`). At a sampler's
/// batch (128 rows on bench-m) the products run faster as two 64-row products, one per core, than
/// as one product whose rows oneDNN's OpenMP team of two splits: no team to wake at each product,
/// and the element-wise passes between products run on both cores instead of one.
///
/// The split depends on the batch alone, never on the thread count: with one thread the halves
/// run one after the other, so a sampling (a DRO rollout, say) draws the same bits whatever the
/// worker's `--threads-per-job`. A row's bits can differ from one pass over all the rows (the
/// products round over fewer rows), within the golden tolerance (`SamplerHalvesTests`).
final class StepPasses {
    /// Fewer rows than this run as one pass on the process's threads. Alternated runs with the
    /// split on and off (2026-12-02): at 16 rows halves won on bench-s (1,393-1,702 against
    /// 608-890) and bench-m (573-652 against 501-634); at 8 rows bench-s was even.
    static let fewestRowsToSplit = 16
    /// One workspace of 2·maxBatch rows, or two of maxBatch (the same memory) for the halves.
    let first: ResMLPWorkspace, second: ResMLPWorkspace?
    let companion: CompanionThread?
    /// The halves' outputs, [rows, D], in row order (one pass leaves them in its workspace).
    let joinedOutput: FloatBuffer?

    init(model: ResMLP, maxBatch: Int, inHalves: Bool, sideBySide: Bool) {
        first = model.makeWorkspace(maxBatch: inHalves ? maxBatch : 2 * maxBatch)
        second = inHalves ? model.makeWorkspace(maxBatch: maxBatch) : nil
        companion = inHalves && sideBySide ? CompanionThread(name: "sampler-companion") : nil
        joinedOutput = inHalves ? FloatBuffer(count: 2 * maxBatch * model.config.sampleSize) : nil
    }

    /// The rows of the first half.
    private func firstHalf(_ rows: Int) -> Int { (rows + 1) / 2 }

    /// Each pass's workspace and the rows it runs.
    private func forEachPass(rows: Int, _ body: (ResMLPWorkspace, Range<Int>) -> Void) {
        guard let second else { return body(first, 0..<rows) }
        let split = firstHalf(rows)
        body(first, 0..<split)
        body(second, split..<rows)
    }

    /// The rows' conditions: row r < batch has `conditions`' row r, the rest the null condition.
    func write(_ conditions: Conditions, rows: Int, config: ModelConfig) {
        let batch = conditions.count
        forEachPass(rows: rows) { workspace, range in
            let conditional = range.clamped(to: 0..<batch), null = range.clamped(to: batch..<rows)
            if !conditional.isEmpty {
                let part = conditional == 0..<batch ? conditions : conditions.selecting(Array(conditional), config: config)
                part.write(into: workspace, at: 0, config: config)
            }
            if !null.isEmpty {
                Conditions.null(count: null.count, config: config).write(into: workspace, at: null.lowerBound - range.lowerBound, config: config)
            }
        }
    }

    /// The forward passes on x at the rows' timesteps; returns the outputs, [rows, D].
    func forward(_ model: ResMLP, _ parameters: FloatBuffer, packed: PackedWeights, x: UnsafePointer<Float>, timesteps: [Float],
                 batch: Int, rows: Int) -> UnsafePointer<Float> {
        let D = model.config.sampleSize
        forEachPass(rows: rows) { workspace, range in
            for r in range {
                (workspace.x.pointer + (r - range.lowerBound) * D).update(from: x + (r % batch) * D, count: D)
                workspace.timesteps[r - range.lowerBound] = timesteps[r % batch]
            }
        }
        guard let second, let joinedOutput else {
            model.forward(parameters, first, batch: rows, keepingActivations: false)
            return UnsafePointer(first.output.pointer)
        }
        let first = self.first, split = firstHalf(rows), secondRows = rows - split
        let runFirst = { model.forward(parameters, first, batch: split, keepingActivations: false) }
        // The companion reads the weights' packed copies too (`using` is per thread).
        let runSecond = { if secondRows > 0 { packed.using { model.forward(parameters, second, batch: secondRows, keepingActivations: false) } } }
        if let companion { companion.sideBySide(runFirst, runSecond) } else { runFirst(); runSecond() }
        joinedOutput.pointer.update(from: first.output.pointer, count: split * D)
        (joinedOutput.pointer + split * D).update(from: second.output.pointer, count: secondRows * D)
        return UnsafePointer(joinedOutput.pointer)
    }
}
