import Foundation
import CLinux

/// Dedicated threads for request handlers (a `TaskExecutor`, SE-0417). Handlers do
/// not share Swift's global cooperative pool — one thread per core — with whatever
/// else the process runs there, so a busy pool cannot starve the API.
final class HandlerExecutor: TaskExecutor, @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var stopping = false

    init(threads: Int, name: String) {
        for i in 0..<max(1, threads) {
            // The threads own the executor until `stop` lets them return: a server released right after
            // it was made must not leave a starting thread with a dangling reference.
            // Foundation's Thread.name does not reach the OS thread on Linux; name it from inside.
            Thread { [self] in
                _ = preftune_name_current_thread("\(name)-\(i)")
                self.work()
            }.start()
        }
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Lets the threads exit once the queue is empty.
    func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
    }

    private func work() {
        while true {
            condition.lock()
            while jobs.isEmpty && !stopping { condition.wait() }
            if jobs.isEmpty {
                condition.unlock()
                return
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}
