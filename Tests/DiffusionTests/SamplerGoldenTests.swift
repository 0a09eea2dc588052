@testable import Diffusion
import Foundation
import GoldenFixtures
import Numerics
import TestSupport
import Testing

/// DDIM, DDPM and DPM-Solver++(2M) trajectories against diffusers' schedulers,
/// with classifier-free guidance, from the same x_T (and, for DDPM, the same per-step noise).
@Suite(.computeThread) struct SamplerGoldenTests {
    @Test("trajectories match diffusers, on each math backend, in one pass and in two halves",
          arguments: GoldenFixtures.files("sampler_"), MathBackend.allCases)
    func trajectory(path: String, backend: MathBackend) throws {
        for inHalves in [false, true] { try trajectory(path: path, backend: backend, inHalves: inHalves) }
    }

    func trajectory(path: String, backend: MathBackend, inHalves: Bool) throws {
        try MathBackend.withBackend(backend) {
            let file = try SafeTensorsFile(contentsOf: path)
            let config = try GoldenFixtures.config(file)
            let model = ResMLP(config: config)
            let theta = try GoldenFixtures.theta(beside: path, config: config)
            guard let kind = SamplerKind(rawValue: file.metadata["sampler"] ?? "") else {
                Issue.record("\(path): unknown sampler \(file.metadata["sampler"] ?? "none")")
                return
            }
            let steps = Int(file.metadata["steps"]!)!, guidance = Float(file.metadata["guidance_scale"]!)!
            let D = config.sampleSize
            let xT = try file.floats("x_T")
            let batch = xT.count / D
            let trajectory = try file.floats("trajectory", shape: [steps + 1, batch, D])
            let sampler = Sampler(model: model, kind: kind, maxBatch: batch, inHalves: inHalves)
            #expect(sampler.timesteps(steps: steps) == (try file.integers("timesteps", shape: [steps])), "\(kind) grid")

            let workspace = model.makeWorkspace(maxBatch: batch)
            try GoldenFixtures.fillCondition(file, config: config, workspace: workspace, rows: batch)
            var conditions = Conditions.null(count: batch, config: config)
            switch config.condition {
            case let .text(_, maxTokens): conditions.tokens = Array(workspace.tokens.prefix(batch * maxTokens))
            case let .vector(dim):
                conditions.vectors = Array(workspace.conditionInput.buffer.prefix(batch * dim))
                conditions.isNull = Array(workspace.conditionIsNull.prefix(batch))
            case .none: break
            }
            let noise = kind == .ddpm ? try file.floats("step_noise", shape: [steps, batch, D]) : []

            let x = FloatBuffer(xT)
            var visited: [Int] = []
            sampler.sample(parameters: theta, x: x.pointer, batch: batch, conditions: conditions, guidance: guidance,
                           steps: steps,
                           fillNoise: { step, buffer, count in buffer.update(from: Array(noise[(step * count)..<((step + 1) * count)]), count: count) },
                           observe: { step in
                               // The observed input of step k is trajectory[k].
                               let expected = Array(trajectory[(step.index * batch * D)..<((step.index + 1) * batch * D)])
                               let actual = Array(UnsafeBufferPointer(start: step.x, count: batch * D))
                               let mismatch = GoldenFixtures.forwardMismatch(actual, expected, relative: 1e-4, absolute: 1e-5)
                               #expect(mismatch == nil, "\(kind)\(inHalves ? " in halves" : "") input of step \(step.index): \(mismatch ?? "")")
                               visited.append(step.index)
                           })
            #expect(visited == Array(0..<steps))
            let final = Array(trajectory[(steps * batch * D)...])
            let mismatch = GoldenFixtures.forwardMismatch(x.array, final, relative: 1e-4, absolute: 1e-5)
            #expect(mismatch == nil, "\(kind)\(inHalves ? " in halves" : "") final sample: \(mismatch ?? "")")
        }
    }
}
