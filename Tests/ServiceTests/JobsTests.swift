import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Service
import Store
import TestSupport
import Testing

extension LiveService {
    /// A tiny text model and a valid training file for it.
    func jobFixtures(lines: [String]? = nil) async throws -> (model: String, file: String) {
        let created = try await post("/v1/models", ["id": "base-\(UUID().uuidString.prefix(8))", "config": ModelsTests.config])
        let sample = "[" + Array(repeating: "0.1", count: 16).joined(separator: ",") + "]"
        let text = (lines ?? (0..<12).map { #"{"prompt": "dot \#($0)", "sample": \#(sample)}"# }).joined(separator: "\n")
        let uploaded = try await upload(Array(text.utf8))
        return (created.json["id"] as! String, uploaded.json["id"] as! String)
    }

    func waitForStatus(_ id: String, notIn: Set<String>) async throws -> [String: Any] {
        try await poll("job \(id) to leave \(notIn)", seconds: 4) {
            let job = try await request("GET", "/v1/fine_tuning/jobs/\(id)", key: adminKey).json
            return (job["status"] as? String).map { !notIn.contains($0) } == true ? job : nil
        }
    }
}

@Suite struct JobsTests {
    static func dro(_ hyper: [String: Any] = ["n_steps": 5, "batch_size": 4]) -> [String: Any] {
        ["type": "dro", "dro": ["hyperparameters": hyper]]
    }

    /// A job asks for a priority within what the operator allows its project; a queued job
    /// says where it stands.
    @Test func priorityIsBoundedPerProjectAndTheQueueShowsPositions() async throws {
        let service = try LiveService()
        let (model, file) = try await service.jobFixtures()
        func create(_ priority: Int?) async throws -> (status: Int, json: [String: Any]) {
            var body: [String: Any] = ["model": model, "training_file": file, "method": Self.dro()]
            if let priority { body["priority"] = priority }
            return try await service.post("/v1/fine_tuning/jobs", body)
        }
        let refused = try await create(3)
        #expect(refused.status == 403 && errorCode(refused.json) == "priority_not_allowed", "\(refused.json)")
        #expect(try await create(101).status == 400, "outside -100…100")
        let low = try await create(-5)
        #expect(low.status == 200 && low.json["priority"] as? Int == -5)
        let admin = try #require(try SQLProjectStore(database: service.data.database).list().first { $0.name == "admin" })
        try SQLProjectStore(database: service.data.database).set(project: admin.name, maxPriority: 3, maxRunning: nil)
        let high = try await create(3)
        #expect(high.status == 200, "\(high.json)")
        let plain = try await create(nil)
        let ids = [high, plain, low].map { $0.json["id"] as! String }
        for id in ids { _ = try await service.waitForStatus(id, notIn: ["validating_files"]) }
        var positions: [Int?] = []
        for id in ids { positions.append(try await service.request("GET", "/v1/fine_tuning/jobs/\(id)", key: service.adminKey).json["queue_position"] as? Int) }
        #expect(positions == [1, 2, 3], "priority 3, then 0, then -5")
    }

    @Test func aJobIsValidatedThenQueuedAndCanBeCancelled() async throws {
        let service = try LiveService()
        let (model, file) = try await service.jobFixtures()
        let created = try await service.post("/v1/fine_tuning/jobs", ["model": model, "training_file": file, "method": Self.dro(),
                                                                        "seed": 42, "suffix": "demo", "metadata": ["team": "vision"]])
        #expect(created.status == 200, "\(created.json)")
        let id = try #require(created.json["id"] as? String)
        #expect(id.hasPrefix("ftjob-") && created.json["object"] as? String == "fine_tuning.job" && created.json["seed"] as? Int == 42)
        #expect((created.json["hyperparameters"] as? [String: Any])?["margin"] as? Double == 1e-3, "resolved defaults are shown")
        let queued = try await service.waitForStatus(id, notIn: ["validating_files"])
        #expect(queued["status"] as? String == "queued")
        #expect((queued["progress"] as? [String: Any])?["total_steps"] as? Int == 5)

        let cancelled = try await service.post("/v1/fine_tuning/jobs/\(id)/cancel", [:])
        #expect(cancelled.json["status"] as? String == "cancelled" && cancelled.json["finished_at"] is Int)
        let again = try await service.post("/v1/fine_tuning/jobs/\(id)/cancel", [:])
        #expect(again.status == 409 && errorCode(again.json) == "invalid_state")

        let events = try await service.request("GET", "/v1/fine_tuning/jobs/\(id)/events", key: service.adminKey).json["data"] as? [[String: Any]] ?? []
        #expect(events.map { $0["message"] as? String ?? "" }.first == "Cancelled by request", "newest first")
        #expect(events.count == 3 && events.allSatisfy { $0["object"] as? String == "fine_tuning.job.event" })
        let older = try await service.request("GET", "/v1/fine_tuning/jobs/\(id)/events?limit=1&after=\(events[0]["id"] as! String)", key: service.adminKey)
        #expect((older.json["data"] as? [[String: Any]])?.first?["id"] as? String == events[1]["id"] as? String)
        #expect(older.json["has_more"] as? Bool == true)
    }

    @Test func pauseAndResumeMoveBetweenQueuedAndPaused() async throws {
        let service = try LiveService()
        let (model, file) = try await service.jobFixtures()
        let id = try await service.post("/v1/fine_tuning/jobs", ["model": model, "training_file": file, "method": Self.dro()]).json["id"] as! String
        _ = try await service.waitForStatus(id, notIn: ["validating_files"])
        #expect(try await service.post("/v1/fine_tuning/jobs/\(id)/pause", [:]).json["status"] as? String == "paused")
        #expect(try await service.post("/v1/fine_tuning/jobs/\(id)/pause", [:]).status == 409)
        #expect(try await service.post("/v1/fine_tuning/jobs/\(id)/resume", [:]).json["status"] as? String == "queued")
    }

    @Test func aBadLineFailsTheJobWithItsLineNumber() async throws {
        let service = try LiveService()
        let sample = "[" + Array(repeating: "0.1", count: 16).joined(separator: ",") + "]"
        let (model, file) = try await service.jobFixtures(lines: [#"{"prompt": "a", "sample": \#(sample)}"#, #"{"prompt": "b", "sample": [1, 2]}"#])
        let id = try await service.post("/v1/fine_tuning/jobs", ["model": model, "training_file": file, "method": Self.dro()]).json["id"] as! String
        let failed = try await service.waitForStatus(id, notIn: ["validating_files"])
        #expect(failed["status"] as? String == "failed")
        let error = try #require(failed["error"] as? [String: Any])
        #expect(error["code"] as? String == "invalid_training_file" && error["param"] as? String == "training_file")
        #expect((error["message"] as? String)?.contains("line 2: \"sample\" has 2 values; the model expects 16") == true, "\(error)")
    }

    @Test func requestMistakesNameTheParam() async throws {
        let service = try LiveService()
        let (model, file) = try await service.jobFixtures()
        let other = try service.data.database.withWriter { try APIKeys(connection: $0).create(project: "other") }
        let cases: [([String: Any], Int, String)] = [
            (["training_file": file, "method": Self.dro()], 400, "model"),
            (["model": "nope", "training_file": file, "method": Self.dro()], 404, "model"),
            (["model": model, "training_file": "file-nope", "method": Self.dro()], 404, "training_file"),
            (["model": model, "training_file": file, "method": ["type": "ppo"]], 400, "method.type"),
            (["model": model, "training_file": file, "method": Self.dro(["learning_rat": 1])], 400, "method.dro.hyperparameters.learning_rat"),
            (["model": model, "training_file": file, "method": Self.dro(["batch_size": 0])], 400, "method.dro.hyperparameters.batch_size"),
            (["model": model, "training_file": file, "method": ["type": "dpo", "dpo": ["hyperparameters": ["margin": 1]]]], 400,
             "method.dpo.hyperparameters.margin"),
            (["model": model, "training_file": file, "method": Self.dro(), "suffix": "no spaces please"], 400, "suffix"),
            (["model": model, "training_file": file, "method": Self.dro(), "epochs": 3], 400, "epochs"),
        ]
        for (body, status, field) in cases {
            let response = try await service.post("/v1/fine_tuning/jobs", body)
            #expect(response.status == status && param(response.json) == field, "\(body): \(response.json)")
        }
        // Another project can neither use this project's file nor see its jobs.
        let foreign = try await service.post("/v1/fine_tuning/jobs", ["model": model, "training_file": file, "method": Self.dro()], key: other.secret)
        #expect(foreign.status == 404)
        let mine = try await service.post("/v1/fine_tuning/jobs", ["model": model, "training_file": file, "method": Self.dro()])
        let id = mine.json["id"] as! String
        for path in ["/v1/fine_tuning/jobs/\(id)", "/v1/fine_tuning/jobs/\(id)/events", "/v1/fine_tuning/jobs/\(id)/checkpoints"] {
            #expect(try await service.request("GET", path, key: other.secret).status == 404, "\(path)")
        }
        #expect(try await service.post("/v1/fine_tuning/jobs/\(id)/cancel", [:], key: other.secret).status == 404)
        #expect((try await service.request("GET", "/v1/fine_tuning/jobs", key: other.secret).json["data"] as? [Any])?.isEmpty == true)
    }

    @Test func listingIsNewestFirstWithCursors() async throws {
        let service = try LiveService()
        let (model, file) = try await service.jobFixtures()
        var ids: [String] = []
        for _ in 0..<3 {
            ids.append(try await service.post("/v1/fine_tuning/jobs", ["model": model, "training_file": file, "method": Self.dro()]).json["id"] as! String)
        }
        let first = try await service.request("GET", "/v1/fine_tuning/jobs?limit=2", key: service.adminKey).json
        #expect((first["data"] as? [[String: Any]])?.map { $0["id"] as! String } == [ids[2], ids[1]])
        #expect(first["has_more"] as? Bool == true)
        let rest = try await service.request("GET", "/v1/fine_tuning/jobs?limit=2&after=\(ids[1])", key: service.adminKey).json
        #expect((rest["data"] as? [[String: Any]])?.map { $0["id"] as! String } == [ids[0]])
        #expect(rest["has_more"] as? Bool == false)
    }
}

@Suite struct IdempotencyTests {
    @Test func aRepeatedKeyReturnsTheFirstResult() async throws {
        let service = try LiveService()
        let (model, file) = try await service.jobFixtures()
        func create(_ key: String, path: String = "/v1/fine_tuning/jobs") async throws -> (Int, [String: Any], String?) {
            var request = URLRequest(url: URL(string: service.base + path)!)
            request.httpMethod = "POST"
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            request.setValue("Bearer \(service.adminKey)", forHTTPHeaderField: "Authorization")
            request.setValue(key, forHTTPHeaderField: "Idempotency-Key")
            request.httpBody = try JSONSerialization.data(withJSONObject: ["model": model, "training_file": file, "method": JobsTests.dro()])
            let (data, response) = try await URLSession.shared.data(for: request)
            let http = response as! HTTPURLResponse
            return (http.statusCode, (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:], http.value(forHTTPHeaderField: "Idempotent-Replayed"))
        }
        let first = try await create("retry-1"), repeated = try await create("retry-1")
        #expect(first.0 == 200 && repeated.0 == 200)
        #expect(first.1["id"] as? String == repeated.1["id"] as? String)
        #expect(repeated.2 == "true")
        #expect((try await service.request("GET", "/v1/fine_tuning/jobs", key: service.adminKey).json["data"] as? [Any])?.count == 1)
        let other = try await create("retry-2")
        #expect(other.1["id"] as? String != first.1["id"] as? String)
        let reused = try await create("retry-1", path: "/v1/models")
        #expect(reused.0 == 409)
    }
}
