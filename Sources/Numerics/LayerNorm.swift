import CKernels

/// LayerNorm over the last dimension (eps 1e−5, as PyTorch): y = x̂·γ + β with
/// x̂ = (x − mean)·rstd. Forward keeps x̂ and rstd per row for the backward pass.
///
/// A block of the denoiser modulates what it normalises (adaLN: u = y·(1 + scale) + shift),
/// so both passes take that modulation too: forward writes u in the same pass over the row,
/// and backward starts from ∂L/∂u, never writing ∂L/∂y out. CKernels' AVX-512 passes do the
/// Swift loops' operations in the same order (the reductions in the same 8 lanes), so they
/// give the same bits; Swift's baseline x86-64 build makes these loops 4-wide SSE.
public enum LayerNorm {
    public static let epsilon: Float = 1e-5

    /// u = y·(1 + scale) + shift for each normalised row r, with [scale | shift] row `rows[r]`
    /// of a matrix whose rows are `stride` apart (rows sharing their conditioning share one).
    public struct Modulation {
        public let scaleShift: UnsafePointer<Float>
        public let stride: Int
        public let rows: UnsafePointer<Int32>

        public init(scaleShift: UnsafePointer<Float>, stride: Int, rows: UnsafePointer<Int32>) {
            self.scaleShift = scaleShift
            self.stride = stride
            self.rows = rows
        }

        @inline(__always)
        func scale(ofRow row: Int) -> UnsafePointer<Float> { scaleShift + Int(rows[row]) * stride }
    }

    /// Normalises `rows` rows of x. Each output may be nil when nothing reads it: a pass with no
    /// backward keeps neither x̂ nor rstd, nor y when it is modulated into `modulated`.
    public static func forward(
        _ x: UnsafePointer<Float>, gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
        normalized: UnsafeMutablePointer<Float>?, rstd: UnsafeMutablePointer<Float>?,
        out: UnsafeMutablePointer<Float>?, modulation: Modulation? = nil, modulated: UnsafeMutablePointer<Float>? = nil,
        rows: Int, width: Int, kernel: VectorKernel = .fastest
    ) {
        precondition((modulation == nil) == (modulated == nil), "a modulation needs somewhere to write")
        switch kernel {
        case .avx512:
            return preftune_layernorm_forward_avx512(x, gamma, beta, normalized, rstd, out, modulation?.scaleShift,
                                                     Int64(modulation?.stride ?? 0), modulation?.rows, modulated,
                                                     Int64(rows), Int64(width))
        case .avx2:
            return preftune_layernorm_forward_avx2(x, gamma, beta, normalized, rstd, out, modulation?.scaleShift,
                                                   Int64(modulation?.stride ?? 0), modulation?.rows, modulated,
                                                   Int64(rows), Int64(width))
        case .portable: break
        }
        typealias V = Elementwise.Vector
        for row in 0..<rows {
            let xr = x + row * width
            var sum = V(), i = 0
            while i + 8 <= width { sum += Elementwise.load(xr + i); i += 8 }
            var total = sum.sum()
            while i < width { total += xr[i]; i += 1 }
            let mean = total / Float(width)

            var squares = V(); i = 0
            while i + 8 <= width { let d = Elementwise.load(xr + i) - mean; squares += d * d; i += 8 }
            var variance = squares.sum()
            while i < width { let d = xr[i] - mean; variance += d * d; i += 1 }
            let inverse = 1 / (variance / Float(width) + epsilon).squareRoot()
            rstd?[row] = inverse

            let scale = modulation?.scale(ofRow: row)
            for j in 0..<width {
                let n = (xr[j] - mean) * inverse
                normalized?[row * width + j] = n
                let y = n * gamma[j] + beta[j]
                out?[row * width + j] = y
                if let scale { modulated![row * width + j] = y * (1 + scale[j]) + scale[width + j] }
            }
        }
    }

