import Diffusion
import Numerics
import TestSupport
import Testing
import Training

/// Central finite differences of each objective's loss against its analytic
/// gradient, on a tiny model of each cond kind (the golden files cover text only).
/// β is kept small so the losses stay in their smooth regime at the step size used.
@Suite(.computeThread) struct ObjectiveGradientCheckTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let objective: String
        let condition: ModelConfig.Condition
        var testDescription: String { "\(objective) \(condition.testDescription)" }
    }

    static let cases: [Case] = ["sft", "dpo", "kto", "dro", "rpo"].flatMap { name in
        [ModelConfig.Condition.text(vocab: 11, maxTokens: 3), .vector(dim: 3), .none].map { Case(objective: name, condition: $0) }
    }

    static func objective(_ name: String) -> any Objective {
        switch name {
        case "sft": SFTObjective()
        case "dpo": DPOObjective(beta: 2)
        case "kto": KTOObjective(beta: 2, lambdaDesirable: 1, lambdaUndesirable: 1.5)
        case "dro": DROObjective(margin: 10)  // every pair active: the hinge is linear there
        default: RPOObjective(beta: 2, temperature: 0.5)
        }
    }

    @Test("analytic gradient agrees with finite differences", arguments: cases)
    func check(_ testCase: Case) {
        let config = ModelConfig(sampleShape: [1, 2, 2], hidden: 6, depth: 1, mlpRatio: 2, timeFreqDim: 4, condition: testCase.condition)
        let model = ResMLP(config: config)
        var random = Philox(seed: 21)
        let theta = FloatBuffer(count: model.parameterCount), reference = FloatBuffer(count: model.parameterCount)
        random.fillUniform(theta.pointer, count: theta.count, low: -0.5, high: 0.5)
        reference.copy(from: theta)
        for i in 0..<reference.count { reference[i] += 0.05 * (random.nextUniform() - 0.5) }
        let objective = Self.objective(testCase.objective)
        let examples = 3, rows = examples * objective.rowsPerExample, D = config.sampleSize
        let workspace = model.makeWorkspace(maxBatch: rows)
        // Varied prompts, one of them empty (the null condition).
        fillPairedInputs(workspace, config: config, examples: examples, rowsPerExample: objective.rowsPerExample,
                         timesteps: [40, 400, 900], prompts: [[1, 5, 5], [0, 0, 0], [7, 2, 0]], random: &random)
        let targets = FloatBuffer(count: rows * D)
        random.fillNormal(targets.pointer, count: targets.count)
        if testCase.objective == "kto" {
            // KTO's reference point z₀ = max(0, mean(mse_ref − mse_θ)) carries no gradient by
            // definition, so finite differences only agree where z₀ stays 0: targets the
            // reference predicts exactly make mse_ref = 0 and z₀ = 0 under any perturbation.
            model.forward(reference, workspace, batch: rows)
            targets.pointer.update(from: workspace.output.pointer, count: rows * D)
        }
        let scratch = ObjectiveScratch(config: config, maxRows: rows)
        func loss(_ gradients: FloatBuffer?) -> Double {
            objective.lossAndGradient(ObjectiveContext(model: model, theta: theta, reference: reference, workspace: workspace,
                                                       examples: examples, targets: targets.pointer, desirable: [true, false, true],
                                                       scratch: scratch, gradients: gradients)).loss
        }
        let gradients = FloatBuffer(count: model.parameterCount)
        let result = objective.lossAndGradient(ObjectiveContext(
            model: model, theta: theta, reference: reference, workspace: workspace, examples: examples, targets: targets.pointer,
            desirable: [true, false, true], scratch: scratch, gradients: gradients))
        if testCase.objective == "kto" { #expect(result.statistics["reference_point"] == 0) }
        if testCase.objective == "dro" { #expect(result.statistics["active"] == 1) }
        let h: Float = 5e-3
        for entry in model.layout.entries {
            var worst = 0.0, scale = 1e-4
            for i in entry.offset..<(entry.offset + entry.count) {
                let saved = theta[i]
                theta[i] = saved + h
                let plus = loss(nil)
                theta[i] = saved - h
                let minus = loss(nil)
                theta[i] = saved
                let numeric = (plus - minus) / Double(2 * h)
                worst = max(worst, abs(numeric - Double(gradients[i])))
                scale = max(scale, abs(numeric))
            }
            #expect(worst <= 3e-2 * scale, "\(testCase.testDescription) \(entry.name): error \(worst) at scale \(scale)")
        }
    }
}

extension ModelConfig.Condition {
    var testDescription: String {
        switch self {
        case .text: "text"
        case .vector: "vector"
        case .none: "none"
        }
    }
}
