import Diffusion
import Foundation
import GoldenFixtures
import Numerics
import TestSupport
import Testing

/// resmlp forward and backward against the PyTorch reference: outputs, the
/// condition vector, the time features, and ∂ sum(out·upstream)/∂θ for every parameter.
@Suite(.computeThread) struct ModelGoldenTests {
    struct Run {
        let file: SafeTensorsFile
        let model: ResMLP
        let workspace: ResMLPWorkspace
        let parameters: FloatBuffer
        let gradients: FloatBuffer
    }

    static func run(_ path: String) throws -> Run {
        let file = try SafeTensorsFile(contentsOf: path)
        let config = try GoldenFixtures.config(file)
        let model = ResMLP(config: config)
        let parameters = try ModelFile.loadParameters(file, config: config, prefix: "param.")
        let t = try file.integers("t")
        let batch = t.count
        let workspace = model.makeWorkspace(maxBatch: batch)
        let x = try file.floats("x", shape: [batch, config.sampleSize])
        workspace.x.pointer.update(from: x, count: x.count)
        for b in 0..<batch { workspace.timesteps[b] = Float(t[b]) }
        try GoldenFixtures.fillCondition(file, config: config, workspace: workspace, rows: batch)
        model.forward(parameters, workspace, batch: batch)
        let upstream = try file.floats("upstream", shape: [batch, config.sampleSize])
        let gradients = FloatBuffer(count: model.parameterCount)
        model.backward(parameters, workspace, batch: batch, dOutput: upstream, gradients: gradients)
        return Run(file: file, model: model, workspace: workspace, parameters: parameters, gradients: gradients)
    }

    @Test("forward matches the reference, on each math backend", arguments: GoldenFixtures.files("model_forward_backward"), MathBackend.allCases)
    func forward(path: String, backend: MathBackend) throws {
        try MathBackend.withBackend(backend) {
            let run = try Self.run(path)
            let config = run.model.config
            let batch = try run.file.integers("t").count
            let expectedOut = try run.file.floats("expected.out", shape: [batch, config.sampleSize])
            let out = Array(run.workspace.output.buffer.prefix(batch * config.sampleSize))
            #expect(GoldenFixtures.forwardMismatch(out, expectedOut) == nil, "out: \(GoldenFixtures.forwardMismatch(out, expectedOut) ?? "")")

            let expectedCondition = try run.file.floats("expected.cond_vector", shape: [batch, config.hidden])
            let condition = Array(run.workspace.condition.buffer.prefix(batch * config.hidden))
            #expect(GoldenFixtures.forwardMismatch(condition, expectedCondition) == nil,
                    "cond_vector: \(GoldenFixtures.forwardMismatch(condition, expectedCondition) ?? "")")

            let expectedPhi = try run.file.floats("expected.time_features", shape: [batch, config.timeFreqDim])
            let phi = Array(run.workspace.lastTimeFeatures.buffer.prefix(batch * config.timeFreqDim))
            #expect(GoldenFixtures.forwardMismatch(phi, expectedPhi) == nil,
                    "time_features: \(GoldenFixtures.forwardMismatch(phi, expectedPhi) ?? "")")
        }
    }

    @Test("every parameter gradient matches the reference, on each math backend", arguments: GoldenFixtures.files("model_forward_backward"), MathBackend.allCases)
    func gradients(path: String, backend: MathBackend) throws {
        try MathBackend.withBackend(backend) {
            let run = try Self.run(path)
            for entry in run.model.layout.entries {
                guard run.file.info("grad.\(entry.name)") != nil || entry.name != "null_cond" else { continue }
                let expected = try run.file.floats("grad.\(entry.name)", shape: entry.shape)
                let actual = GoldenFixtures.slice(run.gradients, entry)
                let mismatch = GoldenFixtures.gradientMismatch(actual, expected)
                #expect(mismatch == nil, "grad.\(entry.name): \(mismatch ?? "")")
            }
        }
    }
}

