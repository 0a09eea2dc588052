import COpenBLAS
import Dispatch
import Synchronization

/// Matrix products go through OpenBLAS SGEMM. All matrices are row-major.
public enum BLAS {
    /// C[m,n] = alpha · op(A)·op(B) + beta · C, where op(A) is [m,k] and op(B) is [k,n].
    /// `lda`, `ldb`, `ldc` are the row strides of A, B and C as stored.
    @inline(__always)
    public static func sgemm(
        transA: Bool = false, transB: Bool = false,
        m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        precondition(m >= 0 && n >= 0 && k >= 0, "sgemm: negative dimension")
        if m == 0 || n == 0 { return }
        cblas_sgemm(
            CblasRowMajor,
            transA ? CblasTrans : CblasNoTrans,
            transB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k),
            alpha, a, Int32(lda), b, Int32(ldb),
            beta, c, Int32(ldc))
    }
}

/// What OpenBLAS is doing in this process: which kernels it selected and how many threads it uses.
public enum BLASRuntime {
    /// The kernel family OpenBLAS selected when it loaded (e.g. "SkylakeX", "Haswell", "Prescott").
    public static var coreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    public static var configuration: String {
        guard let config = openblas_get_config() else { return "unknown" }
        return String(cString: config)
    }

    public static var threadCount: Int { Int(openblas_get_num_threads()) }

    /// Sets the number of threads OpenBLAS uses for each call.
    public static func setThreadCount(_ count: Int) {
        configuredThreadCount.store(max(1, count), ordering: .relaxed)
        openblas_set_num_threads(Int32(max(1, count)))
    }

    /// The count last set (initially the library's own): `sideBySide` narrows OpenBLAS
    /// to one thread for a while and must come back to this, not to whatever another
    /// job's `sideBySide` left behind.
    private static let configuredThreadCount = Atomic<Int>(Int(openblas_get_num_threads()))

    /// Runs two independent pieces of BLAS-heavy work (the reference and θ forward
    /// passes of a step) at once, each on one core with single-threaded OpenBLAS,
    /// when OpenBLAS is configured for two or more threads; otherwise one after the
    /// other. Small GEMMs split over two threads leave a core waiting at every call
    /// and through the element-wise work between calls; two whole passes side by side
    /// keep both busy (a bench-s pair step's forwards ran ~25 % faster). GEMM results
    /// do not depend on the thread count: OpenBLAS splits rows and columns, never the
    /// sum over k.
    public static func sideBySide(_ first: () -> Void, _ second: () -> Void) {
        let configured = configuredThreadCount.load(ordering: .relaxed)
        guard configured >= 2 else {
            first()
            second()
            return
        }
        openblas_set_num_threads(1)
        withoutActuallyEscaping(first) { first in
            withoutActuallyEscaping(second) { second in
                let work = UncheckedSendable((first, second))
                DispatchQueue.concurrentPerform(iterations: 2) { index in
                    if index == 0 { work.value.0() } else { work.value.1() }
                }
            }
        }
        openblas_set_num_threads(Int32(configured))
    }
}
