import Foundation
@testable import Numerics
import TestSupport
import Testing
@testable import Training

/// CKernels' AVX-512 passes are transcriptions of the Swift loops, operation for operation:
/// they must give the same bits, or a job's results would depend on the CPU it ran on.
@Suite(.computeThread, .enabled(if: VectorKernel.fastest == .avx512, "this CPU has no AVX-512"))
struct VectorKernelTests {
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

    @Test("AdamW: the AVX-512 pass gives the portable loop's bits", arguments: [0, 1, 15, 16, 17, 1000, 4099])
    func adamWSameBits(count: Int) {
        let coefficientsPerStep: [AdamW.Coefficients] = [
            .init(decay: 0.999999, oneMinusBeta1: 0.1, beta2: 0.999, oneMinusBeta2: 0.001, stepSize: 1e-3,
                  correction2: 0.0316, epsilon: 1e-8, gradientScale: 1),
            .init(decay: 0.99, oneMinusBeta1: 0.05, beta2: 0.98, oneMinusBeta2: 0.02, stepSize: 3e-4,
                  correction2: 0.5, epsilon: 1e-6, gradientScale: 0.0371),
        ]
        var state: [VectorKernel: [[Float]]] = [:]
        for kernel in [VectorKernel.portable, .avx512] {
            let p = FloatBuffer(Self.awkward(count, seed: 1, scale: 0.05)), m = FloatBuffer(Self.awkward(count, seed: 2, scale: 1e-3))
            let v = FloatBuffer(Self.awkward(count, seed: 3, scale: 1e-3).map { abs($0) })
            for (step, c) in coefficientsPerStep.enumerated() {
                let g = FloatBuffer(Self.awkward(count, seed: 10 + UInt64(step), scale: 0.3))
                AdamW.update(p.pointer, g.pointer, m.pointer, v.pointer, count: count, c, kernel: kernel)
                #expect(g.array.allSatisfy { $0 == 0 }, "\(kernel) leaves the gradients zeroed")
            }
            state[kernel] = [p.array, m.array, v.array]
        }
        for (name, (portable, wide)) in zip(["p", "m", "v"], zip(state[.portable]!, state[.avx512]!)) {
            #expect(portable.map(\.bitPattern) == wide.map(\.bitPattern), "\(name), \(count) values")
        }
    }

    @Test("SiLU forward, in place and backward: the AVX-512 passes give the portable loops' bits",
          arguments: [1, 16, 33, 4099])
    func siluSameBits(count: Int) {
        // Past e^x's clamps (±88.3, −87.3) and through zero, infinities and NaN.
        var a = Self.awkward(count, seed: 21, scale: 30)
        let edges: [Float] = [88.3, -88.3, 87.3, -87.3, 89, -90, .infinity, -.infinity, 0, -0.0, 1e-30]
        for (i, edge) in edges.enumerated() where i * 3 < count { a[i * 3] = edge }
        let dOut = FloatBuffer(Self.awkward(count, seed: 22, scale: 1))
        var results: [VectorKernel: [[Float]]] = [:]
        for kernel in [VectorKernel.portable, .avx512] {
            let input = FloatBuffer(a), sigmoid = FloatBuffer(count: count), out = FloatBuffer(count: count)
            Elementwise.siluForward(input.pointer, sigmoid: sigmoid.pointer, out: out.pointer, count: count, kernel: kernel)
            let inPlace = FloatBuffer(a)
            Elementwise.siluInPlace(inPlace.pointer, count: count, kernel: kernel)
            // In place over dOut, as the backward pass calls it.
            let dA = dOut.copy()
            Elementwise.siluBackward(input.pointer, sigmoid: sigmoid.pointer, dOut: dA.pointer, dA: dA.pointer, count: count, kernel: kernel)
            results[kernel] = [sigmoid.array, out.array, inPlace.array, dA.array]
        }
        for (name, (portable, wide)) in zip(["σ", "out", "in place", "da"], zip(results[.portable]!, results[.avx512]!)) {
            // Which NaN comes out of an operation on two NaNs depends on its operands' order, which
            // LLVM may swap in the Swift loop; a NaN is all a result needs to be there.
            let differing = zip(portable, wide).enumerated().filter {
                $0.element.0.bitPattern != $0.element.1.bitPattern && !($0.element.0.isNaN && $0.element.1.isNaN)
            }
            #expect(differing.isEmpty, "\(name), \(count) values: \(differing.prefix(5).map { "[\($0.offset)] a \(a[$0.offset]) → \($0.element.0) against \($0.element.1)" })")
        }
    }

    @Test("Σ x²: the AVX-512 pass gives the portable loop's bits",
          arguments: [0, 7, 8, 1023, 1024, 1029, 4 * 1024, 4 * 1024 + 3, 9 * 1024 + 13, Parallel.chunkSize])
    func sumOfSquaresSameBits(count: Int) {
        let x = FloatBuffer(Self.awkward(count, seed: 7, scale: 0.02).map { $0.isNaN || abs($0) > 1e10 ? 1 : $0 })
        let portable = Elementwise.sumOfSquares(x.pointer, count: count, kernel: .portable)
        let wide = Elementwise.sumOfSquares(x.pointer, count: count, kernel: .avx512)
        #expect(portable.bitPattern == wide.bitPattern, "\(count) values: \(portable) against \(wide)")
    }
}
