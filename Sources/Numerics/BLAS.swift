import COpenBLAS
import Synchronization

/// Matrix products: on oneDNN or OpenBLAS (`MathBackend`). All matrices are row-major.
public enum BLAS {
    /// C[m,n] = alpha · op(A)·op(B) + beta · C, where op(A) is [m,k] and op(B) is [k,n].
    /// `lda`, `ldb`, `ldc` are the row strides of A, B and C as stored. With `multipliedBy`
    /// (β = 0 only), C is then multiplied element by element by that matrix, which has C's
    /// strides: on oneDNN as the product's post-op, each value rounded as the product then the
    /// multiply would round it.
    @inline(__always)
    public static func sgemm(
        transA: Bool = false, transB: Bool = false,
        m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int,
        multipliedBy multiplier: UnsafePointer<Float>? = nil
    ) {
        precondition(m >= 0 && n >= 0 && k >= 0, "sgemm: negative dimension")
        precondition(multiplier == nil || beta == 0, "sgemm: a multiplied output does not accumulate")
        if m == 0 || n == 0 { return }
        let started = ProductClock.start()
        defer { ProductClock.stop(started, m: m, n: n, k: k) }
        let route = Route(b: b, work: m * n * k)
        if k > 0, route.onOneDNN {
            var shape = OneDNN.ProductShape(transA: transA, transB: transB, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc, alpha: alpha,
                                            beta: beta, bf16: route.bf16, packedB: route.packed != nil, multiplied: multiplier != nil)
            if OneDNN.sgemm(shape, a: a, b: b, c: c, multiplier: multiplier, packed: route.packed) { return }
            // A CPU whose kernels refuse the post-op: the product on oneDNN still, the multiply a pass.
            if let multiplier {
                shape.multiplied = false
                if OneDNN.sgemm(shape, a: a, b: b, c: c, packed: route.packed) {
                    Elementwise.multiply(c, by: multiplier, rows: m, columns: n, stride: ldc)
                    return
                }
            }
        }
        fallback(bf16: k > 0 && route.bf16, transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                 b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
        if let multiplier { Elementwise.multiply(c, by: multiplier, rows: m, columns: n, stride: ldc) }
    }

    /// What runs this thread's dense product of these dimensions (rows contiguous) reading B:
    /// oneDNN's kernel by its name ("brg:avx512_core", "brg:avx512_core_amx_bf16"), else
    /// "openblas" or, in bf16, "bf16 emulation". The bench reports it beside each product's rate.
    public static func kernel(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, b: UnsafePointer<Float>) -> String {
        let route = Route(b: b, work: m * n * k)
        if k > 0, route.onOneDNN,
           let name = OneDNN.kernel(for: .init(transA: transA, transB: transB, m: m, n: n, k: k, lda: transA ? m : k, ldb: transB ? k : n,
                                               ldc: n, alpha: 1, beta: 0, bf16: route.bf16, packedB: route.packed != nil)) {
            return name
        }
        return route.bf16 ? "bf16 emulation" : "openblas"
    }

    /// A layer: Y = X·Wᵀ + bias, then SiLU when `silu`, or Y += X·Wᵀ + bias when `accumulate`
    /// (a residual), for X [rows, inputs] and W stored [outputs, inputs], all rows contiguous.
    /// On oneDNN the bias, the activation and the sum are the product's post-ops, written with
    /// its output; on OpenBLAS they are passes of their own.
    public static func linear(_ x: UnsafePointer<Float>, rows: Int, inputs: Int, weight: UnsafePointer<Float>,
                              bias: UnsafePointer<Float>, outputs: Int, into y: UnsafeMutablePointer<Float>,
                              accumulate: Bool = false, silu: Bool = false) {
        precondition(!(accumulate && silu), "SiLU of an accumulated output is not a layer")
        if rows == 0 || outputs == 0 { return }
        let started = ProductClock.start()
        defer { ProductClock.stop(started, m: rows, n: outputs, k: inputs) }
        let route = Route(b: weight, work: rows * outputs * inputs)
        if inputs > 0, route.onOneDNN,
           OneDNN.sgemm(.init(transA: false, transB: true, m: rows, n: outputs, k: inputs, lda: inputs, ldb: inputs, ldc: outputs,
                              alpha: 1, beta: accumulate ? 1 : 0, bf16: route.bf16, packedB: route.packed != nil, bias: true, silu: silu),
                        a: x, b: weight, c: y, bias: bias, packed: route.packed) {
            return
        }
        // The bias written first and the product accumulated onto it: with β = 0 OpenBLAS would
        // make a zeroing pass over y, and the bias another read-modify-write one.
        if !accumulate { Elementwise.broadcastRows(bias, into: y, rows: rows, columns: outputs, stride: outputs) }
        fallback(bf16: inputs > 0 && route.bf16, transA: false, transB: true, m: rows, n: outputs, k: inputs, alpha: 1, a: x, lda: inputs,
                 b: weight, ldb: inputs, beta: 1, c: y, ldc: outputs)
        if accumulate { Elementwise.addBias(bias, to: y, rows: rows, columns: outputs, stride: outputs) }
        if silu { Elementwise.siluInPlace(y, count: rows * outputs) }
    }

    /// Where this thread's product of B goes: oneDNN (the process's or thread's backend, or any
    /// bf16 product on a CPU with bf16 instructions), in bf16 or not, with B's packed copy or not.
    struct Route {
        var onOneDNN: Bool, bf16 = false
        var packed: PackedWeights?

        /// Multiply-adds below which an fp32 product runs on OpenBLAS whatever the backend: a oneDNN
        /// call costs microseconds of its own (memory objects, a stream, an OpenMP team), which a
        /// product this small does not repay (bench-s's 64×256×64: 74 GFLOP/s on oneDNN, 124 on
        /// OpenBLAS; a tiny model trained 5× slower).
        static let smallestForOneDNN = 1 << 20

        @inline(__always)
        init(b: UnsafePointer<Float>, work: Int) {
            guard ThreadMath.anyOverrides else {
                onOneDNN = MathBackend.current == .onednn && work > Self.smallestForOneDNN
                return
            }
            let context = ThreadMath.context
            bf16 = context.precision == .bf16
            // bf16 runs on oneDNN wherever the CPU has bf16 instructions, whichever fp32 backend
            // the process uses; elsewhere, and for products too small to repay a oneDNN call, it
            // is emulated with the same rounding (operands rounded, an fp32 product: the same
            // numbers up to the order of the sums). A thread's own choice (`withBackend`, which
            // the golden tests make) holds for every size.
            if bf16 {
                onOneDNN = OneDNN.supportsBF16 && (context.override == .onednn || work > Self.smallestForOneDNN)
            } else if let chosen = context.override {
                onOneDNN = chosen == .onednn
            } else {
                onOneDNN = MathBackend.current == .onednn && work > Self.smallestForOneDNN
            }
            packed = context.packed.flatMap { $0.holds(b) ? $0 : nil }
        }
    }

    /// What oneDNN did not compute: OpenBLAS's SGEMM, or in bf16 the emulation.
    @inline(__always)
    static func fallback(bf16: Bool, transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int,
                         b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if bf16 {
            emulatedBF16(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                         beta: beta, c: c, ldc: ldc)
        } else {
            fp32OpenBLAS(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                         beta: beta, c: c, ldc: ldc)
        }
    }

    /// A bf16 product where the CPU has no bf16 instructions: both operands rounded to bf16
    /// (copies in the thread's scratch), then an fp32 product, which sums them exactly as the
    /// native kernels do up to the order of the fp32 additions. Tests compare the two.
    static func emulatedBF16(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int,
                             b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        // The stored extents: rows × row stride, the last row only as long as it is.
        let aRows = transA ? k : m, aColumns = transA ? m : k, bRows = transB ? n : k, bColumns = transB ? k : n
        let aCount = (aRows - 1) * lda + aColumns, bCount = (bRows - 1) * ldb + bColumns
        let context = ThreadMath.context
        let scratch = context.scratch.reserve(4 * (aCount + bCount)).bindMemory(to: Float.self, capacity: aCount + bCount)
        scratch.update(from: a, count: aCount)
        (scratch + aCount).update(from: b, count: bCount)
        BFloat16.round(scratch, count: aCount + bCount)
        fp32OpenBLAS(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: scratch, lda: lda, b: scratch + aCount,
                     ldb: ldb, beta: beta, c: c, ldc: ldc)
    }

    @inline(__always)
    static func fp32OpenBLAS(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int,
                             b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
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

    /// Sets the number of threads OpenBLAS uses for each call (once `singleThreaded`
    /// sections still running have ended).
    public static func setThreadCount(_ count: Int) {
        narrowing.withLock { state in
            state.configured = max(1, count)
            if state.sections == 0 {
                openblas_set_num_threads(Int32(state.configured))
                effective.store(state.configured, ordering: .relaxed)
            }
        }
    }

    /// The count last set (initially the library's own).
    public static var configuredThreadCount: Int { narrowing.withLock { $0.configured } }

    /// Threads a product may use now: 1 inside `singleThreaded` sections, else the configured
    /// count. oneDNN's OpenMP teams follow it as OpenBLAS does.
    static var effectiveThreadCount: Int { effective.load(ordering: .relaxed) }
    private static let effective = Atomic<Int>(Int(openblas_get_num_threads()))

    /// OpenBLAS's thread count is one setting for the whole process, while several jobs
    /// may each be inside `singleThreaded`: the count goes to 1 when the first section
    /// starts and back to the configured count only when the last one ends. (Restoring
    /// at each section's end let a job widen OpenBLAS under another job's two streams.)
    private struct Narrowing { var configured: Int; var sections = 0 }
    private static let narrowing = Mutex(Narrowing(configured: Int(openblas_get_num_threads())))

    /// Runs `body` with OpenBLAS on one thread per call, for work that two threads of
    /// one job split between themselves (`CompanionThread`). GEMM results do not depend
    /// on the thread count: OpenBLAS splits a product's rows and columns over threads,
    /// never the sum over k. With several jobs in one process, the others' GEMMs run
    /// single-threaded meanwhile too.
    public static func singleThreaded<T>(_ body: () throws -> T) rethrows -> T {
        narrowing.withLock { state in
            if state.sections == 0 {
                openblas_set_num_threads(1)
                effective.store(1, ordering: .relaxed)
            }
            state.sections += 1
        }
        defer {
            narrowing.withLock { state in
                state.sections -= 1
                if state.sections == 0 {
                    openblas_set_num_threads(Int32(state.configured))
                    effective.store(state.configured, ordering: .relaxed)
                }
            }
        }
        return try body()
    }
}
