import Foundation
import TestSupport

/// Runs a command (through env, so PATH finds python3 and schemathesis) and returns its exit status and output.
func runTool(_ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    try process.runWithSignalsUnblocked()
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, text)
}

/// `runTool` on a thread of its own: a test waiting on a slow tool must not hold one of
/// the few threads of Swift's cooperative pool, where the server under test runs tasks too.
func runToolAsync(_ arguments: [String]) async throws -> (status: Int32, output: String) {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try runTool(arguments) }) }.start()
    }
}
