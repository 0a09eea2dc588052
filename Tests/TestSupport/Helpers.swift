import Foundation
import Threads

/// A test's expectation that was not met in time (or a response it could not read).
public struct HTTPTestFailure: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Asks `probe` every `interval` until it returns a value, for at most `seconds`; then
/// throws, saying what was awaited. The one polling loop of the service tests.
public func poll<Value>(_ what: @autoclosure () -> String, seconds: Double = 120, every interval: Duration = .milliseconds(20),
                        _ probe: () async throws -> Value?) async throws -> Value {
    // On the monotonic clock: a step of the wall clock would end the wait early or stretch it.
    let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
    while true {
        if let value = try await probe() { return value }
        guard ContinuousClock.now < deadline else { throw HTTPTestFailure("timed out after \(seconds) s waiting for \(what())") }
        try await Task.sleep(for: interval)
    }
}

/// Seconds until `condition` holds (checked every `interval`), or nil when it does not within
/// `seconds`. For timing how soon something happens. The watching is done on a thread of its
/// own, which takes the time when it sees the condition: a poll that sleeps with `Task.sleep`
/// resumes on the cooperative pool, which other suites' work can hold for a second or more under
/// the full suite, timing the test instead of the event (and blocking a pool thread starves them).
public func secondsUntil(_ condition: @escaping @Sendable () -> Bool, atMost seconds: Double,
                         every interval: TimeInterval = 0.005) async -> Double? {
    let start = ContinuousClock.now
    @Sendable func elapsed() -> Double {
        let duration = ContinuousClock.now - start
        return Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18
    }
    let watcher = DedicatedThreads(threads: 1, name: "secondsUntil")
    defer { watcher.stop() }
    return await withCheckedContinuation { continuation in
        watcher.run {
            while !condition() {
                guard elapsed() < seconds else { return continuation.resume(returning: nil) }
                Thread.sleep(forTimeInterval: interval)
            }
            continuation.resume(returning: elapsed())
        }
    }
}

/// A path in the temporary directory no other test uses: `<prefix>-<uuid><suffix>`. Not created.
public func temporaryPath(_ prefix: String, suffix: String = "") -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID())\(suffix)").path
}

extension Process {
    /// `run()`, with no signal blocked in the child. posix_spawn, under Foundation's `Process`,
    /// gives the child the calling thread's signal mask, and a test's threads block nearly every
    /// signal: libdispatch's worker threads, which carry Swift's cooperative pool, block all but
    /// the synchronous ones, and `.ownThread`'s block all. A child started from them would not
    /// hear `terminate()`, nor a SIGTERM a test sends it. The calling thread unblocks them only
    /// for the spawn; Foundation learns of the child's exit from a socket, not from SIGCHLD.
    public func runWithSignalsUnblocked() throws {
        var none = sigset_t(), previous = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        try run()
    }
}
