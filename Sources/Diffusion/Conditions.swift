import Numerics

/// The conditions of a batch of rows in the form the model's `cond` kind takes:
/// token ids for text models, vectors (or null) for vector models, nothing for `none`.
public struct Conditions: Sendable, Equatable {
    public let count: Int
    /// [count, max_tokens] token ids (text); an all-zero row is the null condition.
    public var tokens: [Int32]
    /// [count, dim] vectors and per-row null flags (vector).
    public var vectors: [Float]
    public var isNull: [UInt8]

    public init(count: Int, tokens: [Int32] = [], vectors: [Float] = [], isNull: [UInt8] = []) {
        self.count = count
        self.tokens = tokens
        self.vectors = vectors
        self.isNull = isNull
    }

    /// Null conditions (classifier-free guidance's unconditional pass).
    public static func null(count: Int, config: ModelConfig) -> Conditions {
        switch config.condition {
        case let .text(_, maxTokens): Conditions(count: count, tokens: [Int32](repeating: 0, count: count * maxTokens))
        case let .vector(dim): Conditions(count: count, vectors: [Float](repeating: 0, count: count * dim),
                                          isNull: [UInt8](repeating: 1, count: count))
        case .none: Conditions(count: count)
        }
    }

    /// Tokenized prompts for a text model.
    public static func prompts(_ prompts: [String], config: ModelConfig) -> Conditions {
        guard case let .text(vocab, maxTokens) = config.condition else {
            preconditionFailure("prompts condition a text model only")
        }
        let tokenizer = PromptTokenizer(vocab: vocab, maxTokens: maxTokens)
        return Conditions(count: prompts.count, tokens: prompts.flatMap(tokenizer.tokenize))
    }

    /// Copies these rows into workspace rows `offset ..< offset + count`.
    public func write(into workspace: ResMLPWorkspace, at offset: Int, config: ModelConfig) {
        precondition(offset + count <= workspace.maxBatch, "conditions do not fit the workspace")
        switch config.condition {
        case let .text(_, maxTokens):
            for i in 0..<(count * maxTokens) { workspace.tokens[offset * maxTokens + i] = tokens[i] }
        case let .vector(dim):
            (workspace.conditionInput.pointer + offset * dim).update(from: vectors, count: count * dim)
            for b in 0..<count { workspace.conditionIsNull[offset + b] = isNull[b] }
        case .none:
            break
        }
    }
}

extension Conditions {
    /// Rows `rows` of these conditions, in that order.
    public func selecting(_ rows: [Int], config: ModelConfig) -> Conditions {
        var result = Conditions.null(count: rows.count, config: config)
        for (i, row) in rows.enumerated() { result.setRow(i, from: self, row: row, config: config) }
        return result
    }

    public mutating func setRow(_ row: Int, from other: Conditions, row source: Int, config: ModelConfig) {
        switch config.condition {
        case let .text(_, maxTokens):
            for k in 0..<maxTokens { tokens[row * maxTokens + k] = other.tokens[source * maxTokens + k] }
        case let .vector(dim):
            for k in 0..<dim { vectors[row * dim + k] = other.vectors[source * dim + k] }
            isNull[row] = other.isNull[source]
        case .none:
            break
        }
    }

    /// Replaces a row by the null condition (prompt dropout).
    public mutating func setNull(_ row: Int, config: ModelConfig) {
        switch config.condition {
        case let .text(_, maxTokens): for k in 0..<maxTokens { tokens[row * maxTokens + k] = 0 }
        case .vector: isNull[row] = 1
        case .none: break
        }
    }
}
