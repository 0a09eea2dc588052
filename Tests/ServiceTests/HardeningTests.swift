import Diffusion
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import HTTP
import Numerics
import Service
import Store
import Synchronization
import Testing
import TestSupport
import Training
#if canImport(Glibc)
import Glibc
#endif

extension LiveService {
    /// A POST with extra headers, answered as JSON.
    func post(_ path: String, _ object: [String: Any], headers: [String: String]) async throws -> (status: Int, json: [String: Any]) {
        var request = URLRequest(url: URL(string: base + path)!)
        request.httpMethod = "POST"
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.setValue("Bearer \(adminKey)", forHTTPHeaderField: "Authorization")
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        request.httpBody = try JSONSerialization.data(withJSONObject: object)
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as! HTTPURLResponse).statusCode, (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:])
    }

    /// An upload with an Idempotency-Key.
    func upload(_ content: [UInt8], idempotencyKey: String) async throws -> (status: Int, json: [String: Any]) {
        let boundary = "preftune-test-\(UUID().uuidString)"
        var body = Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n".utf8)
        body += Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\n\r\n".utf8)
        body += Data(content) + Data("\r\n--\(boundary)--\r\n".utf8)
        var request = URLRequest(url: URL(string: base + "/v1/files")!)
        request.httpMethod = "POST"
        request.setValue("multipart/form-data; boundary=\(boundary)", forHTTPHeaderField: "Content-Type")
        request.setValue("Bearer \(adminKey)", forHTTPHeaderField: "Authorization")
        request.setValue(idempotencyKey, forHTTPHeaderField: "Idempotency-Key")
        let (data, response) = try await URLSession.shared.upload(for: request, from: body)
        return ((response as! HTTPURLResponse).statusCode, (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:])
    }

    func isHealthy() async -> Bool { (try? await request("GET", "/healthz").status) == 200 }
}

func errorMessage(_ json: [String: Any]) -> String { (json["error"] as? [String: Any])?["message"] as? String ?? "" }

/// Every way found to take the service down with one request, or one stored job, or to
/// make it hold more than it should: each must now be a clear 4xx or a failed job.
@Suite struct ServiceHardeningTests {
    static func settings(budget: Int? = nil, _ change: (inout ServiceSettings) -> Void = { _ in }) -> ServiceSettings {
        var settings = LiveService.testSettings
        if let budget { settings.memoryBudget = MemoryBudget(bytes: budget) }
        change(&settings)
        return settings
    }

