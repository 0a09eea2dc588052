import Diffusion
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import HTTP
import Service
import Store
import TestSupport
import Testing

extension LiveService {
    func job(_ id: String) async throws -> [String: Any] {
        try await request("GET", "/v1/fine_tuning/jobs/\(id)", key: adminKey).json
    }

    /// Polls until the job's status is one of `statuses`.
    func waitFor(_ id: String, _ statuses: Set<String>, seconds: Double = 120) async throws -> [String: Any] {
        try await poll("job \(id) to reach \(statuses)", seconds: seconds) {
            let job = try await job(id)
            return (job["status"] as? String).map(statuses.contains) == true ? job : nil
        }
    }

    /// Polls until the job has trained at least `step` steps.
    func waitForStep(_ id: String, atLeast step: Int) async throws {
        try await poll("job \(id) to reach step \(step)", every: .milliseconds(5)) {
            ((try await job(id))["progress"] as? [String: Any])?["step"] as? Int ?? 0 >= step ? () : nil
        }
    }

    func events(_ id: String) async throws -> [[String: Any]] {
        // Oldest first.
        try await (request("GET", "/v1/fine_tuning/jobs/\(id)/events?limit=1000", key: adminKey).json["data"] as? [[String: Any]] ?? []).reversed()
    }

    func createJob(model: String, file: String, method: String, _ hyperparameters: [String: Any], seed: Int = 7,
                   extra: [String: Any] = [:]) async throws -> String {
        let body = ["model": model, "training_file": file, "seed": seed,
                    "method": ["type": method, method: ["hyperparameters": hyperparameters]]].merging(extra) { $1 }
        let created = try await post("/v1/fine_tuning/jobs", body)
        guard let id = created.json["id"] as? String else { throw HTTPTestFailure("create failed: \(created.json)") }
        return id
    }

    /// Weights a job left in its directory.
    func finalWeights(_ id: String) throws -> [Float] { try ModelFile.load("\(data.job(id).path)/model.safetensors").parameters.array }
}

/// Training data for the tiny text model of `ModelsTests.config` (D = 16): a few prompts
/// with their own patterns, and pairs whose chosen sample is the brighter one.
enum WorkerFixtures {
    static func vector(_ seed: Int, offset: Double = 0) -> String {
        "[" + (0..<16).map { String(format: "%.3f", sin(Double($0 * (seed + 1)) * 0.7) * 0.8 + offset) }.joined(separator: ",") + "]"
    }