    /// dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) with g = dy·γ, accumulated into `dX`
    /// (the input is a residual stream that already carries a gradient);
    /// dγ += Σ dy·x̂, dβ += Σ dy.
    ///
    /// With a modulation, `dOut` is ∂L/∂u: then dy = du·(1 + scale), and the modulation's
    /// gradient row [dscale | dshift] takes du·y and du (`y` is forward's `out`). The first row
    /// to read a modulation row writes its gradient, the others add to it, so rows must number
    /// their modulation rows in order of first appearance.
    public static func backward(
        dOut: UnsafePointer<Float>, normalized: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
        gamma: UnsafePointer<Float>, dX: UnsafeMutablePointer<Float>,
        dGamma: UnsafeMutablePointer<Float>, dBeta: UnsafeMutablePointer<Float>,
        modulation: Modulation? = nil, y: UnsafePointer<Float>? = nil, dModulation: UnsafeMutablePointer<Float>? = nil,
        rows: Int, width: Int, kernel: VectorKernel = .fastest
    ) {
        if let modulation {
            precondition(y != nil && dModulation != nil, "a modulated backward needs y and somewhere for its gradient")
            var written: Int32 = 0
            for row in 0..<rows {
                precondition(modulation.rows[row] <= written, "modulation rows are numbered in order of first appearance")
                if modulation.rows[row] == written { written += 1 }
            }
        }
        switch kernel {
        case .avx512:
            return preftune_layernorm_backward_avx512(dOut, normalized, rstd, gamma, dX, dGamma, dBeta, modulation?.scaleShift,
                                                      Int64(modulation?.stride ?? 0), modulation?.rows, y, dModulation,
                                                      Int64(rows), Int64(width))
        case .avx2:
            return preftune_layernorm_backward_avx2(dOut, normalized, rstd, gamma, dX, dGamma, dBeta, modulation?.scaleShift,
                                                    Int64(modulation?.stride ?? 0), modulation?.rows, y, dModulation,
                                                    Int64(rows), Int64(width))
        case .portable: break
        }
        typealias V = Elementwise.Vector
        var written: Int32 = 0
        for row in 0..<rows {
            let du = dOut + row * width, n = normalized + row * width, dx = dX + row * width
            let scale = modulation?.scale(ofRow: row)
            @inline(__always) func dy(_ j: Int) -> Float { scale.map { du[j] * (1 + $0[j]) } ?? du[j] }
            @inline(__always) func dy8(_ j: Int) -> V {
                scale.map { Elementwise.load(du + j) * (1 + Elementwise.load($0 + j)) } ?? Elementwise.load(du + j)
            }
            var sumG = V(), sumGN = V(), i = 0
            while i + 8 <= width {
                let g = dy8(i) * Elementwise.load(gamma + i)
                sumG += g
                sumGN += g * Elementwise.load(n + i)
                i += 8
            }
            var meanG = sumG.sum(), meanGN = sumGN.sum()
            while i < width { let g = dy(i) * gamma[i]; meanG += g; meanGN += g * n[i]; i += 1 }
            meanG /= Float(width)
            meanGN /= Float(width)
            let r = rstd[row]

            var dScale: UnsafeMutablePointer<Float>?, accumulate = false
            if let modulation {
                let shared = modulation.rows[row]
                accumulate = shared != written
                if !accumulate { written += 1 }
                dScale = dModulation! + Int(shared) * modulation.stride
            }
            for j in 0..<width {
                if let dScale {
                    let ds = du[j] * y![row * width + j]
                    dScale[j] = accumulate ? dScale[j] + ds : ds
                    dScale[width + j] = accumulate ? dScale[width + j] + du[j] : du[j]
                }
                let d = dy(j)
                let g = d * gamma[j]
                dx[j] = dx[j] + r * (g - meanG - n[j] * meanGN)
                dGamma[j] = dGamma[j] + d * n[j]
                dBeta[j] = dBeta[j] + d
            }
        }
    }
}
