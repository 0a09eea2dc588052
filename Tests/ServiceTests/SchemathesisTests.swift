import Foundation
import Testing

/// schemathesis (PyPI) generates requests from docs/openapi.yaml against a live
/// service: no 5xx, every response conforms to the schema, schema-valid requests
/// are accepted and invalid ones rejected. Bounded: a fixed number of examples per
/// operation and a fixed seed, so a run is repeatable. `make test` installs it.
@Suite struct SchemathesisTests {
    @Test func theServerMatchesItsOpenAPIDocument() throws {
        let service = try LiveService()
        let spec = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../docs/openapi.yaml").standardized.path
        let (status, text) = try runTool(["schemathesis", "run", spec, "--url", service.base, "--header", "Authorization: Bearer \(service.adminKey)",
                                          "--checks", "all", "--max-examples", "25", "--seed", "20261123", "--no-color"])
        #expect(status == 0, "schemathesis found problems (pip install schemathesis, as make test does):\n\(text.suffix(6000))")
    }
}
