import Foundation
import Service
import HTTP
import Store
import TestSupport
import Testing

/// One worker shared by two projects: a waiting job of the project that has had less of the
/// worker takes it from a running one at its next step, and the preempted job, queued again,
/// later ends with exactly the weights of a run that was never preempted.
@Suite struct PreemptionTests {
    static var long: [String: Any] { ["type": "sft", "sft": ["hyperparameters": ["n_steps": 400_000, "batch_size": 4, "log_every": 20_000,
                                                                                  "checkpoint_every": 100_000, "learning_rate": 1e-3]]] }
    static var short: [String: Any] { ["type": "sft", "sft": ["hyperparameters": ["n_steps": 500, "batch_size": 4, "log_every": 100]]] }

    /// A seeded base model and a training file in the key's project.
    static func fixtures(_ service: LiveService, key: String) async throws -> (model: String, file: String) {
        let model = try await service.post("/v1/models", ["id": "base", "config": ModelsTests.config, "seed": 5], key: key)
        let lines = (0..<12).map { #"{"prompt": "dot \#($0 % 3)", "sample": \#(WorkerFixtures.vector($0))}"# }.joined(separator: "\n")
        let file = try await service.upload(Array(lines.utf8), key: key)
        return (model.json["id"] as! String, file.json["id"] as! String)
    }

    static func job(_ service: LiveService, _ fixtures: (model: String, file: String), method: [String: Any], key: String,
                    extra: [String: Any] = [:]) async throws -> String {
        let body: [String: Any] = ["model": fixtures.model, "training_file": fixtures.file, "method": method, "seed": 7]
        let created = try await service.post("/v1/fine_tuning/jobs", body.merging(extra) { $1 }, key: key)
        return try #require(created.json["id"] as? String, "\(created.json)")
    }

    static func finish(_ service: LiveService, _ id: String, key: String) async throws -> [String: Any] {
        try await poll("job \(id) to end", seconds: 120, every: .milliseconds(20)) {
            let job = try await service.request("GET", "/v1/fine_tuning/jobs/\(id)", key: key).json
            return ["succeeded", "failed", "cancelled"].contains(job["status"] as? String ?? "") ? job : nil
        }
    }

    @Test func aJobOfAnUnderServedProjectPreemptsLosslessly() async throws {
        let received = SignedWebhookTests.Receiver()
        let receiver = HTTPServer(configuration: { var c = HTTPServer.Configuration(); c.port = 0; return c }()) { await received.take($0) }
        let port = try receiver.start()
        defer { receiver.shutdown() }
        let service = try LiveService()
        service.startWorkers(1, minimumRunSeconds: 1)
        let other = try service.data.database.withWriter { try APIKeys(connection: $0).create(project: "other") }.secret
        let mine = try await Self.fixtures(service, key: service.adminKey)
        let theirs = try await Self.fixtures(service, key: other)
        let long = try await Self.job(service, mine, method: Self.long, key: service.adminKey, extra: ["webhook_url": "http://127.0.0.1:\(port)/hook"])
        _ = try await poll("the long job to train", seconds: 30) {
            (try await service.request("GET", "/v1/fine_tuning/jobs/\(long)", key: service.adminKey).json["progress"] as? [String: Any])?["step"] as? Int ?? 0 > 0 ? true : nil
        }
        let short = try await Self.job(service, theirs, method: Self.short, key: other)
        let shortEnd = try await Self.finish(service, short, key: other)
        #expect(shortEnd["status"] as? String == "succeeded")
        let longStatus = try await service.request("GET", "/v1/fine_tuning/jobs/\(long)", key: service.adminKey).json["status"] as? String
        #expect(longStatus != "succeeded", "the other project's job ran before the long one ended: it was preempted")
        let longEnd = try await Self.finish(service, long, key: service.adminKey)
        #expect(longEnd["status"] as? String == "succeeded", "\(longEnd)")
        let events = try await service.request("GET", "/v1/fine_tuning/jobs/\(long)/events?limit=100", key: service.adminKey).json["data"] as? [[String: Any]] ?? []
        let preempted = events.compactMap { $0["message"] as? String }.filter { $0.hasPrefix("Preempted at step") }
        #expect(preempted.count >= 1 && preempted[0].contains("fair share"), "\(preempted)")
        let metrics = try await service.request("GET", "/v1/fine_tuning/jobs/\(long)/metrics?names=loss", key: service.adminKey).json
        #expect((metrics["series"] as? [String: [String: Any]])?["loss"]?["steps"] as? [Int] == Array(stride(from: 20_000, through: 400_000, by: 20_000)))
        // The long job's webhooks: preempted, resumed (once per preemption), then its end.
        let types = try await poll("the webhook of the end", seconds: 10) {
            let types = await received.deliveries.compactMap { try? JSONSerialization.jsonObject(with: Data($0.body)) as? [String: Any] }
                .compactMap { $0["type"] as? String }
            return types.contains("fine_tuning.job.succeeded") ? types : nil
        }
        #expect(types.filter { $0 == "fine_tuning.job.preempted" }.count == preempted.count, "\(types)")
        #expect(types.filter { $0 == "fine_tuning.job.resumed" }.count == preempted.count, "\(types)")

        // The same job alone, never preempted.
        let alone = try LiveService()
        alone.startWorkers(1, minimumRunSeconds: nil)
        let again = try await Self.job(alone, try await Self.fixtures(alone, key: alone.adminKey), method: Self.long, key: alone.adminKey)
        let aloneEnd = try await Self.finish(alone, again, key: alone.adminKey)
        let preemptedWeights = try Data(contentsOf: URL(fileURLWithPath: try service.modelPath(longEnd["fine_tuned_model"] as! String)))
        let aloneWeights = try Data(contentsOf: URL(fileURLWithPath: try alone.modelPath(aloneEnd["fine_tuned_model"] as! String)))
        #expect(preemptedWeights == aloneWeights, "bit-identical to a run that was never preempted")
    }
}

/// A queued job says where it stands and when it should start: when the job ahead of it is to finish.
@Suite struct QueueVisibilityTests {
    static var longReportingOften: [String: Any] {
        ["type": "sft", "sft": ["hyperparameters": ["n_steps": 400_000, "batch_size": 4, "log_every": 1_000, "checkpoint_every": 100_000]]]
    }

