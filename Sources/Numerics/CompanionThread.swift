import CLinux
import Foundation
import Threads

/// A second thread for one job's arithmetic. When a step has two independent pieces
/// of work — the reference and θ forward passes — the job's own thread and its
/// companion each run one with single-threaded OpenBLAS (`BLASRuntime.singleThreaded`),
/// one core each; the memory-bound loops (AdamW, the gradient norm) split in two the
/// same way (`Parallel.forEachChunk`). Small GEMMs split over OpenBLAS's threads leave a core idle at every
/// call and through the element-wise work between calls; two whole passes do not.
///
/// A thread of its own rather than Dispatch's pool: it inherits its creator's CPU
/// priority (the worker's nice 10; Dispatch's default-QoS threads run at nice 0,
/// beside the request path), and the two pieces are sure to run at once.
/// One thread (the job's) uses a companion; its thread ends when the companion is released.
public final class CompanionThread: Sendable {
    private let thread: DedicatedThreads

    public init(name: String) { thread = DedicatedThreads(threads: 1, name: name) }

    deinit { thread.stop() }

    /// Runs `mine` here and `theirs` on the companion at the same time, each with
    /// single-threaded OpenBLAS; returns when both have finished. The two must not
    /// write memory the other reads.
    public func sideBySide(_ mine: () -> Void, _ theirs: @escaping () -> Void) {
        // Each side has a core: the product clock counts half of each product's time.
        BLASRuntime.singleThreaded {
            together({ ThreadMath.with(\.threadsSharingTheCores, 2, mine) },
                     { ThreadMath.with(\.threadsSharingTheCores, 2, theirs) })
        }
    }

    /// Runs `mine` here and `theirs` on the companion at the same time (no BLAS in
    /// either); returns when both have finished.
    public func together(_ mine: () -> Void, _ theirs: @escaping () -> Void) {
        // `theirs` touches this thread's buffers, which is safe because this call waits for it.
        // It computes its products on this thread's backend (a test may have chosen one) and in
        // this thread's precision (a bf16 job's).
        // While this thread's product clock runs, the companion's products count in it too: the
        // companion writes its tally into this frame's variable, read after the wait (no allocation
        // per call: AdamW and the norm come through here every step).
        let work = UncheckedSendable(theirs), backend = MathBackend.chosenByThisThread, precision = MathPrecision.active
        let clocked = ProductClock.isRunning
        var theirTally = ProductClock.Tally()
        withUnsafeMutablePointer(to: &theirTally) { tally in
            let tally = UncheckedSendable(tally)
            thread.run {
                MathPrecision.with(precision) {
                    let run = { if let backend { MathBackend.withBackend(backend) { work.value() } } else { work.value() } }
                    if clocked { tally.value.pointee = ProductClock.measuring(run).1 } else { run() }
                }
            }
            mine()
            thread.waitUntilIdle()
        }
        if clocked { ProductClock.add(theirTally) }
    }
}
