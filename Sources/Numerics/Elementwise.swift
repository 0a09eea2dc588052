import CKernels
import Foundation

/// Element-wise kernels over raw Float32 memory. Loops run over 8-wide SIMD
/// vectors with a scalar tail; no kernel allocates.
public enum Elementwise {
    public typealias Vector = SIMD8<Float>

    // MARK: exp and SiLU

    /// exp(x) by a Cephes-style degree-5 polynomial, within a few ulp of `expf`.
    /// Only arithmetic, selects and bit casts — no libm call, no trapping
    /// float→int conversion — so loops over it auto-vectorise. Rounding to the
    /// nearest integer n uses the 1.5·2^23 trick, whose bit pattern also gives n.
    @inline(__always)
    public static func exp(_ input: Float) -> Float {
        var x = input > 88.3 ? 88.3 : input
        x = x < -87.3 ? -87.3 : x
        let magic: Float = 12_582_912  // 1.5·2^23
        let shifted = x * 1.442_695_04 + magic
        let n = shifted - magic
        let r = (x - n * 0.693_359_375) + n * 2.121_944_4e-4
        var p: Float = 1.987_569_15e-4
        p = p * r + 1.398_199_95e-3
        p = p * r + 8.333_451_9e-3
        p = p * r + 4.166_579_59e-2
        p = p * r + 1.666_666_55e-1
        p = p * r + 5.000_000_12e-1
        let poly = p * (r * r) + r + 1
        let twoToN = Float(bitPattern: (shifted.bitPattern &- 0x4B40_0000 &+ 127) &<< 23)
        return poly * twoToN
    }

    @inline(__always)
    public static func sigmoid(_ x: Float) -> Float { 1 / (1 + exp(-x)) }

    /// SiLU forward: out = a·σ(a), keeping for the backward pass its slope
    /// SiLU′(a) = σ·(1 + a·(1 − σ)), so that the backward is one multiply (a product's post-op
    /// on oneDNN) and a itself need not be kept: `slope` may be `a`'s own buffer.
    public static func siluForward(_ a: UnsafePointer<Float>, slope: UnsafeMutablePointer<Float>,
                                   out: UnsafeMutablePointer<Float>, count: Int, kernel: VectorKernel = .fastest) {
        switch kernel {
        case .avx512: return preftune_silu_forward_avx512(a, slope, out, Int64(count))
        case .avx2: return preftune_silu_forward_avx2(a, slope, out, Int64(count))
        case .portable: break
        }
        for i in 0..<count {
            let x = a[i], s = Self.sigmoid(x)
            out[i] = x * s
            slope[i] = s * (1 + x * (1 - s))
        }
    }

    /// SiLU in place, σ not kept (a forward pass no backward pass follows).
    public static func siluInPlace(_ y: UnsafeMutablePointer<Float>, count: Int, kernel: VectorKernel = .fastest) {
        switch kernel {
        case .avx512: return preftune_silu_in_place_avx512(y, Int64(count))
        case .avx2: return preftune_silu_in_place_avx2(y, Int64(count))
        case .portable: break
        }
        for i in 0..<count { y[i] = y[i] * Self.sigmoid(y[i]) }
    }

    /// y[r, :] ⊙= m[r, :] for `rows` rows of `columns`, both with row stride `stride`: SiLU's
    /// backward (∂L/∂a = ∂L/∂out · slope) where a product could not do it as its post-op.
    public static func multiply(_ y: UnsafeMutablePointer<Float>, by m: UnsafePointer<Float>, rows: Int, columns: Int, stride: Int) {
        for row in 0..<rows {
            let yr = y + row * stride, mr = m + row * stride
            var i = 0
            while i + 8 <= columns { store(load(yr + i) * load(mr + i), yr + i); i += 8 }
            while i < columns { yr[i] *= mr[i]; i += 1 }
        }
    }

    // MARK: Rows and columns

    /// y[r, :] += bias for each of `rows` rows of length `columns` with row stride `stride`.
    public static func addBias(_ bias: UnsafePointer<Float>, to y: UnsafeMutablePointer<Float>,
                               rows: Int, columns: Int, stride: Int) {
        for row in 0..<rows { add(bias, into: y + row * stride, count: columns) }
    }

    /// y[r, :] = row for each of `rows` rows of length `columns` with row stride `stride`.
    public static func broadcastRows(_ row: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>,
                                     rows: Int, columns: Int, stride: Int) {
        for r in 0..<rows { (y + r * stride).update(from: row, count: columns) }
    }

