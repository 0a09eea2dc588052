import Diffusion
import Numerics
import TestSupport
import Testing

/// Central finite differences of L = Σ out·upstream against the hand-written
/// backward pass, for every parameter of a tiny model of each cond kind. All
/// parameters (including the zero-initialised ones) are randomised so that no
/// gradient path is hidden behind a zero.
@Suite(.computeThread) struct GradientCheckTests {
    static let conditions: [ModelConfig.Condition] = [.text(vocab: 11, maxTokens: 4), .vector(dim: 3), .none]

    @Test("backward agrees with finite differences", arguments: conditions)
    func finiteDifferences(condition: ModelConfig.Condition) {
        let config = ModelConfig(sampleShape: [1, 2, 3], hidden: 8, depth: 2, mlpRatio: 2, timeFreqDim: 8, condition: condition)
        let model = ResMLP(config: config)
        var random = Philox(seed: 7)
        let parameters = FloatBuffer(count: model.parameterCount)
        random.fillUniform(parameters.pointer, count: parameters.count, low: -0.5, high: 0.5)
        let batch = 3
        let workspace = model.makeWorkspace(maxBatch: batch)
        random.fillNormal(workspace.x.pointer, count: batch * config.sampleSize)
        for (b, t) in [17, 503, 999].enumerated() { workspace.timesteps[b] = Float(t) }
        switch condition {
        case .text:  // a prompt with a repeated token, one with two, and an empty (null) one
            workspace.tokens = [3, 5, 3, 0, 0, 9, 0, 2, 0, 0, 0, 0]
        case .vector(let dim):
            random.fillNormal(workspace.conditionInput.pointer, count: batch * dim)
            workspace.conditionIsNull = [0, 1, 0]
        case .none: break
        }
        var upstream = [Float](repeating: 0, count: batch * config.sampleSize)
        upstream.withUnsafeMutableBufferPointer { random.fillNormal($0.baseAddress!, count: $0.count) }

        func loss() -> Double {
            model.forward(parameters, workspace, batch: batch)
            return (0..<upstream.count).reduce(0.0) { $0 + Double(workspace.output[$1]) * Double(upstream[$1]) }
        }
        _ = loss()
        let gradients = FloatBuffer(count: model.parameterCount)
        model.backward(parameters, workspace, batch: batch, dOutput: upstream, gradients: gradients)

        let h: Float = 1e-2
        for entry in model.layout.entries {
            var worst: Double = 0
            var scale: Double = 1e-3
            for i in entry.offset..<(entry.offset + entry.count) {
                let saved = parameters[i]
                parameters[i] = saved + h
                let plus = loss()
                parameters[i] = saved - h
                let minus = loss()
                parameters[i] = saved
                let numeric = (plus - minus) / Double(2 * h)
                worst = max(worst, abs(numeric - Double(gradients[i])))
                scale = max(scale, abs(numeric))
            }
            #expect(worst <= 2e-2 * scale, "\(condition) \(entry.name): error \(worst) at scale \(scale)")
        }
    }
}

extension ModelConfig.Condition: CustomTestStringConvertible {
    public var testDescription: String {
        switch self {
        case .text: "text"
        case .vector: "vector"
        case .none: "none"
        }
    }
}
