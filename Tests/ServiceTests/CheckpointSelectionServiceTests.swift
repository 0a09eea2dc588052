import Diffusion
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import HTTP
import Numerics
import Service
import Store
import TestSupport
import Testing

/// Issue 15 through the API: validation metrics, early stopping and the best checkpoint,
/// retention that keeps it, jobs that start from a checkpoint, forks, and graders.
@Suite(.ownThread) struct CheckpointSelectionServiceTests {
    static let terminal: Set<String> = ["succeeded", "failed", "cancelled"]

    /// A service with a worker on SQLite, or on a real PostgreSQL.
    static func service(_ dialect: SQLDialect) throws -> LiveService {
        switch dialect {
        case .sqlite: try LiveService(workers: 1)
        case .postgres:
            try LiveService(workers: 1, database: PostgresDatabase(url: try PostgresServer.running().createDatabase(), connections: 8, timeout: 20))
        }
    }

    func metrics(_ service: LiveService, _ id: String) async throws -> [String: [(step: Int, value: Double)]] {
        let json = try await service.request("GET", "/v1/fine_tuning/jobs/\(id)/metrics", key: service.adminKey).json
        var series: [String: [(Int, Double)]] = [:]
        for (name, points) in json["series"] as? [String: [String: Any]] ?? [:] {
            series[name] = Array(zip(points["steps"] as? [Int] ?? [], points["values"] as? [Double] ?? []))
        }
        return series
    }

    func checkpoints(_ service: LiveService, _ id: String) async throws -> [[String: Any]] {
        try await service.request("GET", "/v1/fine_tuning/jobs/\(id)/checkpoints?limit=100", key: service.adminKey).json["data"] as? [[String: Any]] ?? []
    }

