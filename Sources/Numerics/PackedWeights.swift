import Synchronization

/// Weights that stay unchanged while they are in use — the reference model for a whole job, a
/// model for one sampling request — whose products read them in the layout oneDNN packs them
/// into (and, in bf16, already converted), made once per product shape rather than at every
/// call. OpenBLAS repacks B at every call, and so does a product of weights that change (θ).
///
/// Inside `using`, every oneDNN product whose B operand lies in these weights takes its packed
/// copy. The copies are held until the object is released, at most `budget` bytes of them;
/// past that a product packs per call as it would without. Modifying the weights while a
/// `PackedWeights` of them is alive is a programming error: products would read stale copies.
public final class PackedWeights: @unchecked Sendable {
    public let weights: FloatBuffer
    private let start: UInt, end: UInt
    public let budget: Int

    struct Key: Hashable {
        let offset: Int
        let shape: OneDNN.ProductShape
    }

    private struct Copies {
        var byKey: [Key: UnsafeMutableRawPointer] = [:]
        var bytes = 0
    }
    private let copies = Mutex(Copies())

    /// `budget` defaults to the weights' own size: one fp32 packed copy of every matrix at one
    /// shape, or bf16 copies at two. Memory estimates count it (`defaultBudget(parameters:)`).
    public init(_ weights: FloatBuffer, budget: Int? = nil) {
        self.weights = weights
        start = UInt(bitPattern: weights.pointer)
        end = start + UInt(weights.count * MemoryLayout<Float>.stride)
        self.budget = budget ?? Self.defaultBudget(parameters: weights.count)
    }

    public static func defaultBudget(parameters: Int) -> Int { parameters * MemoryLayout<Float>.stride }

    deinit {
        copies.withLock { state in for pointer in state.byKey.values { pointer.deallocate() } }
    }

    /// Bytes of packed copies held now.
    public var bytesHeld: Int { copies.withLock { $0.bytes } }

    /// Runs `body` with this thread's products reading these weights packed.
    public func using<T>(_ body: () throws -> T) rethrows -> T {
        try ThreadMath.with(\.packed, self, body)
    }

    /// Whether `pointer` is inside these weights.
    @inline(__always)
    func holds(_ pointer: UnsafePointer<Float>) -> Bool {
        let address = UInt(bitPattern: pointer)
        return address >= start && address < end
    }

    /// The packed copy of B at `b` for `shape`, made by `pack` into fresh memory of `bytes` bytes
    /// the first time; nil when the budget is spent (the caller packs into scratch instead).
    func copy(of b: UnsafePointer<Float>, shape: OneDNN.ProductShape, bytes: Int,
              pack: (UnsafeMutableRawPointer) -> Bool) -> UnsafeMutableRawPointer? {
        let key = Key(offset: Int(UInt(bitPattern: b) - start), shape: shape)
        return copies.withLock { state -> UnsafeMutableRawPointer? in
            if let made = state.byKey[key] { return made }
            guard state.bytes + bytes <= budget else { return nil }
            let memory = UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 64), alignment: 64)
            guard pack(memory) else {
                memory.deallocate()
                return nil
            }
            state.byKey[key] = memory
            state.bytes += bytes
            return memory
        }
    }
}
