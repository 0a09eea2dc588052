import Foundation
import Testing

/// The official `openai` Python package, pointed at preftune, drives the API.
/// `make test` installs it; without it this test fails and says how to install it.
@Suite struct OpenAICompatibilityTests {
    @Test func theOpenAISDKManagesFilesAndJobs() async throws {
        let service = try LiveService()
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../Fixtures/interop/openai_sdk.py").standardized.path
        let (status, text) = try runTool(["python3", script, service.base + "/v1", service.adminKey, service.directory])
        #expect(status == 0, "openai SDK test failed (pip install openai, as make test does):\n\(text)")
        #expect(text.contains("ok"))
    }
}
