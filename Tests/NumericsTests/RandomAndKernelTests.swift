import Foundation
import CLinux
import Numerics
import TestSupport
import Testing

@Suite(.computeThread) struct PhiloxTests {
    /// Known-answer test from the Random123 distribution (kat_vectors: philox4x32 10 rounds).
    @Test func matchesRandom123KnownAnswer() {
        let philox = Philox(seed: 0x299F_31D0_A409_3822, stream: 0x0370_7344_1319_8A2E)
        #expect(philox.block(0x85A3_08D3_243F_6A88) == SIMD4(0xD16C_FE09, 0x94FD_CCEB, 0x5001_E420, 0x2412_6EA1))
        #expect(Philox(seed: 0).block(0) == SIMD4(0x6627_E8D5, 0xE169_C58D, 0xBC57_AC4C, 0x9B00_DBD8))
    }

    @Test func filling_in_pieces_equals_filling_at_once() {
        var whole = Philox(seed: 3), pieces = Philox(seed: 3)
        var a = [Float](repeating: 0, count: 64), b = [Float](repeating: 0, count: 64)
        a.withUnsafeMutableBufferPointer { whole.fillNormal($0.baseAddress!, count: 64) }
        b.withUnsafeMutableBufferPointer { p in
            pieces.fillNormal(p.baseAddress!, count: 32)
            pieces.fillNormal(p.baseAddress! + 32, count: 32)
        }
        #expect(a == b)
        #expect(whole == pieces)
    }

    @Test func normalsHaveUnitMoments() {
        var random = Philox(seed: 11)
        let values = random.normals(200_000).map(Double.init)
        let mean = values.reduce(0, +) / Double(values.count)
        let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(values.count)
        #expect(abs(mean) < 0.01 && abs(variance - 1) < 0.01)
    }

    @Test func uniformIntegersCoverTheirRange() {
        var random = Philox(seed: 5)
        var seen = Set<Int>()
        for _ in 0..<1000 { seen.insert(random.nextInt(below: 7)) }
        #expect(seen == Set(0..<7))
    }
}

@Suite(.computeThread) struct ElementwiseTests {
    @Test func vectorExpIsAccurate() {
        for x in stride(from: Float(-80), through: 80, by: 0.37) {
            let expected = Foundation.exp(Double(x))
            #expect(abs(Double(Elementwise.exp(x)) - expected) <= 4e-7 * expected, "exp(\(x))")
        }
    }

    @Test func nonFiniteValuesAreFound() {
        var values = [Float](repeating: 1, count: 37)
        #expect(Elementwise.allFinite(values, count: values.count))
        values[35] = .nan
        #expect(!Elementwise.allFinite(values, count: values.count))
        values[35] = 1
        values[3] = -.infinity
        #expect(!Elementwise.allFinite(values, count: values.count))
    }

    @Test func sgemmHandlesEveryTransposeCase() {
        // A [2,3], B [3,2]; stored transposed where asked.
        let a: [Float] = [1, 2, 3, 4, 5, 6], aT: [Float] = [1, 4, 2, 5, 3, 6]
        let b: [Float] = [7, 8, 9, 10, 11, 12], bT: [Float] = [7, 9, 11, 8, 10, 12]
        let expected: [Float] = [58, 64, 139, 154]
        for (transA, transB) in [(false, false), (true, false), (false, true), (true, true)] {
            var c = [Float](repeating: 0, count: 4)
            BLAS.sgemm(transA: transA, transB: transB, m: 2, n: 2, k: 3, a: transA ? aT : a, lda: transA ? 2 : 3,
                       b: transB ? bT : b, ldb: transB ? 3 : 2, c: &c, ldc: 2)
            #expect(c == expected, "transA \(transA) transB \(transB)")
        }
    }
}

@Suite(.computeThread) struct KernelSelectionTests {
    @Test func picksAVX512KernelsWhenTheCPUHasThem() {
        let sapphireRapids = "processor : 0\nflags\t\t: fpu sse avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16\n"
        #expect(KernelSelection.preferredCoreType(cpuFlags: KernelSelection.cpuFlags(cpuinfo: sapphireRapids)) == "COOPERLAKE")
        let skylake: Set = ["avx2", "fma", "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl"]
        #expect(KernelSelection.preferredCoreType(cpuFlags: skylake) == "SKYLAKEX")
        #expect(KernelSelection.preferredCoreType(cpuFlags: ["avx2", "fma", "avx"]) == "HASWELL")
        #expect(KernelSelection.preferredCoreType(cpuFlags: ["sse2"]) == nil)
    }
}