    @Test(arguments: SQLDialect.allCases)
    func earlyStoppingPublishesTheBestCheckpointAndRetentionKeepsIt(dialect: SQLDialect) async throws {
        let service = try Self.service(dialect)
        let model = try await WorkerFixtures.baseModel(service)
        let pairs = try await WorkerFixtures.upload(service, WorkerFixtures.pairs)
        // min_delta so large that nothing after the first evaluation improves: patience 2 stops at the third.
        let id = try await service.createJob(model: model, file: pairs, method: "dpo",
                                             ["n_steps": 200, "batch_size": 4, "checkpoint_every": 4, "eval_every": 4, "log_every": 100,
                                              "keep_checkpoints": 1],
                                             extra: ["validation_file": pairs, "early_stopping": ["metric": "val_loss", "patience": 2, "min_delta": 1e9]])
        let created = try await service.job(id)
        #expect((created["early_stopping"] as? [String: Any])?["mode"] as? String == "min", "the mode follows from the metric's name")
        #expect(created["result"] as? String == "best", "early stopping publishes the best checkpoint unless asked otherwise")
        let done = try await service.waitFor(id, Self.terminal)
        #expect(done["status"] as? String == "succeeded", "\(done)")
        // Its progress says where it stopped (its last checkpoint records that step).
        #expect((done["progress"] as? [String: Any])?["step"] as? Int == 12 && (done["progress"] as? [String: Any])?["total_steps"] as? Int == 200)
        let best = try #require(done["best_checkpoint"] as? [String: Any], "\(done)")
        #expect(best["step_number"] as? Int == 4 && best["metric"] as? String == "val_loss")
        #expect(best["fine_tuned_model_checkpoint"] as? String == "ft:\(model):preftune:\(id):ckpt-step-4")
        // The stop is an event with its reason; the result is the best checkpoint's weights.
        let messages = try await service.events(id).compactMap { $0["message"] as? String }
        #expect(messages.contains { $0.hasPrefix("early stop at step 12/200: val_loss did not improve") }, "\(messages)")
        #expect(messages.filter { $0.hasPrefix("validation at step") }.count == 3)
        let published = try ModelFile.load(service.data.modelPath(try #require(done["fine_tuned_model"] as? String))).parameters.array
        #expect(published == (try ModelFile.load(service.data.artifacts.localPath(.checkpoint(job: id, step: 4))).parameters.array))
        // keep_checkpoints 1 keeps the newest, and the best besides.
        #expect(try await checkpoints(service, id).compactMap { $0["step_number"] as? Int } == [12, 4])
        // Step 8's checkpoint was written (checkpoint_every 4) and deleted with its training state;
        // the kept ones keep theirs (a fork needs it).
        let artifacts = service.data.artifacts
        #expect(artifacts.exists(.trainingState(job: id, step: 12)) && artifacts.exists(.trainingState(job: id, step: 4)))
        #expect(!artifacts.exists(.trainingState(job: id, step: 8)) && !artifacts.exists(.checkpoint(job: id, step: 8)))
        // The validation metrics are series of their own.
        let series = try await metrics(service, id)
        for name in ["val_loss", "val_implicit_acc", "val_reward_margin"] { #expect(series[name]?.map(\.step) == [4, 8, 12], "\(name)") }
    }

    @Test func mistakesInEarlyStoppingGradersAndResultsAreNamed() async throws {
        let service = try LiveService()
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        func create(_ extra: [String: Any]) async throws -> (status: Int, param: String?, message: String) {
            let body: [String: Any] = ["model": model, "training_file": file, "method": ["type": "sft"]].merging(extra) { $1 }
            let answer = try await service.post("/v1/fine_tuning/jobs", body)
            let error = answer.json["error"] as? [String: Any]
            return (answer.status, error?["param"] as? String, error?["message"] as? String ?? "")
        }
        // A metric no job measures is a mistake; one this job does not measure does not fit it.
        var answer = try await create(["validation_file": file, "early_stopping": ["metric": "val_accuracy"]])
        #expect(answer.status == 400 && answer.param == "early_stopping.metric" && answer.message.contains("must be one of val_loss"))
        answer = try await create(["early_stopping": ["metric": "val_loss"]])
        #expect(answer.status == 422 && answer.param == "early_stopping.metric" && answer.message.contains("give a validation_file or a grader"))
        answer = try await create(["validation_file": file, "early_stopping": ["metric": "val_implicit_acc"]])
        #expect(answer.status == 422 && answer.message.contains("this job measures val_loss"), "sft has no implicit reward")
        answer = try await create(["validation_file": file, "early_stopping": ["metric": "val_loss", "mode": "lowest"]])
        #expect(answer.status == 400 && answer.param == "early_stopping.mode")
        answer = try await create(["validation_file": file, "early_stopping": ["metric": "val_loss", "patience": 0]])
        #expect(answer.status == 400 && answer.param == "early_stopping.patience")
        answer = try await create(["validation_file": file, "early_stopping": ["metric": "val_loss", "when": "soon"]])
        #expect(answer.status == 400 && answer.param == "early_stopping.when")
        answer = try await create(["result": "best"])
        #expect(answer.status == 422 && answer.param == "result")
        answer = try await create(["grader": ["type": "http", "url": "http://10.1.2.3/score"]])
        #expect(answer.status == 400 && answer.param == "grader.url" && answer.message.contains("private"))
        answer = try await create(["grader": ["type": "reward_model", "file": file]])
        #expect(answer.status == 422 && answer.param == "grader.file" && answer.message.contains("not a reward model"), "\(answer)")
        answer = try await create(["grader": ["type": "reward_model", "file": "file-nope"]])
        #expect(answer.status == 404 && answer.param == "grader.file")
        answer = try await create(["grader": ["type": "http", "url": "http://127.0.0.1:9/x", "samples_per_prompt": 64]])
        #expect(answer.status == 422 && answer.param == "grader.samples_per_prompt" && answer.message.contains("at most 256"))
        answer = try await create(["grader": ["type": "http", "url": "http://127.0.0.1:9/x", "conditions": [[1, 2]]]])
        #expect(answer.status == 422 && answer.param == "grader.conditions")
        answer = try await create(["grader": ["type": "reward_model"]])
        #expect(answer.status == 400 && answer.param == "grader.file")
        answer = try await create(["grader": ["type": "http", "url": "http://127.0.0.1:9/x"], "early_stopping": ["metric": "reward_win_rate", "patience": 3]])
        #expect(answer.status == 200, "\(answer)")
    }

    @Test("a fork with the parent's hyperparameters ends with the parent's weights, bit for bit", arguments: SQLDialect.allCases)
    func forksReproduceAndRecordTheirLineage(dialect: SQLDialect) async throws {
        let service = try Self.service(dialect)
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let hyper: [String: Any] = ["n_steps": 12, "batch_size": 4, "checkpoint_every": 4, "log_every": 2, "policy_steps": 3, "buffer_size": 6,
                                    "learning_rate": 1e-3, "ema_decay": 0.9]
        let parent = try await service.createJob(model: model, file: file, method: "dro", hyper)
        let parentDone = try await service.waitFor(parent, Self.terminal)
        #expect(parentDone["status"] as? String == "succeeded", "\(parentDone)")

        let forked = try await service.post("/v1/fine_tuning/jobs/\(parent)/fork", ["from_step": 4, "suffix": "again"])
        #expect(forked.status == 200, "\(forked.json)")
        let fork = try #require(forked.json["id"] as? String)
        #expect(forked.json["parent_job"] as? String == parent && forked.json["from_step"] as? Int == 4)
        let forkDone = try await service.waitFor(fork, Self.terminal)
        #expect(forkDone["status"] as? String == "succeeded", "\(forkDone)")
        #expect(try service.finalWeights(fork) == service.finalWeights(parent))
        let parentSeries = try await metrics(service, parent)["loss"] ?? [], forkSeries = try await metrics(service, fork)["loss"] ?? []
        #expect(forkSeries.map(\.step) == [6, 8, 10, 12])
        #expect(forkSeries.map(\.value) == parentSeries.filter { $0.step > 4 }.map(\.value))

        // Changed hyperparameters continue from the same state to other weights.
        let changed = try await service.post("/v1/fine_tuning/jobs/\(parent)/fork", ["from_step": 8, "hyperparameters": ["learning_rate": 1e-2, "n_steps": 16]])
        let other = try #require(changed.json["id"] as? String, "\(changed.json)")
        #expect((changed.json["hyperparameters"] as? [String: Any])?["n_steps"] as? Int == 16)
        #expect(try await service.waitFor(other, Self.terminal)["status"] as? String == "succeeded")
        #expect(try service.finalWeights(other) != service.finalWeights(parent))

        // What a fork cannot do.
        let missing = try await service.post("/v1/fine_tuning/jobs/\(parent)/fork", ["from_step": 5])
        #expect(missing.status == 404 && (missing.json["error"] as? [String: Any])?["param"] as? String == "from_step")
        let tooShort = try await service.post("/v1/fine_tuning/jobs/\(parent)/fork", ["from_step": 8, "hyperparameters": ["n_steps": 8]])
        #expect(tooShort.status == 422 && (tooShort.json["error"] as? [String: Any])?["param"] as? String == "hyperparameters.n_steps")
        let buffer = try await service.post("/v1/fine_tuning/jobs/\(parent)/fork", ["from_step": 4, "hyperparameters": ["buffer_size": 12]])
        #expect(buffer.status == 422 && errorCode(buffer.json) == "conflicting_hyperparameters")
        let unknown = try await service.post("/v1/fine_tuning/jobs/\(parent)/fork", ["from_step": 4, "hyperparameters": ["beta": 1]])
        #expect(unknown.status == 422 && (unknown.json["error"] as? [String: Any])?["param"] as? String == "hyperparameters.beta", "\(unknown)")
        let outOfRange = try await service.post("/v1/fine_tuning/jobs/\(parent)/fork", ["from_step": 4, "hyperparameters": ["learning_rate": -1]])
        #expect(outOfRange.status == 400 && (outOfRange.json["error"] as? [String: Any])?["param"] as? String == "hyperparameters.learning_rate")
        let nobody = try await service.post("/v1/fine_tuning/jobs/ftjob-000000000000000000000000/fork", ["from_step": 4])
        #expect(nobody.status == 404)

        // A job started from a checkpoint trains from its weights (fresh optimizer state).
        let checkpointModel = "ft:\(model):preftune:\(parent):ckpt-step-8"
        let fromCheckpoint = try await service.createJob(model: checkpointModel, file: file, method: "sft", ["n_steps": 3, "batch_size": 4])
        let started = try await service.waitFor(fromCheckpoint, Self.terminal)
        #expect(started["status"] as? String == "succeeded" && started["model"] as? String == checkpointModel, "\(started)")
        #expect(started["fine_tuned_model"] as? String == "ft:\(model):preftune:\(fromCheckpoint)")
        let firstEvent = try await service.events(fromCheckpoint).first?["message"] as? String
        #expect(firstEvent == "Created fine-tuning job \(fromCheckpoint) from checkpoint \(checkpointModel)")
        let absent = try await service.post("/v1/fine_tuning/jobs", ["model": "ft:\(model):preftune:\(parent):ckpt-step-5", "training_file": file,
                                                                     "method": ["type": "sft"]])
        #expect(absent.status == 404 && (absent.json["error"] as? [String: Any])?["param"] as? String == "model")
    }

    /// A one-layer reward model over the sample and the prompt's token bag.
    static func rewardModelFile(weights: [Float], tokenWeight: Float, bias: Float) -> [UInt8] {
        var writer = SafeTensorsWriter()
        writer.metadata = ["format": "preftune.reward_mlp.v1", "condition": "tokens"]
        writer.add("layers.0.weight", shape: [1, 16 + 32], floats: weights + [Float](repeating: tokenWeight, count: 32))
        writer.add("layers.0.bias", shape: [1], floats: [bias])
        return writer.serialized()
    }

    @Test("a reward model grades each checkpoint on the draws POST /v1/samples gives for the same settings")
    func rewardModelGrading() async throws {
        let service = try LiveService(workers: 1)
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let w = (0..<16).map { Float($0 % 3) - 1 }
        let reward = try await WorkerFixtures.upload(service, Self.rewardModelFile(weights: w, tokenWeight: 0.5, bias: 0.25))
        let prompts = ["shape 0", "shape 1"]
        let id = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 6, "batch_size": 4, "checkpoint_every": 3, "learning_rate": 1e-2],
                                             extra: ["grader": ["type": "reward_model", "file": reward, "prompts": prompts, "samples_per_prompt": 2,
                                                                "steps": 6, "seed": 5]])
        let done = try await service.waitFor(id, Self.terminal)
        #expect(done["status"] as? String == "succeeded", "\(done)")
        #expect((done["best_checkpoint"] as? [String: Any])?["metric"] as? String == "reward_mean", "a grader selects by mean reward")
        #expect(done["result"] as? String == "last")
        // The grader as stored, its defaults filled in, nothing of the other kind.
        #expect(Set((done["grader"] as? [String: Any])?.keys.map { $0 } ?? []) == ["type", "file", "prompts", "samples_per_prompt", "sampler", "steps",
                                                                                   "guidance_scale", "seed"], "\(done["grader"] ?? "")")
        let series = try await metrics(service, id)
        #expect(series["reward_mean"]?.map(\.step) == [3, 6] && series["reward_win_rate"]?.count == 2)
        // Score the checkpoint's samples here, by hand: w·x + 0.5 × tokens + 0.25 (each prompt has 2 tokens).
        let samples = try await service.post("/v1/samples", ["model": "ft:\(model):preftune:\(id):ckpt-step-6", "prompts": prompts, "n": 2,
                                                             "steps": 6, "seed": 5])
        let rows = try #require(samples.json["data"] as? [[String: Any]]).map { ($0["sample"] as? [Double] ?? []).map(Float.init) }
        let scores = rows.map { Double(zip($0, w).reduce(Float(0)) { $0 + $1.0 * $1.1 } + 0.5 * 2 + 0.25) }
        let mean = scores.reduce(0, +) / Double(scores.count)
        #expect(abs((series["reward_mean"]?.last?.value ?? .nan) - mean) < 1e-4, "\(series["reward_mean"] ?? []) against \(mean)")
        let graded = try await service.events(id).compactMap { $0["message"] as? String }.filter { $0.hasPrefix("graded step") }
        #expect(graded.count == 2 && graded[0].contains("reward model \(reward)"))
    }

    @Test func anHTTPGraderIsSignedRetriedAndNeverFailsTheJob() async throws {
        actor Calls {
            var steps: [Int] = [], signed = 0, failuresLeft: Int
            init(failures: Int) { failuresLeft = failures }
            func record(step: Int, signed isSigned: Bool) -> Bool {
                steps.append(step)
                if isSigned { signed += 1 }
                if failuresLeft > 0 { failuresLeft -= 1; return false }
                return true
            }
            func failAll() { failuresLeft = Int.max }
        }
        let calls = Calls(failures: 1)
        let receiver = HTTPServer(configuration: { var c = HTTPServer.Configuration(); c.port = 0; return c }()) { request in
            let body = (try? JSONSerialization.jsonObject(with: Data(request.body))) as? [String: Any] ?? [:]
            let samples = body["samples"] as? [[String: Any]] ?? []
            let signed = request.head.headers.contains { $0.name.lowercased() == "webhook-signature" && $0.value.hasPrefix("v1,") }
            guard await calls.record(step: body["step"] as? Int ?? -1, signed: signed) else {
                return HTTPResponse(status: 503, headers: [("Content-Type", "text/plain")], body: .bytes(Array("busy".utf8)))
            }
            // The score: the sample's mean, so a brighter sample scores higher.
            let scores = samples.map { ($0["sample"] as? [Double] ?? []).reduce(0, +) / 16 }
            let answer = try! JSONSerialization.data(withJSONObject: ["scores": scores])
            return HTTPResponse(status: 200, headers: [("Content-Type", "application/json")], body: .bytes(Array(answer)))
        }
        let port = try receiver.start()
        defer { receiver.shutdown() }
        let service = try LiveService(workers: 1)
        _ = try await service.post("/v1/webhook_secret", [:])
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let id = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 4, "batch_size": 4, "checkpoint_every": 2],
                                             extra: ["grader": ["type": "http", "url": "http://127.0.0.1:\(port)/score", "samples_per_prompt": 1, "steps": 4,
                                                                "max_attempts": 2, "timeout_seconds": 5]])
        let done = try await service.waitFor(id, Self.terminal)
        #expect(done["status"] as? String == "succeeded", "\(done)")
        // The base model (step 0) failed once and was tried again; then each checkpoint.
        #expect(await calls.steps == [0, 0, 2, 4])
        #expect(await calls.signed == 4)
        #expect(try await metrics(service, id)["reward_mean"]?.count == 2)

        // A grader that never answers well: each grading fails after its attempts, the job succeeds.
        await calls.failAll()
        let broken = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 2, "batch_size": 4, "checkpoint_every": 2],
                                                 extra: ["grader": ["type": "http", "url": "http://127.0.0.1:\(port)/score", "max_attempts": 1, "samples_per_prompt": 1,
                                                                    "steps": 2]])
        let brokenDone = try await service.waitFor(broken, Self.terminal)
        #expect(brokenDone["status"] as? String == "succeeded")
        let messages = try await service.events(broken).compactMap { $0["message"] as? String }
        #expect(messages.contains { $0.hasPrefix("grading at step 2 failed") && $0.contains("HTTP 503") }, "\(messages)")
    }

    /// A grader that takes its time does not hold a cancel (or a pause) back: the worker stops
    /// waiting for it within a fraction of a second, not after its timeout and retries.
    @Test func aCancelDoesNotWaitForASlowGrader() async throws {
        actor Seen { var requests = 0; func saw() { requests += 1 } }
        let seen = Seen()
        let receiver = HTTPServer(configuration: { var c = HTTPServer.Configuration(); c.port = 0; return c }()) { _ in
            await seen.saw()
            try? await Task.sleep(for: .seconds(20))
            return HTTPResponse(status: 200, headers: [("Content-Type", "application/json")], body: .bytes(Array(#"{"scores": []}"#.utf8)))
        }
        let port = try receiver.start()
        defer { receiver.shutdown() }
        let service = try LiveService(workers: 1)
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let id = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 4, "batch_size": 4, "checkpoint_every": 2],
                                             extra: ["grader": ["type": "http", "url": "http://127.0.0.1:\(port)/score", "samples_per_prompt": 1,
                                                                "steps": 2, "timeout_seconds": 60, "max_attempts": 3]])
        _ = try await poll("the grader to be asked", seconds: 60) { await seen.requests > 0 ? true : nil }
        let asked = Date()
        _ = try await service.post("/v1/fine_tuning/jobs/\(id)/cancel", [:])
        while service.pool?.busyWorkers != 0, Date().timeIntervalSince(asked) < 60 { try await Task.sleep(for: .milliseconds(20)) }
        let took = Date().timeIntervalSince(asked)
        #expect(took < 5, "the worker stopped \(took) s after the cancel (the grader would have held it 180 s)")
        #expect(try await service.job(id)["status"] as? String == "cancelled")
        // The cancel ended the job's lease, so the worker's last words are in its log file, not its events.
        let log = try String(contentsOfFile: service.data.logPath(id), encoding: .utf8)
        #expect(log.contains("grading at step 2 failed") && log.contains("stopped: the job is pausing or ending"), "\(log)")
    }
}
