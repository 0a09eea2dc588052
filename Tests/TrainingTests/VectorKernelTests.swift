import Foundation
@testable import Numerics
import TestSupport
import Testing
@testable import Training

/// CKernels' AVX-512 and AVX2 passes are transcriptions of the Swift loops, operation for
/// operation: they must give the same bits, or a job's results would depend on the CPU it ran on.
/// Each test holds every wide kernel this CPU runs to the Swift loop.
@Suite(.computeThread, .enabled(if: VectorKernel.available.count > 1, "this CPU has neither AVX2 nor AVX-512"))
struct VectorKernelTests {
    /// The CPU's wide kernels (AVX2, and AVX-512 where it has it).
    static let wide = Array(VectorKernel.available.dropFirst())

    /// Values that exercise every branch: ordinary, zero, subnormal, tiny enough to flush, huge, NaN.
    static func awkward(_ count: Int, seed: UInt64, scale: Float) -> [Float] {
        var random = Philox(seed: seed)
        let buffer = FloatBuffer(count: count)
        random.fillNormal(buffer.pointer, count: count)
        var values = buffer.array.map { $0 * scale }
        let specials: [Float] = [0, -0.0, 1e-39, -3e-42, Float.leastNormalMagnitude, 1e-20, 3e30, .nan]
        for i in stride(from: 0, to: count, by: 11) { values[i] = specials[(i / 11) % specials.count] }
        return values
    }

    @Test("AdamW: each wide pass gives the portable loop's bits", arguments: [0, 1, 7, 8, 9, 15, 16, 17, 1000, 4099])
    func adamWSameBits(count: Int) {
        let coefficientsPerStep: [AdamW.Coefficients] = [
            .init(decay: 0.999999, oneMinusBeta1: 0.1, beta2: 0.999, oneMinusBeta2: 0.001, stepSize: 1e-3,
                  correction2: 0.0316, epsilon: 1e-8, gradientScale: 1),
            .init(decay: 0.99, oneMinusBeta1: 0.05, beta2: 0.98, oneMinusBeta2: 0.02, stepSize: 3e-4,
                  correction2: 0.5, epsilon: 1e-6, gradientScale: 0.0371),
        ]
        var state: [VectorKernel: [[Float]]] = [:]
        for kernel in VectorKernel.available {
            let p = FloatBuffer(Self.awkward(count, seed: 1, scale: 0.05)), m = FloatBuffer(Self.awkward(count, seed: 2, scale: 1e-3))
            let v = FloatBuffer(Self.awkward(count, seed: 3, scale: 1e-3).map { abs($0) })
            for (step, c) in coefficientsPerStep.enumerated() {
                let g = FloatBuffer(Self.awkward(count, seed: 10 + UInt64(step), scale: 0.3))
                AdamW.update(p.pointer, g.pointer, m.pointer, v.pointer, count: count, c, kernel: kernel)
                #expect(g.array.allSatisfy { $0 == 0 }, "\(kernel) leaves the gradients zeroed")
            }
            state[kernel] = [p.array, m.array, v.array]
        }
        for kernel in Self.wide {
            for (name, (portable, wide)) in zip(["p", "m", "v"], zip(state[.portable]!, state[kernel]!)) {
                #expect(portable.map(\.bitPattern) == wide.map(\.bitPattern), "\(kernel): \(name), \(count) values")
            }
        }
    }

    @Test("SiLU forward (keeping its slope, in a buffer of its own or in place) and SiLU in place: the wide passes give the portable loops' bits",
          arguments: [1, 7, 9, 16, 33, 4099])
    func siluSameBits(count: Int) {
        // Past e^x's clamps (±88.3, −87.3) and through zero, infinities and NaN.
        var a = Self.awkward(count, seed: 21, scale: 30)
        let edges: [Float] = [88.3, -88.3, 87.3, -87.3, 89, -90, .infinity, -.infinity, 0, -0.0, 1e-30]
        for (i, edge) in edges.enumerated() where i * 3 < count { a[i * 3] = edge }
        var results: [VectorKernel: [[Float]]] = [:]
        for kernel in VectorKernel.available {
            let input = FloatBuffer(a), slope = FloatBuffer(count: count), out = FloatBuffer(count: count)
            Elementwise.siluForward(input.pointer, slope: slope.pointer, out: out.pointer, count: count, kernel: kernel)
            // The slope written over the pre-activation, as a layer keeps it.
            let overwritten = FloatBuffer(a), outAgain = FloatBuffer(count: count)
            Elementwise.siluForward(overwritten.pointer, slope: overwritten.pointer, out: outAgain.pointer, count: count, kernel: kernel)
            let inPlace = FloatBuffer(a)
            Elementwise.siluInPlace(inPlace.pointer, count: count, kernel: kernel)
            results[kernel] = [slope.array, out.array, overwritten.array, outAgain.array, inPlace.array]
        }
        for kernel in Self.wide {
            for (name, (portable, wide)) in zip(["slope", "out", "slope over a", "out beside it", "in place"],
                                                zip(results[.portable]!, results[kernel]!)) {
                // Which NaN comes out of an operation on two NaNs depends on its operands' order, which
                // LLVM may swap in the Swift loop; a NaN is all a result needs to be there.
                let differing = zip(portable, wide).enumerated().filter {
                    $0.element.0.bitPattern != $0.element.1.bitPattern && !($0.element.0.isNaN && $0.element.1.isNaN)
                }
                #expect(differing.isEmpty, "\(kernel): \(name), \(count) values: \(differing.prefix(5).map { "[\($0.offset)] a \(a[$0.offset]) → \($0.element.0) against \($0.element.1)" })")
            }
        }
        let portable = results[.portable]!
        let sameBits = { (x: [Float], y: [Float]) in zip(x, y).allSatisfy { $0.bitPattern == $1.bitPattern || ($0.isNaN && $1.isNaN) } }
        #expect(sameBits(portable[0], portable[2]) && sameBits(portable[1], portable[3]), "in place or not, the same slope and output")
        // The slope is SiLU's derivative: against a central difference where a is moderate.
        for i in 0..<count where abs(a[i]) < 8 && abs(a[i]) > 1e-3 {
            let x = Double(a[i]), h = 1e-4
            func silu(_ v: Double) -> Double { v / (1 + Foundation.exp(-v)) }
            let numeric = (silu(x + h) - silu(x - h)) / (2 * h)
            #expect(abs(Double(portable[0][i]) - numeric) < 1e-4, "slope at \(x): \(portable[0][i]) against \(numeric)")
        }
    }