    static var samples: [UInt8] {
        Array((0..<16).map { #"{"prompt": "shape \#($0 % 4)", "sample": \#(vector($0))}"# }.joined(separator: "\n").utf8)
    }

    static var pairs: [UInt8] {
        Array((0..<16).map { #"{"prompt": "shape \#($0 % 4)", "chosen": \#(vector($0, offset: 0.1)), "rejected": \#(vector($0 + 5))}"# }
            .joined(separator: "\n").utf8)
    }

    static func upload(_ service: LiveService, _ content: [UInt8]) async throws -> String {
        try await service.upload(content).json["id"] as! String
    }

    static func baseModel(_ service: LiveService) async throws -> String {
        try await service.post("/v1/models", ["id": "tiny-\(UUID().uuidString.prefix(6))", "config": ModelsTests.config, "seed": 1]).json["id"] as! String
    }
}

@Suite struct WorkerTests {
    static var dro: [String: Any] { ["n_steps": 30, "batch_size": 4, "checkpoint_every": 10, "log_every": 5, "policy_steps": 4,
                                     "learning_rate": 1e-3] }

    @Test func aDROJobTrainsToTheEndAndItsModelIsUsable() async throws {
        let service = try LiveService(workers: 1)
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let id = try await service.createJob(model: model, file: file, method: "dro", Self.dro, extra: ["suffix": "demo"])
        let done = try await service.waitFor(id, ["succeeded", "failed", "cancelled"])
        #expect(done["status"] as? String == "succeeded", "\(done)")
        let resultModel = try #require(done["fine_tuned_model"] as? String)
        #expect(resultModel == "ft:\(model):demo:\(id)")
        #expect((done["progress"] as? [String: Any])?["step"] as? Int == 30 && done["finished_at"] is Int)

        let checkpoints = try await service.request("GET", "/v1/fine_tuning/jobs/\(id)/checkpoints", key: service.adminKey).json["data"] as? [[String: Any]]
        #expect(checkpoints?.compactMap { $0["step_number"] as? Int } == [30, 20, 10])
        #expect((checkpoints?.first?["metrics"] as? [String: Any])?["loss"] is Double)

        let events = try await service.events(id)
        let metricSteps = events.filter { $0["type"] as? String == "metrics" }.compactMap { ($0["data"] as? [String: Any])?["step"] as? Int }
        #expect(metricSteps == [5, 10, 15, 20, 25, 30])
        #expect(events.contains { ($0["message"] as? String)?.hasPrefix("Checkpoint saved at step 10") == true })
        let log = try String(contentsOfFile: service.data.logPath(id), encoding: .utf8)
        #expect(log.contains("step 30/30 loss") && log.contains("finished: 30 steps"), "\(log)")

        let models = try await service.request("GET", "/v1/models", key: service.adminKey).json["data"] as? [[String: Any]] ?? []
        #expect(models.contains { $0["id"] as? String == resultModel })
        #expect(try service.finalWeights(id) == ModelFile.load(service.data.modelPath(resultModel)).parameters.array)

        // The result is the base of a new job.
        let next = try await service.createJob(model: resultModel, file: file, method: "sft", ["n_steps": 5, "batch_size": 4])
        let second = try await service.waitFor(next, ["succeeded", "failed", "cancelled"])
        #expect(second["status"] as? String == "succeeded" && second["fine_tuned_model"] as? String == "ft:\(model):preftune:\(next)", "\(second)")
    }

    @Test func aDPOJobTrainsToTheEnd() async throws {
        let service = try LiveService(workers: 1)
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.pairs)
        let id = try await service.createJob(model: model, file: file, method: "dpo",
                                             ["n_steps": 20, "batch_size": 4, "checkpoint_every": 10, "log_every": 10])
        let done = try await service.waitFor(id, ["succeeded", "failed", "cancelled"])
        #expect(done["status"] as? String == "succeeded", "\(done)")
        let metrics = try await service.events(id).compactMap { $0["data"] as? [String: Any] }
        #expect(metrics.count == 2 && metrics.allSatisfy { $0["implicit_acc"] != nil || $0["reward_margin"] != nil || $0["loss"] != nil })
    }

    @Test func cancelStopsARunningJobAndFreesItsWorker() async throws {
        let service = try LiveService(workers: 1)
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let id = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 1_000_000, "batch_size": 4, "log_every": 50])
        try await service.waitForStep(id, atLeast: 100)
        let running = try await service.job(id)
        #expect((running["estimated_finish"] as? Int ?? 0) > Int(Date().timeIntervalSince1970), "a running job says when it will end: \(running)")
        #expect(((running["progress"] as? [String: Any])?["samples_per_s"] as? Double ?? 0) > 0)
        let cancelled = try await service.post("/v1/fine_tuning/jobs/\(id)/cancel", [:])
        #expect(cancelled.json["status"] as? String == "cancelled")
        // The worker takes the next job: it stopped training this one.
        let next = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 3, "batch_size": 4])
        #expect(try await service.waitFor(next, ["succeeded", "failed"])["status"] as? String == "succeeded")
        #expect(try await service.job(id)["status"] as? String == "cancelled")
        #expect(try await service.events(id).contains { ($0["message"] as? String)?.hasPrefix("Stopped at step") == true })
    }

    /// A pause writes a training state and frees the worker; resume continues from it, and the
    /// weights equal those of the same job run without a pause. A graceful stop of the workers
    /// (SIGTERM) does the same through the queue.
    @Test func pauseResumeAndGracefulStopGiveTheWeightsOfAnUninterruptedRun() async throws {
        let service = try LiveService(workers: 1)
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let settings: [String: Any] = ["n_steps": 20_000, "batch_size": 4, "checkpoint_every": 2_000, "log_every": 500, "policy_steps": 4]
        let reference = try await service.createJob(model: model, file: file, method: "dro", settings)
        #expect(try await service.waitFor(reference, ["succeeded", "failed"])["status"] as? String == "succeeded")

        let id = try await service.createJob(model: model, file: file, method: "dro", settings)
        try await service.waitForStep(id, atLeast: 1_000)
        #expect(try await service.post("/v1/fine_tuning/jobs/\(id)/pause", [:]).json["status"] as? String == "paused")
        // The worker stops at its next step, writes the state, says so, and is free: how soon depends on
        // the machine's load, so wait for it (a pause the worker never honours times out).
        try await poll("the worker to report the pause and become free") {
            let said = try await service.events(id).contains { ($0["message"] as? String)?.hasPrefix("Paused at step") == true }
            return said && service.pool?.busyWorkers == 0 ? () : nil
        }
        #expect(try await service.job(id)["status"] as? String == "paused")
        #expect(FileManager.default.fileExists(atPath: "\(service.data.job(id).path)/state/latest.safetensors"))

        #expect(try await service.post("/v1/fine_tuning/jobs/\(id)/resume", [:]).json["status"] as? String == "queued")
        _ = try await service.waitFor(id, ["running", "succeeded"])
        try await service.waitForStep(id, atLeast: 8_000)
        service.stopWorkers()
        #expect(try await service.job(id)["status"] as? String == "queued", "a graceful stop queues the job again")
        service.startWorkers()
        let done = try await service.waitFor(id, ["succeeded", "failed"])
        #expect(done["status"] as? String == "succeeded", "\(done)")
        #expect(try service.finalWeights(id) == service.finalWeights(reference))

        let steps = try await service.events(id).filter { $0["type"] as? String == "metrics" }.compactMap { ($0["data"] as? [String: Any])?["step"] as? Int }
        #expect(steps == Array(stride(from: 500, through: 20_000, by: 500)), "strictly increasing, none repeated")
    }

    @Test func twoWorkersTrainTwoJobsAtOnce() async throws {
        let service = try LiveService(workers: 2)
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let first = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 1_000_000, "batch_size": 4])
        let second = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 1_000_000, "batch_size": 4])
        try await service.waitForStep(first, atLeast: 10)
        try await service.waitForStep(second, atLeast: 10)
        #expect(try await service.job(first)["status"] as? String == "running")
        #expect(try await service.job(second)["status"] as? String == "running")
        #expect(service.pool?.busyWorkers == 2)
        for id in [first, second] { _ = try await service.post("/v1/fine_tuning/jobs/\(id)/cancel", [:]) }
    }

    @Test func anAbsurdLearningRateEndsTheJobAsDiverged() async throws {
        let service = try LiveService(workers: 1)
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let id = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 200, "batch_size": 4, "learning_rate": 1e30])
        let done = try await service.waitFor(id, ["succeeded", "failed"])
        let error = try #require(done["error"] as? [String: Any], "\(done)")
        #expect(done["status"] as? String == "failed" && error["code"] as? String == "training_diverged")
        #expect((error["message"] as? String)?.contains("diverged at step") == true, "\(error)")
    }

    /// Faults end the job with a clear error, never the server: a dataset deleted while the
    /// job was queued, and a job directory that cannot be created.
    @Test func aDeletedDatasetOrAnUnwritableJobDirectoryFailsOnlyThatJob() async throws {
        let service = try LiveService()
        let model = try await WorkerFixtures.baseModel(service)
        let doomed = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let first = try await service.createJob(model: model, file: doomed, method: "sft", ["n_steps": 3, "batch_size": 4])
        let second = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 3, "batch_size": 4])
        let third = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 3, "batch_size": 4])
        for id in [first, second, third] { _ = try await service.waitFor(id, ["queued"]) }
        #expect(try await service.request("DELETE", "/v1/files/\(doomed)", key: service.adminKey).status == 200)
        // A file where the job's directory should be.
        _ = FileManager.default.createFile(atPath: service.data.job(second).path, contents: Data("in the way".utf8))
        service.startWorkers()

        let gone = try await service.waitFor(first, ["failed", "succeeded"])
        #expect((gone["error"] as? [String: Any])?["code"] as? String == "training_file_unavailable", "\(gone)")
        #expect(((gone["error"] as? [String: Any])?["message"] as? String)?.contains(doomed) == true)
        let blocked = try await service.waitFor(second, ["failed", "succeeded"])
        #expect((blocked["error"] as? [String: Any])?["code"] as? String == "storage_unavailable", "\(blocked)")
        #expect(try await service.waitFor(third, ["failed", "succeeded"])["status"] as? String == "succeeded", "the server goes on")
    }

    @Test func aWebhookThatNeverAnswersIsLoggedAndChangesNothing() async throws {
        let service = try LiveService(workers: 1)
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let closed = ExecutableTests.freePort()   // nothing listens there
        let id = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 3, "batch_size": 4],
                                             extra: ["webhook_url": "http://127.0.0.1:\(closed)/hook"])
        #expect(try await service.waitFor(id, ["succeeded", "failed"])["status"] as? String == "succeeded")
        let warning = try? await poll("the webhook's warning event", seconds: 60, every: .milliseconds(50)) {
            try await service.events(id).first { ($0["message"] as? String)?.contains("Webhook fine_tuning.job.succeeded to 127.0.0.1 failed after 3 attempts") == true }
        }
        #expect(warning?["level"] as? String == "warn", "three attempts, then a warning event")
        #expect(try await service.job(id)["status"] as? String == "succeeded", "the job is not affected")
    }

    /// A full disk under a job's directory (a 64 KiB tmpfs) ends the job with a clear error; the
    /// server goes on. Needs permission to mount, which CI machines may not give.
    @Test(.enabled(if: TemporaryFilesystem.canMount, "needs permission to mount a tmpfs"))
    func aFullDiskFailsTheJobWithAClearError() async throws {
        let service = try LiveService()
        let config: [String: Any] = ["sample_shape": [1, 4, 4], "hidden": 64, "depth": 2, "cond": ["kind": "text", "vocab": 32, "max_tokens": 4]]
        let model = try await service.post("/v1/models", ["id": "wide", "config": config]).json["id"] as! String
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let id = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 50, "batch_size": 4, "checkpoint_every": 10])
        _ = try await service.waitFor(id, ["queued"])
        let disk = try TemporaryFilesystem(kilobytes: 64)
        defer { disk.remove() }
        try FileManager.default.createSymbolicLink(atPath: service.data.job(id).path, withDestinationPath: disk.path)
        service.startWorkers()
        let failed = try await service.waitFor(id, ["failed", "succeeded"])
        let error = try #require(failed["error"] as? [String: Any], "\(failed)")
        #expect(error["code"] as? String == "checkpoint_write_failed", "\(error)")
        #expect((error["message"] as? String)?.contains("No space left on device") == true, "\(error)")
        let next = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 3, "batch_size": 4])
        #expect(try await service.waitFor(next, ["failed", "succeeded"])["status"] as? String == "succeeded", "the server goes on")
    }

    /// A job still in validating_files when its server stopped is validated at the next start.
    @Test func validationLeftUnfinishedByAStopIsDoneAtStart() async throws {
        let service = try LiveService()
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let id = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 3, "batch_size": 4])
        _ = try await service.waitFor(id, ["queued"])
        var stranded = try #require(try service.application.jobs.job(id, project: nil))
        stranded.id = "ftjob-0123456789abcdef01234567"
        stranded.status = .validatingFiles
        try service.application.jobs.insert(stranded, firstEvent: "as a stopped server left it")
        service.application.resumeValidations()
        let validated = try await service.waitFor(stranded.id, ["queued", "failed"], seconds: 10)
        #expect(validated["status"] as? String == "queued", "\(validated)")
        #expect((validated["progress"] as? [String: Any])?["total_steps"] as? Int == 3)
    }

    @Test func aWebhookHearsOfTheEndAfterARetry() async throws {
        let received = WebhookReceiver()
        let receiver = HTTPServer(configuration: { var c = HTTPServer.Configuration(); c.port = 0; return c }()) { request in
            await received.take(request)
        }
        let port = try receiver.start()
        defer { receiver.shutdown() }
        let service = try LiveService(workers: 1)
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let id = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 3, "batch_size": 4],
                                             extra: ["webhook_url": "http://127.0.0.1:\(port)/hooks/preftune"])
        _ = try await service.waitFor(id, ["succeeded"])
        func ends() async -> [[String: Any]] {
            await received.bodies.compactMap { try? JSONSerialization.jsonObject(with: Data($0)) as? [String: Any] }
                .filter { $0["type"] as? String == "fine_tuning.job.succeeded" }
        }
        _ = try? await poll("a second delivery", seconds: 10) { await ends().count >= 2 ? () : nil }
        let attempts = await ends()
        #expect(attempts.count == 2, "the first attempt got a 500 and was retried")
        #expect(Set(attempts.compactMap { $0["id"] as? String }).count == 1, "the same event, with the same id")
        let event = try #require(attempts.last)
        #expect(event["object"] as? String == "event" && (event["data"] as? [String: Any])?["id"] as? String == id)
        #expect(await received.paths.allSatisfy { $0 == "/hooks/preftune" })
        try await Task.sleep(for: .milliseconds(100))
        #expect(try await service.events(id).contains { ($0["message"] as? String)?.contains("Webhook fine_tuning.job.succeeded delivered to 127.0.0.1") == true })
    }
}

