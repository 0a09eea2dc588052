import Foundation
@testable import Numerics
import Testing

/// The two math backends compute the same products: every transpose, α and β the model
/// uses, and strides wider than the matrices, on oneDNN's primitives (without falling back)
/// against OpenBLAS's SGEMM.
@Suite struct MathBackendTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let transA, transB: Bool
        let m, n, k: Int
        let alpha, beta: Float
        var testDescription: String { "\(transA ? "Aᵀ" : "A")·\(transB ? "Bᵀ" : "B") \(m)×\(n)×\(k) α \(alpha) β \(beta)" }
    }

    static let cases: [Case] = [
        Case(transA: false, transB: true, m: 64, n: 256, k: 128, alpha: 1, beta: 1),    // Y += X·Wᵀ (a linear layer)
        Case(transA: true, transB: false, m: 128, n: 96, k: 64, alpha: 1, beta: 1),     // dW += dYᵀ·X
        Case(transA: false, transB: false, m: 64, n: 96, k: 128, alpha: 1, beta: 0),    // dX = dY·W
        Case(transA: true, transB: true, m: 17, n: 33, k: 9, alpha: 0.5, beta: 2),
        Case(transA: false, transB: false, m: 1, n: 1, k: 1, alpha: 1, beta: 0),
    ]

    @Test(arguments: cases)
    func oneDNNMatchesOpenBLAS(_ c: Case) throws {
        try #require(OneDNN.supportsCPU, "oneDNN needs AVX2: \(OneDNN.isaName)")
        var random = Philox(seed: 5)
        // Row strides wider than the rows: the products must honour lda, ldb and ldc.
        let lda = (c.transA ? c.m : c.k) + 3, ldb = (c.transB ? c.k : c.n) + 5, ldc = c.n + 2
        let a = FloatBuffer(count: (c.transA ? c.k : c.m) * lda), b = FloatBuffer(count: (c.transB ? c.n : c.k) * ldb)
        random.fillUniform(a.pointer, count: a.count, low: -1, high: 1)
        random.fillUniform(b.pointer, count: b.count, low: -1, high: 1)
        let start = FloatBuffer(count: c.m * ldc)
        random.fillUniform(start.pointer, count: start.count, low: -1, high: 1)
        let expected = start.copy(), actual = start.copy()
        MathBackend.withBackend(.openblas) {
            BLAS.sgemm(transA: c.transA, transB: c.transB, m: c.m, n: c.n, k: c.k, alpha: c.alpha, a: a.pointer, lda: lda,
                       b: b.pointer, ldb: ldb, beta: c.beta, c: expected.pointer, ldc: ldc)
        }
        let shape = OneDNN.ProductShape(transA: c.transA, transB: c.transB, m: c.m, n: c.n, k: c.k, lda: lda, ldb: ldb, ldc: ldc,
                                        alpha: c.alpha, beta: c.beta)
        #expect(OneDNN.sgemm(shape, a: a.pointer, b: b.pointer, c: actual.pointer), "oneDNN refused the product")
        var worst: Float = 0
        for row in 0..<c.m {
            for column in 0..<ldc {
                let i = row * ldc + column
                // Padding past n keeps its values; the rest agrees to rounding.
                if column >= c.n { #expect(actual[i] == start[i]) } else { worst = max(worst, abs(actual[i] - expected[i])) }
            }
        }
        #expect(worst <= 1e-4 * Float(c.k), "largest difference \(worst)")
    }

    @Test func aThreadMayUseTheOtherBackendForAWhile() {
        let process = MathBackend.current
        let other: MathBackend = process == .onednn ? .openblas : .onednn
        MathBackend.withBackend(other) {
            #expect(MathBackend.active == other)
            MathBackend.withBackend(process) { #expect(MathBackend.active == process) }
            #expect(MathBackend.active == other)
        }
        #expect(MathBackend.active == process && MathBackend.current == process)
        #expect(MathBackend.description(of: .onednn).hasPrefix("oneDNN 2.") && MathBackend.description(of: .openblas).hasPrefix("OpenBLAS ("))
    }
}
