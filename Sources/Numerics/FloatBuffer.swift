#if canImport(Glibc)
import Glibc
#endif

/// A fixed-size, 64-byte aligned array of Float32 that owns its memory.
/// Parameters, gradients, optimizer moments and activations each live in one
/// of these, allocated once and viewed through pointers (no per-step allocation).
public final class FloatBuffer {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>

    public init(count: Int, value: Float = 0) {
        precondition(count >= 0, "FloatBuffer: negative count")
        self.count = count
        var raw: UnsafeMutableRawPointer?
        let bytes = max(64, count * MemoryLayout<Float>.stride)
        guard posix_memalign(&raw, 64, bytes) == 0, let raw else {
            fatalError("FloatBuffer: cannot allocate \(bytes) bytes")
        }
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        pointer.initialize(repeating: value, count: count)
    }

    public convenience init(_ values: [Float]) {
        self.init(count: values.count)
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit { free(pointer) }

    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: pointer, count: count) }
    public var array: [Float] { Array(buffer) }

    @inline(__always) public subscript(index: Int) -> Float {
        get { pointer[index] }
        set { pointer[index] = newValue }
    }

    public func fill(_ value: Float) { pointer.update(repeating: value, count: count) }

    public func copy(from other: FloatBuffer) {
        precondition(other.count == count, "FloatBuffer.copy: \(other.count) values into \(count)")
        pointer.update(from: other.pointer, count: count)
    }

    public func copy() -> FloatBuffer {
        let result = FloatBuffer(count: count)
        result.copy(from: self)
        return result
    }
}
