/// LayerNorm over the last dimension (eps 1e−5, as PyTorch): y = x̂·γ + β with
/// x̂ = (x − mean)·rstd. Forward keeps x̂ and rstd per row for the backward pass.
public enum LayerNorm {
    public static let epsilon: Float = 1e-5

    public static func forward(
        _ x: UnsafePointer<Float>, gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
        normalized: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
        out: UnsafeMutablePointer<Float>, rows: Int, width: Int
    ) {
        typealias V = Elementwise.Vector
        for row in 0..<rows {
            let xr = x + row * width, nr = normalized + row * width, yr = out + row * width
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
            rstd[row] = inverse

            i = 0
            while i + 8 <= width {
                let n = (Elementwise.load(xr + i) - mean) * inverse
                Elementwise.store(n, nr + i)
                Elementwise.store(n * Elementwise.load(gamma + i) + Elementwise.load(beta + i), yr + i)
                i += 8
            }
            while i < width {
                let n = (xr[i] - mean) * inverse
                nr[i] = n
                yr[i] = n * gamma[i] + beta[i]
                i += 1
            }
        }
    }

    /// dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) with g = dy·γ, accumulated into `dX`
    /// (the input is a residual stream that already carries a gradient);
    /// dγ += Σ dy·x̂, dβ += Σ dy.
    public static func backward(
        dOut: UnsafePointer<Float>, normalized: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
        gamma: UnsafePointer<Float>, dX: UnsafeMutablePointer<Float>,
        dGamma: UnsafeMutablePointer<Float>, dBeta: UnsafeMutablePointer<Float>, rows: Int, width: Int
    ) {
        typealias V = Elementwise.Vector
        for row in 0..<rows {
            let dy = dOut + row * width, n = normalized + row * width, dx = dX + row * width
            var sumG = V(), sumGN = V(), i = 0
            while i + 8 <= width {
                let g = Elementwise.load(dy + i) * Elementwise.load(gamma + i)
                sumG += g
                sumGN += g * Elementwise.load(n + i)
                i += 8
            }
            var meanG = sumG.sum(), meanGN = sumGN.sum()
            while i < width { let g = dy[i] * gamma[i]; meanG += g; meanGN += g * n[i]; i += 1 }
            meanG /= Float(width)
            meanGN /= Float(width)
            let r = rstd[row]

            i = 0
            while i + 8 <= width {
                let d = Elementwise.load(dy + i), nn = Elementwise.load(n + i)
                let g = d * Elementwise.load(gamma + i)
                Elementwise.store(Elementwise.load(dx + i) + r * (g - meanG - nn * meanGN), dx + i)
                Elementwise.store(Elementwise.load(dGamma + i) + d * nn, dGamma + i)
                Elementwise.store(Elementwise.load(dBeta + i) + d, dBeta + i)
                i += 8
            }
            while i < width {
                let g = dy[i] * gamma[i]
                dx[i] += r * (g - meanG - n[i] * meanGN)
                dGamma[i] += dy[i] * n[i]
                dBeta[i] += dy[i]
                i += 1
            }
        }
    }
}
