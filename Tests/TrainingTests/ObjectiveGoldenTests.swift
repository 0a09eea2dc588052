import Diffusion
import Foundation
import GoldenFixtures
import Numerics
import TestSupport
import Testing
import Training

/// Loss and ∂L/∂θ of each objective against the PyTorch transcription of the official code.
@Suite(.computeThread) struct ObjectiveGoldenTests {
    struct Case {
        let file: SafeTensorsFile
        let config: ModelConfig
        let model: ResMLP
        let theta: FloatBuffer
        let batch: Int

        init(_ path: String) throws {
            file = try SafeTensorsFile(contentsOf: path)
            config = try GoldenFixtures.config(file)
            model = ResMLP(config: config)
            theta = try GoldenFixtures.theta(beside: path, config: config)
            batch = try file.integers("t").count
        }

        var expectedLoss: Double { Double(file.metadata["expected_loss"]!)! }

        func checkGradients(_ gradients: FloatBuffer) throws {
            for entry in model.layout.entries where file.info("grad.\(entry.name)") != nil || entry.name != "null_cond" {
                let expected = try file.floats("grad.\(entry.name)", shape: entry.shape)
                let mismatch = GoldenFixtures.gradientMismatch(GoldenFixtures.slice(gradients, entry), expected)
                #expect(mismatch == nil, "\(file.source) grad.\(entry.name): \(mismatch ?? "")")
            }
        }

        func checkLoss(_ loss: Double) {
            #expect(abs(loss - expectedLoss) <= max(1e-4 * abs(expectedLoss), 1e-5), "\(file.source): loss \(loss), expected \(expectedLoss)")
        }

        /// Workspace rows [offset, offset+batch) get x_t = noised `x0Name` at the file's t, and its condition.
        func fill(_ workspace: ResMLPWorkspace, x0Name: String, noiseName: String = "eps", offset: Int = 0) throws {
            let D = config.sampleSize
            let x0 = try file.floats(x0Name, shape: [batch, D]), noise = try file.floats(noiseName, shape: [batch, D])
            let t = try file.integers("t", shape: [batch])
            for b in 0..<batch { workspace.timesteps[offset + b] = Float(t[b]) }
            NoiseSchedule(config.schedule).addNoise(x0: x0, noise: noise, timesteps: workspace.timesteps.pointer + offset,
                                                    into: workspace.x.pointer + offset * D, rows: batch, width: D)
            try GoldenFixtures.fillCondition(file, config: config, workspace: workspace, rows: batch, offset: offset)
        }
    }

    static var allFiles: [String] { GoldenFixtures.files("objective_") }

    @Test("loss, statistics and every gradient match, on each math backend", arguments: allFiles, MathBackend.allCases)
    func objective(path: String, backend: MathBackend) throws {
        try MathBackend.withBackend(backend) {
            let golden = try Case(path)
            let file = golden.file, B = golden.batch, D = golden.config.sampleSize
            let hyper = try JSONSerialization.jsonObject(with: Data((file.metadata["hyperparameters"] ?? "{}").utf8)) as? [String: Double] ?? [:]
            let name = file.metadata["objective"] ?? ""
            let objective: any Objective
            switch name {
            case "sft": objective = SFTObjective()
            case "dpo": objective = DPOObjective(beta: hyper["beta"] ?? 5000)
            case "kto": objective = KTOObjective(beta: hyper["beta"] ?? 1000, lambdaDesirable: hyper["lambda_desirable"] ?? 1,
                                                 lambdaUndesirable: hyper["lambda_undesirable"] ?? 1)
            case "dro": objective = DROObjective(margin: hyper["margin"] ?? 1e-3)
            case "rpo": objective = RPOObjective(beta: hyper["beta"] ?? 5000, temperature: hyper["tau"] ?? 0.5)
            default:
                Issue.record("\(path): unknown objective '\(name)'")
                return
            }
            let rows = B * objective.rowsPerExample
            let workspace = golden.model.makeWorkspace(maxBatch: rows)
            let eps = try file.floats("eps", shape: [B, D])
            var targets = eps
            var desirable: [Bool] = []
            switch name {
            case "sft": try golden.fill(workspace, x0Name: "x0")
            case "kto":
                try golden.fill(workspace, x0Name: "x0")
                desirable = try file.integers("desirable", shape: [B]).map { $0 != 0 }
            case "dpo", "rpo":
                try golden.fill(workspace, x0Name: "chosen")
                try golden.fill(workspace, x0Name: "rejected", offset: B)
                targets = eps + eps
            default:  // dro: experts noised with ε̄ at t, then the policy rows as given
                try golden.fill(workspace, x0Name: "x0")
                try golden.fill(workspace, x0Name: "x0", offset: B)
                let policy = try file.floats("policy_xt", shape: [B, D])
                (workspace.x.pointer + B * D).update(from: policy, count: B * D)
                targets = eps + (try file.floats("policy_eps", shape: [B, D]))
            }
            let reference = objective.needsReference ? try ModelFile.loadParameters(file, config: golden.config, prefix: "ref.") : nil
            let gradients = FloatBuffer(count: golden.model.parameterCount)
            let result = targets.withUnsafeBufferPointer { targets in
                objective.lossAndGradient(ObjectiveContext(
                    model: golden.model, theta: golden.theta, reference: reference, workspace: workspace, examples: B,
                    targets: targets.baseAddress!, desirable: desirable,
                    scratch: ObjectiveScratch(config: golden.config, maxRows: rows), gradients: gradients))
            }
            golden.checkLoss(result.loss)
            try golden.checkGradients(gradients)
            let info = try JSONSerialization.jsonObject(with: Data((file.metadata["info"] ?? "{}").utf8)) as? [String: Double] ?? [:]
            for (statistic, expected) in info {
                guard let actual = result.statistics[statistic] else {
                    Issue.record("\(path): no statistic \(statistic)")
                    continue
                }
                #expect(abs(actual - expected) <= max(1e-4 * abs(expected), 1e-5), "\(statistic): \(actual), expected \(expected)")
            }
        }
    }
}
