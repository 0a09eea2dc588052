import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A fixed-size, 64-byte aligned array of Float32 that owns its memory.
/// Parameters, gradients, optimizer moments and activations each live in one
/// of these, allocated once and viewed through pointers (no per-step allocation).
public final class FloatBuffer {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>
    /// The bytes of its own mapping, or 0 when it came from malloc.
    private let mappedBytes: Int

    /// From this size up, a buffer is a mapping of its own, and freeing it gives its pages back
    /// to the system at once. In malloc's heap, a job's freed buffers would stay with the process
    /// until `malloc_trim`, which walks every arena under its lock: run by a worker at nice 10,
    /// it held up every other thread that freed memory for seconds.
    public static let ownMappingBytes = 1 << 20

    /// Allocates `count` floats, or throws when the size overflows or the system refuses it:
    /// sizes that come from users go through here, so a failed allocation fails a job, not the process.
    public init(allocating count: Int, value: Float = 0) throws(AllocationError) {
        guard count >= 0, let size = count.multipliedChecked(by: MemoryLayout<Float>.stride) else {
            throw AllocationError(bytes: nil, what: "\(count) floats")
        }
        let bytes = max(64, size)
        mappedBytes = bytes >= Self.ownMappingBytes ? bytes : 0
        var raw: UnsafeMutableRawPointer?
        if mappedBytes > 0 {
            // Page-aligned, so 64-byte aligned too; MAP_FAILED is all ones.
            let mapped = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            raw = mapped == UnsafeMutableRawPointer(bitPattern: -1) ? nil : mapped
        } else if posix_memalign(&raw, 64, bytes) != 0 {
            raw = nil
        }
        guard let raw else { throw AllocationError(bytes: bytes, what: "\(count) floats") }
        self.count = count
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        pointer.initialize(repeating: value, count: count)
    }

    /// For sizes already checked against a memory budget: a refusal here is a bug, and traps.
    public convenience init(count: Int, value: Float = 0) {
        do { try self.init(allocating: count, value: value) } catch { fatalError("FloatBuffer: \(error)") }
    }

    public convenience init(_ values: [Float]) {
        self.init(count: values.count)
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit {
        if mappedBytes > 0 { munmap(pointer, mappedBytes) } else { free(pointer) }
    }

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

    /// A copy that throws instead of trapping when memory is refused.
    public func checkedCopy() throws(AllocationError) -> FloatBuffer {
        let result = try FloatBuffer(allocating: count)
        result.copy(from: self)
        return result
    }
}

/// Memory the system would not give, or a size that does not fit in an Int.
public struct AllocationError: Error, CustomStringConvertible, Equatable {
    /// The bytes asked for; nil when the size itself overflowed.
    public let bytes: Int?
    public let what: String
    public var description: String {
        bytes.map { "cannot allocate \(ByteCount.describe($0)) for \(what)" } ?? "the size of \(what) overflows"
    }
}

extension Int {
    /// `self × other`, or nil on overflow: every size derived from user input is computed this way.
    public func multipliedChecked(by other: Int) -> Int? {
        let (product, overflow) = multipliedReportingOverflow(by: other)
        return overflow ? nil : product
    }

    public func addingChecked(_ other: Int) -> Int? {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? nil : sum
    }
}

/// Human-readable byte counts for messages ("3.2 GiB").
public enum ByteCount {
    public static func describe(_ bytes: Int) -> String {
        let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
        var value = Double(bytes), unit = 0
        while value >= 1024, unit < units.count - 1 { value /= 1024; unit += 1 }
        return unit == 0 ? "\(bytes) bytes" : String(format: "%.1f %@", value, units[unit])
    }

    /// Parses `512M`, `4G`, `1.5GiB`, `1048576` (binary units); nil when malformed.
    public static func parse(_ text: String) -> Int? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let digits = trimmed.prefix { $0.isNumber || $0 == "." }
        let unit = trimmed.dropFirst(digits.count).lowercased()
        guard let value = Double(digits), value >= 0 else { return nil }
        let scale: Double
        switch unit {
        case "", "b": scale = 1
        case "k", "kb", "kib": scale = 1024
        case "m", "mb", "mib": scale = 1024 * 1024
        case "g", "gb", "gib": scale = 1024 * 1024 * 1024
        case "t", "tb", "tib": scale = 1024 * 1024 * 1024 * 1024
        default: return nil
        }
        let bytes = value * scale
        guard bytes < 9e18 else { return nil }
        return Int(bytes)
    }
}
