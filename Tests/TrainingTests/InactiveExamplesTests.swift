@testable import Diffusion
import Numerics
import TestSupport
import Testing
@testable import Training

/// The backward pass runs only on examples whose rows carry a gradient (`ResMLPWorkspace.narrowed`, used by
/// `ObjectiveContext.backpropagateMSE`): the gradient must be the one the whole batch gives.
@Suite(.computeThread) struct InactiveExamplesTests {
    static let conditions: [ModelConfig.Condition] = [.text(vocab: 11, maxTokens: 3), .vector(dim: 3), .none]
    static let examples = 6

    static func config(_ condition: ModelConfig.Condition) -> ModelConfig {
        ModelConfig(sampleShape: [1, 2, 2], hidden: 8, depth: 2, mlpRatio: 2, timeFreqDim: 4, condition: condition)
    }

    static func inputs(_ model: ResMLP, rowsPerExample: Int, random: inout Philox) -> ResMLPWorkspace {
        let workspace = model.makeWorkspace(maxBatch: examples * rowsPerExample)
        fillPairedInputs(workspace, config: model.config, examples: examples, rowsPerExample: rowsPerExample,
                         timesteps: [40, 400, 900, 7, 650, 222],
                         prompts: [[1, 5, 5], [0, 0, 0], [7, 2, 0], [3, 0, 0], [10, 9, 8], [4, 4, 0]], random: &random)
        return workspace
    }

    static func maxAbs(_ buffer: FloatBuffer) -> Float { (0..<buffer.count).reduce(0) { max($0, abs(buffer[$1])) } }

    @Test("a narrowed pass's gradient is the pass over the kept examples alone", arguments: conditions, [1, 2])
    func narrowedWorkspace(_ condition: ModelConfig.Condition, rowsPerExample: Int) {
        let model = ResMLP(config: Self.config(condition))
        var random = Philox(seed: 8)
        let theta = model.initialParameters(seed: 3)
        random.fillUniform(theta.pointer, count: theta.count, low: -0.5, high: 0.5)
        let all = Self.inputs(model, rowsPerExample: rowsPerExample, random: &random)
        let kept = [1, 3, 4], E = Self.examples, K = kept.count, D = model.config.sampleSize

        // The same examples alone, gathered into a workspace of their own.
        let alone = model.makeWorkspace(maxBatch: K * rowsPerExample)
        let tokensPerRow = all.tokens.count / all.maxBatch, dim = all.conditionInput.count / all.maxBatch
        for copy in 0..<rowsPerExample {
            for (j, b) in kept.enumerated() {
                let from = copy * E + b, to = copy * K + j
                (alone.x.pointer + to * D).update(from: all.x.pointer + from * D, count: D)
                alone.timesteps[to] = all.timesteps[from]
                for slot in 0..<tokensPerRow { alone.tokens[to * tokensPerRow + slot] = all.tokens[from * tokensPerRow + slot] }
                (alone.conditionInput.pointer + to * dim).update(from: all.conditionInput.pointer + from * dim, count: dim)
                alone.conditionIsNull[to] = all.conditionIsNull[from]
            }
        }
        let dOutput = FloatBuffer(count: K * rowsPerExample * D)
        random.fillNormal(dOutput.pointer, count: dOutput.count)

        let expected = FloatBuffer(count: model.parameterCount)
        model.forward(theta, alone, batch: K * rowsPerExample, conditionRows: K)
        model.backward(theta, alone, batch: K * rowsPerExample, dOutput: dOutput.pointer, gradients: expected)

        let narrowed = FloatBuffer(count: model.parameterCount)
        let x = all.x.copy(), tokens = all.tokens, conditionInput = all.conditionInput.copy(), conditionIsNull = all.conditionIsNull
        model.forward(theta, all, batch: E * rowsPerExample, conditionRows: E)
        all.narrowed(to: kept, of: E, rowsPerExample: rowsPerExample) {
            model.backward(theta, all, batch: K * rowsPerExample, dOutput: dOutput.pointer, gradients: narrowed)
        }
        // The inputs are the caller's again.
        #expect((0..<x.count).allSatisfy { all.x[$0].bitPattern == x[$0].bitPattern })
        #expect(all.tokens == tokens && all.conditionIsNull == conditionIsNull)
        #expect((0..<conditionInput.count).allSatisfy { all.conditionInput[$0].bitPattern == conditionInput[$0].bitPattern })

        let scale = Self.maxAbs(expected)
        #expect(scale > 0)
        for entry in model.layout.entries {
            let worst = (entry.offset..<(entry.offset + entry.count)).reduce(Float(0)) { max($0, abs(narrowed[$1] - expected[$1])) }
            #expect(worst <= 1e-5 * scale, "\(entry.name): off by \(worst) at scale \(scale)")
        }
    }

