import Foundation
import HTTP
import Service
import Testing
import TestSupport

/// What the request pipeline promises about how requests are answered.
@Suite(.ownThread) struct RequestPipelineTests {
    static func request(_ method: String, _ path: String, key: String?) -> HTTPRequest {
        var headers: [(name: String, value: String)] = [("Host", "127.0.0.1")]
        if let key { headers.append(("Authorization", "Bearer \(key)")) }
        return HTTPRequest(head: HTTPRequestHead(method: method, target: path, minorVersion: 1, headers: headers), body: [])
    }

    static func isNow(_ answer: HTTPAnswer) -> Bool {
        if case .now = answer { return true }
        return false
    }

    /// Reads (and requests that find no route) are answered on the event loop, with no task;
    /// anything that may wait is left for a task. Errors found on the way, such as a missing
    /// key, come back the same way as the answer would.
    @Test func readsAnswerAtOnceAndEverythingElseLater() throws {
        let service = try LiveService()
        let key = service.adminKey
        let app = service.application
        #expect(Self.isNow(app.answer(Self.request("GET", "/v1/fine_tuning/jobs", key: key))))
        #expect(Self.isNow(app.answer(Self.request("GET", "/v1/fine_tuning/jobs/ftjob-none", key: key))), "a 404 from a read")
        #expect(Self.isNow(app.answer(Self.request("GET", "/v1/fine_tuning/jobs", key: nil))), "a 401 from a read")
        #expect(Self.isNow(app.answer(Self.request("GET", "/v1/no-such-route", key: key))))
        #expect(!Self.isNow(app.answer(Self.request("POST", "/v1/fine_tuning/jobs/ftjob-none/cancel", key: key))))
        #expect(!Self.isNow(app.answer(Self.request("GET", "/healthz", key: nil))))
        if case let .now(response) = app.answer(Self.request("GET", "/v1/fine_tuning/jobs", key: nil)) {
            #expect(response.status == 401)
        }
    }
}

/// The heavy-work pool: a bounded queue (past it, 429) and cancellation on stop.
@Suite(.ownThread) struct HeavyWorkTests {
    @Test func aFullQueueIs429AndStopCancelsWhatWaitsAndRuns() async throws {
        let pool = HeavyWork(threads: 1, queueCapacity: 1)
        let started = DispatchSemaphore(value: 0)
        // Holds the one thread until it is cancelled.
        let running = Task {
            try await pool.run { cancellation -> Int in
                started.signal()
                while !cancellation.isCancelled { usleep(1000) }
                return 1
            }
        }
        _ = await Task.detached { started.wait() }.value
        let waiting = Task { try await pool.run { _ in 2 } }
        _ = try await poll("the second piece of work queued", seconds: 10) { pool.load == 2 ? true : nil }
        await #expect(throws: APIError.self, "the queue of one is full") { try await pool.run { _ in 3 } }
        pool.stop()
        await #expect(throws: CancellationError.self) { try await running.value }
        await #expect(throws: CancellationError.self) { try await waiting.value }
        #expect(pool.load == 0)
    }
}