@Suite(.computeThread) struct SideBySideTests {
    /// Two chains of SGEMMs side by side (single-threaded OpenBLAS on each core) give
    /// the bits of the same chains run one after the other on all threads: a resumed
    /// run and an uninterrupted one must agree whichever way their steps ran.
    @Test func sideBySideProductsEqualSequentialOnes() {
        let m = 96, n = 384, k = 320
        var random = Philox(seed: 21)
        let input = FloatBuffer(count: m * k)
        random.fillNormal(input.pointer, count: input.count)
        let weights = (0..<2).map { _ in FloatBuffer(count: n * k) }
        for w in weights { random.fillNormal(w.pointer, count: w.count) }
        let outputs = (0..<2).map { _ in FloatBuffer(count: m * n) }, states = (0..<2).map { _ in FloatBuffer(count: m * k) }

        /// y = x·Wᵀ, then x += 0.01·y·W, twenty times: products that feed each other, as in a forward pass.
        func chain(_ i: Int) {
            states[i].copy(from: input)
            for _ in 0..<20 {
                BLAS.sgemm(transB: true, m: m, n: n, k: k, a: states[i].pointer, lda: k, b: weights[i].pointer, ldb: k,
                           c: outputs[i].pointer, ldc: n)
                BLAS.sgemm(m: m, n: k, k: n, alpha: 1e-2, a: outputs[i].pointer, lda: n, b: weights[i].pointer, ldb: k,
                           beta: 1, c: states[i].pointer, ldc: k)
            }
        }
        chain(0)
        chain(1)
        let expected = states.map(\.array)
        let companion = CompanionThread(name: "test-companion")
        for _ in 0..<10 {
            companion.sideBySide({ chain(0) }, { chain(1) })
            #expect(states.map(\.array) == expected)
        }
    }
}

@Suite(.computeThread) struct CompanionThreadTests {
    /// The companion takes its creator's CPU priority (a worker's nice 10: training stays
    /// below the request path) and its thread ends when the companion is released.
    /// Two jobs' single-threaded sections overlap: the first to end must not give
    /// OpenBLAS its threads back while the other's two streams still run.
    @Test func overlappingSingleThreadedSectionsStayNarrowUntilTheLastEnds() async {
        let previous = BLASRuntime.configuredThreadCount
        let (firstEntered, firstLeft) = (DispatchSemaphore(value: 0), DispatchSemaphore(value: 0))
        let secondInside = DispatchSemaphore(value: 0)
        let counts: [Int] = await withCheckedContinuation { continuation in
            Thread {
                BLASRuntime.singleThreaded {
                    // Two threads configured (other tests' worker pools may have set one),
                    // so that ending this section could widen OpenBLAS.
                    BLASRuntime.setThreadCount(2)
                    firstEntered.signal()
                    secondInside.wait()
                }
                firstLeft.signal()
            }.start()
            Thread {
                firstEntered.wait()
                let results: [Int] = BLASRuntime.singleThreaded {
                    let whileBothInside = BLASRuntime.threadCount
                    secondInside.signal()
                    firstLeft.wait()
                    return [whileBothInside, BLASRuntime.threadCount]
                }
                continuation.resume(returning: results)
            }.start()
        }
        BLASRuntime.setThreadCount(previous)
        #expect(counts == [1, 1], "thread counts inside the second section, before and after the first ended")
    }

    /// Chunked loops shared with a companion cover every element once, and a chunked
    /// reduction gives the same bits as over Dispatch's threads or one thread.
    @Test func chunkedWorkSharedWithACompanionIsTheSame() {
        let companion = CompanionThread(name: "companion-chunks")
        for count in [0, 5, Parallel.chunkSize, 3 * Parallel.chunkSize + 17, 8 * Parallel.chunkSize] {
            let x = FloatBuffer(count: count)
            var random = Philox(seed: UInt64(count))
            random.fillNormal(x.pointer, count: count)
            let shared = Elementwise.sumOfSquares(x.pointer, count: count, sharingWith: companion)
            #expect(shared == Elementwise.sumOfSquares(x.pointer, count: count), "count \(count)")
            let visits = FloatBuffer(count: count)
            let pointer = UncheckedSendable(visits.pointer)
            Parallel.forEachChunk(count: count, sharingWith: companion) { range in
                for i in range { pointer.value[i] += 1 }
            }
            #expect(visits.array.allSatisfy { $0 == 1 }, "count \(count)")
        }
    }

    @Test func companionRunsAtItsCreatorsPriorityAndEndsWithIt() async throws {
        let name = "companion-\(Int.random(in: 1000..<10000))"
        @Sendable func companionThreads() -> [(task: String, nice: Int)] {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
            return tasks.compactMap { task in
                guard let comm = try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8),
                      comm.trimmingCharacters(in: .whitespacesAndNewlines) == name,
                      let stat = try? String(contentsOfFile: "/proc/self/task/\(task)/stat", encoding: .utf8) else { return nil }
                // After the parenthesised name, nice is the 17th field.
                let fields = stat[stat.index(after: stat.lastIndex(of: ")")!)...].split(separator: " ")
                return (task, Int(fields[16]) ?? -99)
            }
        }
        // A thread of our own lowers itself, as a worker does, and makes the companion.
        let seen: [(task: String, nice: Int)] = await withCheckedContinuation { continuation in
            Thread {
                _ = preftune_set_thread_nice(0, 10)
                let companion = CompanionThread(name: name)
                companion.sideBySide({}, {})
                continuation.resume(returning: companionThreads())
            }.start()
        }
        #expect(seen.count == 1 && seen.first?.nice == 10, "\(seen)")
        // Released when that thread's closure ended; its thread follows.
        var remaining = companionThreads()
        for _ in 0..<200 where !remaining.isEmpty {
            try await Task.sleep(for: .milliseconds(10))
            remaining = companionThreads()
        }
        #expect(remaining.isEmpty, "the companion's thread outlived it: \(remaining)")
    }
}
