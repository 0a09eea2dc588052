import Foundation
@testable import Numerics
import Testing
@testable import Training

/// CKernels' AVX-512 passes are transcriptions of the Swift loops, operation for operation:
/// they must give the same bits, or a job's results would depend on the CPU it ran on.
@Suite(.enabled(if: VectorKernel.fastest == .avx512, "this CPU has no AVX-512"))
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

    @Test("Σ x²: the AVX-512 pass gives the portable loop's bits",
          arguments: [0, 7, 8, 1023, 1024, 1029, 4 * 1024, 4 * 1024 + 3, 9 * 1024 + 13, Parallel.chunkSize])
    func sumOfSquaresSameBits(count: Int) {
        let x = FloatBuffer(Self.awkward(count, seed: 7, scale: 0.02).map { $0.isNaN || abs($0) > 1e10 ? 1 : $0 })
        let portable = Elementwise.sumOfSquares(x.pointer, count: count, kernel: .portable)
        let wide = Elementwise.sumOfSquares(x.pointer, count: count, kernel: .avx512)
        #expect(portable.bitPattern == wide.bitPattern, "\(count) values: \(portable) against \(wide)")
    }
}