/// A webhook endpoint that fails the first attempt of each event (by its webhook-id).
actor WebhookReceiver {
    var bodies: [[UInt8]] = []
    var paths: [String] = []
    var seen: Set<String> = []

    func take(_ request: HTTPRequest) -> HTTPResponse {
        bodies.append(request.body)
        paths.append(request.path)
        let first = seen.insert(request.head.header("webhook-id") ?? "").inserted
        return HTTPResponse(status: first ? 500 : 200, headers: [("Content-Type", "text/plain")], body: .bytes(Array("ok".utf8)))
    }
}

/// A small tmpfs, mounted for a test and removed after it.
struct TemporaryFilesystem {
    let path: String

    static let canMount: Bool = {
        guard let probe = try? TemporaryFilesystem(kilobytes: 4) else { return false }
        probe.remove()
        return true
    }()

    init(kilobytes: Int) throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("preftune-tmpfs-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let mounted = try runTool(["mount", "-t", "tmpfs", "-o", "size=\(kilobytes)k", "tmpfs", path])
        guard mounted.status == 0 else {
            try? FileManager.default.removeItem(atPath: path)
            throw HTTPTestFailure("mount: \(mounted.output)")
        }
    }

    func remove() {
        _ = try? runTool(["umount", path])
        try? FileManager.default.removeItem(atPath: path)
    }
}
