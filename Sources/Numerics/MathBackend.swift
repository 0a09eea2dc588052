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

    /// OpenBLAS, for now. oneDNN's matmul on the operands as stored (no packed weights yet) is on
    /// par with OpenBLAS product by product on the project's machine, and its OpenMP threads slow
    /// the element-wise work between products (docs/numerics.md, "Math backends"): it becomes the
    /// default when packed weights make it the faster one.
    public static var preferred: MathBackend { .openblas }

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

    /// Threads inside `withBackend` now: while there are none, no product looks at its thread's context.
    private static let overriding = Atomic<Int>(0)

    /// The backend this thread uses now.
    public static var active: MathBackend {
        overriding.load(ordering: .relaxed) == 0 ? current : ThreadMath.context.override ?? current
    }

    /// Runs `body` with this thread's products on `backend` (the process's choice is unchanged).
    public static func withBackend<T>(_ backend: MathBackend, _ body: () throws -> T) rethrows -> T {
        let context = ThreadMath.context
        let saved = context.override
        context.override = backend
        overriding.add(1, ordering: .relaxed)
        defer {
            context.override = saved
            overriding.subtract(1, ordering: .relaxed)
        }
        return try body()
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
/// is its own, so threads never share one), and a backend this thread uses for a while.
final class ThreadMath {
    var override: MathBackend?
    var stream: dnnl_stream_t?
    var primitives: [OneDNN.ProductShape: OneDNN.Product] = [:]
    /// The OpenMP team size this thread last set, so a change costs one call.
    var threads: Int32 = 0

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
    }
}

/// Matrix products on oneDNN: each shape (transposes, sizes, strides, α and β) becomes a
/// matmul primitive once per thread, with the operands' strides in its memory descriptors
/// (no copies), α as its output scale and β as a sum post-op.
enum OneDNN {
    struct Engine: @unchecked Sendable { let handle: dnnl_engine_t? }

    /// One CPU engine for the process (engines may be shared between threads; streams may not).
    static let engine: Engine = {
        var engine: dnnl_engine_t?
        return Engine(handle: dnnl_engine_create(&engine, dnnl_cpu, 0) == dnnl_success ? engine : nil)
    }()

    static var supportsCPU: Bool {
        #if arch(x86_64)
        let avx2 = dnnl_cpu_isa_avx2.rawValue
        return engine.handle != nil && dnnl_get_effective_cpu_isa().rawValue & avx2 == avx2
        #else
        return false
        #endif
    }

    static var version: String {
        guard let v = dnnl_version()?.pointee else { return "?" }
        return "\(v.major).\(v.minor).\(v.patch)"
    }

    static var isaName: String {
        let isa = dnnl_get_effective_cpu_isa()
        let names: [(dnnl_cpu_isa_t, String)] = [
            (dnnl_cpu_isa_avx512_core_amx, "avx512_core_amx"), (dnnl_cpu_isa_avx512_core_bf16, "avx512_core_bf16"),
            (dnnl_cpu_isa_avx512_core_vnni, "avx512_core_vnni"), (dnnl_cpu_isa_avx512_core, "avx512_core"),
            (dnnl_cpu_isa_avx2, "avx2"), (dnnl_cpu_isa_avx, "avx"), (dnnl_cpu_isa_sse41, "sse41"),
        ]
        return names.first { isa.rawValue & $0.0.rawValue == $0.0.rawValue }?.1 ?? "no SIMD oneDNN uses"
    }

    struct ProductShape: Hashable {
        let transA, transB: Bool
        let m, n, k, lda, ldb, ldc: Int
        let alpha, beta: Float
    }

    /// A product's primitive and its operands' descriptors.
    final class Product {
        let primitive: dnnl_primitive_t
        var a = dnnl_memory_desc_t(), b = dnnl_memory_desc_t(), c = dnnl_memory_desc_t()

