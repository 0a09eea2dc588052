import Diffusion
import Foundation
import Numerics
import TestSupport
import Testing

@Suite(.computeThread) struct ModelFileTests {
    static let config = ModelConfig(sampleShape: [1, 4, 4], hidden: 16, depth: 2, mlpRatio: 2, timeFreqDim: 8,
                                    condition: .text(vocab: 32, maxTokens: 4))

    static func temporaryPath() -> String {
        TestSupport.temporaryPath("model", suffix: ".safetensors")
    }

    @Test func saveThenLoadGivesTheSameModel() throws {
        let model = ResMLP(config: Self.config)
        let parameters = model.initialParameters(seed: 1)
        let path = Self.temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try ModelFile(config: Self.config, parameters: parameters, metadata: ["step": "3"]).write(to: path)
        let loaded = try ModelFile.load(path)
        #expect(loaded.config == Self.config)
        #expect(loaded.parameters.array == parameters.array)
        #expect(loaded.metadata["step"] == "3")
    }

    @Test func initialisationFollowsTheSpec() {
        let model = ResMLP(config: Self.config)
        let parameters = model.initialParameters(seed: 9)
        func values(_ name: String) -> [Float] {
            let entry = model.layout[name]!
            return Array(UnsafeBufferPointer(start: parameters.pointer + entry.offset, count: entry.count))
        }
        for zero in ["blocks.0.mod.weight", "blocks.1.fc2.weight", "out_proj.weight", "out_proj.bias", "null_cond"] {
            #expect(values(zero).allSatisfy { $0 == 0 }, "\(zero) starts at zero")
        }
        #expect(values("blocks.0.norm.weight").allSatisfy { $0 == 1 })
        let bound = 1 / Float(8).squareRoot()  // time_mlp.0 has fan-in F = 8
        let time = values("time_mlp.0.weight")
        #expect(time.allSatisfy { abs($0) <= bound } && time.contains { abs($0) > bound / 2 })
        let embedding = values("cond_embed.weight")
        let std = (embedding.map { Double($0 * $0) }.reduce(0, +) / Double(embedding.count)).squareRoot()
        #expect(abs(std - 0.02) < 0.004)
        #expect(model.initialParameters(seed: 9).array == parameters.array, "same seed, same bits")
        #expect(model.initialParameters(seed: 10).array != parameters.array)
    }

    @Test func aFileThatDoesNotMatchItsConfigIsRefused() throws {
        let layout = ParameterLayout(Self.config)
        func write(_ edit: (inout SafeTensorsWriter) -> Void, skipping skipped: String? = nil,
                   reshaping reshaped: String? = nil, config: String? = nil) throws -> String {
            var writer = SafeTensorsWriter(metadata: config.map { ["config": $0] } ?? ["config": Self.config.json])
            for entry in layout.entries where entry.name != skipped {
                writer.add(entry.name, shape: entry.name == reshaped ? [1, entry.count] : entry.shape,
                           floats: [Float](repeating: 0, count: entry.count))
            }
            edit(&writer)
            let path = Self.temporaryPath()
            try writer.write(to: path)
            return path
        }
        let cases: [(String, String)] = [
            (try write({ _ in }, skipping: "in_proj.bias"), "missing tensor 'in_proj.bias'"),
            (try write({ _ in }, reshaping: "time_mlp.2.weight"), "'time_mlp.2.weight' has shape [1, 256], expected [16, 16]"),
            (try write({ $0.add("blocks.7.fc1.weight", shape: [1], floats: [0]) }), "'blocks.7.fc1.weight' does not belong"),
            (try write({ _ in }, config: #"{"arch":"resmlp","sample_shape":[1,4],"hidden":16,"depth":2}"#), "sample_shape must be three"),
            (try write({ _ in }, config: "not json"), "model config is invalid"),
        ]
        for (path, fragment) in cases {
            defer { try? FileManager.default.removeItem(atPath: path) }
            #expect(throws: SafeTensorsError.self) { try ModelFile.load(path) }
            do { _ = try ModelFile.load(path) } catch { #expect("\(error)".contains(fragment), "\(error)") }
        }
    }

    @Test func configErrorsNameTheField() {
        let cases: [(String, String)] = [
            (#"{"sample_shape":[1,8,8],"depth":2}"#, "hidden"),
            (#"{"sample_shape":[1,8,8],"hidden":0,"depth":2}"#, "hidden"),
            (#"{"sample_shape":[1,8,8],"hidden":8,"depth":2,"time_freq_dim":7}"#, "time_freq_dim"),
            (#"{"sample_shape":[1,8,8],"hidden":8,"depth":2,"cond":{"kind":"audio"}}"#, "cond.kind"),
            (#"{"sample_shape":[1,8,8],"hidden":8,"depth":2,"cond":{"kind":"text","vocab":1,"max_tokens":4}}"#, "cond.vocab"),
            (#"{"sample_shape":[1,8,8],"hidden":8,"depth":2,"schedule":{"beta_schedule":"sigmoid"}}"#, "schedule.beta_schedule"),
            (#"{"sample_shape":"big","hidden":8,"depth":2}"#, "sample_shape"),
        ]
        for (json, param) in cases {
            do {
                _ = try ModelConfig.parse(json)
                Issue.record("accepted \(json)")
            } catch let error as ModelConfigError {
                #expect(error.param == param, "\(json): \(error.param) — \(error.message)")
            } catch {
                Issue.record("\(json): \(error)")
            }
        }
    }

    @Test func configRoundTripsThroughJSON() throws {
        for condition: ModelConfig.Condition in [.text(vocab: 1024, maxTokens: 16), .vector(dim: 5), .none] {
            var config = Self.config
            config.condition = condition
            #expect(try ModelConfig.parse(config.json) == config)
        }
    }
}
