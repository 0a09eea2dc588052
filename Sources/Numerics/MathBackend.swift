import CDNNL
import Foundation
import Synchronization

/// Which library computes the matrix products (`BLAS.sgemm`): oneDNN's matmul primitives
/// (brgemm kernels chosen for the CPU it finds) or OpenBLAS's SGEMM. One choice per process
/// (`--math onednn|openblas`, or `PREFTUNE_MATH`), made before the first product; a thread
/// may use the other for a while (`withBackend`), which the golden tests do to check both.
public enum MathBackend: String, CaseIterable, Sendable {
    case onednn
    case openblas

    /// oneDNN where it runs its AVX-512 kernels: with packed weights for models that do not change
    /// and fused epilogues it is the faster of the two there. OpenBLAS elsewhere, AVX2-only CPUs
    /// included: oneDNN 2.6 has no AVX2 brgemm for fp32, and its `gemm:jit` ran every bench-m step
    /// 1.2–1.6× slower than OpenBLAS on a Zen 3 (docs/numerics.md, "Math backends").
    public static var preferred: MathBackend { OneDNN.offersAVX512 ? .onednn : .openblas }

    private static let chosen = Atomic<UInt8>(0)  // 0: not chosen yet; 1 + index in allCases

    /// The process's backend: the one `select` chose, else `PREFTUNE_MATH`, else `preferred`.
    public static var current: MathBackend {
        let value = chosen.load(ordering: .relaxed)
        if value != 0 { return allCases[Int(value) - 1] }
        let backend = ProcessInfo.processInfo.environment["PREFTUNE_MATH"].flatMap(MathBackend.init(rawValue:)) ?? preferred
        chosen.store(UInt8(allCases.firstIndex(of: backend)! + 1), ordering: .relaxed)
        return backend
    }

    /// Chooses the process's backend; oneDNN on a CPU it cannot serve is refused with the reason.
    public static func select(_ backend: MathBackend) throws(UnsupportedBackend) {
        if backend == .onednn && !OneDNN.supportsCPU {
            throw UnsupportedBackend(description: "oneDNN needs AVX2 or better; this CPU offers \(OneDNN.isaName)")
        }
        chosen.store(UInt8(allCases.firstIndex(of: backend)! + 1), ordering: .relaxed)
    }

    public struct UnsupportedBackend: Error, CustomStringConvertible { public let description: String }

    /// The backend this thread uses now.
    public static var active: MathBackend {
        ThreadMath.anyOverrides ? ThreadMath.context.override ?? current : current
    }

    /// The backend this thread chose for a while (`withBackend`), if any.
    static var chosenByThisThread: MathBackend? { ThreadMath.anyOverrides ? ThreadMath.context.override : nil }

    /// Runs `body` with this thread's products on `backend` (the process's choice is unchanged).
    public static func withBackend<T>(_ backend: MathBackend, _ body: () throws -> T) rethrows -> T {
        try ThreadMath.with(\.override, backend, body)
    }

    /// What `--version` and job logs print: "oneDNN 2.6.3 (avx512_core_amx)" or "OpenBLAS (SkylakeX)".
    public static var description: String { description(of: current) }

    public static func description(of backend: MathBackend) -> String {
        switch backend {
        case .onednn: "oneDNN \(OneDNN.version) (\(OneDNN.isaName))"
        case .openblas: "OpenBLAS (\(BLASRuntime.coreName))"
        }
    }
}

/// Per thread: a oneDNN stream and the products' primitives by shape (a primitive's scratchpad
/// is its own, so threads never share one), a backend or precision this thread uses for a
/// while, and the bf16 copies of its products' operands.
final class ThreadMath {
    var override: MathBackend?
    var precision: MathPrecision = .fp32
    /// Weights this thread's products read packed (`PackedWeights.using`).
    var packed: PackedWeights?
    /// Weights whose bf16 copy this thread's bf16 products read (`BF16Shadow.using`).
    var shadow: BF16Shadow?
    var stream: dnnl_stream_t?
    var primitives: [OneDNN.ProductShape: OneDNN.Product] = [:]
    /// Shapes oneDNN refused on this thread (`OneDNN.Product`): their products take the fallback.
    var refusedShapes: Set<OneDNN.ProductShape> = []
    /// The OpenMP team size this thread last set, so a change costs one call.
    var threads: Int32 = 0
    /// Operands converted to bf16 for the product at hand (grown to the largest seen).
    var scratch = ConversionScratch()
    /// Time and work inside products since `ProductClock.measuring` began; nil when it is not running.
    var productTally: ProductClock.Tally?
    /// Threads of one job whose products run at once, one core each (2 inside
    /// `CompanionThread.sideBySide`): the product clock counts 1/n of each product's time.
    var threadsSharingTheCores = 1

    /// Threads inside `withBackend`, `MathPrecision.with`, `PackedWeights.using`, `BF16Shadow.using`,
    /// `ProductClock.measuring` or `CompanionThread.sideBySide` now: while there are none, no
    /// product looks at its thread's context (one relaxed load per product).
    static let overrides = Atomic<Int>(0)
    static var anyOverrides: Bool { overrides.load(ordering: .relaxed) != 0 }

    /// Runs `body` with one of this thread's settings changed, and counted in `overrides`.
    static func with<Value, T>(_ setting: ReferenceWritableKeyPath<ThreadMath, Value>, _ value: Value,
                               _ body: () throws -> T) rethrows -> T {
        let context = ThreadMath.context
        let saved = context[keyPath: setting]
        context[keyPath: setting] = value
        overrides.add(1, ordering: .relaxed)
        defer {
            context[keyPath: setting] = saved
            overrides.subtract(1, ordering: .relaxed)
        }
        return try body()
    }

    /// A pthread key (a lookup costs nanoseconds; Foundation's thread dictionary cost a
    /// dictionary lookup per product); the context is released when its thread ends.
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { pointer in
            if let pointer { Unmanaged<ThreadMath>.fromOpaque(pointer).release() }
        }
        return key
    }()

    static var context: ThreadMath {
        if let pointer = pthread_getspecific(key) { return Unmanaged<ThreadMath>.fromOpaque(pointer).takeUnretainedValue() }
        let context = ThreadMath()
        pthread_setspecific(key, Unmanaged.passRetained(context).toOpaque())
        return context
    }

    deinit {
        for product in primitives.values { product.release() }
        if let stream { dnnl_stream_destroy(stream) }
        scratch.release()
    }
}
