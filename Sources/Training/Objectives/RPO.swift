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
    /// chain of adds made a tenth of a bench-m rpo step. Each row's softmax runs in place.
    func contrastWeights(_ c: ObjectiveContext, examples B: Int, hidden H: Int) -> [Double] {
        var weights = [Double](repeating: 0, count: B * B)
        if c.model.config.condition == .none {
            for i in 0..<B { weights[i * B + i] = 1 }
            return weights
        }
        let v = UnsafePointer(c.scratch.referenceCondition.pointer)
        let norms = (0..<B).map { i in Self.dot(v + i * H, v + i * H, count: H).squareRoot() }
        for i in 0..<B {
            for j in i..<B {
                // torch.nn.functional.cosine_similarity, eps 1e−8; the logit is cosine / τ.
                let cosine = Self.dot(v + i * H, v + j * H, count: H) / max(norms[i] * norms[j], 1e-8)
                weights[i * B + j] = cosine / temperature
                weights[j * B + i] = cosine / temperature
            }
        }
        weights.withUnsafeMutableBufferPointer { weights in
            for i in 0..<B {
                let row = UnsafeMutableBufferPointer(rebasing: weights[i * B..<(i + 1) * B])
                let largest = row.max() ?? 0
                var total = 0.0
                for j in 0..<B {
                    row[j] = Foundation.exp(row[j] - largest)
                    total += row[j]
                }
                for j in 0..<B { row[j] /= total }
            }
        }
        return weights
    }

    /// Σ a·b in Double, in eight partial sums (lanes of two SIMD4s, then a serial tail), added
    /// in a fixed order: the same bits for (a, b) and (b, a).
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Double {
        var low = SIMD4<Double>(), high = SIMD4<Double>()
        let rawA = UnsafeRawPointer(a), rawB = UnsafeRawPointer(b)
        @inline(__always) func lanes(_ raw: UnsafeRawPointer, _ offset: Int) -> SIMD4<Double> {
            SIMD4<Double>(raw.loadUnaligned(fromByteOffset: offset, as: SIMD4<Float>.self))
        }
        var k = 0
        while k + 8 <= count {
            let offset = k * MemoryLayout<Float>.stride
            low += lanes(rawA, offset) * lanes(rawB, offset)
            high += lanes(rawA, offset + 16) * lanes(rawB, offset + 16)
            k += 8
        }
        var tail = 0.0
        while k < count { tail += Double(a[k]) * Double(b[k]); k += 1 }
        return (low + high).sum() + tail
    }
}
