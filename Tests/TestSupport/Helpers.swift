import Foundation

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
    let deadline = Date(timeIntervalSinceNow: seconds)
    while true {
        if let value = try await probe() { return value }
        guard Date() < deadline else { throw HTTPTestFailure("timed out after \(seconds) s waiting for \(what())") }
        try await Task.sleep(for: interval)
    }
}

/// A path in the temporary directory no other test uses: `<prefix>-<uuid><suffix>`. Not created.
public func temporaryPath(_ prefix: String, suffix: String = "") -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID())\(suffix)").path
}
