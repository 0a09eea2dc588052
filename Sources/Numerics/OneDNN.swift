import CDNNL

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

    /// Whether oneDNN runs here at all (x86-64 with AVX2 or better).
    static let supportsCPU = offers(dnnl_cpu_isa_avx2)

    /// Whether oneDNN runs its AVX-512 kernels here (brgemm); below that, oneDNN 2.6's fp32 products
    /// fall back to its AVX2 `gemm:jit`, which OpenBLAS outruns (MathBackend.preferred).
    static let offersAVX512 = offers(dnnl_cpu_isa_avx512_core)

    /// Whether oneDNN computes bf16 products on this CPU with bf16 instructions (AVX512-BF16 or AMX).
    /// Read once: the ISA oneDNN uses is fixed when it first looks (`DNNL_MAX_CPU_ISA` caps it).
    static let supportsBF16 = offers(dnnl_cpu_isa_avx512_core_bf16)

    private static func offers(_ isa: dnnl_cpu_isa_t) -> Bool {
        #if arch(x86_64)
        return engine.handle != nil && dnnl_get_effective_cpu_isa().rawValue & isa.rawValue == isa.rawValue
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
        /// bf16 operands, summed in fp32. A, and B unless packed, are converted to bf16 in their
        /// stored orientation, rows contiguous (a plain reorder: one pass, on the product's
        /// threads); the primitive reads them through strides as it reads fp32 operands.
        /// (Reorders into oneDNN's blocked layouts at every call cost as much as the products.)
        var bf16 = false
        /// B in the layout the primitive chooses (fp32, or bf16 in AMX's pairs), made by a
        /// reorder once per `PackedWeights`, matrix and layout.
        var packedB = false
        /// Epilogues fused as the primitive's own: a bias row added (before any sum), and SiLU
        /// (swish with α 1) applied last.
        var bias = false
        var silu = false
        /// The output multiplied element by element by a matrix of its shape and strides (a binary
        /// post-op, the only one: SiLU's backward, ∂L/∂a = (∂L/∂out)·slope, written with the product).
        var multiplied = false

        /// The stored extent of op(A) and op(B): rows × columns before any transpose.
        var aStored: (rows: Int, columns: Int) { transA ? (k, m) : (m, k) }
        var bStored: (rows: Int, columns: Int) { transB ? (n, k) : (k, n) }
    }

    /// A product's primitive, its operands' descriptors, and for packed weights the reorder
    /// that makes their copy.
    final class Product {
        let primitive: dnnl_primitive_t
        /// The kernel oneDNN chose, as its verbose mode names it: "brg:avx512_core",
        /// "brg:avx512_core_amx_bf16", "gemm:jit".
        let implementation: String
        /// The caller's operands as stored (fp32, strided).
        var a = dnnl_memory_desc_t(), b = dnnl_memory_desc_t(), c = dnnl_memory_desc_t()
        /// The bias row, [1, n].
        var bias = dnnl_memory_desc_t()
        /// The operands as the primitive reads them: in bf16, converted (rows contiguous); B packed.
        var aRead = dnnl_memory_desc_t(), bRead = dnnl_memory_desc_t()
        /// bf16: the reorders that convert A, and B unless packed.
        var convertA: dnnl_primitive_t?, convertB: dnnl_primitive_t?
        /// Packed weights only: the reorder that makes B's copy, and its bytes.
        var packB: dnnl_primitive_t?
        var bPackedBytes = 0
        /// Bytes of the converted A (rounded up to 64) and B (bf16, not packed), in thread scratch.
        var aBytes = 0, bBytes = 0

        init?(_ s: ProductShape) {
            let ok = { (status: dnnl_status_t) in status == dnnl_success }
            var aDims: [dnnl_dim_t] = [dnnl_dim_t(s.m), dnnl_dim_t(s.k)], bDims: [dnnl_dim_t] = [dnnl_dim_t(s.k), dnnl_dim_t(s.n)]
            var cDims: [dnnl_dim_t] = [dnnl_dim_t(s.m), dnnl_dim_t(s.n)]
            func strides(transposed: Bool, _ rowStride: Int) -> [dnnl_dim_t] { transposed ? [1, dnnl_dim_t(rowStride)] : [dnnl_dim_t(rowStride), 1] }
            var aStrides = strides(transposed: s.transA, s.lda), bStrides = strides(transposed: s.transB, s.ldb)
            var cStrides: [dnnl_dim_t] = [dnnl_dim_t(s.ldc), 1]
            var a = dnnl_memory_desc_t(), b = dnnl_memory_desc_t(), c = dnnl_memory_desc_t()
            guard ok(dnnl_memory_desc_init_by_strides(&a, 2, &aDims, dnnl_f32, &aStrides)),
                  ok(dnnl_memory_desc_init_by_strides(&b, 2, &bDims, dnnl_f32, &bStrides)),
                  ok(dnnl_memory_desc_init_by_strides(&c, 2, &cDims, dnnl_f32, &cStrides)) else { return nil }
            var aRead = a, bRead = b
            if s.bf16 {
                var converted = strides(transposed: s.transA, s.aStored.columns)
                guard ok(dnnl_memory_desc_init_by_strides(&aRead, 2, &aDims, dnnl_bf16, &converted)) else { return nil }
                aBytes = (2 * s.m * s.k + 63) / 64 * 64
            }
            if s.packedB {
                guard ok(dnnl_memory_desc_init_by_tag(&bRead, 2, &bDims, s.bf16 ? dnnl_bf16 : dnnl_f32, dnnl_format_tag_any)) else { return nil }
            } else if s.bf16 {
                var converted = strides(transposed: s.transB, s.bStored.columns)
                guard ok(dnnl_memory_desc_init_by_strides(&bRead, 2, &bDims, dnnl_bf16, &converted)) else { return nil }
                bBytes = 2 * s.k * s.n
            }
            var bias = dnnl_memory_desc_t()
            if s.bias {
                var biasDims: [dnnl_dim_t] = [1, dnnl_dim_t(s.n)], biasStrides: [dnnl_dim_t] = [dnnl_dim_t(s.n), 1]
                guard ok(dnnl_memory_desc_init_by_strides(&bias, 2, &biasDims, dnnl_f32, &biasStrides)) else { return nil }
            }
            var description = dnnl_matmul_desc_t()
            let described = s.bias ? dnnl_matmul_desc_init(&description, &aRead, &bRead, &bias, &c)
                : dnnl_matmul_desc_init(&description, &aRead, &bRead, nil, &c)
            guard ok(described) else { return nil }
            var attributes: dnnl_primitive_attr_t?
            guard ok(dnnl_primitive_attr_create(&attributes)) else { return nil }
            defer { dnnl_primitive_attr_destroy(attributes) }
            if s.alpha != 1 {
                var alpha = s.alpha
                guard ok(dnnl_primitive_attr_set_output_scales(attributes, 1, 0, &alpha)) else { return nil }
            }
            if s.beta != 0 || s.silu || s.multiplied {
                var postOps: dnnl_post_ops_t?
                guard ok(dnnl_post_ops_create(&postOps)) else { return nil }
                defer { dnnl_post_ops_destroy(postOps) }
                if s.beta != 0 { guard ok(dnnl_post_ops_append_sum(postOps, s.beta)) else { return nil } }
                if s.silu { guard ok(dnnl_post_ops_append_eltwise(postOps, 1, dnnl_eltwise_swish, 1, 0)) else { return nil } }
                if s.multiplied { guard ok(dnnl_post_ops_append_binary(postOps, dnnl_binary_mul, &c)) else { return nil } }
                guard ok(dnnl_primitive_attr_set_post_ops(attributes, postOps)) else { return nil }
            }
            var descriptor: dnnl_primitive_desc_t?
            guard ok(dnnl_primitive_desc_create(&descriptor, &description, attributes, OneDNN.engine.handle, nil)) else { return nil }
            defer { dnnl_primitive_desc_destroy(descriptor) }
            var name: UnsafePointer<CChar>?
            guard ok(dnnl_primitive_desc_query(descriptor, dnnl_query_impl_info_str, 0, &name)), let name else { return nil }
            implementation = String(cString: name)
            // oneDNN's reference kernel ("ref:any") takes any layout and post-op, as a plain loop that
            // runs one to two orders of magnitude below its JIT kernels: such a product is refused,
            // and takes the caller's fallback.
            guard !Self.isReference(implementation) else { return nil }
            var primitive: dnnl_primitive_t?
            guard ok(dnnl_primitive_create(&primitive, descriptor)), let primitive else { return nil }
            self.primitive = primitive
            self.a = a
            self.b = b
            self.c = c
            self.aRead = aRead
            self.bRead = bRead
            self.bias = bias
            if s.bf16 {
                guard let convertA = Self.reorder(from: &self.a, to: aRead) else {
                    release()
                    return nil
                }
                self.convertA = convertA
                if !s.packedB {
                    guard let convertB = Self.reorder(from: &self.b, to: bRead) else {
                        release()
                        return nil
                    }
                    self.convertB = convertB
                }
            }
            if s.packedB {
                guard let chosen = dnnl_primitive_desc_query_md(descriptor, dnnl_query_weights_md, 0)?.pointee,
                      let pack = Self.reorder(from: &self.b, to: chosen) else {
                    release()
                    return nil
                }
                bRead = chosen
                self.bRead = chosen
                packB = pack
                bPackedBytes = dnnl_memory_desc_get_size(&bRead)
            }
        }

        static func isReference(_ implementation: String) -> Bool { implementation.hasPrefix("ref") }

        private static func reorder(from source: inout dnnl_memory_desc_t, to target: dnnl_memory_desc_t) -> dnnl_primitive_t? {
            var target = target
            var descriptor: dnnl_primitive_desc_t?
            guard dnnl_reorder_primitive_desc_create(&descriptor, &source, OneDNN.engine.handle, &target, OneDNN.engine.handle, nil)
                == dnnl_success else { return nil }
            defer { dnnl_primitive_desc_destroy(descriptor) }
            var primitive: dnnl_primitive_t?
            return dnnl_primitive_create(&primitive, descriptor) == dnnl_success ? primitive : nil
        }

        func release() {
            dnnl_primitive_destroy(primitive)
            for made in [packB, convertA, convertB] { if let made { dnnl_primitive_destroy(made) } }
        }
    }

    /// This thread's primitive for the shape, made on first use; nil when oneDNN refuses the shape
    /// (remembered, so a refused shape costs one descriptor, not one a call).
    private static func product(for shape: ProductShape, in context: ThreadMath) -> Product? {
        if let cached = context.primitives[shape] { return cached }
        if context.refusedShapes.contains(shape) { return nil }
        // Bounded caches: a process that met thousands of shapes starts over rather than grow.
        if context.primitives.count + context.refusedShapes.count >= 512 {
            for old in context.primitives.values { old.release() }
            context.primitives.removeAll()
            context.refusedShapes.removeAll()
        }
        guard let made = Product(shape) else {
            context.refusedShapes.insert(shape)
            return nil
        }
        context.primitives[shape] = made
        return made
    }

    /// The kernel that runs this thread's products of the shape, as oneDNN names it; nil when
    /// oneDNN refuses the shape, or would serve it only with its reference kernel.
    static func kernel(for shape: ProductShape) -> String? {
        product(for: shape, in: ThreadMath.context)?.implementation
    }

    /// C = α·op(A)·op(B) + β·C on this thread's primitive for the shape, with B's packed copy
    /// from `packed` when given; false when oneDNN cannot (the caller then uses OpenBLAS, or in
    /// bf16 the emulation).
    static func sgemm(_ shape: ProductShape, a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>,
                      bias: UnsafePointer<Float>? = nil, multiplier: UnsafePointer<Float>? = nil, packed: PackedWeights? = nil) -> Bool {
        precondition(shape.bias == (bias != nil), "a bias pointer goes with a shape that has one")
        precondition(shape.multiplied == (multiplier != nil), "a multiplier goes with a shape that has one")
        precondition(!shape.multiplied || (shape.beta == 0 && !shape.silu), "the multiply is a product's only post-op")
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
        guard let product = product(for: shape, in: context) else { return false }
        let stream = context.stream
        func memory(_ descriptor: inout dnnl_memory_desc_t, _ pointer: UnsafeMutableRawPointer) -> dnnl_memory_t? {
            var memory: dnnl_memory_t?
            return dnnl_memory_create(&memory, &descriptor, engine.handle, pointer) == dnnl_success ? memory : nil
        }
        var memories: [dnnl_memory_t] = []
        defer { for made in memories { dnnl_memory_destroy(made) } }
        let scratch = context.scratch.reserve(product.aBytes + product.bBytes)
        var aPointer = UnsafeMutableRawPointer(mutating: a), bPointer = UnsafeMutableRawPointer(mutating: b)
        /// Runs a reorder from `source` (the caller's operand) into `target` laid out as `layout`.
        func run(_ reorder: dnnl_primitive_t, from source: dnnl_memory_t, into target: UnsafeMutableRawPointer,
                 as layout: inout dnnl_memory_desc_t) -> Bool {
            guard let made = memory(&layout, target) else { return false }
            defer { dnnl_memory_destroy(made) }
            var arguments = [dnnl_exec_arg_t(arg: DNNL_ARG_FROM, memory: source), dnnl_exec_arg_t(arg: DNNL_ARG_TO, memory: made)]
            return dnnl_primitive_execute(reorder, stream, 2, &arguments) == dnnl_success
        }
        if let convertA = product.convertA {
            guard let source = memory(&product.a, aPointer) else { return false }
            memories.append(source)
            guard run(convertA, from: source, into: scratch, as: &product.aRead) else { return false }
            aPointer = scratch
        }
        if product.convertB != nil, shape.ldb == shape.bStored.columns, let copy = context.shadow?.copy(of: b) {
            bPointer = copy  // B already in bf16, rounded as the reorder would (`BF16Shadow`)
        } else if let convertB = product.convertB {
            guard let source = memory(&product.b, bPointer) else { return false }
            memories.append(source)
            guard run(convertB, from: source, into: scratch + product.aBytes, as: &product.bRead) else { return false }
            bPointer = scratch + product.aBytes
        }
        if let pack = product.packB {
            // Packed once per `PackedWeights`, matrix and layout where B is such weights, else here, per call.
            guard let source = memory(&product.b, bPointer) else { return false }
            memories.append(source)
            var packedDescriptor = product.bRead
            func packB(into target: UnsafeMutableRawPointer) -> Bool {
                run(pack, from: source, into: target, as: &packedDescriptor) && dnnl_stream_wait(stream) == dnnl_success
            }
            if let kept = packed?.copy(of: b, shape: shape, layout: product.bRead, bytes: product.bPackedBytes, pack: packB) {
                bPointer = kept
            } else {
                let perCall = context.scratch.reserveSecond(product.bPackedBytes)
                guard packB(into: perCall) else { return false }
                bPointer = perCall
            }
        }
        guard let aMemory = memory(&product.aRead, aPointer) else { return false }
        memories.append(aMemory)
        guard let bMemory = memory(&product.bRead, bPointer) else { return false }
        memories.append(bMemory)
        guard let cMemory = memory(&product.c, UnsafeMutableRawPointer(c)) else { return false }
        memories.append(cMemory)
        var arguments = [dnnl_exec_arg_t(arg: DNNL_ARG_SRC, memory: aMemory), dnnl_exec_arg_t(arg: DNNL_ARG_WEIGHTS, memory: bMemory),
                         dnnl_exec_arg_t(arg: DNNL_ARG_DST, memory: cMemory)]
        if let bias {
            guard let biasMemory = memory(&product.bias, UnsafeMutableRawPointer(mutating: bias)) else { return false }
            memories.append(biasMemory)
            arguments.append(dnnl_exec_arg_t(arg: DNNL_ARG_BIAS, memory: biasMemory))
        }
        if let multiplier {
            guard let multiplierMemory = memory(&product.c, UnsafeMutableRawPointer(mutating: multiplier)) else { return false }
            memories.append(multiplierMemory)
            // DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1 (function-like macros do not reach Swift).
            arguments.append(dnnl_exec_arg_t(arg: DNNL_ARG_ATTR_MULTIPLE_POST_OP_BASE | DNNL_ARG_SRC_1, memory: multiplierMemory))
        }
        guard dnnl_primitive_execute(product.primitive, stream, Int32(arguments.count), &arguments) == dnnl_success else { return false }
        return dnnl_stream_wait(stream) == dnnl_success
    }
}