    /// sums[:] += Σ_r x[r, :] — the gradient of a broadcast bias.
    public static func accumulateColumnSums(_ x: UnsafePointer<Float>, rows: Int, columns: Int, stride: Int,
                                            into sums: UnsafeMutablePointer<Float>, kernel: VectorKernel = .fastest) {
        switch kernel {
        case .avx512: return preftune_accumulate_column_sums_avx512(x, Int64(rows), Int64(columns), Int64(stride), sums)
        case .avx2: return preftune_accumulate_column_sums_avx2(x, Int64(rows), Int64(columns), Int64(stride), sums)
        case .portable: break
        }
        for row in 0..<rows { add(x + row * stride, into: sums, count: columns) }
    }

    // MARK: Vectors

    /// y += x
    @inline(__always)
    public static func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i + 8 <= count { store(load(y + i) + load(x + i), y + i); i += 8 }
        while i < count { y[i] += x[i]; i += 1 }
    }

    /// y += alpha · x
    @inline(__always)
    public static func addScaled(_ x: UnsafePointer<Float>, _ alpha: Float, into y: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i + 8 <= count { store(load(y + i) + alpha * load(x + i), y + i); i += 8 }
        while i < count { y[i] += alpha * x[i]; i += 1 }
    }

    public static func scale(_ x: UnsafeMutablePointer<Float>, by alpha: Float, count: Int) {
        var i = 0
        while i + 8 <= count { store(load(x + i) * alpha, x + i); i += 8 }
        while i < count { x[i] *= alpha; i += 1 }
    }

    /// Σ x², each fixed-size chunk summed in Float32 lanes then Float64, chunks
    /// combined in order: the same bits for any thread count.
    public static func sumOfSquares(_ x: UnsafePointer<Float>, count: Int, sharingWith companion: CompanionThread? = nil) -> Double {
        let chunkSize = Parallel.chunkSize
        let chunks = (count + chunkSize - 1) / chunkSize
        var partials = [Double](repeating: 0, count: max(chunks, 1))
        partials.withUnsafeMutableBufferPointer { partials in
            let shared = UncheckedSendable((x, partials.baseAddress!))
            Parallel.forEachChunk(count: count, chunkSize: chunkSize, sharingWith: companion) { range in
                let (x, partials) = shared.value
                partials[range.lowerBound / chunkSize] = sumOfSquares(x + range.lowerBound, count: range.count, kernel: .fastest)
            }
        }
        return partials.reduce(0, +)
    }

    /// One chunk's Σ x²: runs of 1024 values, each summed in Float32 lanes (keeping the loop
    /// vectorised), the runs' totals added in Float64 (keeping precision). CKernels' version (8-lane AVX2,
    /// on AVX-512 CPUs too) sums four runs at once, one chain of adds each, and adds their totals in order.
    static func sumOfSquares(_ x: UnsafePointer<Float>, count: Int, kernel: VectorKernel) -> Double {
        switch kernel {
        case .avx512, .avx2: return preftune_sum_of_squares_avx2(x, Int64(count))
        case .portable: break
        }
        var total = 0.0
        var i = 0
        while i < count {
            let end = min(count, i + 1024)
            var lanes = Vector()
            while i + 8 <= end { let v = load(x + i); lanes += v * v; i += 8 }
            var run: Float = 0
            while i < end { run += x[i] * x[i]; i += 1 }
            total += Double(lanes.sum()) + Double(run)
        }
        return total
    }

    /// True when every value is finite.
    public static func allFinite(_ x: UnsafePointer<Float>, count: Int) -> Bool {
        var i = 0
        while i + 8 <= count {
            // x − x is 0 for finite values and NaN for ±Inf and NaN.
            let v = load(x + i)
            if (v - v) != Vector() { return false }
            i += 8
        }
        while i < count { if !x[i].isFinite { return false }; i += 1 }
        return true
    }

    // MARK: Loads and stores

    @inline(__always)
    public static func load(_ p: UnsafePointer<Float>) -> Vector {
        UnsafeRawPointer(p).loadUnaligned(as: Vector.self)
    }

    @inline(__always)
    public static func load(_ p: UnsafeMutablePointer<Float>) -> Vector { load(UnsafePointer(p)) }

    @inline(__always)
    public static func store(_ v: Vector, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vector.self)
    }
}
