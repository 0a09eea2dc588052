import COpenBLAS
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
        configuredCount.store(max(1, count), ordering: .relaxed)
        openblas_set_num_threads(Int32(max(1, count)))
    }

    /// The count last set (initially the library's own). `singleThreaded` narrows
    /// OpenBLAS to one thread for a while and must come back to this, not to whatever
    /// another job's `singleThreaded` left behind.
    public static var configuredThreadCount: Int { configuredCount.load(ordering: .relaxed) }
    private static let configuredCount = Atomic<Int>(Int(openblas_get_num_threads()))

    /// Runs `body` with OpenBLAS on one thread per call, for work that two threads of
    /// one job split between themselves (`CompanionThread`); then restores the
    /// configured count. GEMM results do not depend on the thread count: OpenBLAS
    /// splits a product's rows and columns over threads, never the sum over k.
    /// With several jobs in one process, another job's GEMMs may run single-threaded
    /// meanwhile; each job restores the configured count when it is done.
    public static func singleThreaded<T>(_ body: () throws -> T) rethrows -> T {
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(Int32(configuredThreadCount)) }
        return try body()
    }
}
