import Diffusion
import Foundation
import Numerics

/// A reward model a project uploads: a small MLP in safetensors, run in-process.
///
/// Format (docs/training.md): f32 tensors `layers.{i}.weight` [out, in] and `layers.{i}.bias`
/// [out] for i = 0 … L−1, the last with out = 1; metadata `format` = `preftune.reward_mlp.v1`,
/// `activation` between layers (`relu`, `silu`, `tanh`, `gelu`; default `silu`) and `condition`:
/// - `none`: the input is the sample, flattened (the model's sample size);
/// - `tokens`: the sample, then a bag of the prompt's token ids (the job's model's vocab; id 0,
///   padding, not counted);
/// - `vector`: the sample, then the condition vector (zeros for the null condition).
public final class RewardMLP: RewardScorer {
    public enum Activation: String, CaseIterable, Sendable { case relu, silu, tanh, gelu }
    public enum ConditionInput: String, CaseIterable, Sendable { case none, tokens, vector }

    public static let format = "preftune.reward_mlp.v1"
    /// Layers and widths a reward model may have: it runs beside training, on its budget.
    public static let maximumLayers = 8, maximumWidth = 4096, maximumParameters = 16 << 20

    public let name: String
    let layers: [(weight: [Float], bias: [Float], inputs: Int, outputs: Int)]
    let activation: Activation
    let conditionInput: ConditionInput
    public let inputSize: Int
    /// The job's model's sample size and condition form, which the input is laid out by.
    let sampleSize: Int, condition: ModelConfig.Condition

