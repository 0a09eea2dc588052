import CKernels

/// Weights rounded to bf16, kept beside their fp32 values by whoever changes them, so that a bf16
/// product reads its B operand without converting it. During a bf16 training job θ changes only
/// in AdamW's pass, which writes this copy as it writes θ (`AdamW.update(…, shadow:)`); without
/// it, every product of θ converted its 4 MB matrix again, twice a step for each matrix (the
/// forward's and the backward's products).
///
/// Inside `using`, a bf16 oneDNN product whose B lies in these weights (rows contiguous) reads
/// this copy. The copy rounds as oneDNN's reorders do (to nearest even), so results are the same
/// bits as without it; a test holds them to that. Whoever changes the weights other than through
/// AdamW calls `refresh()` before the next product inside `using`.
public final class BF16Shadow: @unchecked Sendable {
    public let weights: FloatBuffer
    /// bf16 pairs, two to a Float's storage.
    private let storage: FloatBuffer
    public let values: UnsafeMutablePointer<UInt16>
    private let start: UInt, end: UInt

    /// Whether bf16 products here run natively and this CPU rounds to bf16 in AVX-512: elsewhere a
    /// bf16 product is emulated on fp32 operands and a bf16 copy would not be read.
    public static let isAvailable = OneDNN.supportsBF16 && preftune_kernels_have_avx512_bf16() != 0

    /// Bytes a shadow of `parameters` values holds (memory estimates count it for bf16 jobs).
    public static func bytes(parameters: Int) -> Int { (parameters + 1) / 2 * MemoryLayout<Float>.stride }

    /// A shadow of `weights`, rounded from them now; nil where `isAvailable` is false.
    public init?(of weights: FloatBuffer) throws(AllocationError) {
        guard Self.isAvailable else { return nil }
        self.weights = weights
        storage = try FloatBuffer(allocating: (weights.count + 1) / 2)
        values = UnsafeMutableRawPointer(storage.pointer).bindMemory(to: UInt16.self, capacity: max(weights.count, 1))
        start = UInt(bitPattern: weights.pointer)
        end = start + UInt(weights.count * MemoryLayout<Float>.stride)
        refresh()
    }

    /// Rounds every weight again (after a change that did not write this copy).
    public func refresh() {
        preftune_convert_to_bf16(weights.pointer, values, Int64(weights.count))
    }

    /// Runs `body` with this thread's bf16 products reading B from this copy where it lies in the weights.
    public func using<T>(_ body: () throws -> T) rethrows -> T {
        try ThreadMath.with(\.shadow, self, body)
    }

    /// `shadow.using(body)` where there is a shadow (a bf16 job's θ), else `body()`.
    public static func using<T>(_ shadow: BF16Shadow?, _ body: () throws -> T) rethrows -> T {
        guard let shadow else { return try body() }
        return try shadow.using(body)
    }

    /// The bf16 copy of the value at `pointer`, when `pointer` is inside the weights.
    @inline(__always)
    func copy(of pointer: UnsafePointer<Float>) -> UnsafeMutableRawPointer? {
        let address = UInt(bitPattern: pointer)
        guard address >= start && address < end else { return nil }
        return UnsafeMutableRawPointer(values + Int(address - start) / MemoryLayout<Float>.stride)
    }
}