    @Test func aQueuedJobShowsItsPlaceAndItsEstimatedStart() async throws {
        let service = try LiveService()
        service.startWorkers(1, minimumRunSeconds: nil)
        let fixtures = try await PreemptionTests.fixtures(service, key: service.adminKey)
        // An estimate needs two progress reports; reports every 1,000 steps come within seconds even
        // on a machine that `make test` keeps busy (the preemption test's 20,000 may take a minute).
        let long = try await PreemptionTests.job(service, fixtures, method: Self.longReportingOften, key: service.adminKey)
        let finish = try await poll("the running job's estimated finish", seconds: 60) {
            try await service.request("GET", "/v1/fine_tuning/jobs/\(long)", key: service.adminKey).json["estimated_finish"] as? Int
        }
        let waiting = try await PreemptionTests.job(service, fixtures, method: PreemptionTests.short, key: service.adminKey)
        let queued = try await poll("the job to be queued", seconds: 10) {
            let job = try await service.request("GET", "/v1/fine_tuning/jobs/\(waiting)", key: service.adminKey).json
            return job["status"] as? String == "queued" ? job : nil
        }
        #expect(queued["queue_position"] as? Int == 1)
        let start = try #require(queued["estimated_start"] as? Int, "\(queued)")
        // The running job's estimate moves with its measured pace (a loaded machine slows it), so
        // the queued job's start is held to the estimates read just before and just after it; an
        // estimate already past means "now" (a start is never in the past).
        let finishAfter = try #require(
            try await service.request("GET", "/v1/fine_tuning/jobs/\(long)", key: service.adminKey).json["estimated_finish"] as? Int)
        let now = Int(Date().timeIntervalSince1970)
        #expect(start >= min(finish, finishAfter) - 2 && start <= max(finish, finishAfter, now) + 2,
                "starts when the running job should finish: \(start) against \(finish)…\(finishAfter) (now \(now))")
        let listed = try await service.request("GET", "/v1/fine_tuning/jobs", key: service.adminKey).json["data"] as? [[String: Any]] ?? []
        #expect(listed.first { $0["id"] as? String == waiting }?["estimated_start"] as? Int != nil)
        #expect(listed.first { $0["id"] as? String == long }?["estimated_start"] is NSNull, "a running job has no estimated start")
        _ = try await service.post("/v1/fine_tuning/jobs/\(long)/cancel", [:])
    }
}

