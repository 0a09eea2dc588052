import Diffusion
import Foundation
import GoldenFixtures
import Numerics
import Testing
import Training

/// Loss and ∂L/∂θ of each objective against the PyTorch transcription of the official code.
@Suite struct ObjectiveGoldenTests {
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

    static func files(_ objective: String) -> [String] {
        GoldenFixtures.files("objective_").filter { path in
            (try? SafeTensorsFile(contentsOf: path).metadata["objective"]) == objective
        }
    }

    @Test("sft", arguments: files("sft"))
    func sft(path: String) throws {
        let golden = try Case(path)
        let workspace = golden.model.makeWorkspace(maxBatch: golden.batch)
        try golden.fill(workspace, x0Name: "x0")
        let noise = try golden.file.floats("eps")
        let gradients = FloatBuffer(count: golden.model.parameterCount)
        let loss = SFTObjective.lossAndGradient(model: golden.model, parameters: golden.theta, workspace: workspace,
                                                batch: golden.batch, noise: noise, gradients: gradients)
        golden.checkLoss(loss)
        try golden.checkGradients(gradients)
    }
}
