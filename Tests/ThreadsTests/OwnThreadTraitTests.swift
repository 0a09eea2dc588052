import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The test traits put a test where they say: on a named thread of its own, off the
/// cooperative pool, and for computations at nice 10.
@Suite struct OwnThreadTraitTests {
    static func currentThread() -> (name: String, nice: Int32) {
        let name = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? ""
        // Linux applies a process-wide query with id 0 to the calling thread alone.
        let nice = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
        return (name.trimmingCharacters(in: .newlines), nice)
    }

    @Test(.ownThread) func aBlockingTestRunsOnItsOwnThread() async throws {
        #expect(Self.currentThread() == ("test", 0))
        try await Task.sleep(for: .milliseconds(1))
        #expect(Self.currentThread() == ("test", 0), "and comes back to it after a suspension")
    }

    @Test(.computeThread) func aComputingTestRunsOnItsOwnThreadAtNice10() {
        #expect(Self.currentThread() == ("test-compute", 10))
    }

    @Test func otherTestsRunOnThePool() {
        #expect(!Self.currentThread().name.hasPrefix("test"))
    }

    /// Signals go to other threads than a test's own: a SIGCHLD for Foundation's Process would
    /// interrupt a blocking read there, and FileHandle traps on EINTR.
    @Test(.ownThread) func aTestThreadBlocksSignals() {
        var blocked = sigset_t()
        #expect(pthread_sigmask(SIG_BLOCK, nil, &blocked) == 0)
        #expect(sigismember(&blocked, SIGCHLD) == 1 && sigismember(&blocked, SIGTERM) == 1)
    }
}
