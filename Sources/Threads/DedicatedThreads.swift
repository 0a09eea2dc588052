import CLinux
import Foundation
import Synchronization

/// Threads of their own, named, that run what is handed to them in order: the project's one
/// dedicated-thread executor. Work that must not wait behind Swift's cooperative pool (log
/// followers), that inherits its creator's CPU priority (a training job's companion), or that
/// blocks for a long time (a worker training a job) runs here.
///
/// The conventions it sets: state shared between threads lives in a `Mutex`; a thread with
/// nothing to do parks on a semaphore; `Thread` is started here and nowhere else.
public final class DedicatedThreads: TaskExecutor, Sendable {
    enum Work: Sendable {
        case job(UnownedJob)
        case closure(@Sendable () -> Void)
    }

    struct Queue {
        /// Taken slots are emptied at once: a closure must not outlive its run here (callers such as
        /// `CompanionThread` hand over closures that may not escape, and check that they did not).
        var work: [Work?] = []
        var next = 0
        var stopping = false
        var running = 0
        var threads = 0

        mutating func take() -> Work? {
            guard next < work.count else { return nil }
            let taken = work[next]
            work[next] = nil
            next += 1
            if next == work.count {
                work.removeAll(keepingCapacity: true)
                next = 0
            }
            return taken
        }
    }

    private let queue = Mutex(Queue())
    /// One signal per piece of work (and one per thread when stopping).
    private let available = DispatchSemaphore(value: 0)
    /// Signalled each time a piece of work finishes or a thread ends: `waitUntilIdle` and `join` wait on it.
    private let progress = DispatchSemaphore(value: 0)

    /// `nice`: the threads' CPU priority relative to the process (Linux threads each have their
    /// own), e.g. 2 to keep heavy request work below the event loops.
    public init(threads: Int, name: String, nice: Int32 = 0) {
        let count = max(1, threads)
        queue.withLock { $0.threads = count }
        for i in 0..<count {
            // The threads own the executor until `stop` lets them return: an owner released right
            // after it made them must not leave a starting thread with a dangling reference.
            // Foundation's Thread.name does not reach the OS thread on Linux; name it from inside.
            Thread { [self] in
                _ = preftune_name_current_thread(count == 1 ? name : "\(name)-\(i)")
                if nice != 0 { _ = preftune_set_thread_nice(0, nice) }
                serve()
            }.start()
        }
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        submit(.job(UnownedJob(job)))
    }

    /// Runs `work` on one of the threads.
    public func run(_ work: @escaping @Sendable () -> Void) {
        submit(.closure(work))
    }

    private func submit(_ work: Work) {
        queue.withLock { $0.work.append(work) }
        available.signal()
    }

    /// Lets the threads end once what is queued has run.
    public func stop() {
        let threads = queue.withLock { queue -> Int in
            guard !queue.stopping else { return 0 }
            queue.stopping = true
            return queue.threads
        }
        for _ in 0..<threads { available.signal() }
    }

    /// Blocks until nothing is queued or running.
    public func waitUntilIdle() {
        waitForProgress { $0.next < $0.work.count || $0.running > 0 }
    }

    /// Blocks until every thread has ended (after `stop`).
    public func join() {
        waitForProgress { $0.threads > 0 }
    }

    /// Waits on `progress` while `busy` holds. One signal may wake one of several waiters:
    /// the one it wakes passes it on when it is done, so the others look again too.
    private func waitForProgress(while busy: (Queue) -> Bool) {
        var woken = false
        while queue.withLock({ busy($0) }) {
            progress.wait()
            woken = true
        }
        if woken { progress.signal() }
    }

    private func serve() {
        defer {
            queue.withLock { $0.threads -= 1 }
            progress.signal()
        }
        while true {
            available.wait()
            var work = queue.withLock { queue -> Work? in
                let taken = queue.take()
                if taken != nil { queue.running += 1 }
                return taken
            }
            switch work {
            case nil:
                if queue.withLock({ $0.stopping }) { return }
                continue
            case let .job(job)?: job.runSynchronously(on: asUnownedTaskExecutor())
            case let .closure(closure)?: closure()
            }
            // Let go of the closure before anyone is told it ran.
            work = nil
            queue.withLock { $0.running -= 1 }
            progress.signal()
        }
    }
}