    /// A safetensors file with only a header: the metadata and no tensors at all.
    static func headerOnlyModelFile(config: [String: Any]) throws -> [UInt8] {
        let configText = String(decoding: try JSONSerialization.data(withJSONObject: config), as: UTF8.self)
        let header = Array(try JSONSerialization.data(withJSONObject: ["__metadata__": ["config": configText, "format": "pt"]]))
        var bytes = withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) }
        bytes += header
        return bytes
    }

    @Test func aSampleShapeWhoseProductOverflowsIsA400() async throws {
        let service = try LiveService()
        let config: [String: Any] = ["sample_shape": [4_611_686_018_427_387_904, 4, 4], "hidden": 8, "depth": 1]
        let created = try await service.post("/v1/models", ["id": "x", "config": config])
        #expect(created.status == 400 && param(created.json) == "config.sample_shape", "\(created.json)")
        let file = try await service.upload(try Self.headerOnlyModelFile(config: config), filename: "m.safetensors")
        let fromFile = try await service.post("/v1/models", ["id": "y", "file": file.json["id"] as! String])
        #expect(fromFile.status == 422 && param(fromFile.json) == "file", "\(fromFile.json)")
        #expect(await service.isHealthy())
    }

    /// 248 bytes declaring a 686 GB model: refused from its header, before anything is allocated.
    @Test func aSmallFileDeclaringAHugeModelIsRefusedFromItsHeader() async throws {
        let service = try LiveService()
        let huge: [String: Any] = ["sample_shape": [1, 1024, 1024], "hidden": 8192, "depth": 64,
                                   "cond": ["kind": "text", "vocab": 1_000_000, "max_tokens": 16]]
        let bytes = try Self.headerOnlyModelFile(config: huge)
        #expect(bytes.count < 400)
        let file = try await service.upload(bytes, filename: "boom.safetensors")
        let created = try await service.post("/v1/models", ["id": "boom", "file": file.json["id"] as! String])
        #expect(created.status == 422 && errorCode(created.json) == "invalid_model_file", "\(created.json)")
        #expect(errorMessage(created.json).contains("at most"), "the service limits apply to files too: \(created.json)")
        // Within the limits, but without its tensors: refused before the buffer is allocated.
        let small = try Self.headerOnlyModelFile(config: ModelsTests.config)
        let missing = try await service.post("/v1/models", ["id": "hollow", "file": try await service.upload(small).json["id"] as! String])
        #expect(missing.status == 422 && errorMessage(missing.json).contains("missing tensor"), "\(missing.json)")
        #expect(await service.isHealthy())
    }

    @Test func aReplayBufferOverTheBudgetIsRefusedWithTheEstimate() async throws {
        let service = try LiveService(settings: Self.settings(budget: 8 << 30))
        let (model, file) = try await service.jobFixtures()
        let created = try await service.post("/v1/fine_tuning/jobs", ["model": model, "training_file": file,
                                                                       "method": JobsTests.dro(["buffer_size": 1_000_000, "policy_steps": 1000])])
        #expect(created.status == 400 && errorCode(created.json) == "over_memory_budget", "\(created.json)")
        let message = errorMessage(created.json)
        #expect(message.contains("replay buffer") && message.contains("8.0 GiB") && message.contains("--max-job-memory"), "\(message)")
    }

    /// Settings each within the service's limits can still exceed memory together.
    @Test func aLargeModelWithALargeBatchIsRefused() async throws {
        let service = try LiveService(settings: Self.settings(budget: 1 << 30))
        let config: [String: Any] = ["sample_shape": [3, 16, 16], "hidden": 512, "depth": 4, "mlp_ratio": 8,
                                     "cond": ["kind": "text", "vocab": 256, "max_tokens": 16]]
        let model = try await service.post("/v1/models", ["id": "wide", "config": config]).json["id"] as! String
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let created = try await service.post("/v1/fine_tuning/jobs", ["model": model, "training_file": file,
                                                                       "method": ["type": "sft", "sft": ["hyperparameters": ["batch_size": 4096]]]])
        #expect(created.status == 400 && errorCode(created.json) == "over_memory_budget", "\(created.json)")
    }

    /// A job accepted under one budget, claimed by a worker under a smaller one, fails instead of
    /// allocating; the worker goes on to the next job.
    @Test func aWorkerChecksTheBudgetAgainBeforeAllocating() async throws {
        let service = try LiveService()
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let id = try await service.createJob(model: model, file: file, method: "dro", ["n_steps": 2, "batch_size": 4, "buffer_size": 2000,
                                                                                      "policy_steps": 100])
        _ = try await service.waitFor(id, ["queued"])
        service.startWorkers(memoryBudget: MemoryBudget(bytes: 4 << 20))
        let failed = try await service.waitFor(id, ["failed", "succeeded"])
        #expect((failed["error"] as? [String: Any])?["code"] as? String == "over_memory_budget", "\(failed)")
        #expect(await service.isHealthy())
    }

    /// Each line of a vector-conditioned file expands to the condition's `dim` floats: counted
    /// from the upload's lines, not its bytes.
    @Test func aVectorDatasetIsBudgetedByItsExpandedSize() async throws {
        let service = try LiveService(settings: Self.settings(budget: 256 << 20))
        let config: [String: Any] = ["sample_shape": [1, 1, 1], "hidden": 8, "depth": 1, "cond": ["kind": "vector", "dim": 4096]]
        let model = try await service.post("/v1/models", ["id": "vec", "config": config]).json["id"] as! String
        let text = String(repeating: "{\"sample\":[0]}\n", count: 70_000)
        let file = try await service.upload(Array(text.utf8)).json["id"] as! String
        let created = try await service.post("/v1/fine_tuning/jobs", ["model": model, "training_file": file,
                                                                       "method": ["type": "sft", "sft": ["hyperparameters": ["batch_size": 4]]]])
        #expect(created.status == 400 && errorCode(created.json) == "over_memory_budget", "\(created.json)")
        #expect(errorMessage(created.json).contains("training set (70000 examples)"), "\(created.json)")
    }

    @Test func nEpochsCannotGetAroundTheStepLimit() async throws {
        let service = try LiveService()
        let sample = "[" + Array(repeating: "0.1", count: 16).joined(separator: ",") + "]"
        let (model, file) = try await service.jobFixtures(lines: (0..<200).map { #"{"prompt": "p\#($0)", "sample": \#(sample)}"# })
        let created = try await service.post("/v1/fine_tuning/jobs", ["model": model, "training_file": file,
                                                                       "method": ["type": "sft", "sft": ["hyperparameters": ["n_epochs": 100_000, "batch_size": 1]]]])
        #expect(created.status == 400 && param(created.json) == "method.sft.hyperparameters.n_epochs", "\(created.json)")
    }

    @Test func webhooksToThisMachineOrPrivateNetworksAreRefused() async throws {
        let service = try LiveService(settings: Self.settings { $0.webhookAllow = [] })
        let (model, file) = try await service.jobFixtures()
        for url in ["http://127.0.0.1:9/hook", "http://[::1]/hook", "http://10.1.2.3/hook", "http://169.254.169.254/latest/meta-data",
                    "http://localhost:8080/hook", "http://0.0.0.0/hook", "http://192.168.0.10/hook", "https://[fd00::1]/hook",
                    "ftp://example.com/hook"] {
            let created = try await service.post("/v1/fine_tuning/jobs", ["model": model, "training_file": file, "method": JobsTests.dro(),
                                                                           "webhook_url": url])
            #expect(created.status == 400 && param(created.json) == "webhook_url", "\(url): \(created.json)")
        }
    }

    /// A 307 from the webhook's target is not followed to the address it names.
    @Test func webhooksDoNotFollowRedirects() async throws {
        let stolen = Atomic<Int>(0)
        let second = HTTPServer(configuration: { var c = HTTPServer.Configuration(); c.port = 0; return c }()) { _ in
            stolen.add(1, ordering: .relaxed)
            return HTTPResponse(status: 200, headers: [], body: .bytes([]))
        }
        let secondPort = try second.start()
        let first = HTTPServer(configuration: { var c = HTTPServer.Configuration(); c.port = 0; return c }()) { _ in
            HTTPResponse(status: 307, headers: [("Location", "http://127.0.0.1:\(secondPort)/internal")], body: .bytes([]))
        }
        let firstPort = try first.start()
        defer { first.shutdown(); second.shutdown() }
        let service = try LiveService(workers: 1, settings: Self.settings { $0.webhookAllow = [IPNetwork("127.0.0.1/32")!] })
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let id = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 2, "batch_size": 4],
                                             extra: ["webhook_url": "http://127.0.0.1:\(firstPort)/hook"])
        _ = try await service.waitFor(id, ["succeeded"])
        let failure = try? await poll("the webhook's failure event", seconds: 60, every: .milliseconds(50)) {
            try await service.events(id).compactMap { $0["message"] as? String }.first { $0.contains("Webhook fine_tuning.job.succeeded to 127.0.0.1 failed") }
        }
        #expect(failure?.contains("HTTP 307") == true, "\(failure ?? "no event")")
        #expect(stolen.load(ordering: .relaxed) == 0, "the redirect's target never heard of the job")
    }

    @Test func simultaneousRequestsWithOneIdempotencyKeyCreateOneJob() async throws {
        let service = try LiveService()
        let (model, file) = try await service.jobFixtures()
        let shared = UncheckedSendable((service, ["model": model, "training_file": file, "method": JobsTests.dro(), "seed": 1] as [String: Any]))
        let ids = try await withThrowingTaskGroup(of: String?.self) { group in
            for _ in 0..<50 {
                group.addTask {
                    let (service, body) = shared.value
                    return try await service.post("/v1/fine_tuning/jobs", body, headers: ["Idempotency-Key": "once"]).json["id"] as? String
                }
            }
            var ids: [String?] = []
            for try await id in group { ids.append(id) }
            return ids
        }
        #expect(Set(ids.compactMap { $0 }).count == 1 && ids.allSatisfy { $0 != nil }, "\(Set(ids.map { $0 ?? "error" }))")
        let listed = try await service.request("GET", "/v1/fine_tuning/jobs?limit=100", key: service.adminKey).json["data"] as? [Any]
        #expect(listed?.count == 1)
    }

    @Test func anUploadsIdempotencyKeyCoversTheBytesItStored() async throws {
        let service = try LiveService()
        let first = try await service.upload(Array("one\n".utf8), idempotencyKey: "upload-1")
        let again = try await service.upload(Array("one\n".utf8), idempotencyKey: "upload-1")
        #expect(first.status == 200 && again.json["id"] as? String == first.json["id"] as? String, "\(again.json)")
        let other = try await service.upload(Array("two\n".utf8), idempotencyKey: "upload-1")
        #expect(other.status == 409 && errorCode(other.json) == "idempotency_key_reused", "\(other.json)")
        let files = try await service.request("GET", "/v1/files", key: service.adminKey).json["data"] as? [Any]
        #expect(files?.count == 1)
    }

    @Test func quotasAnswerWithTheUsageAndTheLimit() async throws {
        let service = try LiveService(settings: Self.settings {
            $0.quotas.files = 2
            $0.quotas.models = 1
            $0.quotas.activeJobs = 1
        })
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        _ = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let third = try await service.upload(WorkerFixtures.samples)
        #expect(third.status == 403 && errorCode(third.json) == "quota_exceeded" && errorMessage(third.json).contains("using 2 of 2"), "\(third.json)")
        let secondModel = try await service.post("/v1/models", ["id": "another", "config": ModelsTests.config])
        #expect(secondModel.status == 403 && errorMessage(secondModel.json).contains("models"), "\(secondModel.json)")
        _ = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 3, "batch_size": 4])
        let secondJob = try await service.post("/v1/fine_tuning/jobs", ["model": model, "training_file": file,
                                                                         "method": ["type": "sft", "sft": ["hyperparameters": [:]]]])
        #expect(secondJob.status == 403 && errorMessage(secondJob.json).contains("unfinished jobs"), "\(secondJob.json)")

        let small = try LiveService(settings: Self.settings { $0.quotas.storageBytes = 1000 })
        let big = try await small.upload([UInt8](repeating: UInt8(ascii: "a"), count: 2000))
        #expect(big.status == 403 && errorMessage(big.json).contains("storage"), "\(big.json)")
    }

    @Test func onlyTheNewestCheckpointsAreKeptAndADeletedModelTakesItsFiles() async throws {
        let service = try LiveService(workers: 1)
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let id = try await service.createJob(model: model, file: file, method: "sft",
                                             ["n_steps": 8, "batch_size": 4, "checkpoint_every": 1, "keep_checkpoints": 3])
        _ = try await service.waitFor(id, ["succeeded"])
        let listed = try await service.request("GET", "/v1/fine_tuning/jobs/\(id)/checkpoints", key: service.adminKey).json["data"] as? [[String: Any]]
        #expect(listed?.compactMap { $0["step_number"] as? Int } == [8, 7, 6])
        let onDisk = try FileManager.default.contentsOfDirectory(atPath: service.data.job(id).path + "/checkpoints")
        #expect(onDisk.sorted() == ["step-0000006.safetensors", "step-0000007.safetensors", "step-0000008.safetensors"])

        let path = try service.modelPath(model)
        #expect(FileManager.default.fileExists(atPath: path))
        #expect(try await service.request("DELETE", "/v1/models/\(model)", key: service.adminKey).status == 200)
        #expect(!FileManager.default.fileExists(atPath: path), "deleting a model removes its weights")
    }

    @Test func aModelThatUnfinishedJobsUseCannotBeDeleted() async throws {
        let service = try LiveService()
        let (model, file) = try await service.jobFixtures()
        _ = try await service.post("/v1/fine_tuning/jobs", ["model": model, "training_file": file, "method": JobsTests.dro()])
        let deleted = try await service.request("DELETE", "/v1/models/\(model)", key: service.adminKey)
        #expect(deleted.status == 409 && errorCode(deleted.json) == "model_in_use", "\(deleted.json)")
    }

    @Test func modelIdsArePerProjectFromADocumentedAlphabet() async throws {
        let service = try LiveService()
        let other = try service.data.database.withWriter { try APIKeys(connection: $0).create(project: "other") }
        #expect(try await service.post("/v1/models", ["id": "alpha-model", "config": ModelsTests.config]).status == 200)
        let theirs = try await service.post("/v1/models", ["id": "alpha-model", "config": ModelsTests.config, "seed": 9], key: other.secret)
        #expect(theirs.status == 200, "another project's name tells nothing and blocks nothing: \(theirs.json)")
        #expect(try await service.post("/v1/models", ["id": "alpha-model", "config": ModelsTests.config]).status == 409)
        let staged = FileManager.default.enumerator(atPath: service.data.path + "/models")?.compactMap { $0 as? String }
            .filter { ($0 as NSString).lastPathComponent.hasPrefix(".model-") }
        #expect(staged == [], "the refused build's staged file is gone")
        let mine = try await service.request("GET", "/v1/models", key: service.adminKey).json["data"] as? [[String: Any]]
        #expect(mine?.compactMap { $0["id"] as? String } == ["alpha-model"])
        for id in [".", "..", "a/b", "-x", ".hidden", String(repeating: "a", count: 65), "ft:x"] {
            let created = try await service.post("/v1/models", ["id": id, "config": ModelsTests.config])
            #expect(created.status == 400 && param(created.json) == "id", "\(id): \(created.json)")
        }
        #expect(!FileManager.default.fileExists(atPath: service.data.path + "/model.safetensors"))
    }

    @Test func emptyUploadsAndFilenamesWithNULAreRefused() async throws {
        let service = try LiveService()
        var request = URLRequest(url: URL(string: service.base + "/v1/files")!)
        request.httpMethod = "POST"
        request.setValue("multipart/form-data; boundary=b", forHTTPHeaderField: "Content-Type")
        request.setValue("Bearer \(service.adminKey)", forHTTPHeaderField: "Authorization")
        let (data, response) = try await URLSession.shared.upload(for: request, from: Data())
        #expect((response as! HTTPURLResponse).statusCode == 400, "\(String(decoding: data, as: UTF8.self))")
        let named = try await service.upload(Array("x\n".utf8), filename: "a\u{0}b.jsonl")
        #expect(named.status == 400 && param(named.json) == "file", "\(named.json)")
    }

    @Test func aCursorThatIsNotUTF8IsA400() async throws {
        let service = try LiveService()
        let answer = try await service.request("GET", "/v1/fine_tuning/jobs?after=%ff%fe", key: service.adminKey)
        #expect(answer.status == 400, "\(answer.json)")
    }

    /// Job ids and losses belong to projects: /metrics shows them only to the operator's token.
    @Test func metricsShowPerJobSeriesOnlyWithTheToken() async throws {
        let service = try LiveService(workers: 1, settings: Self.settings { $0.metricsToken = "scrape-secret" })
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let id = try await service.createJob(model: model, file: file, method: "dro", ObservabilityTests.longDRO(5000, log: 5))
        _ = try await service.waitFor(id, ["running"])
        var withToken = ""
        for _ in 0..<200 where !withToken.contains("preftune_job_loss{") {
            var request = URLRequest(url: URL(string: service.base + "/metrics")!)
            request.setValue("Bearer scrape-secret", forHTTPHeaderField: "Authorization")
            withToken = String(decoding: try await URLSession.shared.data(for: request).0, as: UTF8.self)
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(withToken.contains("preftune_job_step{job=\"\(id)\"}"))
        let anonymous = String(decoding: try await URLSession.shared.data(from: URL(string: service.base + "/metrics")!).0, as: UTF8.self)
        #expect(!anonymous.contains(id) && anonymous.contains("preftune_workers_busy 1"), "aggregates only")
        _ = try await service.post("/v1/fine_tuning/jobs/\(id)/cancel", [:])
    }

    /// A job whose worker died three times before one step is failed, not claimed a fourth time.
    @Test func aJobThatKeepsKillingItsWorkersFailsAfterThreeClaims() async throws {
        let service = try LiveService()
        let (model, file) = try await service.jobFixtures()
        let id = try await service.post("/v1/fine_tuning/jobs", ["model": model, "training_file": file, "method": JobsTests.dro()]).json["id"] as! String
        _ = try await service.waitForStatus(id, notIn: ["validating_files"])
        // Three workers claim it and die (their leases lapse at once).
        for worker in ["w1", "w2", "w3"] { #expect(try service.application.jobs.claimNext(worker: worker, leaseSeconds: -1)?.id == id) }
        service.startWorkers()
        let failed = try await service.waitFor(id, ["failed"], seconds: 10)
        let error = try #require(failed["error"] as? [String: Any])
        #expect(error["code"] as? String == "worker_crashed" && (error["message"] as? String)?.contains("3 times") == true, "\(error)")
        #expect(await service.isHealthy())
    }

    /// Cancel reaches a worker inside a long policy rollout: it need not wait for the step to end.
    /// (Step 0's rollout alone is a thousand sampling steps; the old trainer finished it first.)
    @Test func cancelStopsALongRolloutInsideItsFirstStep() async throws {
        let service = try LiveService(workers: 1)
        let config: [String: Any] = ["sample_shape": [1, 4, 4], "hidden": 512, "depth": 4, "cond": ["kind": "text", "vocab": 32, "max_tokens": 4]]
        let model = try await service.post("/v1/models", ["id": "slow", "config": config]).json["id"] as! String
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let id = try await service.createJob(model: model, file: file, method: "dro", ["n_steps": 5, "batch_size": 16, "policy_steps": 1000])
        _ = try await service.waitFor(id, ["running"])
        try await Task.sleep(for: .milliseconds(500))
        #expect(service.pool?.busyWorkers == 1)
        _ = try await service.post("/v1/fine_tuning/jobs/\(id)/cancel", [:])
        // How soon it stops is for the worker processes to show (CrashRecoveryTests): this worker
        // runs at nice 10 inside the test process, and the suite's computations set its pace.
        let pool = try #require(service.pool)
        #expect(await secondsUntil({ pool.busyWorkers == 0 }, atMost: 120) != nil, "the worker stopped")
        let log = try String(contentsOfFile: service.data.logPath(id), encoding: .utf8)
        #expect(log.contains("cancelled at step 0/5"), "stopped inside step 0's rollout, not after it: \(log)")
        #expect(try await service.job(id)["status"] as? String == "cancelled")
    }

    /// A client that leaves a long sample request stops its computation.
    @Test func aSampleStopsWhenItsClientLeaves() async throws {
        let service = try LiveService(settings: Self.settings { $0.maxSampleFLOPs = 1e15 })
        let config: [String: Any] = ["sample_shape": [1, 4, 4], "hidden": 256, "depth": 4, "cond": ["kind": "text", "vocab": 32, "max_tokens": 4]]
        let model = try await service.post("/v1/models", ["id": "sampler", "config": config]).json["id"] as! String
        let body = String(decoding: try JSONSerialization.data(withJSONObject: ["model": model, "prompts": ["a"], "n": 256, "steps": 1000]), as: UTF8.self)
        let client = try RawClient(port: service.server.port)
        client.send("POST /v1/samples HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(service.adminKey)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
        var waited = 0
        while service.application.heavyWork.load == 0, waited < 200 { try await Task.sleep(for: .milliseconds(10)); waited += 1 }
        #expect(service.application.heavyWork.load == 1, "the sample is being drawn")
        client.close()
        let heavyWork = service.application.heavyWork
        let stopped = await secondsUntil({ heavyWork.load == 0 }, atMost: 20)
        #expect(stopped.map { $0 < 2 } == true, "drawing stopped \(stopped.map { "\($0) s" } ?? "not within 20 s") after the client left")
    }

    /// Over the arithmetic budget, a sample request is refused before it runs.
    @Test func aSampleRequestOverTheComputeBudgetIsA400() async throws {
        let service = try LiveService(settings: Self.settings { $0.maxSampleFLOPs = 1e9 })
        let model = try await WorkerFixtures.baseModel(service)
        let answer = try await service.post("/v1/samples", ["model": model, "prompts": ["a"], "n": 256, "steps": 1000])
        #expect(answer.status == 400 && errorCode(answer.json) == "over_compute_budget", "\(answer.json)")
    }

    /// Building large models runs off the request threads: health checks answer while both are
    /// still being built (the request threads would be busy with them otherwise).
    @Test func modelCreationLeavesTheRequestPathFree() async throws {
        let service = try LiveService()
        let config: [String: Any] = ["sample_shape": [3, 32, 32], "hidden": 512, "depth": 16, "mlp_ratio": 8,
                                     "cond": ["kind": "text", "vocab": 32768, "max_tokens": 16]]
        let shared = UncheckedSendable((service, config))
        async let first = shared.value.0.post("/v1/models", ["id": "big-1", "config": shared.value.1])
        async let second = shared.value.0.post("/v1/models", ["id": "big-2", "config": shared.value.1])
        var waited = 0
        while service.application.heavyWork.load < 2, waited < 500 { try await Task.sleep(for: .milliseconds(10)); waited += 1 }
        #expect(service.application.heavyWork.load == 2, "both builds are on the heavy-work pool")
        #expect(await service.isHealthy())
        #expect(service.application.heavyWork.load >= 1, "/healthz answered while a build was still running")
        let results = try await [first.status, second.status]
        #expect(results == [200, 200])
        // The answer leaves before its task gives back its place on the pool.
        let heavyWork = service.application.heavyWork
        #expect(await secondsUntil({ heavyWork.load == 0 }, atMost: 30) != nil, "both builds gave back their places")
    }
}
