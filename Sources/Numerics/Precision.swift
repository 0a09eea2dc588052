import CDNNL
import Foundation

/// The arithmetic of the matrix products: fp32 throughout, or bf16 mixed precision as in
/// PyTorch's CPU autocast — each product's two operands rounded to bfloat16 (8 bits of
/// mantissa), the products summed in fp32 and written as fp32. Everything else (master
/// weights, optimizer state, losses, norms, reductions, element-wise work) stays fp32.
/// Chosen per job or per sample request; a thread computes in one precision for a while
/// (`with`), and its companion thread follows it.
public enum MathPrecision: String, CaseIterable, Sendable, Codable {
    case fp32
    case bf16

    /// The precision this thread's products use now.
    public static var active: MathPrecision {
        ThreadMath.anyOverrides ? ThreadMath.context.precision : .fp32
    }

    /// Runs `body` with this thread's products in `precision`.
    public static func with<T>(_ precision: MathPrecision, _ body: () throws -> T) rethrows -> T {
        if precision == .fp32 && !ThreadMath.anyOverrides { return try body() }
        return try ThreadMath.with(\.precision, precision, body)
    }

    /// Whether this CPU computes bf16 products natively (AVX512-BF16 or AMX, through oneDNN).
    /// Elsewhere a bf16 product is emulated (operands rounded, then an fp32 product): the same
    /// numbers, slower than fp32, so the service refuses bf16 work on such a CPU.
    public static var nativeBF16: Bool { OneDNN.supportsBF16 }

    /// Why this CPU cannot run bf16 work, or nil when it can (the message of the API's 400).
    public static var bf16Refusal: String? {
        nativeBF16 ? nil : "precision bf16 needs a CPU with AVX512-BF16 or AMX; this one offers \(OneDNN.isaName) (use fp32)"
    }
}

/// bfloat16 as the products see it: the upper 16 bits of an fp32, rounded to nearest even.
public enum BFloat16 {
    /// `x` rounded to the nearest bfloat16 (ties to even), as an fp32; NaN stays NaN, ±∞ stays ±∞.
    @inline(__always)
    public static func round(_ x: Float) -> Float {
        let bits = x.bitPattern
        if x.isNaN { return x }
        let rounded = (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) & 0xFFFF_0000
        return Float(bitPattern: rounded)
    }

    /// Rounds `count` floats in place.
    public static func round(_ values: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { values[i] = round(values[i]) }
    }
}

/// A thread's buffer for operands converted to bf16 (and, when emulating, rounded fp32
/// copies), 64-byte aligned, grown to the largest product met and kept.
struct ConversionScratch {
    /// One region: at least the bytes asked for, the contents not kept across growth.
    struct Region {
        private var pointer: UnsafeMutableRawPointer?
        private var capacity = 0

        mutating func reserve(_ bytes: Int) -> UnsafeMutableRawPointer {
            if bytes > capacity || pointer == nil {
                pointer?.deallocate()
                capacity = max(bytes, 64)
                pointer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
            }
            return pointer!
        }

        func release() { pointer?.deallocate() }
    }

    /// Converted operands (or emulation's rounded copies).
    private var operands = Region()
    /// Packed weights made per call (their `PackedWeights` budget spent), beside converted operands.
    private var packed = Region()

    mutating func reserve(_ bytes: Int) -> UnsafeMutableRawPointer { operands.reserve(bytes) }
    mutating func reserveSecond(_ bytes: Int) -> UnsafeMutableRawPointer { packed.reserve(bytes) }

    func release() {
        operands.release()
        packed.release()
    }
}
