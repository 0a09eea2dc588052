import Foundation
import Testing

/// The official `openai` Python package, pointed at preftune, drives the API.
/// `make test` installs it; without it this test fails and says how to install it.
@Suite struct OpenAICompatibilityTests {
    /// Against the real executable (`preftune serve` on a free loopback port); without workers, so the
    /// script sees the job as it was created and cancels it.
    @Test func theOpenAISDKManagesFilesAndJobs() async throws {
        let data = ExecutableTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let server = try await ServerProcess(data: data, port: ExecutableTests.freePort(), arguments: ["--workers", "0"])
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../Fixtures/interop/openai_sdk.py").standardized.path
        let (status, text) = try await runToolAsync(["python3", script, server.base + "/v1", server.key, data])
        #expect(status == 0, "openai SDK test failed (pip install openai, as make test does):\n\(text)")
        #expect(text.contains("ok"))
    }
}
