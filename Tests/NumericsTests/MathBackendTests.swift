import Foundation
@testable import Numerics
import TestSupport
import Testing

/// The two math backends compute the same products: every transpose, α and β the model
/// uses, and strides wider than the matrices, on oneDNN's primitives (without falling back)
/// against OpenBLAS's SGEMM.
@Suite(.computeThread) struct MathBackendTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let transA, transB: Bool
        let m, n, k: Int
        let alpha, beta: Float
        var testDescription: String { "\(transA ? "Aᵀ" : "A")·\(transB ? "Bᵀ" : "B") \(m)×\(n)×\(k) α \(alpha) β \(beta)" }
    }

    /// The precisions this CPU computes natively: bf16 only with AVX512-BF16 or AMX. Elsewhere a bf16
    /// product is emulated, which `layerEpiloguesAgreeOnBothBackends` covers on every CPU.
    static let nativePrecisions: [MathPrecision] = OneDNN.supportsBF16 ? [.fp32, .bf16] : [.fp32]

    static let cases: [Case] = [
        Case(transA: false, transB: true, m: 64, n: 256, k: 128, alpha: 1, beta: 1),    // Y += X·Wᵀ (a linear layer)
        Case(transA: true, transB: false, m: 128, n: 96, k: 64, alpha: 1, beta: 1),     // dW += dYᵀ·X
        Case(transA: false, transB: false, m: 64, n: 96, k: 128, alpha: 1, beta: 0),    // dX = dY·W
        Case(transA: true, transB: true, m: 17, n: 33, k: 9, alpha: 0.5, beta: 2),
        Case(transA: false, transB: false, m: 1, n: 1, k: 1, alpha: 1, beta: 0),
    ]

    @Test(.enabled(if: OneDNN.supportsCPU, "oneDNN needs AVX2: \(OneDNN.isaName)"), arguments: cases)
    func oneDNNMatchesOpenBLAS(_ c: Case) throws {
        // Row strides wider than the rows: the products must honour lda, ldb and ldc.
        let (a, b, start, lda, ldb, ldc) = Self.operands(c, seed: 5)
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

    /// The bench splits a step into products and the rest with this clock: it must count the
    /// time and work inside products, on either entry point, and nothing outside them or once it is off.
    @Test func productClockCountsTimeInsideProductsOnly() {
        let n = 256
        let a = FloatBuffer(count: n * n), b = FloatBuffer(count: n * n), c = FloatBuffer(count: n * n), bias = FloatBuffer(count: n)
        let started = Date()
        let (_, inside) = ProductClock.measuring {
            for _ in 0..<20 {
                BLAS.sgemm(m: n, n: n, k: n, a: a.pointer, lda: n, b: b.pointer, ldb: n, c: c.pointer, ldc: n)
                BLAS.linear(a.pointer, rows: n, inputs: n, weight: b.pointer, bias: bias.pointer, outputs: n, into: c.pointer)
            }
        }
        let wall = Date().timeIntervalSince(started)
        #expect(inside.seconds > 0 && inside.seconds <= wall, "\(inside.seconds) s inside products, \(wall) s in all")
        #expect(inside.flops == 20 * 2 * (2 * Double(n * n * n)), "2·m·n·k for each product")
        // Another thread's products are its own: this thread's clock sees none of them.
        let (_, outside) = ProductClock.measuring {
            let operands = UncheckedSendable((a.pointer, b.pointer, c.pointer))
            let other = Thread {
                let (a, b, c) = operands.value
                BLAS.sgemm(m: n, n: n, k: n, a: a, lda: n, b: b, ldb: n, c: c, ldc: n)
            }
            other.start()
            while !other.isFinished { Thread.sleep(forTimeInterval: 0.005) }
        }
        #expect(outside.nanoseconds == 0 && outside.flops == 0)
    }

    /// A job's thread and its companion run the reference's and θ's forward passes side by side, one
    /// core each. The companion's products count in the tally of the thread that gave it the work,
    /// and each product on one of the two cores counts half its time, so the tally fills no more than
    /// the wall time and its rate compares with a product on both cores (the bench's pair-step bounds).
    @Test func aCompanionsProductsCountInItsCallersTallyAtTheirShareOfTheCores() {
        let n = 192, calls = 12
        let mine = (0..<3).map { _ in FloatBuffer(count: n * n) }, theirs = (0..<3).map { _ in FloatBuffer(count: n * n) }
        let companion = CompanionThread(name: "clock-test")
        func products(_ m: [FloatBuffer]) {
            for _ in 0..<calls { BLAS.sgemm(m: n, n: n, k: n, a: m[0].pointer, lda: n, b: m[1].pointer, ldb: n, c: m[2].pointer, ldc: n) }
        }
        let operands = UncheckedSendable(theirs)
        let started = DispatchTime.now().uptimeNanoseconds
        let (_, tally) = ProductClock.measuring {
            companion.sideBySide({ products(mine) }, { products(operands.value) })
        }
        let wall = DispatchTime.now().uptimeNanoseconds - started
        #expect(tally.flops == 2 * Double(calls) * 2 * Double(n * n * n), "both threads' products, 2·m·n·k each")
        #expect(tally.nanoseconds > 0 && tally.nanoseconds <= wall, "\(tally.nanoseconds) ns counted in \(wall) ns")
        // Outside a side-by-side section a product has both cores, and counts all its time.
        let (_, alone) = ProductClock.measuring { products(mine) }
        #expect(alone.flops == Double(calls) * 2 * Double(n * n * n))
    }

    /// The bench's bounds: a run with its products' work done at another rate, the rest unchanged.
    @Test func aTallyGivesTheRateOfARunWithItsProductsAtAnotherRate() {
        var tally = ProductClock.Tally()
        tally.nanoseconds = 500_000_000
        tally.flops = 100e9
        #expect(tally.rate == 200, "100 GFLOP in half a second")
        // 1 s in all, 0.5 s of it in products; at 400 GFLOP/s they take 0.25 s: 150 items in 0.75 s.
        #expect(tally.itemsPerSecond(150, inRunOf: 1, productsAt: 400) == 200)
        // At the rate they ran at, the bound is the run's own rate.
        #expect(abs(tally.itemsPerSecond(150, inRunOf: 1, productsAt: 200) - 150) < 1e-9)
        let twice = { var sum = tally; sum.add(tally); return sum }()
        #expect(twice.perRun(2).nanoseconds == tally.nanoseconds && twice.perRun(2).flops == tally.flops)
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

    /// Operands and a starting C for a case, with strides wider than the rows.
    static func operands(_ c: Case, seed: UInt64) -> (a: FloatBuffer, b: FloatBuffer, start: FloatBuffer, lda: Int, ldb: Int, ldc: Int) {
        var random = Philox(seed: seed)
        let lda = (c.transA ? c.m : c.k) + 3, ldb = (c.transB ? c.k : c.n) + 5, ldc = c.n + 2
        let a = FloatBuffer(count: (c.transA ? c.k : c.m) * lda), b = FloatBuffer(count: (c.transB ? c.n : c.k) * ldb)
        random.fillUniform(a.pointer, count: a.count, low: -1, high: 1)
        random.fillUniform(b.pointer, count: b.count, low: -1, high: 1)
        let start = FloatBuffer(count: c.m * ldc)
        random.fillUniform(start.pointer, count: start.count, low: -1, high: 1)
        return (a, b, start, lda, ldb, ldc)
    }

    static func largestDifference(_ x: FloatBuffer, _ y: FloatBuffer) -> Float {
        (0..<x.count).reduce(0) { max($0, abs(x[$1] - y[$1])) }
    }

    /// A native bf16 product (AVX512-BF16 / AMX kernels) and the emulation (operands rounded, an
    /// fp32 product) agree up to the order of the fp32 sums; both differ from fp32's.
    @Test(.enabled(if: OneDNN.supportsBF16, "no bf16 instructions on \(OneDNN.isaName)"), arguments: cases)
    func bf16KernelsMatchTheirEmulation(_ c: Case) throws {
        let (a, b, start, lda, ldb, ldc) = Self.operands(c, seed: 7)
        let native = start.copy(), emulated = start.copy(), fp32 = start.copy()
        let shape = OneDNN.ProductShape(transA: c.transA, transB: c.transB, m: c.m, n: c.n, k: c.k, lda: lda, ldb: ldb, ldc: ldc,
                                        alpha: c.alpha, beta: c.beta, bf16: true)
        #expect(OneDNN.sgemm(shape, a: a.pointer, b: b.pointer, c: native.pointer), "oneDNN refused the bf16 product")
        BLAS.emulatedBF16(transA: c.transA, transB: c.transB, m: c.m, n: c.n, k: c.k, alpha: c.alpha, a: a.pointer, lda: lda,
                          b: b.pointer, ldb: ldb, beta: c.beta, c: emulated.pointer, ldc: ldc)
        MathBackend.withBackend(.openblas) {
            BLAS.sgemm(transA: c.transA, transB: c.transB, m: c.m, n: c.n, k: c.k, alpha: c.alpha, a: a.pointer, lda: lda,
                       b: b.pointer, ldb: ldb, beta: c.beta, c: fp32.pointer, ldc: ldc)
        }
        #expect(Self.largestDifference(native, emulated) <= 1e-5 * Float(c.k) * max(1, abs(c.beta)))
        if c.k > 1 { #expect(Self.largestDifference(native, fp32) > 1e-4, "the bf16 product gave fp32's result") }
        // And `BLAS.sgemm` takes the native path inside `MathPrecision.with(.bf16)`.
        let dispatched = start.copy()
        MathBackend.withBackend(.onednn) {
            MathPrecision.with(.bf16) {
            BLAS.sgemm(transA: c.transA, transB: c.transB, m: c.m, n: c.n, k: c.k, alpha: c.alpha, a: a.pointer, lda: lda,
                           b: b.pointer, ldb: ldb, beta: c.beta, c: dispatched.pointer, ldc: ldc)
            }
        }
        #expect(Self.largestDifference(dispatched, native) == 0)
    }

    /// Products of packed weights give the unpacked results, make each packed copy once, and keep
    /// to the budget (past it they pack per call, still correct).
    @Test(.enabled(if: OneDNN.supportsCPU, "oneDNN needs AVX2: \(OneDNN.isaName)"), arguments: nativePrecisions)
    func packedWeightsAreMadeOnceAndGiveTheSameProducts(_ precision: MathPrecision) throws {
        let c = Case(transA: false, transB: true, m: 64, n: 256, k: 128, alpha: 1, beta: 1)
        let (a, b, start, lda, ldb, ldc) = Self.operands(c, seed: 11)
        func product(_ packed: PackedWeights?) -> FloatBuffer {
            let result = start.copy()
            MathBackend.withBackend(.onednn) {
                MathPrecision.with(precision) {
                    let run = {
                        BLAS.sgemm(transB: true, m: c.m, n: c.n, k: c.k, a: a.pointer, lda: lda, b: b.pointer, ldb: ldb,
                                   beta: 1, c: result.pointer, ldc: ldc)
                    }
                    if let packed { packed.using(run) } else { run() }
                }
            }
            return result
        }
        let unpacked = product(nil)
        let packed = PackedWeights(b)
        let first = product(packed)
        let held = packed.bytesHeld
        let again = product(packed)
        #expect(held >= c.n * c.k * (precision == .fp32 ? 4 : 2), "no packed copy was kept")
        #expect(packed.bytesHeld == held, "the second product packed again")
        #expect(Self.largestDifference(first, unpacked) <= 1e-5 * Float(c.k))
        #expect(Self.largestDifference(again, first) == 0)
        let starved = PackedWeights(b, budget: 0)
        #expect(Self.largestDifference(product(starved), first) == 0)
        #expect(starved.bytesHeld == 0)
    }

    /// Products of the same weights over different numbers of rows (a sampler's halves, the
    /// modulation's distinct (t, c) rows) share one packed copy when oneDNN packs them alike, so
    /// a sampling's copies stay within the budget and no product packs at every call.
    @Test(.enabled(if: OneDNN.supportsCPU, "oneDNN needs AVX2: \(OneDNN.isaName)"), arguments: nativePrecisions)
    func productsOverOtherRowCountsShareThePackedCopy(_ precision: MathPrecision) throws {
        let n = 256, k = 128
        let widest = Case(transA: false, transB: true, m: 64, n: n, k: k, alpha: 1, beta: 0)
        let (a, b, _, lda, ldb, ldc) = Self.operands(widest, seed: 17)
        let packed = PackedWeights(b)
        for m in [64, 61, 32, 63] {
            func product(_ packed: PackedWeights?) -> FloatBuffer {
                let result = FloatBuffer(count: m * ldc)
                MathBackend.withBackend(.onednn) {
                    MathPrecision.with(precision) {
                        let run = {
                            BLAS.sgemm(transB: true, m: m, n: n, k: k, a: a.pointer, lda: lda, b: b.pointer, ldb: ldb,
                                       beta: 0, c: result.pointer, ldc: ldc)
                        }
                        if let packed { packed.using(run) } else { run() }
                    }
                }
                return result
            }
            let unpacked = product(nil)
            let fromCopy = product(packed)
            #expect(Self.largestDifference(fromCopy, unpacked) <= 1e-5 * Float(k), "\(m) rows: the shared copy gave other numbers")
            #expect(packed.copiesHeld == 1, "\(m) rows: \(packed.copiesHeld) copies of one matrix")
        }
    }

    /// A layer's epilogues — bias, bias and SiLU, bias and residual sum — give the same numbers as
    /// post-ops on oneDNN as in passes of their own on OpenBLAS; in bf16, natively and emulated
    /// (on a CPU without bf16 instructions, both sides are the emulation).
    @Test(.enabled(if: OneDNN.supportsCPU, "oneDNN needs AVX2: \(OneDNN.isaName)"), arguments: [MathPrecision.fp32, .bf16])
    func layerEpiloguesAgreeOnBothBackends(_ precision: MathPrecision) throws {
        let rows = 48, inputs = 96, outputs = 80
        var random = Philox(seed: 13)
        let x = FloatBuffer(count: rows * inputs), weight = FloatBuffer(count: outputs * inputs), bias = FloatBuffer(count: outputs)
        let residual = FloatBuffer(count: rows * outputs)
        for buffer in [x, weight, bias, residual] { random.fillUniform(buffer.pointer, count: buffer.count, low: -1, high: 1) }
        for (accumulate, silu) in [(false, false), (false, true), (true, false)] {
            func layer(_ backend: MathBackend) -> FloatBuffer {
                let y = residual.copy()
                MathBackend.withBackend(backend) {
                    MathPrecision.with(precision) {
                        BLAS.linear(x.pointer, rows: rows, inputs: inputs, weight: weight.pointer, bias: bias.pointer, outputs: outputs,
                                    into: y.pointer, accumulate: accumulate, silu: silu)
                    }
                }
                return y
            }
            let fused = layer(.onednn), separate = layer(.openblas)
            // By hand: Σ x·w in Double over the operands as the precision rounds them.
            let round: (Float) -> Float = precision == .bf16 ? BFloat16.round : { $0 }
            var worst: Float = 0
            for r in 0..<rows {
                for o in 0..<outputs {
                    var sum = 0.0
                    for i in 0..<inputs { sum += Double(round(x[r * inputs + i])) * Double(round(weight[o * inputs + i])) }
                    var value = Float(sum) + bias[o]
                    if silu { value = value / (1 + Foundation.exp(-value)) }
                    if accumulate { value += residual[r * outputs + o] }
                    worst = max(worst, abs(fused[r * outputs + o] - value))
                }
            }
            #expect(worst <= 1e-4, "accumulate \(accumulate), silu \(silu): oneDNN off by \(worst)")
            #expect(Self.largestDifference(fused, separate) <= 1e-4, "accumulate \(accumulate), silu \(silu)")
        }
    }

    /// A product multiplied by a matrix of its output's shape (SiLU's backward) gives on oneDNN, as
    /// the product's post-op, what the product and a multiply pass give: with strides wider than
    /// the rows, in fp32 and in bf16 (natively or emulated), on both backends.
    @Test(.enabled(if: OneDNN.supportsCPU, "oneDNN needs AVX2: \(OneDNN.isaName)"), arguments: [MathPrecision.fp32, .bf16])
    func aMultipliedProductAgreesOnBothBackends(_ precision: MathPrecision) throws {
        let m = 40, n = 72, k = 56, lda = k + 3, ldb = n + 5, ldc = n + 7
        var random = Philox(seed: 17)
        let a = FloatBuffer(count: m * lda), b = FloatBuffer(count: k * ldb), multiplier = FloatBuffer(count: m * ldc)
        for buffer in [a, b, multiplier] { random.fillUniform(buffer.pointer, count: buffer.count, low: -1, high: 1) }
        func product(_ backend: MathBackend, fused: Bool) -> FloatBuffer {
            let c = FloatBuffer(Array(repeating: 7, count: m * ldc))
            MathBackend.withBackend(backend) {
                MathPrecision.with(precision) {
                    BLAS.sgemm(m: m, n: n, k: k, a: a.pointer, lda: lda, b: b.pointer, ldb: ldb, c: c.pointer, ldc: ldc,
                               multipliedBy: fused ? UnsafePointer(multiplier.pointer) : nil)
                }
            }
            if !fused { Elementwise.multiply(c.pointer, by: multiplier.pointer, rows: m, columns: n, stride: ldc) }
            return c
        }
        let oneDNN = product(.onednn, fused: true), openBLAS = product(.openblas, fused: true)
        let oneDNNThenPass = product(.onednn, fused: false)
        for row in 0..<m {
            for column in n..<ldc { #expect(oneDNN[row * ldc + column] == 7 && openBLAS[row * ldc + column] == 7, "padding kept") }
        }
        #expect(Self.largestDifference(oneDNN, oneDNNThenPass) <= 1e-6, "the post-op rounds as a product, then a multiply")
        #expect(Self.largestDifference(oneDNN, openBLAS) <= 1e-4, "oneDNN against OpenBLAS")
        // Against Σ in Double over the operands as the precision rounds them, times the multiplier.
        let round: (Float) -> Float = precision == .bf16 ? BFloat16.round : { $0 }
        var worst: Float = 0
        for row in 0..<m {
            for column in 0..<n {
                var sum = 0.0
                for i in 0..<k { sum += Double(round(a[row * lda + i])) * Double(round(b[i * ldb + column])) }
                worst = max(worst, abs(oneDNN[row * ldc + column] - Float(sum) * multiplier[row * ldc + column]))
            }
        }
        #expect(worst <= 1e-4, "oneDNN off by \(worst)")
    }

    /// Products too small to repay a oneDNN call stay on OpenBLAS (in bf16: the emulation) on the
    /// process's backend; a thread's own choice holds at every size.
    /// On a CPU without bf16 instructions, every bf16 product is emulated, whatever its size or route.
    @Test(.enabled(if: OneDNN.supportsCPU, "oneDNN needs AVX2: \(OneDNN.isaName)"))
    func smallProductsStayOffOneDNNUnlessAThreadChoseIt() throws {
        let native = OneDNN.supportsBF16
        let weights = FloatBuffer(count: 1)
        let small = BLAS.Route.smallestForOneDNN, large = small + 1
        #expect(BLAS.Route(b: weights.pointer, work: large).onOneDNN == (MathBackend.current == .onednn))
        #expect(!BLAS.Route(b: weights.pointer, work: small).onOneDNN)
        MathPrecision.with(.bf16) {
            #expect(BLAS.Route(b: weights.pointer, work: large).onOneDNN == native)
            #expect(!BLAS.Route(b: weights.pointer, work: small).onOneDNN, "a small bf16 product is emulated")
        }
        MathBackend.withBackend(.onednn) {
            #expect(BLAS.Route(b: weights.pointer, work: 1).onOneDNN)
            MathPrecision.with(.bf16) { #expect(BLAS.Route(b: weights.pointer, work: 1).onOneDNN == native) }
        }
        MathBackend.withBackend(.openblas) { #expect(!BLAS.Route(b: weights.pointer, work: large).onOneDNN) }
    }

    @Test func bfloat16RoundsToNearestEven() {
        #expect(BFloat16.round(1) == 1)
        #expect(BFloat16.round(Float(bitPattern: 0x3F80_8000)) == 1)                          // a tie: to even (down)
        #expect(BFloat16.round(Float(bitPattern: 0x3F81_8000)) == Float(bitPattern: 0x3F82_0000))  // a tie: to even (up)
        #expect(BFloat16.round(Float(bitPattern: 0x3F80_8001)) == Float(bitPattern: 0x3F81_0000))
        #expect(BFloat16.round(.infinity) == .infinity && BFloat16.round(-.infinity) == -.infinity)
        #expect(BFloat16.round(.nan).isNaN && BFloat16.round(Float(bitPattern: 0x7F80_0001)).isNaN)
        #expect(BFloat16.round(.greatestFiniteMagnitude) == .infinity)  // past bf16's largest, as the hardware rounds
    }
}
