import Diffusion
import Foundation
import HTTP
import JSON
import Store
import Training

/// Fine-tuning jobs, shaped as OpenAI's: create, list (newest first, cursor
/// paging), retrieve, cancel, pause, resume, events and checkpoints. Creating a
/// job validates everything a request can get wrong before anything is stored;
/// the dataset itself is validated in `validating_files`, off the request.
enum JobsAPI {
    static func add(to router: inout Router, _ resources: Application.Resources, changes: JobStatusChanges) {
        let dataDirectory = resources.data, store = resources.jobs
        router.add("POST", "/v1/fine_tuning/jobs") { context in
            try create(context, resources, changes: changes)
        }
        router.addRead("GET", "/v1/fine_tuning/jobs") { context in
            let limit = try Pagination.limit(context.request.query["limit"], default: 20, maximum: 100)
            let jobs = try store.jobs(project: context.principal.projectID, after: context.request.query["after"], limit: limit + 1)
            return .json(ListPage(jobs.prefix(limit).map(FineTuningJob.init), hasMore: jobs.count > limit))
        }
        router.addRead("GET", "/v1/fine_tuning/jobs/{id}") { context in .json(FineTuningJob(try find(context, store: store))) }
        let actions: [(String, Set<JobStatus>, JobStatus, String)] = [
            ("cancel", JobStatus.active, .cancelled, "Cancelled"), ("pause", [.queued, .running], .paused, "Paused"),
            ("resume", [.paused], .queued, "Resumed; queued"),
        ]
        for (action, from, to, verb) in actions {
            router.add("POST", "/v1/fine_tuning/jobs/{id}/\(action)") { context in
                let job = try find(context, store: store)
                // The answer is the job as this request left it (read in the same transaction),
                // not what a worker made of it once told.
                switch try store.transition(job.id, from: from, to: to, error: nil, event: "\(verb) by request", level: "info") {
                case let .moved(changed):
                    changes.post(jobID: job.id, status: to)
                    return .json(FineTuningJob(changed))
                case let .refused(current):
                    throw APIError(status: 409, message: "cannot \(action) a job that is \(current.status.rawValue)", param: "id", code: "invalid_state")
                case .missing:
                    throw APIError.notFound("fine-tuning job \(job.id)", param: "id")
                }
            }
        }
        router.addRead("GET", "/v1/fine_tuning/jobs/{id}/events") { context in
            let job = try find(context, store: store)
            let limit = try Pagination.limit(context.request.query["limit"], default: 20, maximum: 1000)
            let before = try context.request.query["after"].map { cursor -> Int in
                let parts = cursor.split(separator: "-", omittingEmptySubsequences: false)
                guard parts.count == 3, parts[0] == "ftevent", !parts[1].isEmpty, parts[1].allSatisfy(\.isHexDigit),
                      let sequence = Int(parts[2]), sequence >= 0 else {
                    throw APIError.invalid("after must be an event id", param: "after")
                }
                return sequence
            }
            let events = try store.events(job.id, before: before, limit: limit + 1)
            return .json(ListPage(events.prefix(limit).map(FineTuningJobEvent.init), hasMore: events.count > limit))
        }
        router.addRead("GET", "/v1/fine_tuning/jobs/{id}/checkpoints") { context in
            let job = try find(context, store: store)
            let limit = try Pagination.limit(context.request.query["limit"], default: 10, maximum: 100)
            let checkpoints = try store.checkpoints(job.id, limit: limit + 1)
            let data = checkpoints.prefix(limit).map { row in
                let hasGrid = FileManager.default.fileExists(atPath: dataDirectory.job(job.id).sampleGrid(step: row.step))
                return CheckpointObject(id: row.id, createdAt: row.createdAt, stepNumber: row.step, metrics: RawJSON(text: row.metrics),
                                        fineTuningJobID: job.id, fineTunedModelCheckpoint: job.resultModelID + ":ckpt-step-\(row.step)",
                                        contentURL: "/v1/fine_tuning/jobs/\(job.id)/checkpoints/\(row.id)/content",
                                        sampleGridURL: hasGrid ? "/v1/fine_tuning/jobs/\(job.id)/checkpoints/\(row.id)/samples.png" : nil)
            }
            return .json(ListPage(data, hasMore: checkpoints.count > limit))
        }
        // The checkpoint's weights (safetensors, SPEC §2 names), Range requests welcome; and its sample grid.
        router.addRead("GET", "/v1/fine_tuning/jobs/{id}/checkpoints/{checkpoint_id}/content") { context in
            let (job, row) = try findCheckpoint(context, store: store)
            return try FileResponse.make(path: dataDirectory.job(job.id).checkpoint(step: row.step), contentType: "application/octet-stream",
                                         request: context.request, filename: "\(job.id)-step-\(row.step).safetensors")
        }
        router.addRead("GET", "/v1/fine_tuning/jobs/{id}/checkpoints/{checkpoint_id}/samples.png") { context in
            let (job, row) = try findCheckpoint(context, store: store)
            let path = dataDirectory.job(job.id).sampleGrid(step: row.step)
            guard FileManager.default.fileExists(atPath: path) else { throw APIError.notFound("a sample grid for checkpoint \(row.id)", param: "checkpoint_id") }
            return try FileResponse.make(path: path, contentType: "image/png", request: context.request)
        }
    }


