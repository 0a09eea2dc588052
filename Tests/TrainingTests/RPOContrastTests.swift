import TestSupport
import Testing
@testable import Training

/// RPO's contrast weights take each pair's cosine once and mirror it, which is exact only if the
/// dot product gives the same bits in either order.
@Suite(.computeThread) struct RPOContrastTests {
    @Test(arguments: [1, 7, 8, 9, 512, 515])
    func theDotProductIsSymmetricAndAccurate(count: Int) {
        let a = (0..<count).map { Float(($0 * 37) % 101) / 7 - 6.5 }
        let b = (0..<count).map { Float(($0 * 53) % 97) / 11 - 4.25 }
        let forward = RPOObjective.dot(a, b, count: count), backward = RPOObjective.dot(b, a, count: count)
        #expect(forward == backward)
        let serial = zip(a, b).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        #expect(abs(forward - serial) <= 1e-12 * zip(a, b).reduce(0.0) { $0 + abs(Double($1.0) * Double($1.1)) })
    }
}
