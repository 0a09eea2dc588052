import Foundation
import HTTP
import Service
import Store
import TestSupport
import Testing

/// The webhook sender against an endpoint that is slow to answer: a burst waits in the
/// database and goes out at most `maxInFlight` at a time, every delivery in the end.
@Suite struct WebhookSenderTests {
    actor Gate {
        var open = 0, most = 0
        func enter() { open += 1; most = max(most, open) }
        func leave() { open -= 1 }
    }

    @Test func aBurstIsSentAtMostMaxInFlightAtATime() async throws {
        let gate = Gate()
        let receiver = HTTPServer(configuration: { var c = HTTPServer.Configuration(); c.port = 0; return c }()) { _ in
            await gate.enter()
            try? await Task.sleep(for: .milliseconds(400))
            await gate.leave()
            return HTTPResponse(status: 200, headers: [("Content-Type", "text/plain")], body: .bytes(Array("ok".utf8)))
        }
        let port = try receiver.start()
        defer { receiver.shutdown() }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../migrations").standardized.path
        let data = try DataDirectory.open(temporaryPath("preftune-webhooks"), migrations: try Migration.load(.sqlite, root: root))
        _ = try data.database.write { connection in
            try connection.execute(script: """
                INSERT INTO projects (id, name, created_at) VALUES ('p', 'team', 0);
                INSERT INTO models (id, project_id, config, created_at) VALUES ('m', 'p', '{}', 0);
                INSERT INTO files (id, project_id, filename, purpose, bytes, status, created_at) VALUES ('f', 'p', 'a', 'fine-tune', 1, 'processed', 0);
                """)
        }
        let store = SQLJobStore(database: data.database)
        let burst = Webhooks.maxInFlight * 2 + 4
        for index in 0..<burst {
            let id = "ftjob-burst\(index)"
            try store.insert(JobRecord(id: id, projectID: "p", model: "m", trainingFile: "f", validationFile: nil, method: #"{"type":"sft"}"#,
                                       hyperparameters: "{}", seed: 1, suffix: nil, metadata: "{}", webhookURL: "http://127.0.0.1:\(port)/hook",
                                       status: .succeeded, createdAt: index), firstEvent: "created")
            #expect(try store.enqueueFinished(id))
        }
        let webhooks = Webhooks(store: store, egress: EgressPolicy(allowed: [IPNetwork("127.0.0.1/32")!]), delays: [0], timeout: 10)
        webhooks.start(pollSeconds: 0.05)
        defer { webhooks.stop() }
        // Recorded as delivered once the sender has its answer, a moment after the receiver gave it.
        func delivered() throws -> Int { try (0..<burst).flatMap { try store.webhookDeliveries("ftjob-burst\($0)") }.filter(\.delivered).count }
        _ = try? await poll("every delivery recorded", seconds: 30) { try delivered() == burst ? () : nil }
        #expect(await gate.most == Webhooks.maxInFlight, "the sender fills its bound and goes no further")
        let unsent = try (0..<burst).flatMap { try store.webhookDeliveries("ftjob-burst\($0)") }.filter { !$0.delivered }
        let warnings = try (0..<burst).flatMap { try store.events("ftjob-burst\($0)", before: nil, limit: 10) }.filter { $0.level == "warn" }
        #expect(try delivered() == burst, "not delivered: \(unsent); warnings: \(warnings.map(\.message))")
    }
}