/// bf16 mixed precision (docs/numerics.md, "bf16"): every product's operands rounded to bf16,
/// sums in fp32. Against the fp32 reference, each tensor within a fraction of its largest
/// magnitude: `bf16Tolerance` for outputs and condition vectors, `bf16GradientTolerance` for
/// gradients (errors of 8-bit mantissas compound through the layers and the backward pass).
extension ModelGoldenTests {
    static let bf16Tolerance: Float = 2e-2
    static let bf16GradientTolerance: Float = 3e-2

    /// On oneDNN the bf16 kernels run (where the CPU has them); on OpenBLAS the emulation.
    @Test("forward and every gradient in bf16 match the fp32 reference within bf16's tolerance, natively and emulated",
          arguments: GoldenFixtures.files("model_forward_backward"), MathBackend.allCases)
    func bf16(path: String, backend: MathBackend) throws {
        let fp32 = try Self.run(path)
        let run = try MathBackend.withBackend(backend) { try MathPrecision.with(.bf16) { try Self.run(path) } }
        let config = run.model.config, batch = try run.file.integers("t").count
        let expectedOut = try run.file.floats("expected.out", shape: [batch, config.sampleSize])
        let out = Array(run.workspace.output.buffer.prefix(batch * config.sampleSize))
        #expect(GoldenFixtures.gradientMismatch(out, expectedOut, relative: Self.bf16Tolerance) == nil,
                "out: \(GoldenFixtures.gradientMismatch(out, expectedOut, relative: Self.bf16Tolerance) ?? "")")
        // The products really ran in bf16: the outputs are not fp32's.
        #expect(out != Array(fp32.workspace.output.buffer.prefix(batch * config.sampleSize)), "bf16 gave fp32's bits")
        let expectedCondition = try run.file.floats("expected.cond_vector", shape: [batch, config.hidden])
        let condition = Array(run.workspace.condition.buffer.prefix(batch * config.hidden))
        #expect(GoldenFixtures.gradientMismatch(condition, expectedCondition, relative: Self.bf16Tolerance) == nil)
        for entry in run.model.layout.entries {
            guard run.file.info("grad.\(entry.name)") != nil || entry.name != "null_cond" else { continue }
            let expected = try run.file.floats("grad.\(entry.name)", shape: entry.shape)
            let mismatch = GoldenFixtures.gradientMismatch(GoldenFixtures.slice(run.gradients, entry), expected,
                                                           relative: Self.bf16GradientTolerance)
            #expect(mismatch == nil, "grad.\(entry.name): \(mismatch ?? "")")
        }
    }
}

@Suite(.computeThread) struct TokenizerGoldenTests {
    @Test("prompts tokenize as the reference", arguments: GoldenFixtures.files("tokenizer", extension: "json"))
    func cases(path: String) throws {
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        let tokenizer = PromptTokenizer(vocab: object["vocab"] as! Int, maxTokens: object["max_tokens"] as! Int)
        let cases = object["cases"] as! [String: [Int]]
        #expect(!cases.isEmpty)
        for (prompt, expected) in cases {
            #expect(tokenizer.tokenize(prompt).map(Int.init) == expected, "prompt \(prompt.debugDescription)")
        }
    }
}

@Suite(.computeThread) struct ScheduleGoldenTests {
    @Test("ᾱ_t matches diffusers for every β schedule", arguments: GoldenFixtures.files("schedules"))
    func alphasCumprod(path: String) throws {
        let file = try SafeTensorsFile(contentsOf: path)
        let schedules: [(String, Double, Double)] = [
            ("linear", 1e-4, 0.02), ("scaled_linear", 0.00085, 0.012), ("squaredcos_cap_v2", 1e-4, 0.02),
        ]
        for (name, start, end) in schedules {
            let expected = try file.floats("alphas_cumprod.\(name)")
            let schedule = NoiseSchedule(.init(numTrainTimesteps: expected.count, betaSchedule: name, betaStart: start, betaEnd: end))
            let mismatch = GoldenFixtures.forwardMismatch(schedule.alphasCumprod, expected)
            #expect(mismatch == nil, "\(name): \(mismatch ?? "")")
        }
    }
}
