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

    /// What a child started from a test's thread has blocked, as /proc shows it (hex).
    static func signalsBlockedInAChild(unblocked: Bool) throws -> String {
        let process = Process()
        // sed itself, not through sh: dash clears the mask for the commands it runs.
        process.executableURL = URL(fileURLWithPath: "/bin/sed")
        process.arguments = ["-n", "s/^SigBlk:[[:space:]]*//p", "/proc/self/status"]
        let output = Pipe()
        process.standardOutput = output
        if unblocked { try process.runWithSignalsUnblocked() } else { try process.run() }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A child hears signals though the test's thread blocks them all. `run()` alone passes the
    /// thread's mask on: the reason `runWithSignalsUnblocked` exists (and, should Foundation ever
    /// reset the mask itself, the sign that it need not).
    @Test(.ownThread) func aChildOfATestThreadStartsWithNoSignalBlocked() throws {
        #expect(try Self.signalsBlockedInAChild(unblocked: true) == "0000000000000000")
        #expect(try Self.signalsBlockedInAChild(unblocked: false) != "0000000000000000")
    }

    /// The same on the cooperative pool, whose libdispatch threads block all but the synchronous signals.
    @Test func aChildOfAPoolThreadStartsWithNoSignalBlocked() throws {
        #expect(try Self.signalsBlockedInAChild(unblocked: true) == "0000000000000000")
        #expect(try Self.signalsBlockedInAChild(unblocked: false) != "0000000000000000")
    }
}
