@testable import Diffusion
import Numerics
import TestSupport
import Testing

/// Rows that share their timestep and condition (a DPO pair, DRO's expert and policy
/// rows) may share the conditioning path: the output and every gradient must be the
/// same as when each row computes its own, up to the order of float sums.
@Suite(.computeThread) struct SharedConditioningTests {
    static let conditions: [ModelConfig.Condition] = [.text(vocab: 11, maxTokens: 4), .vector(dim: 3), .none]

    /// A small model of the given conditioning with parameters drawn from U(−0.5, 0.5), and the
    /// generator that drew them, for the inputs.
    static func randomModel(_ condition: ModelConfig.Condition, seed: UInt64)
        -> (config: ModelConfig, model: ResMLP, parameters: FloatBuffer, random: Philox) {
        let config = ModelConfig(sampleShape: [1, 2, 3], hidden: 16, depth: 2, mlpRatio: 2, timeFreqDim: 8, condition: condition)
        let model = ResMLP(config: config)
        var random = Philox(seed: seed)
        let parameters = FloatBuffer(count: model.parameterCount)
        random.fillUniform(parameters.pointer, count: parameters.count, low: -0.5, high: 0.5)
        return (config, model, parameters, random)
    }

    @Test("sharing the conditioning path changes neither output nor gradients", arguments: conditions)
    func sharedRowsMatchIndependentRows(condition: ModelConfig.Condition) {
        var (config, model, parameters, random) = Self.randomModel(condition, seed: 11)
        let examples = 3, rows = 2 * examples, D = config.sampleSize
        let workspace = model.makeWorkspace(maxBatch: rows)
        // Each example's two rows: different x, the same t and condition.
        random.fillNormal(workspace.x.pointer, count: rows * D)
        for row in 0..<rows { workspace.timesteps[row] = Float([17, 503, 999][row % examples]) }
        switch condition {
        case .text:
            let prompts: [[Int32]] = [[3, 5, 3, 0], [0, 0, 0, 0], [9, 2, 0, 0]]
            workspace.tokens = (0..<rows).flatMap { prompts[$0 % examples] }
        case let .vector(dim):
            random.fillNormal(workspace.conditionInput.pointer, count: examples * dim)
            for row in examples..<rows {
                (workspace.conditionInput.pointer + row * dim).update(from: workspace.conditionInput.pointer + (row - examples) * dim, count: dim)
            }
            workspace.conditionIsNull = (0..<rows).map { $0 % examples == 1 ? 1 : 0 }
        case .none: break
        }
        var upstream = [Float](repeating: 0, count: rows * D)
        upstream.withUnsafeMutableBufferPointer { random.fillNormal($0.baseAddress!, count: $0.count) }

        func run(conditionRows: Int?) -> (output: [Float], gradients: [Float]) {
            model.forward(parameters, workspace, batch: rows, conditionRows: conditionRows)
            let output = Array(UnsafeBufferPointer(start: workspace.output.pointer, count: rows * D))
            let gradients = FloatBuffer(count: model.parameterCount)
            model.backward(parameters, workspace, batch: rows, dOutput: upstream, gradients: gradients)
            return (output, Array(UnsafeBufferPointer(start: gradients.pointer, count: gradients.count)))
        }
        let independent = run(conditionRows: nil), shared = run(conditionRows: examples)

        for i in 0..<independent.output.count {
            #expect(abs(shared.output[i] - independent.output[i]) <= 1e-6 * max(1, abs(independent.output[i])), "output \(i)")
        }
        for entry in model.layout.entries {
            let range = entry.offset..<(entry.offset + entry.count)
            let scale = range.map { abs(independent.gradients[$0]) }.max()!
            let worst = range.map { abs(shared.gradients[$0] - independent.gradients[$0]) }.max()!
            #expect(worst <= 1e-5 * max(scale, 1e-3), "\(condition) \(entry.name): \(worst) at scale \(scale)")
        }
    }
}

extension SharedConditioningTests {
    /// Rows declared to share their conditioning must really share it: a pair whose
    /// rows have different timesteps is a bug in the caller, stopped before it trains.
    @Test func rowsThatDoNotShareTheirTimestepAreRefused() async {
        await #expect(processExitsWith: .failure) {
            let config = ModelConfig(sampleShape: [1, 2, 2], hidden: 8, depth: 1, mlpRatio: 2, timeFreqDim: 8, condition: .none)
            let model = ResMLP(config: config)
            let workspace = model.makeWorkspace(maxBatch: 2)
            workspace.timesteps[0] = 10
            workspace.timesteps[1] = 11
            model.forward(model.initialParameters(seed: 1), workspace, batch: 2, conditionRows: 1)
        }
    }
}

