import CLinux
import Foundation

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
public final class CompanionThread: @unchecked Sendable {
    private final class Queue: @unchecked Sendable {
        let condition = NSCondition()
        var tasks: [() -> Void] = []
        var running = false
        var stopping = false
    }
    private let queue = Queue()

    public init(name: String) {
        let queue = self.queue
        let thread = Thread {
            _ = preftune_name_current_thread(name)
            Self.serve(queue)
        }
        thread.start()
    }

    deinit {
        queue.condition.lock()
        queue.stopping = true
        queue.condition.broadcast()
        queue.condition.unlock()
    }

    private static func serve(_ queue: Queue) {
        queue.condition.lock()
        while true {
            while queue.tasks.isEmpty && !queue.stopping { queue.condition.wait() }
            if queue.tasks.isEmpty { break }  // stopping, nothing left
            let task = queue.tasks.removeFirst()
            queue.running = true
            queue.condition.unlock()
            task()
            queue.condition.lock()
            queue.running = false
            queue.condition.broadcast()
        }
        queue.condition.unlock()
    }

    private func submit(_ task: @escaping () -> Void) {
        queue.condition.lock()
        queue.tasks.append(task)
        queue.condition.broadcast()
        queue.condition.unlock()
    }

    private func waitUntilDone() {
        queue.condition.lock()
        while !queue.tasks.isEmpty || queue.running { queue.condition.wait() }
        queue.condition.unlock()
    }

    /// Runs `mine` here and `theirs` on the companion at the same time, each with
    /// single-threaded OpenBLAS; returns when both have finished. The two must not
    /// write memory the other reads.
    public func sideBySide(_ mine: () -> Void, _ theirs: @escaping () -> Void) {
        BLASRuntime.singleThreaded { together(mine, theirs) }
    }

    /// Runs `mine` here and `theirs` on the companion at the same time (no BLAS in
    /// either); returns when both have finished.
    public func together(_ mine: () -> Void, _ theirs: @escaping () -> Void) {
        submit(theirs)
        mine()
        waitUntilDone()
    }
}
