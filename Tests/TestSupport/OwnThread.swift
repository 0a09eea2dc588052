import Foundation
import Testing

/// Runs each test it marks on a thread of its own rather than on Swift's cooperative pool.
///
/// The pool has one thread per core: two here. A test that blocks (starting PostgreSQL,
/// waiting on a child process, a blocking socket read, a training run called synchronously)
/// holds one of them, and two such tests stop every other suite's async work (HTTP handlers,
/// webhook senders, polls) for as long as they block: 12 s at the start of a full run was
/// measured. Timing tests then time the test process, not the service, and timeouts fire.
public struct OwnThread: TestTrait, SuiteTrait, TestScoping {
    /// Whether the test computes for long: then it waits for one of `ComputeSlots`, so that no
    /// more of them run at once than the pool would have run (one per core), and runs at nice 10,
    /// beside the in-process workers of other tests rather than above them.
    let computes: Bool

    public var isRecursive: Bool { true }

    public func scopeProvider(for test: Test, testCase: Test.Case?) -> OwnThread? {
        testCase == nil ? nil : self
    }

    public func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        if computes { await ComputeSlots.shared.acquire() }
        let executor = ThreadExecutor(name: computes ? "test-compute" : "test", nice: computes ? 10 : 0)
        defer {
            executor.finish()
            if computes { Task { await ComputeSlots.shared.release() } }
        }
        try await withTaskExecutorPreference(executor) { try await function() }
    }
}

extension Trait where Self == OwnThread {
    /// Runs the test (each test of the suite) on a thread of its own, off the cooperative pool:
    /// for tests that block (child processes, PostgreSQL, blocking sockets, sleeps).
    public static var ownThread: OwnThread { OwnThread(computes: false) }

    /// Runs the test on a thread of its own, and no more such tests at once than there are
    /// cores: for tests that compute for long (training, golden numerics, gradient checks).
    public static var computeThread: OwnThread { OwnThread(computes: true) }
}

/// Places for long computations, one per core; waiting for one holds no thread.
actor ComputeSlots {
    static let shared = ComputeSlots(count: ProcessInfo.processInfo.activeProcessorCount)
    private var free: Int
    private var waiting: [CheckedContinuation<Void, Never>] = []

    init(count: Int) { free = max(1, count) }

    func acquire() async {
        if free > 0 { free -= 1; return }
        await withCheckedContinuation { waiting.append($0) }
    }

    func release() {
        if waiting.isEmpty { free += 1 } else { waiting.removeFirst().resume() }
    }
}

/// A task executor with one thread, which runs the jobs enqueued on it in order.
final class ThreadExecutor: TaskExecutor, @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var finished = false

    /// With `nice`, the thread runs at that niceness: tests that compute for long run below the
    /// service's request path, as the service's own training threads do.
    init(name: String, nice: Int32 = 0) {
        let thread = Thread { [self] in
            // Linux applies a process-wide call with id 0 to the calling thread alone.
            if nice != 0 { setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, nice) }
            // Signals go elsewhere, as they skip the pool's threads: Foundation's Process catches
            // SIGCHLD, and a blocking read that one interrupts here fails (FileHandle traps on EINTR).
            var all = sigset_t()
            sigfillset(&all)
            pthread_sigmask(SIG_BLOCK, &all, nil)
            run()
        }
        thread.name = name
        thread.start()
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Ends the thread once the jobs enqueued so far have run.
    func finish() {
        condition.lock()
        finished = true
        condition.signal()
        condition.unlock()
    }

    private func run() {
        while true {
            condition.lock()
            while jobs.isEmpty && !finished { condition.wait() }
            if jobs.isEmpty { condition.unlock(); return }
            let job = jobs.removeFirst()
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}
