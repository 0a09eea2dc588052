import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `runCommand` (how the tests start PostgreSQL) passes a child only stdin, stdout and stderr.
/// A server it starts lives on; had it inherited the write end of a pipe another test was
/// reading, that test's read would never see the end of its input (the suite once hung so).
@Suite(.ownThread) struct RunCommandTests {
    @Test func aChildGetsNoDescriptorButTheStandardThree() throws {
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)  // without O_CLOEXEC, as another test's pipe may be
        defer { close(ends[0]); close(ends[1]) }
        func isOpenInAChild(_ descriptor: Int32) throws -> Bool {
            let (status, output) = try runCommand(["sh", "-c", "test -e /proc/$$/fd/\(descriptor) && echo open || echo closed"])
            #expect(status == 0, "\(output)")
            return output.trimmingCharacters(in: .whitespacesAndNewlines) == "open"
        }
        #expect(try isOpenInAChild(1), "the child's stdout is open: the probe can see an open descriptor")
        #expect(try !isOpenInAChild(ends[1]), "the pipe's write end reached the child")
        #expect(try !isOpenInAChild(ends[0]), "the pipe's read end reached the child")
    }
}