@Suite struct DeadlineTests {
    @Test func aJobPastItsMaxDurationFailsWithDeadlineExceeded() async throws {
        let service = try LiveService(workers: 1)
        let (model, file) = try await service.jobFixtures()
        let created = try await service.post("/v1/fine_tuning/jobs", ["model": model, "training_file": file, "max_duration": 1,
                                                                       "method": ["type": "sft", "sft": ["hyperparameters": ["n_steps": 10_000_000, "log_every": 1000]]]])
        let id = try #require(created.json["id"] as? String, "\(created.json)")
        #expect(created.json["max_duration"] as? Int == 1 && created.json["max_retries"] as? Int == 3)
        let ended = try await PreemptionTests.finish(service, id, key: service.adminKey)
        #expect(ended["status"] as? String == "failed")
        let error = ended["error"] as? [String: Any]
        #expect(error?["code"] as? String == "deadline_exceeded" && (error?["message"] as? String)?.contains("max_duration of 1 s") == true, "\(ended)")
        #expect(try await service.post("/v1/fine_tuning/jobs", ["model": model, "training_file": file, "max_retries": 11,
                                                                 "method": ["type": "sft"]]).status == 400)
    }
}

/// What clients moving from OpenAI's SDK send: "auto", a learning-rate multiplier, the
/// deprecated top-level hyperparameters, and integrations.
@Suite struct OpenAIHabitsTests {
    @Test func autoMultipliersTopLevelHyperparametersAndIntegrations() async throws {
        let service = try LiveService()
        let (model, file) = try await service.jobFixtures()
        func create(_ body: [String: Any]) async throws -> (status: Int, json: [String: Any]) {
            try await service.post("/v1/fine_tuning/jobs", ["model": model, "training_file": file].merging(body) { $1 })
        }
        let auto = try await create(["method": ["type": "dpo", "dpo": ["hyperparameters": ["batch_size": "auto", "beta": "auto", "learning_rate_multiplier": 3]]]])
        #expect(auto.status == 200, "\(auto.json)")
        let resolved = auto.json["hyperparameters"] as? [String: Any] ?? [:]
        // dpo's default rate is 1e-8 per example of the effective batch: 16 here, times 3.
        #expect(resolved["batch_size"] as? Int == 16 && abs((resolved["learning_rate"] as? Double ?? 0) - 3 * 16e-8) < 1e-18, "\(resolved)")
        let both = try await create(["method": ["type": "dpo", "dpo": ["hyperparameters": ["learning_rate": 1e-4, "learning_rate_multiplier": 2]]]])
        #expect(both.status == 400 && (both.json["error"] as? [String: Any])?["param"] as? String == "method.dpo.hyperparameters.learning_rate_multiplier")
        let legacy = try await create(["hyperparameters": ["n_epochs": "auto", "batch_size": 4]])
        #expect(legacy.status == 200 && (legacy.json["method"] as? [String: Any])?["type"] as? String == "sft", "\(legacy.json)")
        let twice = try await create(["method": ["type": "sft", "sft": ["hyperparameters": ["batch_size": 4]]], "hyperparameters": ["batch_size": 8]])
        #expect(twice.status == 400 && (twice.json["error"] as? [String: Any])?["param"] as? String == "hyperparameters")
        #expect(try await create(["method": ["type": "kto"], "hyperparameters": ["batch_size": 8]]).status == 400, "method, or the deprecated form")
        #expect(try await create(["method": ["type": "sft", "sft": ["hyperparameters": ["n_steps": "auto", "n_epochs": "auto"]]]]).status == 400)
        #expect(try await create(["method": ["type": "sft"], "integrations": []]).status == 200)
        let wandb = try await create(["method": ["type": "sft"], "integrations": [["type": "wandb", "wandb": ["project": "p"]]]])
        #expect(wandb.status == 400 && ((wandb.json["error"] as? [String: Any])?["message"] as? String)?.contains("wandb") == true, "\(wandb.json)")
        #expect(try await create(["method": ["type": "sft", "sft": ["hyperparameters": ["learning_rate_multiplier": -1]]]]).status == 400)
    }
}

