import Foundation
@testable import Service
import Store
import TestSupport
import Testing

@Suite struct FileValidationTests {
    /// A copy of a created job, stored in `validating_files` behind the API's back (as a stopped
    /// server leaves one): nothing posts a status change for it.
    static func leftover(_ service: LiveService, like id: String, trainingFile: String? = nil) throws -> String {
        var job = try #require(try service.application.jobs.job(id, project: nil))
        job.id = "ftjob-" + APIKeys.randomHex(bytes: 12)
        job.status = .validatingFiles
        if let trainingFile { job.trainingFile = trainingFile }
        try service.application.jobs.insert(job, firstEvent: "Created fine-tuning job \(job.id)")
        return job.id
    }

    @Test func theStageFindsJobsLeftInValidationOnItsOwn() async throws {
        let service = try LiveService()
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let created = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 2, "batch_size": 4])
        _ = try await service.waitFor(created, ["queued"], seconds: 30)
        let left = try Self.leftover(service, like: created)
        let job = try await service.waitFor(left, ["queued", "failed"], seconds: 30)
        #expect(job["status"] as? String == "queued")
    }

    @Test func aTrainingFileThatCanNoLongerBeReadEndsTheJob() async throws {
        let service = try LiveService()
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let created = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 2, "batch_size": 4])
        _ = try await service.waitFor(created, ["queued"], seconds: 30)
        // An uploaded file whose content has gone from the disk since.
        let gone = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        try FileManager.default.removeItem(atPath: service.data.filePath(gone))
        let left = try Self.leftover(service, like: created, trainingFile: gone)
        let job = try await service.waitFor(left, ["queued", "failed"], seconds: 30)
        let error = try #require(job["error"] as? [String: Any])
        #expect(job["status"] as? String == "failed" && error["code"] as? String == "training_file_unavailable")
        #expect(!(error["message"] as? String ?? "").contains(service.directory), "no server path in the message")
    }
}
