import Diffusion
import Foundation

/// rpo — Diffusion-RPO (Gu et al. 2024): DPO over the full batch contrast.
/// Rows [0, B) are chosen, [B, 2B) rejected, pairs sharing ε, t and prompt.
///   r^w_i = −(mse_θ(w_i) − mse_ref(w_i)),  r^l_j likewise
///   ω_ij = softmax_j(cos(c_i, c_j)/τ), c the reference model's condition vectors (no gradient)
///   L = mean_i Σ_j ω_ij·(−log σ(β/2·(r^w_i − r^l_j)))
/// With cond.kind = none, ω = identity (plain DPO).
/// Statistics: implicit_acc and reward_margin over the matched pairs (i = j).
public struct RPOObjective: Objective {
    public var beta: Double
    public var temperature: Double

    public init(beta: Double, temperature: Double) {
        self.beta = beta
        self.temperature = temperature
    }
    public var rowsPerExample: Int { 2 }
    public var needsReference: Bool { true }

    public func lossAndGradient(_ c: ObjectiveContext) -> ObjectiveResult {
        let B = c.examples, s = c.scratch, H = c.model.config.hidden
        c.runReferenceAndTheta(rows: 2 * B)
        let weights = contrastWeights(c, examples: B, hidden: H)
        var rewardChosen = [Double](repeating: 0, count: B), rewardRejected = [Double](repeating: 0, count: B)
        for i in 0..<B {
            rewardChosen[i] = -(s.thetaMSE[i] - s.referenceMSE[i])
            rewardRejected[i] = -(s.thetaMSE[B + i] - s.referenceMSE[B + i])
        }
        var loss = 0.0, accurate = 0.0, margin = 0.0
        for i in 0..<B { s.dMSE[i] = 0; s.dMSE[B + i] = 0 }
        for i in 0..<B {
            for j in 0..<B where weights[i * B + j] != 0 {
                let u = beta / 2 * (rewardChosen[i] - rewardRejected[j])
                loss -= weights[i * B + j] * logSigmoid(u)
                // ∂L/∂u_ij = −ω_ij·σ(−u_ij)/B;  ∂u/∂mse_θ(w_i) = −β/2,  ∂u/∂mse_θ(l_j) = +β/2.
                let dU = -weights[i * B + j] * sigmoid(-u) / Double(B)
                s.dMSE[i] += dU * (-beta / 2)
                s.dMSE[B + j] += dU * (beta / 2)
            }
            let matched = beta / 2 * (rewardChosen[i] - rewardRejected[i])
            if matched > 0 { accurate += 1 }
            margin += matched
        }
        c.backpropagateMSE(rows: 2 * B)
        return ObjectiveResult(loss: loss / Double(B), statistics: [
            "implicit_acc": accurate / Double(B), "reward_margin": margin / Double(B),
        ])
    }

    /// ω, [B, B] row-major: a softmax over cosine similarities of the reference
    /// condition vectors of the chosen rows; the identity for unconditional models.
    /// The cosines are symmetric, so each pair's dot product is taken once (i ≤ j), in Double
    /// with eight interleaved partial sums: B²/2 products of length H, which a single serial
    /// chain of adds made a tenth of a bench-m rpo step.
    func contrastWeights(_ c: ObjectiveContext, examples B: Int, hidden H: Int) -> [Double] {
        var weights = [Double](repeating: 0, count: B * B)
        if c.model.config.condition == .none {
            for i in 0..<B { weights[i * B + i] = 1 }
            return weights
        }
        let source = c.scratch.referenceCondition.pointer
        let vectors = (0..<B * H).map { Double(source[$0]) }
        var cosines = [Double](repeating: 0, count: B * B)
        vectors.withUnsafeBufferPointer { vectors in
            let v = vectors.baseAddress!
            let norms = (0..<B).map { i in Self.dot(v + i * H, v + i * H, count: H).squareRoot() }
            for i in 0..<B {
                for j in i..<B {
                    // torch.nn.functional.cosine_similarity, eps 1e−8.
                    let cosine = Self.dot(v + i * H, v + j * H, count: H) / max(norms[i] * norms[j], 1e-8)
                    cosines[i * B + j] = cosine
                    cosines[j * B + i] = cosine
                }
            }
        }
        for i in 0..<B {
            let logits = (0..<B).map { j in cosines[i * B + j] / temperature }
            let largest = logits.max() ?? 0
            let exps = logits.map { Foundation.exp($0 - largest) }
            let total = exps.reduce(0, +)
            for j in 0..<B { weights[i * B + j] = exps[j] / total }
        }
        return weights
    }

    /// Σ a·b in eight partial sums (lanes of two SIMD4s, then a serial tail), added in a fixed
    /// order: the same bits for (a, b) and (b, a).
    static func dot(_ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, count: Int) -> Double {
        var low = SIMD4<Double>(), high = SIMD4<Double>()
        let rawA = UnsafeRawPointer(a), rawB = UnsafeRawPointer(b)
        var k = 0
        while k + 8 <= count {
            let offset = k * MemoryLayout<Double>.stride
            low += rawA.loadUnaligned(fromByteOffset: offset, as: SIMD4<Double>.self)
                * rawB.loadUnaligned(fromByteOffset: offset, as: SIMD4<Double>.self)
            high += rawA.loadUnaligned(fromByteOffset: offset + 32, as: SIMD4<Double>.self)
                * rawB.loadUnaligned(fromByteOffset: offset + 32, as: SIMD4<Double>.self)
            k += 8
        }
        var tail = 0.0
        while k < count { tail += a[k] * b[k]; k += 1 }
        return (low + high).sum() + tail
    }
}