/// A pass with no backward (sampling, the reference model) finds for itself the rows that share
/// their timestep and condition, and runs their conditioning path once.
@Suite(.computeThread) struct FoundSharedConditioningTests {
    @Test("a pass that finds shared rows gives each row the numbers it gets alone", arguments: SharedConditioningTests.conditions)
    func foundSharingChangesNoRow(condition: ModelConfig.Condition) {
        var (config, model, parameters, random) = SharedConditioningTests.randomModel(condition, seed: 12)
        // Eight rows as a guided sample request lays them out: two prompts × two samples, then
        // their null rows; the last sample of the second prompt at another timestep.
        let rows = 8, D = config.sampleSize
        let workspace = model.makeWorkspace(maxBatch: rows)
        random.fillNormal(workspace.x.pointer, count: rows * D)
        for row in 0..<rows { workspace.timesteps[row] = row == 3 ? 250 : 500 }
        let prompt = [0, 0, 1, 1, -1, -1, -1, -1]  // -1: the null condition
        switch condition {
        case .text:
            let tokens: [[Int32]] = [[3, 5, 3, 0], [9, 2, 0, 0]]
            workspace.tokens = prompt.flatMap { $0 < 0 ? [0, 0, 0, 0] : tokens[$0] }
        case let .vector(dim):
            var vectors = [Float](repeating: 0, count: 2 * dim)
            vectors.withUnsafeMutableBufferPointer { random.fillNormal($0.baseAddress!, count: $0.count) }
            for (row, which) in prompt.enumerated() where which >= 0 {
                for k in 0..<dim { workspace.conditionInput[row * dim + k] = vectors[which * dim + k] }
            }
            workspace.conditionIsNull = prompt.map { $0 < 0 ? 1 : 0 }
        case .none: break
        }
        // A pass that keeps activations computes every row's conditioning on its own.
        model.forward(parameters, workspace, batch: rows, keepingActivations: true)
        let alone = Array(UnsafeBufferPointer(start: workspace.output.pointer, count: rows * D))
        model.forward(parameters, workspace, batch: rows, keepingActivations: false)
        let found = Array(UnsafeBufferPointer(start: workspace.output.pointer, count: rows * D))
        let distinct = Set(workspace.modulationRows.prefix(rows)).count
        // text and vector: (500, prompt 0), (500, prompt 1), (250, prompt 1), (500, null); none: t alone.
        #expect(distinct == (condition == .none ? 2 : 4), "\(workspace.modulationRows.prefix(rows))")
        for i in 0..<alone.count {
            #expect(abs(found[i] - alone[i]) <= 1e-6 * max(1, abs(alone[i])), "\(condition): output \(i) \(found[i]) against \(alone[i])")
        }
    }

    /// The time MLP runs once for each distinct timestep among the shared rows, and for each
    /// row past `mostDistinctTimesteps` of them (random timesteps, as in validation): both give
    /// each row the numbers it gets alone.
    @Test func sharedRowsRunTheTimeMLPOnceForEachTimestep() {
        var (config, model, parameters, random) = SharedConditioningTests.randomModel(.vector(dim: 3), seed: 21)
        let D = config.sampleSize, dim = 3
        for timesteps in [2, ResMLPWorkspace.mostDistinctTimesteps + 4] {
            // Rows in pairs of the same timestep and condition; conditions all differ.
            let rows = 2 * (timesteps + 3)
            let workspace = model.makeWorkspace(maxBatch: rows)
            random.fillNormal(workspace.x.pointer, count: rows * D)
            var vectors = [Float](repeating: 0, count: rows / 2 * dim)
            vectors.withUnsafeMutableBufferPointer { random.fillNormal($0.baseAddress!, count: $0.count) }
            for row in 0..<rows {
                let pair = row / 2
                workspace.timesteps[row] = Float(100 + 37 * (pair % timesteps))
                for k in 0..<dim { workspace.conditionInput[row * dim + k] = vectors[pair * dim + k] }
            }
            workspace.conditionIsNull = [UInt8](repeating: 0, count: rows)
            model.forward(parameters, workspace, batch: rows, keepingActivations: true)
            let alone = Array(UnsafeBufferPointer(start: workspace.output.pointer, count: rows * D))
            model.forward(parameters, workspace, batch: rows, keepingActivations: false)
            let found = Array(UnsafeBufferPointer(start: workspace.output.pointer, count: rows * D))
            let U = rows / 2
            let expectedTimeRows = timesteps < ResMLPWorkspace.mostDistinctTimesteps ? (0..<U).map { Int32($0 % timesteps) } : (0..<U).map { Int32($0) }
            #expect(Array(workspace.timeRows.prefix(U)) == expectedTimeRows, "\(timesteps) timesteps")
            for i in 0..<alone.count {
                #expect(abs(found[i] - alone[i]) <= 1e-6 * max(1, abs(alone[i])), "\(timesteps) timesteps: output \(i) \(found[i]) against \(alone[i])")
            }
        }
    }

    /// Rows are shared only when t and the whole condition vector are the same bits, whatever
    /// part of c the hash looks at.
    @Test func rowsDifferingAnywhereAreNotShared() {
        let config = ModelConfig(sampleShape: [1, 2, 2], hidden: 64, depth: 1, mlpRatio: 2, timeFreqDim: 8, condition: .vector(dim: 2))
        let workspace = ResMLP(config: config).makeWorkspace(maxBatch: 5)
        let H = config.hidden
        for row in 0..<5 {
            workspace.timesteps[row] = 7
            for j in 0..<H { workspace.condition[row * H + j] = Float(j) }
        }
        workspace.condition[1 * H + 1] = 0.5        // every value but one the same as row 0's
        workspace.condition[2 * H] = -Float(0)          // −0 where row 0 has 0: equal values, different bits
        workspace.condition[3 * H + H - 1] = Float(H - 1) + 1e-5
        workspace.timesteps[4] = 8
        #expect(workspace.findSharedConditioning(batch: 5, hidden: H) == 5)
        workspace.condition[1 * H + 1] = 1
        workspace.condition[3 * H + H - 1] = Float(H - 1)
        workspace.timesteps[4] = 7
        #expect(workspace.findSharedConditioning(batch: 5, hidden: H) == 2)  // row 2's −0 keeps it apart
        #expect(Array(workspace.modulationRows.prefix(5)) == [0, 0, 1, 0, 0])
        #expect(workspace.conditioningSources.prefix(2) == [0, 2])
    }
}