    public struct FormatError: Error, CustomStringConvertible, Equatable {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    /// Reads and checks a reward model for a job's `config`: its layer shapes chain, its input fits
    /// the model's samples and conditions, and it ends in one score. Sizes are checked from the
    /// header, before any tensor is read.
    public init(path: String, config: ModelConfig, name: String) throws {
        self.name = name
        let header: (metadata: [String: String], tensors: [SafeTensors.TensorInfo], fileSize: Int)
        do { header = try SafeTensorsFile.readHeader(path: path) } catch { throw FormatError("not a safetensors file: \(error)") }
        guard header.metadata["format"] == Self.format else {
            throw FormatError("metadata format must be \"\(Self.format)\", got \(header.metadata["format"].map { "\"\($0)\"" } ?? "none")")
        }
        guard let activation = Activation(rawValue: header.metadata["activation"] ?? "silu") else {
            throw FormatError("activation must be one of \(Activation.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard let conditionInput = ConditionInput(rawValue: header.metadata["condition"] ?? "none") else {
            throw FormatError("condition must be one of \(ConditionInput.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        self.activation = activation
        self.conditionInput = conditionInput
        sampleSize = config.sampleSize
        condition = config.condition
        var expected = config.sampleSize
        switch (conditionInput, config.condition) {
        case (.none, _): break
        case let (.tokens, .text(vocab, _)): expected += vocab
        case let (.vector, .vector(dim)): expected += dim
        default: throw FormatError("condition \(conditionInput.rawValue) does not fit this model, whose condition is \(config.condition)")
        }
        inputSize = expected
        let tensors = Dictionary(header.tensors.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let count = tensors.keys.filter { $0.hasPrefix("layers.") && $0.hasSuffix(".weight") }.count
        guard (1...Self.maximumLayers).contains(count), tensors.count == 2 * count else {
            throw FormatError("expected layers.0 … layers.N-1 (N ≤ \(Self.maximumLayers)), each with a weight and a bias, and nothing else; found \(tensors.keys.sorted().prefix(6).joined(separator: ", "))")
        }
        var inputs = expected, total = 0
        var shapes: [(Int, Int)] = []
        for i in 0..<count {
            guard let weight = tensors["layers.\(i).weight"], let bias = tensors["layers.\(i).bias"], weight.dtype == .f32, bias.dtype == .f32,
                  weight.shape.count == 2, bias.shape == [weight.shape[0]] else {
                throw FormatError("layers.\(i) needs an f32 weight [out, in] and an f32 bias [out]")
            }
            let outputs = weight.shape[0]
            guard weight.shape[1] == inputs else {
                throw FormatError("layers.\(i).weight takes \(weight.shape[1]) inputs; \(i == 0 ? "the sample and condition features are" : "the layer before gives") \(inputs)")
            }
            guard (1...Self.maximumWidth).contains(outputs) else { throw FormatError("layers.\(i) has \(outputs) outputs; at most \(Self.maximumWidth)") }
            total += outputs * (inputs + 1)
            guard total <= Self.maximumParameters else { throw FormatError("over \(Self.maximumParameters) parameters") }
            shapes.append((inputs, outputs))
            inputs = outputs
        }
        guard inputs == 1 else { throw FormatError("the last layer must have 1 output (the score), has \(inputs)") }
        let file: SafeTensorsFile
        do { file = try SafeTensorsFile(contentsOf: path) } catch { throw FormatError("\(error)") }
        layers = try shapes.enumerated().map { i, shape in
            do {
                return (try file.floats("layers.\(i).weight", shape: [shape.1, shape.0]), try file.floats("layers.\(i).bias", shape: [shape.1]),
                        shape.0, shape.1)
            } catch { throw FormatError("\(error)") }
        }
        guard layers.allSatisfy({ $0.weight.allSatisfy(\.isFinite) && $0.bias.allSatisfy(\.isFinite) }) else {
            throw FormatError("weights must be finite")
        }
    }

    /// Each row's input: the sample, then its condition features.
    func inputs(samples: [[Float]], conditions: Conditions) -> [Float] {
        var x = [Float](repeating: 0, count: samples.count * inputSize)
        for (row, sample) in samples.enumerated() {
            let base = row * inputSize
            for (i, value) in sample.prefix(sampleSize).enumerated() { x[base + i] = value }
            let features = base + sampleSize
            switch (conditionInput, condition) {
            case let (.tokens, .text(vocab, maxTokens)):
                for t in 0..<maxTokens {
                    let id = Int(conditions.tokens[row * maxTokens + t])
                    if id > 0, id < vocab { x[features + id] += 1 }
                }
            case let (.vector, .vector(dim)):
                if conditions.isNull[row] == 0 {
                    for i in 0..<dim { x[features + i] = conditions.vectors[row * dim + i] }
                }
            default:
                break
            }
        }
        return x
    }

    public func scores(samples: [[Float]], shape: [Int], conditions: Conditions, labels: [GradingLabel], step: Int,
                       shouldStop: () -> Bool) throws -> [Double] {
        let rows = samples.count
        guard conditions.count == rows, samples.allSatisfy({ $0.count == sampleSize }) else {
            throw FormatError("\(rows) samples of the wrong size for this reward model")
        }
        // The yardstick is the same whatever the job's precision: a bf16 job's samples are scored in fp32.
        return MathPrecision.with(.fp32) { score(inputs(samples: samples, conditions: conditions), rows: rows) }
    }

    private func score(_ input: [Float], rows: Int) -> [Double] {
        var x = input
        for (index, layer) in layers.enumerated() {
            var y = [Float](repeating: 0, count: rows * layer.outputs)
            for row in 0..<rows { for o in 0..<layer.outputs { y[row * layer.outputs + o] = layer.bias[o] } }
            x.withUnsafeBufferPointer { input in
                layer.weight.withUnsafeBufferPointer { weight in
                    y.withUnsafeMutableBufferPointer { output in
                        // y[rows, out] += x[rows, in] · Wᵀ
                        BLAS.sgemm(transB: true, m: rows, n: layer.outputs, k: layer.inputs, a: input.baseAddress!, lda: layer.inputs,
                                   b: weight.baseAddress!, ldb: layer.inputs, beta: 1, c: output.baseAddress!, ldc: layer.outputs)
                    }
                }
            }
            if index < layers.count - 1 { for i in y.indices { y[i] = activate(y[i]) } }
            x = y
        }
        return x.map(Double.init)
    }

    func activate(_ v: Float) -> Float {
        switch activation {
        case .relu: max(0, v)
        case .silu: v / (1 + exp(-v))
        case .tanh: tanh(v)
        case .gelu: 0.5 * v * (1 + erf(v / Float(2).squareRoot()))
        }
    }
}