    /// A DRO batch whose margin makes half its pairs inactive: the gradient with the inactive
    /// pairs skipped against the backward pass of every row, ∂L/∂output zero on the inactive ones.
    @Test("DRO skips inactive pairs and keeps the whole batch's gradient", arguments: conditions)
    func droSkipsInactivePairs(_ condition: ModelConfig.Condition) {
        let config = Self.config(condition)
        let model = ResMLP(config: config)
        var random = Philox(seed: 12)
        let theta = model.initialParameters(seed: 5), reference = FloatBuffer(count: model.parameterCount)
        random.fillUniform(theta.pointer, count: theta.count, low: -0.5, high: 0.5)
        reference.copy(from: theta)
        for i in 0..<reference.count { reference[i] += 0.05 * (random.nextUniform() - 0.5) }
        let E = Self.examples, rows = 2 * E, D = config.sampleSize
        let inputs = Self.inputs(model, rowsPerExample: 2, random: &random)
        let workspace = model.makeWorkspace(maxBatch: rows)
        let targets = FloatBuffer(count: rows * D)
        random.fillNormal(targets.pointer, count: targets.count)
        let scratch = ObjectiveScratch(config: config, maxRows: rows)

        func run(margin: Double, into gradients: FloatBuffer) -> ObjectiveResult {
            workspace.copyInputs(from: inputs, rows: rows)
            return DROObjective(margin: margin).lossAndGradient(ObjectiveContext(
                model: model, theta: theta, reference: reference, workspace: workspace, examples: E, targets: targets.pointer,
                scratch: scratch, gradients: gradients))
        }
        // Each pair's d, read with every pair active; a margin between the 3rd and 4th of them.
        _ = run(margin: 1e6, into: FloatBuffer(count: model.parameterCount))
        let d = (0..<E).map { b in (scratch.thetaMSE[b] - scratch.referenceMSE[b]) - (scratch.thetaMSE[E + b] - scratch.referenceMSE[E + b]) }
        let sorted = d.sorted()
        let margin = -(sorted[2] + sorted[3]) / 2

        let skipping = FloatBuffer(count: model.parameterCount)
        let result = run(margin: margin, into: skipping)
        #expect(result.statistics["active"] == 0.5)

        // Every row's backward pass, with ∂L/∂mse as the objective left it (zero on inactive pairs).
        let whole = model.makeWorkspace(maxBatch: rows), expected = FloatBuffer(count: model.parameterCount)
        whole.copyInputs(from: inputs, rows: rows)
        model.forward(theta, whole, batch: rows, conditionRows: E)
        #expect((0..<rows).filter { scratch.dMSE[$0] == 0 }.count == E)
        for row in 0..<rows {
            let scale = Float(scratch.dMSE[row] * 2 / Double(D))
            for i in 0..<D { whole.outputGradient[row * D + i] = scale * (whole.output[row * D + i] - targets[row * D + i]) }
        }
        model.backward(theta, whole, batch: rows, dOutput: whole.outputGradient.pointer, gradients: expected)

        let scale = Self.maxAbs(expected)
        #expect(scale > 0)
        for entry in model.layout.entries {
            let worst = (entry.offset..<(entry.offset + entry.count)).reduce(Float(0)) { max($0, abs(skipping[$1] - expected[$1])) }
            #expect(worst <= 1e-5 * scale, "\(entry.name): off by \(worst) at scale \(scale)")
        }

        // No pair active: no backward pass, and nothing added to the gradient.
        let none = FloatBuffer(count: model.parameterCount)
        let inactive = run(margin: -(sorted[E - 1] + 1), into: none)
        #expect(inactive.statistics["active"] == 0)
        #expect(inactive.loss == 0)
        #expect(Self.maxAbs(none) == 0)
    }
}
