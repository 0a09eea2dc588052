import Foundation
import Synchronization
import Testing
import Threads

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
        let thread = DedicatedThreads(threads: 1, name: computes ? "test-compute" : "test", nice: computes ? 10 : 0)
        // Signals go elsewhere, as they skip the pool's threads: Foundation's Process catches
        // SIGCHLD, and a blocking read that one interrupts here fails (FileHandle traps on EINTR).
        thread.run {
            var all = sigset_t()
            sigfillset(&all)
            pthread_sigmask(SIG_BLOCK, &all, nil)
        }
        defer {
            thread.stop()
            if computes { ComputeSlots.shared.release() }
        }
        try await withTaskExecutorPreference(thread) { try await function() }
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
final class ComputeSlots: Sendable {
    static let shared = ComputeSlots(count: ProcessInfo.processInfo.activeProcessorCount)
    private let state: Mutex<(free: Int, waiting: [CheckedContinuation<Void, Never>])>

    init(count: Int) { state = Mutex((max(1, count), [])) }

    func acquire() async {
        await withCheckedContinuation { continuation in
            let granted = state.withLock { slots in
                if slots.free > 0 { slots.free -= 1; return true }
                slots.waiting.append(continuation)
                return false
            }
            if granted { continuation.resume() }
        }
    }

    func release() {
        let next = state.withLock { slots -> CheckedContinuation<Void, Never>? in
            if slots.waiting.isEmpty { slots.free += 1; return nil }
            return slots.waiting.removeFirst()
        }
        next?.resume()
    }
}