        init?(_ s: ProductShape) {
            let ok = { (status: dnnl_status_t) in status == dnnl_success }
            var aDims: [dnnl_dim_t] = [dnnl_dim_t(s.m), dnnl_dim_t(s.k)], bDims: [dnnl_dim_t] = [dnnl_dim_t(s.k), dnnl_dim_t(s.n)]
            var cDims: [dnnl_dim_t] = [dnnl_dim_t(s.m), dnnl_dim_t(s.n)]
            var aStrides: [dnnl_dim_t] = s.transA ? [1, dnnl_dim_t(s.lda)] : [dnnl_dim_t(s.lda), 1]
            var bStrides: [dnnl_dim_t] = s.transB ? [1, dnnl_dim_t(s.ldb)] : [dnnl_dim_t(s.ldb), 1]
            var cStrides: [dnnl_dim_t] = [dnnl_dim_t(s.ldc), 1]
            var a = dnnl_memory_desc_t(), b = dnnl_memory_desc_t(), c = dnnl_memory_desc_t()
            guard ok(dnnl_memory_desc_init_by_strides(&a, 2, &aDims, dnnl_f32, &aStrides)),
                  ok(dnnl_memory_desc_init_by_strides(&b, 2, &bDims, dnnl_f32, &bStrides)),
                  ok(dnnl_memory_desc_init_by_strides(&c, 2, &cDims, dnnl_f32, &cStrides)) else { return nil }
            var description = dnnl_matmul_desc_t()
            guard ok(dnnl_matmul_desc_init(&description, &a, &b, nil, &c)) else { return nil }
            var attributes: dnnl_primitive_attr_t?
            guard ok(dnnl_primitive_attr_create(&attributes)) else { return nil }
            defer { dnnl_primitive_attr_destroy(attributes) }
            if s.alpha != 1 {
                var alpha = s.alpha
                guard ok(dnnl_primitive_attr_set_output_scales(attributes, 1, 0, &alpha)) else { return nil }
            }
            if s.beta != 0 {
                var postOps: dnnl_post_ops_t?
                guard ok(dnnl_post_ops_create(&postOps)) else { return nil }
                defer { dnnl_post_ops_destroy(postOps) }
                guard ok(dnnl_post_ops_append_sum(postOps, s.beta)), ok(dnnl_primitive_attr_set_post_ops(attributes, postOps)) else { return nil }
            }
            var descriptor: dnnl_primitive_desc_t?
            guard ok(dnnl_primitive_desc_create(&descriptor, &description, attributes, OneDNN.engine.handle, nil)) else { return nil }
            defer { dnnl_primitive_desc_destroy(descriptor) }
            var primitive: dnnl_primitive_t?
            guard ok(dnnl_primitive_create(&primitive, descriptor)), let primitive else { return nil }
            self.primitive = primitive
            self.a = a
            self.b = b
            self.c = c
        }

        func release() { dnnl_primitive_destroy(primitive) }
    }

    /// C = α·op(A)·op(B) + β·C on this thread's primitive for the shape; false when oneDNN
    /// cannot (the caller then uses OpenBLAS).
    static func sgemm(_ shape: ProductShape, a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>) -> Bool {
        let context = ThreadMath.context
        // The team size follows BLASRuntime's (one thread inside `singleThreaded` sections).
        let threads = Int32(BLASRuntime.effectiveThreadCount)
        if context.threads != threads {
            omp_set_num_threads(threads)
            context.threads = threads
        }
        if context.stream == nil {
            var stream: dnnl_stream_t?
            guard dnnl_stream_create(&stream, engine.handle, dnnl_stream_default_flags.rawValue) == dnnl_success else { return false }
            context.stream = stream
        }
        let product: Product
        if let cached = context.primitives[shape] {
            product = cached
        } else {
            guard let made = Product(shape) else { return false }
            // A bounded cache: a process that met thousands of shapes starts over rather than grow.
            if context.primitives.count >= 512 {
                for old in context.primitives.values { old.release() }
                context.primitives.removeAll()
            }
            context.primitives[shape] = made
            product = made
        }
        var memories: [dnnl_memory_t?] = [nil, nil, nil]
        defer { for memory in memories where memory != nil { dnnl_memory_destroy(memory) } }
        guard dnnl_memory_create(&memories[0], &product.a, engine.handle, UnsafeMutableRawPointer(mutating: a)) == dnnl_success,
              dnnl_memory_create(&memories[1], &product.b, engine.handle, UnsafeMutableRawPointer(mutating: b)) == dnnl_success,
              dnnl_memory_create(&memories[2], &product.c, engine.handle, UnsafeMutableRawPointer(c)) == dnnl_success else { return false }
        var arguments = [dnnl_exec_arg_t(arg: DNNL_ARG_SRC, memory: memories[0]), dnnl_exec_arg_t(arg: DNNL_ARG_WEIGHTS, memory: memories[1]),
                         dnnl_exec_arg_t(arg: DNNL_ARG_DST, memory: memories[2])]
        guard dnnl_primitive_execute(product.primitive, context.stream, 3, &arguments) == dnnl_success else { return false }
        return dnnl_stream_wait(context.stream) == dnnl_success
    }
}
