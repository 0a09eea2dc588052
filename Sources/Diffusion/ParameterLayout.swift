/// Where each named parameter of a `resmlp` lives inside the model's single
/// Float32 buffer. Parameters, gradients, Adam moments and EMA weights all use
/// this layout, so optimizer, clipping, EMA and checkpointing are single loops
/// over one array, and a named tensor is just an offset.
///
/// The buffer order differs from the PyTorch module order in one place: every
/// block's `mod` weight (and bias) is stored back to back, so the modulation of
/// all blocks — which depends only on the shared condition s — is one GEMM of
/// shape [B, H] × [H, depth·2H] instead of `depth` small ones.
public struct ParameterLayout: Sendable {
    public struct Entry: Sendable, Equatable {
        public let name: String
        public let shape: [Int]
        public let offset: Int
        public var count: Int { shape.reduce(1, *) }
        /// Fan-in of the Linear layer this tensor belongs to (0 for non-Linear tensors).
        let fanIn: Int
        let initialization: Initialization
    }

    enum Initialization: Sendable, Equatable { case uniformFanIn, zeros, ones, normal(std: Float) }

    public let entries: [Entry]
    public let totalCount: Int
    private let index: [String: Int]

    public init(_ config: ModelConfig) {
        let H = config.hidden, F = config.timeFreqDim, D = config.sampleSize, M = config.mlpHidden
        var entries: [Entry] = []
        var offset = 0
        func add(_ name: String, _ shape: [Int], fanIn: Int = 0, _ initialization: Initialization) {
            entries.append(Entry(name: name, shape: shape, offset: offset, fanIn: fanIn, initialization: initialization))
            offset += shape.reduce(1, *)
        }
        func linear(_ name: String, in inputs: Int, out outputs: Int, zero: Bool = false) {
            add("\(name).weight", [outputs, inputs], fanIn: inputs, zero ? .zeros : .uniformFanIn)
            add("\(name).bias", [outputs], fanIn: inputs, zero ? .zeros : .uniformFanIn)
        }
        linear("time_mlp.0", in: F, out: H)
        linear("time_mlp.2", in: H, out: H)
        switch config.condition {
        case let .text(vocab, _): add("cond_embed.weight", [vocab, H], .normal(std: 0.02))
        case let .vector(dim): linear("cond_proj", in: dim, out: H)
        case .none: break
        }
        add("null_cond", [H], .zeros)
        linear("in_proj", in: D, out: H)
        for i in 0..<config.depth { add("blocks.\(i).mod.weight", [2 * H, H], fanIn: H, .zeros) }
        for i in 0..<config.depth { add("blocks.\(i).mod.bias", [2 * H], fanIn: H, .zeros) }
        for i in 0..<config.depth {
            add("blocks.\(i).norm.weight", [H], .ones)
            add("blocks.\(i).norm.bias", [H], .zeros)
            linear("blocks.\(i).fc1", in: H, out: M)
            linear("blocks.\(i).fc2", in: M, out: H, zero: true)
        }
        add("out_norm.weight", [H], .ones)
        add("out_norm.bias", [H], .zeros)
        linear("out_proj", in: H, out: D, zero: true)

        self.entries = entries
        self.totalCount = offset
        var index: [String: Int] = [:]
        for (i, entry) in entries.enumerated() { index[entry.name] = i }
        self.index = index
    }

    public subscript(name: String) -> Entry? { index[name].map { entries[$0] } }

    public func offset(of name: String) -> Int {
        guard let entry = self[name] else { preconditionFailure("no parameter named \(name)") }
        return entry.offset
    }
}