    @Test("Σ x²: each wide pass gives the portable loop's bits",
          arguments: [0, 7, 8, 1023, 1024, 1029, 4 * 1024, 4 * 1024 + 3, 9 * 1024 + 13, Parallel.chunkSize])
    func sumOfSquaresSameBits(count: Int) {
        let x = FloatBuffer(Self.awkward(count, seed: 7, scale: 0.02).map { $0.isNaN || abs($0) > 1e10 ? 1 : $0 })
        let portable = Elementwise.sumOfSquares(x.pointer, count: count, kernel: .portable)
        for kernel in Self.wide {
            let wide = Elementwise.sumOfSquares(x.pointer, count: count, kernel: kernel)
            #expect(portable.bitPattern == wide.bitPattern, "\(kernel): \(count) values: \(portable) against \(wide)")
        }
    }
    /// Rows for the LayerNorm tests: a group of four and a partial one, rows sharing modulation
    /// rows as a pair batch does (numbered in order of first appearance).
    static let modulationRows: [Int32] = [0, 1, 0, 2, 1, 3, 3]

    /// `awkward` without NaN or the huge values that overflow a norm: zeros, subnormals and all.
    static func finite(_ count: Int, seed: UInt64, scale: Float) -> FloatBuffer {
        FloatBuffer(awkward(count, seed: seed, scale: scale).map { $0.isNaN || abs($0) > 1e10 ? 0.5 : $0 })
    }

    /// A norm's rows x, its γ and β, and a modulation matrix of four rows whose stride is wider
    /// than the [scale | shift] slice read from it.
    static func normOperands(width: Int, seed: UInt64)
        -> (x: FloatBuffer, gamma: FloatBuffer, beta: FloatBuffer, modulation: FloatBuffer, stride: Int) {
        let stride = 4 * width + 3
        return (finite(modulationRows.count * width, seed: seed, scale: 3), finite(width, seed: seed + 1, scale: 1),
                finite(width, seed: seed + 2, scale: 1), finite(4 * stride, seed: seed + 3, scale: 0.5), stride)
    }

    @Test("LayerNorm forward, plain and modulated: each wide pass gives the portable loop's bits",
          arguments: [1, 8, 13, 16, 37, 512])
    func layerNormForwardSameBits(width: Int) {
        let rows = Self.modulationRows.count, (x, gamma, beta, modulation, stride) = Self.normOperands(width: width, seed: 31)
        var results: [VectorKernel: [[Float]]] = [:]
        for kernel in VectorKernel.available {
            let normalized = FloatBuffer(count: rows * width), rstd = FloatBuffer(count: rows), out = FloatBuffer(count: rows * width)
            let u = FloatBuffer(count: rows * width), plain = FloatBuffer(count: rows * width), uAlone = FloatBuffer(count: rows * width)
            Self.modulationRows.withUnsafeBufferPointer { map in
                let m = LayerNorm.Modulation(scaleShift: modulation.pointer + 1, stride: stride, rows: map.baseAddress!)
                LayerNorm.forward(x.pointer, gamma: gamma.pointer, beta: beta.pointer, normalized: normalized.pointer, rstd: rstd.pointer,
                                  out: out.pointer, modulation: m, modulated: u.pointer, rows: rows, width: width, kernel: kernel)
                // A pass with no backward writes u alone.
                LayerNorm.forward(x.pointer, gamma: gamma.pointer, beta: beta.pointer, normalized: nil, rstd: nil, out: nil,
                                  modulation: m, modulated: uAlone.pointer, rows: rows, width: width, kernel: kernel)
            }
            LayerNorm.forward(x.pointer, gamma: gamma.pointer, beta: beta.pointer, normalized: nil, rstd: nil, out: plain.pointer,
                              rows: rows, width: width, kernel: kernel)
            #expect(uAlone.array.map(\.bitPattern) == u.array.map(\.bitPattern), "\(kernel): u alone, width \(width)")
            #expect(plain.array.map(\.bitPattern) == out.array.map(\.bitPattern), "\(kernel): y alone, width \(width)")
            results[kernel] = [normalized.array, rstd.array, out.array, u.array]
        }
        for kernel in Self.wide {
            for (name, (portable, wide)) in zip(["x̂", "rstd", "y", "u"], zip(results[.portable]!, results[kernel]!)) {
                #expect(portable.map(\.bitPattern) == wide.map(\.bitPattern), "\(kernel): \(name), width \(width)")
            }
        }
        // And the norm is a norm: each row of x̂ has mean 0 and variance 1 (up to eps).
        if width >= 8 {
            let n = results[.portable]![0]
            for row in 0..<rows {
                let values = n[row * width..<(row + 1) * width].map(Double.init)
                let mean = values.reduce(0, +) / Double(width)
                #expect(abs(mean) < 1e-4, "row \(row) mean \(mean)")
            }
        }
    }

