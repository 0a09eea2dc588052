import Diffusion
import Foundation
import Numerics

/// Reference files from the PyTorch transcription of the official code
/// (`Tests/Fixtures/golden`, copied from the specification), plus every file
/// of the same kinds under `$PREFTUNE_GOLDEN_DIR` when it is set, so that the
/// same tests can be pointed at new cases (other seeds, sizes, cond kinds).
public enum GoldenFixtures {
    public static var bundledDirectory: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/golden").path
    }

    public static var directories: [String] {
        var result = [bundledDirectory]
        if let extra = ProcessInfo.processInfo.environment["PREFTUNE_GOLDEN_DIR"], !extra.isEmpty {
            result.append(extra)
        }
        return result
    }

    /// Every file named `<kind>*.<ext>` in the golden directories, e.g. ("model_forward_backward", "safetensors").
    public static func files(_ kind: String, extension ext: String = "safetensors") -> [String] {
        directories.flatMap { directory -> [String] in
            let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            return names.filter { $0.hasPrefix(kind) && $0.hasSuffix("." + ext) }.sorted().map { "\(directory)/\($0)" }
        }
    }

    /// The model config stored in a golden file's metadata.
    public static func config(_ file: SafeTensorsFile) throws -> ModelConfig {
        guard let text = file.metadata["config"] else { throw SafeTensorsError("\(file.source): no config in metadata") }
        return try ModelConfig.parse(text)
    }

    /// θ for files that name it: `param.*` of the model_forward_backward file in the same directory.
    public static func theta(beside path: String, config: ModelConfig) throws -> FloatBuffer {
        let directory = (path as NSString).deletingLastPathComponent
        let candidates = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
            .filter { $0.hasPrefix("model_forward_backward") && $0.hasSuffix(".safetensors") }.sorted()
        for name in candidates {
            let file = try SafeTensorsFile(contentsOf: "\(directory)/\(name)")
            if try GoldenFixtures.config(file) == config {
                return try ModelFile.loadParameters(file, config: config, prefix: "param.")
            }
        }
        throw SafeTensorsError("\(path): no model_forward_backward*.safetensors with the same config beside it")
    }

    /// Copies the golden condition tensors for rows `rows` (default all) into workspace rows starting at `offset`.
    public static func fillCondition(_ file: SafeTensorsFile, config: ModelConfig, workspace: ResMLPWorkspace,
                                     rows: Int, offset: Int = 0) throws {
        switch config.condition {
        case let .text(_, maxTokens):
            let ids = try file.integers("cond.ids", shape: [rows, maxTokens])
            for i in 0..<ids.count { workspace.tokens[offset * maxTokens + i] = Int32(ids[i]) }
        case let .vector(dim):
            let vectors = try file.floats("cond.vector", shape: [rows, dim])
            let nulls = try file.integers("cond.null", shape: [rows])
            (workspace.conditionInput.pointer + offset * dim).update(from: vectors, count: vectors.count)
            for b in 0..<rows { workspace.conditionIsNull[offset + b] = UInt8(nulls[b]) }
        case .none:
            break
        }
    }

    /// Largest violation of |actual − expected| ≤ max(relative·|expected|, absolute), or nil when all fit.
    public static func forwardMismatch(_ actual: [Float], _ expected: [Float],
                                       relative: Float = 1e-4, absolute: Float = 1e-5) -> String? {
        guard actual.count == expected.count else { return "length \(actual.count) vs expected \(expected.count)" }
        var worst: (index: Int, excess: Float)? = nil
        for i in 0..<actual.count {
            let error = abs(actual[i] - expected[i])
            let allowed = max(relative * abs(expected[i]), absolute)
            if !(error <= allowed), error - allowed > (worst?.excess ?? -1) { worst = (i, error - allowed) }
        }
        guard let worst else { return nil }
        return "index \(worst.index): got \(actual[worst.index]), expected \(expected[worst.index])"
    }

    /// Gradient tolerance of SPEC §5: |actual − expected| ≤ relative · max|expected| for the whole tensor.
    public static func gradientMismatch(_ actual: [Float], _ expected: [Float], relative: Float = 1e-3) -> String? {
        guard actual.count == expected.count else { return "length \(actual.count) vs expected \(expected.count)" }
        let scale = max(expected.map(abs).max() ?? 0, 1e-6)
        var worst = 0, worstError: Float = 0
        for i in 0..<actual.count {
            let error = abs(actual[i] - expected[i])
            if !(error <= worstError) { worst = i; worstError = error }
        }
        guard !(worstError <= relative * scale) else { return nil }
        return "index \(worst): got \(actual[worst]), expected \(expected[worst]) (error \(worstError), scale \(scale))"
    }

    public static func slice(_ buffer: FloatBuffer, _ entry: ParameterLayout.Entry) -> [Float] {
        Array(UnsafeBufferPointer(start: buffer.pointer + entry.offset, count: entry.count))
    }
}
