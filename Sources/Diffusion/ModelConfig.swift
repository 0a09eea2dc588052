import Foundation

/// The architecture of a `resmlp` denoiser (SPEC §2), stored as JSON in the
/// safetensors `__metadata__["config"]` of every model file.
public struct ModelConfig: Codable, Equatable, Sendable {
    public enum Condition: Equatable, Sendable {
        /// Prompts tokenized into `maxTokens` ids from a vocabulary of `vocab` (0 = padding).
        case text(vocab: Int, maxTokens: Int)
        /// Caller-supplied embeddings of `dim` numbers.
        case vector(dim: Int)
        case none
    }

    public var arch: String = "resmlp"
    public var sampleShape: [Int]
    public var hidden: Int
    public var depth: Int
    public var mlpRatio: Int
    public var timeFreqDim: Int
    public var condition: Condition
    public var schedule: NoiseSchedule.Config

    public init(sampleShape: [Int], hidden: Int, depth: Int, mlpRatio: Int, timeFreqDim: Int,
                condition: Condition, schedule: NoiseSchedule.Config = .init()) {
        self.sampleShape = sampleShape
        self.hidden = hidden
        self.depth = depth
        self.mlpRatio = mlpRatio
        self.timeFreqDim = timeFreqDim
        self.condition = condition
        self.schedule = schedule
    }

    /// D = C·H·W, the length of a flattened sample.
    public var sampleSize: Int { sampleShape.reduce(1, *) }
    /// M = mlp_ratio·H.
    public var mlpHidden: Int { mlpRatio * hidden }

    enum CodingKeys: String, CodingKey {
        case arch, hidden, depth, schedule
        case sampleShape = "sample_shape", mlpRatio = "mlp_ratio", timeFreqDim = "time_freq_dim", condition = "cond"
    }

    enum ConditionKeys: String, CodingKey { case kind, vocab, maxTokens = "max_tokens", dim }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        arch = try c.decodePresent(String.self, forKey: .arch) ?? "resmlp"
        sampleShape = try c.decode([Int].self, forKey: .sampleShape)
        hidden = try c.decode(Int.self, forKey: .hidden)
        depth = try c.decode(Int.self, forKey: .depth)
        mlpRatio = try c.decodePresent(Int.self, forKey: .mlpRatio) ?? 2
        timeFreqDim = try c.decodePresent(Int.self, forKey: .timeFreqDim) ?? 128
        schedule = try c.decodePresent(NoiseSchedule.Config.self, forKey: .schedule) ?? .init()
        if c.contains(.condition) {
            let cond = try c.nestedContainer(keyedBy: ConditionKeys.self, forKey: .condition)
            switch try cond.decode(String.self, forKey: .kind) {
            case "text":
                condition = .text(vocab: try cond.decode(Int.self, forKey: .vocab),
                                  maxTokens: try cond.decode(Int.self, forKey: .maxTokens))
            case "vector": condition = .vector(dim: try cond.decode(Int.self, forKey: .dim))
            case "none": condition = .none
            case let other:
                throw DecodingError.dataCorruptedError(forKey: .kind, in: cond,
                    debugDescription: "cond.kind '\(other)' is not one of text, vector, none")
            }
        } else {
            condition = .none
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(arch, forKey: .arch)
        try c.encode(sampleShape, forKey: .sampleShape)
        try c.encode(hidden, forKey: .hidden)
        try c.encode(depth, forKey: .depth)
        try c.encode(mlpRatio, forKey: .mlpRatio)
        try c.encode(timeFreqDim, forKey: .timeFreqDim)
        try c.encode(schedule, forKey: .schedule)
        var cond = c.nestedContainer(keyedBy: ConditionKeys.self, forKey: .condition)
        switch condition {
        case let .text(vocab, maxTokens):
            try cond.encode("text", forKey: .kind)
            try cond.encode(vocab, forKey: .vocab)
            try cond.encode(maxTokens, forKey: .maxTokens)
        case let .vector(dim):
            try cond.encode("vector", forKey: .kind)
            try cond.encode(dim, forKey: .dim)
        case .none:
            try cond.encode("none", forKey: .kind)
        }
    }