/// Webhooks signed per Standard Webhooks with the project's secret, checked by the openai SDK.
@Suite struct SignedWebhookTests {
    actor Receiver {
        var deliveries: [(body: [UInt8], headers: [String: String])] = []
        func take(_ request: HTTPRequest) -> HTTPResponse {
            deliveries.append((request.body, Dictionary(request.head.headers.map { ($0.name.lowercased(), $0.value) }) { $1 }))
            return HTTPResponse(status: 200, headers: [("Content-Type", "text/plain")], body: .bytes(Array("ok".utf8)))
        }
    }

    @Test func theOpenAISDKVerifiesOurSignature() async throws {
        let received = Receiver()
        let receiver = HTTPServer(configuration: { var c = HTTPServer.Configuration(); c.port = 0; return c }()) { await received.take($0) }
        let port = try receiver.start()
        defer { receiver.shutdown() }
        let service = try LiveService(workers: 1)
        #expect(try await service.request("GET", "/v1/webhook_secret", key: service.adminKey).json["configured"] as? Bool == false)
        let made = try await service.post("/v1/webhook_secret", [:])
        let secret = try #require(made.json["secret"] as? String)
        #expect(secret.hasPrefix("whsec_"))
        let shown = try await service.request("GET", "/v1/webhook_secret", key: service.adminKey).json
        #expect(shown["configured"] as? Bool == true && shown["secret"] is NSNull, "shown once: \(shown)")
        let (model, file) = try await service.jobFixtures()
        let id = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 3, "batch_size": 4],
                                             extra: ["webhook_url": "http://127.0.0.1:\(port)/hook"])
        _ = try await service.waitFor(id, ["succeeded"])
        // The final checkpoint's webhook, then the job's end: the SDK verifies both.
        let deliveries = try await poll("both webhooks", seconds: 10) { await received.deliveries.count >= 2 ? await received.deliveries : nil }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../Fixtures/interop/openai_webhook.py").standardized.path
        var verified: [String] = []
        for (index, delivery) in deliveries.enumerated() {
            #expect(delivery.headers["webhook-signature"]?.hasPrefix("v1,") == true)
            let bodyPath = service.directory + "/hook\(index).json", headersPath = service.directory + "/hook-headers\(index).json"
            try Data(delivery.body).write(to: URL(fileURLWithPath: bodyPath))
            try JSONSerialization.data(withJSONObject: delivery.headers).write(to: URL(fileURLWithPath: headersPath))
            let (status, output) = try await runToolAsync(["python3", script, bodyPath, headersPath, secret])
            #expect(status == 0 && output.contains("tampered: refused") && output.contains("other secret: refused"), "\(output)")
            verified.append(output.split(separator: "\n").first.map(String.init) ?? "")
        }
        #expect(verified.contains("fine_tuning.job.succeeded \(id)") && verified.contains { $0.hasPrefix("fine_tuning.checkpoint.saved ftckpt-") },
                "\(verified)")
    }
}