    static func findCheckpoint(_ context: RequestContext, store: any JobStore) throws -> (JobRecord, CheckpointRow) {
        let job = try find(context, store: store)
        let id = context.parameters["checkpoint_id"] ?? ""
        guard let row = try store.checkpoint(job.id, id: id) else {
            throw APIError.notFound("checkpoint \(id)", param: "checkpoint_id")
        }
        return (job, row)
    }

    static func find(_ context: RequestContext, store: any JobStore) throws -> JobRecord {
        let id = context.parameters["id"] ?? ""
        guard let job = try store.job(id, project: context.principal.projectID) else { throw APIError.notFound("fine-tuning job \(id)", param: "id") }
        return job
    }

    // MARK: - Creating a job

    static func create(_ context: RequestContext, _ resources: Application.Resources, changes: JobStatusChanges) throws -> HTTPResponse {
        let store = resources.jobs, models = resources.models, files = resources.files
        let body = try RequestJSON.object(context.request)
        try RequestJSON.allowOnly(["model", "training_file", "validation_file", "method", "seed", "suffix", "metadata", "webhook_url"], in: body)
        let project = context.principal.projectID

        guard let modelID = body["model"]?.string else { throw APIError.invalid("model is required", param: "model") }
        guard let modelRow = try models.model(modelID, visibleTo: project), let config = try? ModelConfig.parse(modelRow.config) else {
            throw APIError.notFound("model \(modelID)", param: "model")
        }
        func ownedFile(_ field: String) throws -> FileRow? {
            guard let value = body.present(field) else { return nil }
            guard let id = value.string else { throw APIError.invalid("\(field) must be a file id", param: field) }
            guard let file = try files.file(id, project: project) else { throw APIError.notFound("file \(id)", param: field) }
            return file
        }
        guard let trainingRow = try ownedFile("training_file") else { throw APIError.invalid("training_file is required", param: "training_file") }
        let validationRow = try ownedFile("validation_file")
        let trainingFile = trainingRow.id, validationFile = validationRow?.id

        guard let method = body["method"]?.object else {
            throw APIError.invalid("method is required, e.g. {\"type\": \"dro\", \"dro\": {\"hyperparameters\": {…}}}", param: "method")
        }
        let typeName = method["type"]?.string ?? ""
        guard let type = TrainingMethod(rawValue: typeName) else {
            throw APIError.invalid("method.type must be one of \(TrainingMethod.allCases.map(\.rawValue).joined(separator: ", "))", param: "method.type")
        }
        if let extra = method.keys.sorted().first(where: { $0 != "type" && $0 != typeName }) {
            throw APIError.invalid("unknown field method.\(extra)", param: "method.\(extra)")
        }
        let settings = method[typeName]?.object ?? [:]
        if let extra = settings.keys.sorted().first(where: { $0 != "hyperparameters" }) {
            throw APIError.invalid("unknown field method.\(typeName).\(extra)", param: "method.\(typeName).\(extra)")
        }
        guard settings["hyperparameters"] == nil || settings["hyperparameters"]?.object != nil else {
            throw APIError.invalid("hyperparameters must be an object", param: "method.\(typeName).hyperparameters")
        }
        let hyperparameters: Hyperparameters
        do {
            hyperparameters = try Hyperparameters.resolve(settings["hyperparameters"]?.object ?? [:], method: type)
        } catch let error as HyperparameterError {
            let param = "method.\(typeName).hyperparameters.\(error.param)"
            if error.isConflict { throw APIError(status: 422, message: error.message, param: param, code: "conflicting_hyperparameters") }
            throw APIError.invalid(error.message, param: param)
        }

        let seed = try RequestJSON.integer(body["seed"], param: "seed", range: 0...Int(Int32.max)) ?? Int.random(in: 0...Int(Int32.max))
        var suffix: String?
        if let value = body.present("suffix") {
            guard let text = value.string, (1...40).contains(text.count),
                  text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
                throw APIError.invalid("suffix must be 1-40 letters, digits, '-' or '_'", param: "suffix")
            }
            suffix = text
        }
        var metadata: [String: String] = [:]
        if let value = body.present("metadata") {
            guard let pairs = value.object, pairs.count <= 16,
                  pairs.members.allSatisfy({ $0.0.count <= 64 && $0.1.string.map { $0.count <= 512 } == true }) else {
                throw APIError.invalid("metadata takes at most 16 string pairs (keys ≤ 64, values ≤ 512 characters)", param: "metadata")
            }
            for (key, value) in pairs.members { metadata[key] = value.string }
        }
        var webhook: String?
        if let value = body.present("webhook_url") {
            guard let text = value.string else { throw APIError.invalid("webhook_url must be an http(s) URL", param: "webhook_url") }
            do { _ = try resources.webhooks.validate(text) } catch { throw APIError.invalid("webhook_url: \(error)", param: "webhook_url") }
            webhook = text
        }
        // Memory, with the examples counted at upload (older uploads are checked when validated).
        if let refusal = resources.settings.memoryBudget.trainingRefusal(config: config, method: type, hyperparameters: hyperparameters,
                                                                         examples: trainingRow.lines ?? 0,
                                                                         validationExamples: validationRow.map { $0.lines ?? 0 }) {
            throw APIError(status: 400, message: refusal, param: "method.\(typeName).hyperparameters", code: "over_memory_budget")
        }
        if let lines = trainingRow.lines {
            do { _ = try hyperparameters.checkedTotalSteps(datasetSize: lines) } catch let error as HyperparameterError {
                throw APIError.invalid(error.message, param: "method.\(typeName).hyperparameters.\(error.param)")
            }
        }
        try Quotas.checkActiveJobs(project: project, resources)

        let id = "ftjob-" + APIKeys.randomHex(bytes: 12)
        let jobSettings = JobSettings(method: type, hyperparameters: hyperparameters)
        let job = JobRecord(id: id, projectID: project, model: modelRow.id, trainingFile: trainingFile, validationFile: validationFile,
                            method: jobSettings.methodJSON, hyperparameters: jobSettings.hyperparametersJSON, seed: seed, suffix: suffix,
                            metadata: JSONBodyEncoder.string(SortedMembers(metadata)),
                            webhookURL: webhook, status: .validatingFiles, createdAt: Int(Date().timeIntervalSince1970))
        try store.insert(job, firstEvent: "Created fine-tuning job \(id)")
        // The validation stage takes it from here.
        changes.post(jobID: job.id, status: .validatingFiles)
        return .json(FineTuningJob(job))
    }
}