    /// Parses and validates a config from JSON text.
    public static func parse(_ json: String) throws -> ModelConfig {
        let config: ModelConfig
        do {
            config = try JSONDecoder().decode(ModelConfig.self, from: Data(json.utf8))
        } catch let error as DecodingError {
            throw ModelConfigError(describing: error)
        }
        try config.validate()
        return config
    }

    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try! encoder.encode(self), as: UTF8.self)
    }

    /// Checks every field is in range; the error names the field and what is expected.
    public func validate() throws {
        func check(_ ok: Bool, _ param: String, _ message: String) throws {
            if !ok { throw ModelConfigError(param: param, message: message) }
        }
        try check(arch == "resmlp", "arch", "arch must be \"resmlp\", got \"\(arch)\"")
        try check(sampleShape.count == 3 && sampleShape.allSatisfy { $0 > 0 }, "sample_shape",
                  "sample_shape must be three positive integers [C, H, W], got \(sampleShape)")
        // Each dimension is bounded before they are multiplied, so the product cannot overflow.
        try check(sampleShape.allSatisfy { $0 <= 1 << 20 } && sampleSize <= 1 << 20, "sample_shape",
                  "sample_shape \(sampleShape) has more than 2^20 values")
        try check((1...8192).contains(hidden), "hidden", "hidden must be in 1...8192, got \(hidden)")
        try check((1...64).contains(depth), "depth", "depth must be in 1...64, got \(depth)")
        try check((1...16).contains(mlpRatio), "mlp_ratio", "mlp_ratio must be in 1...16, got \(mlpRatio)")
        try check(timeFreqDim >= 2 && timeFreqDim % 2 == 0 && timeFreqDim <= 8192, "time_freq_dim",
                  "time_freq_dim must be an even number in 2...8192, got \(timeFreqDim)")
        switch condition {
        case let .text(vocab, maxTokens):
            try check((2...1_000_000).contains(vocab), "cond.vocab", "cond.vocab must be in 2...1000000, got \(vocab)")
            try check((1...1024).contains(maxTokens), "cond.max_tokens", "cond.max_tokens must be in 1...1024, got \(maxTokens)")
        case let .vector(dim):
            try check((1...65536).contains(dim), "cond.dim", "cond.dim must be in 1...65536, got \(dim)")
        case .none: break
        }
        try schedule.validate()
    }
}

public struct ModelConfigError: Error, CustomStringConvertible, Equatable {
    public let param: String
    public let message: String
    public var description: String { message }

    public init(param: String, message: String) {
        self.param = param
        self.message = message
    }

    init(describing error: DecodingError) {
        func path(_ keys: [any CodingKey]) -> String { keys.map(\.stringValue).joined(separator: ".") }
        switch error {
        case let .keyNotFound(key, context):
            let name = (context.codingPath + [key]).map(\.stringValue).joined(separator: ".")
            self.init(param: name, message: "config is missing \(name)")
        case let .typeMismatch(type, context):
            self.init(param: path(context.codingPath), message: "config field \(path(context.codingPath)) must be \(type)")
        case let .valueNotFound(_, context):
            self.init(param: path(context.codingPath), message: "config field \(path(context.codingPath)) is null")
        case let .dataCorrupted(context):
            self.init(param: path(context.codingPath), message: "config: \(context.debugDescription)")
        @unknown default:
            self.init(param: "config", message: "config is not valid: \(error)")
        }
    }
}

extension KeyedDecodingContainer {
    /// Like `decodeIfPresent`, except that a key present with `null` is an error:
    /// a field that is given must have the right type.
    func decodePresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        contains(key) ? try decode(type, forKey: key) : nil
    }
}
