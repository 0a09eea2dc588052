import CCeilings
import Numerics
import TestSupport
import Testing

/// The probes `make bench` measures the machine's ceilings with do the work they claim, so the
/// rates it reports are rates of that work.
@Suite(.computeThread) struct CeilingsTests {
    /// AdamW's traffic pass reads p, g, m and v and writes p, m, v and g, every value, tail included.
    @Test func theTrafficPassTouchesEveryValueAsAdamWDoes() {
        let count = 16 * 5 + 7
        var p = (0..<count).map { Float($0) }, m = p.map { $0 * 2 }, v = p.map { $0 * 3 }
        var g = (0..<count).map { Float($0 % 11) + 0.5 }
        let (p0, m0, v0, g0) = (p, m, v, g)
        preftune_ceilings_adamw_traffic(&p, &g, &m, &v, Int64(count))
        for i in 0..<count {
            #expect(p[i] == p0[i] + g0[i], "p at \(i)")
            #expect(m[i] == m0[i] + g0[i], "m at \(i)")
            #expect(v[i] == v0[i] + g0[i], "v at \(i)")
        }
        #expect(g.allSatisfy { $0 == 0 })
    }

    /// Each of the probe's lanes ran one fused multiply-add per round: its sum is what `rounds` FMAs of
    /// 10⁻³·10⁻³ into each lane give, summed as the probe sums its accumulators.
    @Test(.enabled(if: preftune_ceilings_fma_flops_per_round() > 0, "this CPU has no FMA"))
    func theFMAProbeRunsEveryChainEveryRound() throws {
        let avx512 = preftune_ceilings_fma_flops_per_round() == 18 * 16 * 2
        #expect(avx512 == (VectorKernel.fastest == .avx512), "the probe uses the widest vectors the kernels do")
        let x: Float = 1e-3
        for rounds in [1, 2, 1000] {
            var lane: Float = 0
            for _ in 0..<rounds { lane = lane.addingProduct(x, x) }  // fused, as VFMADD
            // AVX-512: 18 equal accumulators added as 16 + 2, then 16 equal lanes (exact doublings).
            // AVX2: 9 accumulators added as 8 + 1, then 8 equal lanes.
            let expected = avx512 ? 16 * (16 * lane + 2 * lane) : 8 * (8 * lane + lane)
            #expect(preftune_ceilings_fma_rounds(Int64(rounds)) == expected, "\(rounds) rounds")
        }
    }
}
