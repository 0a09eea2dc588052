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
}