    @Test("LayerNorm backward, plain and through the modulation: each wide pass gives the portable loop's bits",
          arguments: [1, 8, 13, 16, 37, 512])
    func layerNormBackwardSameBits(width: Int) {
        let rows = Self.modulationRows.count, (x, gamma, beta, modulation, stride) = Self.normOperands(width: width, seed: 41)
        let dOut = Self.finite(rows * width, seed: 45, scale: 1)
        let normalized = FloatBuffer(count: rows * width), rstd = FloatBuffer(count: rows), y = FloatBuffer(count: rows * width)
        LayerNorm.forward(x.pointer, gamma: gamma.pointer, beta: beta.pointer, normalized: normalized.pointer, rstd: rstd.pointer,
                          out: y.pointer, rows: rows, width: width, kernel: .portable)
        var results: [VectorKernel: [[Float]]] = [:]
        for kernel in VectorKernel.available {
            let dX = Self.finite(rows * width, seed: 46, scale: 0.1)
            let dGamma = FloatBuffer(count: width), dBeta = FloatBuffer(count: width)
            let dModulation = FloatBuffer(Array(repeating: Float.nan, count: 4 * stride))  // every row read is written first
            Self.modulationRows.withUnsafeBufferPointer { map in
                LayerNorm.backward(dOut: dOut.pointer, normalized: normalized.pointer, rstd: rstd.pointer, gamma: gamma.pointer,
                                   dX: dX.pointer, dGamma: dGamma.pointer, dBeta: dBeta.pointer,
                                   modulation: .init(scaleShift: modulation.pointer + 1, stride: stride, rows: map.baseAddress!),
                                   y: y.pointer, dModulation: dModulation.pointer + 1, rows: rows, width: width, kernel: kernel)
            }
            // The plain norm, as the model's last one: gradients accumulate onto the first pass's.
            LayerNorm.backward(dOut: dOut.pointer, normalized: normalized.pointer, rstd: rstd.pointer, gamma: gamma.pointer,
                               dX: dX.pointer, dGamma: dGamma.pointer, dBeta: dBeta.pointer, rows: rows, width: width, kernel: kernel)
            let all = dModulation.array
            var written: [Float] = []
            for r in 0..<4 {
                let start = 1 + r * stride
                written += all[start..<start + 2 * width]
            }
            #expect(!written.contains { $0.isNaN }, "\(kernel) writes every modulation row's gradient, width \(width)")
            results[kernel] = [dX.array, dGamma.array, dBeta.array, written]
        }
        for kernel in Self.wide {
            for (name, (portable, wide)) in zip(["dx", "dγ", "dβ", "d[scale | shift]"], zip(results[.portable]!, results[kernel]!)) {
                #expect(portable.map(\.bitPattern) == wide.map(\.bitPattern), "\(kernel): \(name), width \(width)")
            }
        }
    }

    @Test("Column sums: each wide pass gives the portable loop's bits", arguments: [1, 7, 16, 37, 2048])
    func columnSumsSameBits(columns: Int) {
        let rows = 9, stride = columns + 5
        let x = FloatBuffer(Self.awkward(rows * stride, seed: 51, scale: 2))
        let start = Self.awkward(columns, seed: 52, scale: 1)
        let portable = FloatBuffer(start)
        Elementwise.accumulateColumnSums(x.pointer, rows: rows, columns: columns, stride: stride, into: portable.pointer, kernel: .portable)
        for kernel in Self.wide {
            let wide = FloatBuffer(start)
            Elementwise.accumulateColumnSums(x.pointer, rows: rows, columns: columns, stride: stride, into: wide.pointer, kernel: kernel)
            let differing = zip(portable.array, wide.array).filter { $0.0.bitPattern != $0.1.bitPattern && !($0.0.isNaN && $0.1.isNaN) }
            #expect(differing.isEmpty, "\(kernel): \(columns) columns: \(differing.prefix(3))")
        }
    }
}
