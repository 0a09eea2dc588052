import CDNNL
import Synchronization

/// Weights that stay unchanged while they are in use — the reference model for a whole job, a
/// model for one sampling request — whose products read them in the layout oneDNN packs them
/// into (and, in bf16, already converted), made once per matrix and layout rather than at
/// every call. OpenBLAS repacks B at every call, and so does a product of weights that change (θ).
///
/// Inside `using`, every oneDNN product whose B operand lies in these weights takes its packed
/// copy. The copies are held until the object is released, at most `budget` bytes of them;
/// past that a product packs per call as it would without. Modifying the weights while a
/// `PackedWeights` of them is alive is a programming error: products would read stale copies.
public final class PackedWeights: @unchecked Sendable {
    public let weights: FloatBuffer
    private let start: UInt, end: UInt
    public let budget: Int

    /// One matrix of the weights as a product reads it: where it starts, its orientation, row
    /// stride and extent, and whether the packed copy holds bf16.
    struct Matrix: Hashable {
        let offset: Int
        let transposed: Bool
        let rowStride, k, n: Int
        let bf16: Bool
    }

    /// A packed copy and the layout oneDNN packed it into.
    private struct Copy {
        var layout: dnnl_memory_desc_t
        let pointer: UnsafeMutableRawPointer
    }

    private struct Copies {
        /// Products that differ only in their rows (a sampler's halves, the modulation's distinct
        /// (t, c) rows, which vary from step to step) mostly ask for the same layout, so copies are
        /// shared by layout, not made per product shape: keyed by shape, each new row count took
        /// another copy until the budget was spent, and past it the products packed at every call.
        var byMatrix: [Matrix: [Copy]] = [:]
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
        copies.withLock { state in for copies in state.byMatrix.values { for copy in copies { copy.pointer.deallocate() } } }
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

    /// The packed copy of B at `b`, as `shape` reads it, in `layout`: made by `pack` into fresh
    /// memory of `bytes` bytes the first time any product asks for it; nil when the budget is
    /// spent (the caller packs into scratch instead).
    func copy(of b: UnsafePointer<Float>, shape: OneDNN.ProductShape, layout: dnnl_memory_desc_t, bytes: Int,
              pack: (UnsafeMutableRawPointer) -> Bool) -> UnsafeMutableRawPointer? {
        let matrix = Matrix(offset: Int(UInt(bitPattern: b) - start), transposed: shape.transB, rowStride: shape.ldb,
                            k: shape.k, n: shape.n, bf16: shape.bf16)
        var wanted = layout
        return copies.withLock { state -> UnsafeMutableRawPointer? in
            var made = state.byMatrix[matrix, default: []]
            for index in made.indices where dnnl_memory_desc_equal(&made[index].layout, &wanted) != 0 {
                return made[index].pointer
            }
            guard state.bytes + bytes <= budget else { return nil }
            let memory = UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 64), alignment: 64)
            guard pack(memory) else {
                memory.deallocate()
                return nil
            }
            made.append(Copy(layout: layout, pointer: memory))
            state.byMatrix[matrix] = made
            state.bytes += bytes
            return memory
        }
    }

    /// How many packed copies are held now (one a matrix and layout).
    var copiesHeld: Int { copies.withLock { $0.byMatrix.values.reduce(0) { $0 + $1.count } } }
}