@Suite struct JobListFilterTests {
    @Test func theJobListFiltersByStatusModelMetadataAndTime() async throws {
        let service = try LiveService()
        let (model, file) = try await service.jobFixtures()
        var ids: [String] = []
        for team in ["vision", "audio"] {
            let created = try await service.post("/v1/fine_tuning/jobs", ["model": model, "training_file": file, "method": ["type": "sft"], "metadata": ["team": team]])
            ids.append(try #require(created.json["id"] as? String))
        }
        _ = try await service.post("/v1/fine_tuning/jobs/\(ids[1])/cancel", [:])
        func list(_ query: String) async throws -> [String] {
            let page = try await service.request("GET", "/v1/fine_tuning/jobs?\(query)", key: service.adminKey).json
            return (page["data"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
        }
        #expect(try await list("status=cancelled") == [ids[1]])
        #expect(try await list("metadata%5Bteam%5D=vision") == [ids[0]])
        #expect(try await list("metadata%5Bteam%5D=vision&metadata%5Bteam%5D=audio") == [ids[0]], "a repeated key: its first value")
        #expect(try await list("metadata%5Bteam%5D%5B%5D=vision").isEmpty, "an array is no job's metadata value")
        #expect(try await list("model=\(model)").count == 2)
        #expect(try await list("model=unknown-model").isEmpty)
        #expect(try await list("created_after=2000000000").isEmpty)
        #expect(try await service.request("GET", "/v1/fine_tuning/jobs?status=bogus", key: service.adminKey).status == 400)
        // A job carries at most 16 metadata pairs: 17 distinct names match nothing, without a query.
        let seventeen = (0..<17).map { "metadata%5Bk\($0)%5D=v" }
        let many = try await service.request("GET", "/v1/fine_tuning/jobs?" + seventeen.joined(separator: "&"), key: service.adminKey)
        #expect(many.status == 200 && (many.json["data"] as? [Any])?.isEmpty == true)
    }

    @Test func filesAndModelsTakeTheSameTimeRange() async throws {
        let service = try LiveService()
        let (model, file) = try await service.jobFixtures()
        func ids(_ path: String) async throws -> [String] {
            let page = try await service.request("GET", path, key: service.adminKey)
            #expect(page.status == 200, "\(page.json)")
            return (page.json["data"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
        }
        let now = Int(Date().timeIntervalSince1970)
        #expect(try await ids("/v1/files?created_after=\(now - 60)").contains(file))
        #expect(try await ids("/v1/files?created_after=\(now + 60)").isEmpty)
        #expect(try await ids("/v1/files?created_before=\(now - 60)").isEmpty)
        #expect(try await ids("/v1/models?created_before=\(now + 60)").contains(model))
        #expect(try await ids("/v1/models?created_after=\(now + 60)").isEmpty)
        let bad = try await service.request("GET", "/v1/models?created_after=yesterday", key: service.adminKey)
        #expect(bad.status == 400 && (bad.json["error"] as? [String: Any])?["param"] as? String == "created_after")
    }
}

@Suite struct DryRunTests {
    @Test func aDryRunChecksEverythingAndQueuesNothing() async throws {
        let service = try LiveService(workers: 1)
        let (model, file) = try await service.jobFixtures()
        let body: [String: Any] = ["model": model, "training_file": file, "dry_run": true,
                                   "method": ["type": "sft", "sft": ["hyperparameters": ["n_steps": 200, "batch_size": 4]]]]
        let first = try await service.post("/v1/fine_tuning/jobs", body)
        #expect(first.status == 200 && first.json["object"] as? String == "fine_tuning.job.dry_run", "\(first.json)")
        #expect(first.json["total_steps"] as? Int == 200 && first.json["training_examples"] as? Int == 12)
        #expect((first.json["memory_estimate_bytes"] as? Int ?? 0) > 0 && first.json["estimated_duration_seconds"] is NSNull)
        let listed = try await service.request("GET", "/v1/fine_tuning/jobs", key: service.adminKey).json["data"] as? [[String: Any]]
        #expect(listed?.isEmpty == true, "nothing was queued")

        // A bad line is found now, as validation would find it later.
        let (_, badFile) = try await service.jobFixtures(lines: [#"{"prompt": "a", "sample": [1, 2]}"#])
        let bad = try await service.post("/v1/fine_tuning/jobs", body.merging(["training_file": badFile]) { $1 })
        #expect(bad.status == 400 && errorCode(bad.json) == "invalid_training_file", "\(bad.json)")

        // Once a job of this model and method has run, its measured rate gives the estimate.
        let ran = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 300, "batch_size": 4, "log_every": 50])
        _ = try await service.waitFor(ran, ["succeeded"])
        let second = try await service.post("/v1/fine_tuning/jobs", body)
        #expect(second.json["estimated_duration_seconds"] as? Int != nil && (second.json["estimate_basis"] as? String)?.contains(ran) == true, "\(second.json)")
        // 200 steps of 4 samples at the rate the job measured.
        let rate = try #require(((try await service.job(ran))["progress"] as? [String: Any])?["samples_per_s"] as? Double)
        #expect(second.json["estimated_duration_seconds"] as? Int == Int((800 / rate).rounded(.up)), "\(second.json) at \(rate) samples/s")
    }
}
