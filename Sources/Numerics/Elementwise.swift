import Foundation

/// Element-wise kernels over raw Float32 memory. Loops run over 8-wide SIMD
/// vectors with a scalar tail; no kernel allocates.
public enum Elementwise {
    public typealias Vector = SIMD8<Float>

    // MARK: exp and SiLU

    /// exp(x) with a Cephes-style degree-5 polynomial: a few ulp of `expf`,
    /// vectorised (the libm call is per element and dominated SiLU's cost).
    @inline(__always)
    public static func exp(_ input: Vector) -> Vector {
        let x = input.clamped(lowerBound: Vector(repeating: -87.3), upperBound: Vector(repeating: 88.3))
        let n = (x * 1.442_695_04).rounded(.toNearestOrEven)
        var r = x - n * 0.693_359_375
        r = r + n * 2.121_944_4e-4
        let r2 = r * r
        var p = Vector(repeating: 1.987_569_15e-4)
        p = p * r + 1.398_199_95e-3
        p = p * r + 8.333_451_9e-3
        p = p * r + 4.166_579_59e-2
        p = p * r + 1.666_666_55e-1
        p = p * r + 5.000_000_12e-1
        let poly = p * r2 + r + 1
        let exponent = (SIMD8<Int32>(truncatingIfNeeded: SIMD8<Int32>(n)) &+ 127) &<< 23
        return poly * unsafeBitCast(exponent, to: Vector.self)
    }

    @inline(__always)
    public static func exp(_ x: Float) -> Float { exp(Vector(repeating: x))[0] }

    @inline(__always)
    public static func sigmoid(_ x: Vector) -> Vector { 1 / (1 + exp(-x)) }

    /// SiLU forward: out = a·σ(a); σ(a) is kept for the backward pass.
    public static func siluForward(_ a: UnsafePointer<Float>, sigmoid: UnsafeMutablePointer<Float>,
                                   out: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i + 8 <= count {
            let x = load(a + i)
            let s = Self.sigmoid(x)
            store(s, sigmoid + i)
            store(x * s, out + i)
            i += 8
        }
        while i < count {
            let s = 1 / (1 + exp(-a[i]))
            sigmoid[i] = s
            out[i] = a[i] * s
            i += 1
        }
    }

    /// SiLU backward: da = dout · σ(a)·(1 + a·(1 − σ(a))).
    public static func siluBackward(_ a: UnsafePointer<Float>, sigmoid: UnsafePointer<Float>,
                                    dOut: UnsafePointer<Float>, dA: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i + 8 <= count {
            let x = load(a + i), s = load(sigmoid + i)
            store(load(dOut + i) * s * (1 + x * (1 - s)), dA + i)
            i += 8
        }
        while i < count {
            let s = sigmoid[i]
            dA[i] = dOut[i] * s * (1 + a[i] * (1 - s))
            i += 1
        }
    }

    // MARK: Rows and columns

    /// y[r, :] += bias for each of `rows` rows of length `columns` with row stride `stride`.
    public static func addBias(_ bias: UnsafePointer<Float>, to y: UnsafeMutablePointer<Float>,
                               rows: Int, columns: Int, stride: Int) {
        for row in 0..<rows { add(bias, into: y + row * stride, count: columns) }
    }

    /// sums[:] += Σ_r x[r, :] — the gradient of a broadcast bias.
    public static func accumulateColumnSums(_ x: UnsafePointer<Float>, rows: Int, columns: Int, stride: Int,
                                            into sums: UnsafeMutablePointer<Float>) {
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

    /// Σ x² accumulated in Float64 so that long buffers keep their precision.
    public static func sumOfSquares(_ x: UnsafePointer<Float>, count: Int) -> Double {
        var total = 0.0
        var start = 0
        while start < count {
            let end = min(count, start + 4096)
            var partial = Vector()
            var i = start
            while i + 8 <= end { let v = load(x + i); partial += v * v; i += 8 }
            var block = Double(partial.sum())
            while i < end { block += Double(x[i] * x[i]); i += 1 }
            total += block
            start = end
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
