import Diffusion
import Foundation
import HTTP
import JSON
import Numerics
import Store
import Training

/// Fine-tuning jobs, shaped as OpenAI's: create, list (newest first, cursor
/// paging), retrieve, cancel, pause, resume, events and checkpoints. Creating a
/// job validates everything a request can get wrong before anything is stored;
/// the dataset itself is validated in `validating_files`, off the request.
enum JobsAPI {
    static func add(to router: inout Router, _ resources: Application.Resources, changes: JobStatusChanges) {
        let dataDirectory = resources.data, store = resources.jobs
        // The project's webhook signing secret: made (or replaced) by POST and shown only then.
        struct WebhookSecret: Encodable {
            let object = "webhook_secret"
            let configured: Bool
            let secret: String?
        }
        router.add("POST", "/v1/webhook_secret") { context in
            let secret = try resources.projects.rotateWebhookSecret(project: context.principal.projectID)
            return .json(WebhookSecret(configured: true, secret: secret))
        }
        router.addRead("GET", "/v1/webhook_secret") { context in
            .json(WebhookSecret(configured: try resources.projects.webhookSecret(project: context.principal.projectID) != nil, secret: nil))
        }
        router.add("POST", "/v1/fine_tuning/jobs") { context in
            try await create(context, resources, changes: changes)
        }
        router.add("POST", "/v1/fine_tuning/jobs/{id}/fork") { context in
            try fork(context, resources, changes: changes)
        }
        router.addRead("GET", "/v1/fine_tuning/jobs") { context in
            let limit = try Pagination.limit(context.request.query["limit"], default: 20, maximum: 100)
            let filter = try listFilter(context, resources)
            let jobs = try store.jobs(project: context.principal.projectID, after: context.request.query["after"], limit: limit + 1, filter: filter)
            return .json(ListPage(try planningStarts(Array(jobs.prefix(limit)), store: store).map(FineTuningJob.init), hasMore: jobs.count > limit))
        }
        router.addRead("GET", "/v1/fine_tuning/jobs/{id}") { context in
            .json(FineTuningJob(try planningStarts([find(context, store: store)], store: store)[0]))
        }
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
                let hasGrid = dataDirectory.artifacts.exists(.sampleGrid(job: job.id, step: row.step))
                return FineTuningCheckpoint(id: row.id, createdAt: row.createdAt, step: row.step, metrics: row.metrics, job: job, hasSampleGrid: hasGrid)
            }
            return .json(ListPage(data, hasMore: checkpoints.count > limit))
        }
        // The checkpoint's weights (safetensors, SPEC §2 names), Range requests welcome; and its sample grid.
        router.addRead("GET", "/v1/fine_tuning/jobs/{id}/checkpoints/{checkpoint_id}/content") { context in
            let (job, row) = try findCheckpoint(context, store: store)
            return try FileResponse.make(path: dataDirectory.artifacts.localPath(.checkpoint(job: job.id, step: row.step)), contentType: "application/octet-stream",
                                         request: context.request, filename: "\(job.id)-step-\(row.step).safetensors")
        }
        router.addRead("GET", "/v1/fine_tuning/jobs/{id}/checkpoints/{checkpoint_id}/samples.png") { context in
            let (job, row) = try findCheckpoint(context, store: store)
            let path = dataDirectory.artifacts.localPath(.sampleGrid(job: job.id, step: row.step))
            guard dataDirectory.artifacts.exists(.sampleGrid(job: job.id, step: row.step)) else { throw APIError.notFound("a sample grid for checkpoint \(row.id)", param: "checkpoint_id") }
            return try FileResponse.make(path: path, contentType: "image/png", request: context.request)
        }
    }


    /// The jobs with `estimated_start` filled in for the queued ones, from the queue as it is now;
    /// the rest read nothing more. Jobs past the first 1,000 in the queue get no estimate.
    static func planningStarts(_ jobs: [JobRecord], store: any JobStore) throws -> [JobRecord] {
        guard jobs.contains(where: { $0.status == .queued }) else { return jobs }
        let starts = try store.queueOutlook(queuedLimit: 1000).estimatedStarts(now: Int(Date().timeIntervalSince1970))
        return jobs.map { job in
            var job = job
            if job.status == .queued { job.estimatedStart = starts[job.id] }
            return job
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

    /// `POST /v1/fine_tuning/jobs`'s body, OpenAI's fields plus `seed` and `webhook_url`.
    struct CreateRequest: Decodable {
        var model: String
        var trainingFile: String
        var validationFile: String?
        var settings: JobSettings
        var seed: Int?
        var suffix: String?
        var metadata: [String: String]
        var webhookURL: String?
        var priority: Int
        var maxRetries: Int
        var maxDuration: Int?
        var dryRun: Bool
        var earlyStopping: EarlyStopping?
        var grader: GraderSettings?
        var result: ResultChoice?
        var precision: MathPrecision

        enum CodingKeys: String, CodingKey, CaseIterable {
            case model, trainingFile = "training_file", validationFile = "validation_file", method, seed, suffix, metadata
            case webhookURL = "webhook_url", priority, maxRetries = "max_retries", maxDuration = "max_duration"
            case earlyStopping = "early_stopping", grader, result, precision
            // OpenAI's: the deprecated top-level hyperparameters (for supervised fine-tuning), and integrations.
            case hyperparameters, integrations, dryRun = "dry_run"
        }

        init(from decoder: any Decoder) throws {
            let body = try decoder.container(keyedBy: CodingKeys.self)
            model = try body.decode(String.self, forKey: .model)
            guard let trainingFile = try body.decodeIfPresent(String.self, forKey: .trainingFile, explaining: "training_file must be a file id") else {
                throw body.mistake(.trainingFile, "training_file is required")
            }
            self.trainingFile = trainingFile
            validationFile = try body.decodeIfPresent(String.self, forKey: .validationFile, explaining: "validation_file must be a file id")
            // OpenAI's deprecated top-level hyperparameters: supervised fine-tuning (sft), when no method is given.
            let topLevel = try body.decodeIfPresent(JSONObject.self, forKey: .hyperparameters,
                                                    explaining: "hyperparameters (deprecated: use method.<type>.hyperparameters) must be an object")
            if try body.isAbsent(.method) {
                guard let topLevel else {
                    throw body.mistake(.method, "method is required, e.g. {\"type\": \"dro\", \"dro\": {\"hyperparameters\": {…}}}")
                }
                settings = try MethodChoice.settings(.sft, topLevel, param: "hyperparameters")
            } else {
                let choice = try body.decode(MethodChoice.self, forKey: .method)
                if topLevel != nil {
                    throw body.mistake(.hyperparameters, "give method (with method.\(choice.type.rawValue).hyperparameters) or the deprecated top-level hyperparameters (for sft), not both")
                }
                settings = try MethodChoice.settings(choice.type, choice.hyperparameters ?? [:], param: "method.\(choice.type.rawValue).hyperparameters")
            }
            // Integrations (Weights & Biases, …) are not supported: none may be asked for, and none is silently dropped.
            let integrationsRule = "integrations must be an array"
            if let integrations = try body.decodeIfPresent([JSONValue].self, forKey: .integrations, explaining: integrationsRule), !integrations.isEmpty {
                let kinds = integrations.compactMap { $0["type"]?.string }
                throw body.mistake(.integrations, "integrations are not supported by this server\(kinds.isEmpty ? "" : " (asked for: \(kinds.joined(separator: ", ")))"); send [] or leave it out")
            }
            seed = try body.decodeIfPresent(Int.self, forKey: .seed, in: 0...Int(Int32.max))
            suffix = try JobFields.suffix(body, .suffix)
            metadata = try JobFields.metadata(body, .metadata) ?? [:]
            webhookURL = try body.decodeIfPresent(String.self, forKey: .webhookURL, explaining: "webhook_url must be an http(s) URL")
            priority = try body.decodeIfPresent(Int.self, forKey: .priority, in: ProjectLimits.priorities) ?? 0
            maxRetries = try body.decodeIfPresent(Int.self, forKey: .maxRetries, in: 0...10) ?? 3
            maxDuration = try body.decodeIfPresent(Int.self, forKey: .maxDuration, in: 1...30 * 86_400)
            dryRun = try body.decodeIfPresent(Bool.self, forKey: .dryRun, explaining: "dry_run must be true or false") ?? false
            earlyStopping = try body.decodeIfPresent(EvaluationRequest.EarlyStoppingBody.self, forKey: .earlyStopping)?.value
            grader = try body.decodeIfPresent(EvaluationRequest.GraderBody.self, forKey: .grader)?.value
            result = try body.decodeIfPresent(ResultChoice.self, forKey: .result, explaining: "result must be \"best\" or \"last\"")
            precision = try JobFields.precision(body, .precision)
        }
    }

    /// `method`: `{"type": "dro", "dro": {"hyperparameters": {…}}}`; `settings` resolves them against the method's defaults.
    struct MethodChoice: Decodable {
        var type: TrainingMethod
        var hyperparameters: JSONObject?

        /// The method's hyperparameters resolved: `"auto"` and absent take the method's default,
        /// `learning_rate_multiplier` scales its default learning rate. `param` names where they were.
        static func settings(_ type: TrainingMethod, _ values: JSONObject, param: String) throws -> JobSettings {
            do {
                return JobSettings(method: type, hyperparameters: try Hyperparameters.resolve(values, method: type))
            } catch let error as HyperparameterError {
                if error.isConflict { throw APIError(status: 422, message: error.message, param: "\(param).\(error.param)", code: "conflicting_hyperparameters") }
                throw JSONFieldError(error.message, path: "\(param).\(error.param)")
            }
        }

        struct Section: Decodable {
            var hyperparameters: JSONObject?
            enum CodingKeys: String, CodingKey, CaseIterable { case hyperparameters }
        }

        init(from decoder: any Decoder) throws {
            let method = try decoder.container(keyedBy: AnyKey.self)
            let typeKey = AnyKey("type")
            let typeName = try? method.decode(String.self, forKey: typeKey)
            guard let typeName, let type = TrainingMethod(rawValue: typeName) else {
                throw method.mistake(typeKey, "method.type must be one of \(TrainingMethod.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            try method.rejectMembers(except: ["type", typeName])
            self.type = type
            hyperparameters = try method.decodeIfPresent(Section.self, forKey: AnyKey(typeName))?.hyperparameters
        }
    }

    /// What a job would be, without queuing it (`"dry_run": true`), once every check a job goes
    /// through has passed — its files read line by line as the validation stage would, off the
    /// request threads: its steps, its memory estimate, and how long it would train at the step
    /// rate the project's last job of the same base model and method measured.
    struct DryRun: Encodable {
        let object = "fine_tuning.job.dry_run"
        let valid = true
        let method: RawJSON
        let hyperparameters: RawJSON
        let trainingExamples: Int
        let totalSteps: Int
        let memoryEstimateBytes: Int
        let memoryBudgetBytes: Int
        let estimatedDurationSeconds: Int?
        let estimateBasis: String

        enum CodingKeys: String, CodingKey {
            case object, valid, method, hyperparameters, trainingExamples = "training_examples", totalSteps = "total_steps"
            case memoryEstimateBytes = "memory_estimate_bytes", memoryBudgetBytes = "memory_budget_bytes"
            case estimatedDurationSeconds = "estimated_duration_seconds", estimateBasis = "estimate_basis"
        }
    }

    static func dryRun(_ request: CreateRequest, config: ModelConfig, model: String, training: FileRow, validation: FileRow?, project: String,
                       _ resources: Application.Resources) async throws -> HTTPResponse {
        let settings = request.settings, artifacts = resources.data.artifacts, budget = resources.settings.memoryBudget
        let h = settings.hyperparameters, typeName = settings.method.rawValue
        // The validation stage's own check, off the request threads; its failure is this request's 400.
        let checked = try await resources.heavyWork.run { _ in
            try FileValidation.check(training: training.id, validation: validation?.id, config: config, method: settings.method,
                                     hyperparameters: h, precision: request.precision, artifacts: artifacts, budget: budget)
        }
        let files: FileValidation.CheckedFiles
        switch checked {
        case let .success(checked): files = checked
        case let .failure(error):
            let param = error.param.map { $0.hasPrefix("hyperparameters.") ? "method.\(typeName).\($0)" : $0 }
            throw APIError(status: 400, message: error.message, param: param, code: error.code)
        }
        let (examples, steps) = (files.examples, files.steps)
        let memory = MemoryEstimate.training(config: config, method: settings.method, hyperparameters: h, examples: examples,
                                             validationExamples: files.validationExamples, precision: request.precision)
        var filter = JobFilter()
        filter.model = model
        let measured = try resources.jobs.jobs(project: project, after: nil, limit: 100, filter: filter).first { job in
            job.samplesPerSecond != nil && JobSettings(methodJSON: job.method, hyperparametersJSON: job.hyperparameters)?.method == settings.method
        }
        let seconds = measured?.samplesPerSecond
            .flatMap { QueueOutlook.seconds(steps: steps, hyperparameters: h, samplesPerSecond: $0) }.map { Int($0.rounded(.up)) }
        let basis = measured.map { "the step rate of \($0.id) (same base model and method): \(Int($0.samplesPerSecond ?? 0)) samples/s" }
            ?? "no job of this base model and method has run in this project yet: no measured rate to estimate from"
        return .json(DryRun(method: RawJSON(text: settings.methodJSON), hyperparameters: RawJSON(text: settings.hyperparametersJSON),
                            trainingExamples: examples, totalSteps: steps, memoryEstimateBytes: memory.total,
                            memoryBudgetBytes: resources.settings.memoryBudget.bytes, estimatedDurationSeconds: seconds, estimateBasis: basis))
    }

    /// The list's filters, as OpenAI's SDK sends them: `status`, `model`, `metadata[key]=value`,
    /// `created_after`, `created_before` (Unix seconds).
    static func listFilter(_ context: RequestContext, _ resources: Application.Resources) throws -> JobFilter {
        let query = context.request.query
        var filter = JobFilter()
        if let status = query["status"] {
            guard let parsed = JobStatus(rawValue: status) else {
                throw APIError.invalid("status must be one of \(JobStatus.allCases.map(\.rawValue).joined(separator: ", "))", param: "status")
            }
            filter.status = parsed
        }
        if let model = query["model"] {
            // A model the project cannot see matches no job (it is not a 404: the list is just empty).
            filter.model = try resources.models.model(model, visibleTo: context.principal.projectID)?.id
            if filter.model == nil { filter.matchesNothing = true }
        }
        filter.created = try Query.createdRange(query)
        // metadata[key]=value, as the object the names stand for has it: a repeated name is one key
        // (its first value counts), and a deeper name (metadata[key][]=…, an array) is the same key
        // with a value that is not a string, which no job's metadata holds. A job carries at most 16
        // pairs, so more than 16 distinct names match no job either: the list is empty without a
        // query, however many names the request line holds.
        var names: Set<Substring> = []
        for name in context.request.queryNames where name.hasPrefix("metadata[") {
            let path = name.dropFirst("metadata[".count), key = path.prefix { $0 != "]" }
            names.insert(path)
            if path.dropFirst(key.count) == "]" {
                if filter.metadata[String(key)] == nil { filter.metadata[String(key)] = query[name] }
            } else {
                filter.matchesNothing = true
            }
            if names.count > 16 {
                filter.matchesNothing = true
                filter.metadata = [:]
                break
            }
        }
        return filter
    }

    /// What a job trains from: a model the project may use, or a checkpoint of one of its jobs
    /// (`ft:…:ckpt-step-N`); then `key` is the base model of the checkpoint's job (the store's
    /// `model`, a models row) and the job shows the checkpoint's id as its `model`.
    struct BaseModel {
        let key: String
        let config: ModelConfig
        let checkpoint: (id: String, path: String)?
    }

    static func baseModel(_ id: String, project: String, _ resources: Application.Resources) throws -> BaseModel {
        if let checkpoint = try SamplesAPI.checkpoint(id, project: project, data: resources.data, jobs: resources.jobs) {
            guard let config = try? ModelFile.declaredConfig(checkpoint.path) else { throw APIError.notFound("model \(id)", param: "model") }
            return BaseModel(key: checkpoint.job.model, config: config, checkpoint: (id, checkpoint.path))
        }
        guard let row = try resources.models.model(id, visibleTo: project), let config = try? ModelConfig.parse(row.config) else {
            throw APIError.notFound("model \(id)", param: "model")
        }
        return BaseModel(key: row.id, config: config, checkpoint: nil)
    }

    static func create(_ context: RequestContext, _ resources: Application.Resources, changes: JobStatusChanges) async throws -> HTTPResponse {
        let request = try RequestJSON.decode(CreateRequest.self, from: context.request)
        let store = resources.jobs, project = context.principal.projectID
        let base = try baseModel(request.model, project: project, resources)
        let config = base.config
        func ownedFile(_ id: String, _ field: String) throws -> FileRow {
            guard let file = try resources.files.file(id, project: project) else { throw APIError.notFound("file \(id)", param: field) }
            return file
        }
        try JobFields.checkPrecision(request.precision)
        let trainingRow = try ownedFile(request.trainingFile, "training_file")
        let validationRow = try request.validationFile.map { try ownedFile($0, "validation_file") }
        let type = request.settings.method, typeName = type.rawValue, hyperparameters = request.settings.hyperparameters
        if let webhook = request.webhookURL {
            do { _ = try resources.webhooks.validate(webhook) } catch { throw APIError.invalid("webhook_url: \(error)", param: "webhook_url") }
        }
        if let lines = trainingRow.lines {
            do { _ = try hyperparameters.checkedTotalSteps(datasetSize: lines) } catch let error as HyperparameterError {
                throw APIError.invalid(error.message, param: "method.\(typeName).hyperparameters.\(error.param)")
            }
        }
        try Quotas.checkActiveJobs(project: project, resources)
        let limits = try resources.projects.limits(project: project)
        guard request.priority <= limits.maxPriority else {
            throw APIError(status: 403, message: "priority \(request.priority) is above this project's limit of \(limits.maxPriority), which the operator sets (preftune projects set)",
                           param: "priority", code: "priority_not_allowed")
        }

        let evaluation = try await EvaluationRequest.check(earlyStopping: request.earlyStopping, grader: request.grader, result: request.result,
                                                           method: type, hasValidation: validationRow != nil, config: config, project: project, resources)
        // Memory, with the examples counted at upload (older uploads are checked when validated), and the grader's samples.
        if let refusal = resources.settings.memoryBudget.trainingRefusal(config: config, method: type, hyperparameters: hyperparameters,
                                                                         examples: trainingRow.lines ?? 0,
                                                                         validationExamples: validationRow.map { $0.lines ?? 0 },
                                                                         gradingSamples: request.grader?.rows ?? 0,
                                                                         precision: request.precision) {
            throw APIError(status: 400, message: refusal, param: request.grader != nil ? "grader.samples_per_prompt" : "method.\(typeName).hyperparameters",
                           code: "over_memory_budget")
        }
        if request.dryRun {
            return try await dryRun(request, config: config, model: base.key, training: trainingRow, validation: validationRow, project: project, resources)
        }

        let id = "ftjob-" + APIKeys.randomHex(bytes: 12)
        var job = JobRecord(id: id, projectID: project, model: base.key, trainingFile: trainingRow.id, validationFile: validationRow?.id,
                            method: request.settings.methodJSON, hyperparameters: request.settings.hyperparametersJSON,
                            seed: request.seed ?? Int.random(in: 0...Int(Int32.max)), suffix: request.suffix,
                            metadata: JSONBodyEncoder.string(SortedMembers(request.metadata)),
                            webhookURL: request.webhookURL, status: .validatingFiles, createdAt: Int(Date().timeIntervalSince1970))
        job.priority = request.priority
        job.maxRetries = request.maxRetries
        job.maxDuration = request.maxDuration
        job.evaluation = evaluation?.json
        job.startCheckpoint = base.checkpoint?.id
        job.precision = request.precision.rawValue
        // A job started from a checkpoint trains from a copy of its weights (a link where the file
        // system allows): the parent's retention may delete the checkpoint before this job runs.
        if let checkpoint = base.checkpoint {
            do { try resources.data.artifacts.publish(copyOf: checkpoint.path, as: .startingWeights(job: id)) } catch {
                throw APIError(status: 503, message: "cannot copy the checkpoint's weights for the job: \(error)", type: "server_error", param: "model", code: "storage_unavailable")
            }
        }
        try store.insert(job, firstEvent: base.checkpoint == nil ? "Created fine-tuning job \(id)" : "Created fine-tuning job \(id) from checkpoint \(request.model)")
        // The validation stage takes it from here.
        changes.post(jobID: job.id, status: .validatingFiles)
        return .json(FineTuningJob(job))
    }

    /// Members a new job and a fork both take, checked the same way.
    enum JobFields {
        /// `precision`: "fp32" (the default) or "bf16".
        static func precision<Key: CodingKey>(_ body: KeyedDecodingContainer<Key>, _ key: Key) throws -> MathPrecision {
            try body.decodeIfPresent(MathPrecision.self, forKey: key, explaining: "precision must be \"fp32\" or \"bf16\"") ?? .fp32
        }

        /// bf16 work on a CPU without bf16 instructions: a 400 that says so (rather than an
        /// emulation slower than fp32).
        static func checkPrecision(_ precision: MathPrecision) throws {
            if precision == .bf16, let refusal = MathPrecision.bf16Refusal {
                throw APIError(status: 400, message: refusal, param: "precision", code: "unsupported_precision")
            }
        }

        static func suffix<Key: CodingKey>(_ body: KeyedDecodingContainer<Key>, _ key: Key) throws -> String? {
            let rule = "suffix must be 1-40 letters, digits, '-' or '_'"
            let suffix = try body.decodeIfPresent(String.self, forKey: key, explaining: rule)
            if let suffix, !(1...40).contains(suffix.count) || !suffix.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) {
                throw body.mistake(key, rule)
            }
            return suffix
        }

        static func metadata<Key: CodingKey>(_ body: KeyedDecodingContainer<Key>, _ key: Key) throws -> [String: String]? {
            let rule = "metadata takes at most 16 string pairs (keys ≤ 64, values ≤ 512 characters)"
            let metadata = try body.decodeIfPresent([String: String].self, forKey: key, explaining: rule)
            if let metadata, metadata.count > 16 || !metadata.allSatisfy({ $0.key.count <= 64 && $0.value.count <= 512 }) {
                throw body.mistake(key, rule)
            }
            return metadata
        }
    }

    // MARK: - Forking a job

    /// `POST /v1/fine_tuning/jobs/{id}/fork`'s body: the checkpoint to continue from, and what changes.
    struct ForkRequest: Decodable {
        var fromStep: Int
        var hyperparameters: JSONObject
        var suffix: String?
        var metadata: [String: String]?
        var priority: Int?
        /// nil: the parent's.
        var precision: MathPrecision?

        enum CodingKeys: String, CodingKey, CaseIterable { case fromStep = "from_step", hyperparameters, suffix, metadata, priority, precision }

        init(from decoder: any Decoder) throws {
            let body = try decoder.container(keyedBy: CodingKeys.self)
            guard let step = try body.decodeIfPresent(Int.self, forKey: .fromStep, in: 1...Hyperparameters.maximumSteps) else {
                throw body.mistake(.fromStep, "from_step is required: the step of the checkpoint to continue from")
            }
            fromStep = step
            hyperparameters = try body.decodeIfPresent(JSONObject.self, forKey: .hyperparameters, explaining: "hyperparameters must be an object") ?? [:]
            suffix = try JobFields.suffix(body, .suffix)
            metadata = try JobFields.metadata(body, .metadata)
            priority = try body.decodeIfPresent(Int.self, forKey: .priority, in: ProjectLimits.priorities)
            precision = try body.isAbsent(.precision) ? nil : JobFields.precision(body, .precision)
        }
    }

    /// A new job that continues `id` from its checkpoint at `from_step` — its weights, optimizer
    /// moments, random streams, data order and DRO's replay buffer — with the hyperparameters
    /// changed as asked (and the precision, if given). Everything else is the parent's: model,
    /// files, seed, grader, early stopping and result. The checkpoint's training state is linked into the new job at once,
    /// so the parent's retention cannot take it away.
    static func fork(_ context: RequestContext, _ resources: Application.Resources, changes: JobStatusChanges) throws -> HTTPResponse {
        let request = try RequestJSON.decode(ForkRequest.self, from: context.request)
        if let precision = request.precision { try JobFields.checkPrecision(precision) }
        let parent = try find(context, store: resources.jobs), project = context.principal.projectID
        guard let parentSettings = JobSettings(methodJSON: parent.method, hyperparametersJSON: parent.hyperparameters),
              var values = JSONValue.parse(parent.hyperparameters)?.object else {
            throw APIError(status: 500, message: "the job's stored settings are unreadable", type: "server_error", param: "id", code: "internal_error")
        }
        let step = request.fromStep, artifacts = resources.data.artifacts
        guard try resources.jobs.checkpoint(parent.id, id: FineTuningCheckpoint.id(job: parent.id, step: step)) != nil,
              artifacts.exists(.checkpoint(job: parent.id, step: step)) else {
            throw APIError.notFound("a checkpoint of \(parent.id) at step \(step)", param: "from_step")
        }
        guard artifacts.exists(.trainingState(job: parent.id, step: step)) else {
            throw APIError(status: 409, message: "the checkpoint at step \(step) has no training state to continue from (it was written before forks existed); start a job from its weights with model \(FineTuningCheckpoint.modelID(job: parent, step: step)) instead",
                           param: "from_step", code: "no_training_state")
        }
        // The changes over the parent's resolved settings; a pair that excludes each other is the one given.
        let method = parentSettings.method
        for (given, excluded) in [("n_epochs", "n_steps"), ("n_steps", "n_epochs"), (Hyperparameters.multiplierKey, "learning_rate")]
        where request.hyperparameters[given] != nil { values[excluded] = nil }
        for key in request.hyperparameters.keys { values[key] = request.hyperparameters[key] }
        // A key of another method is well-formed but does not fit the parent (422), as in a sample
        // request that does not fit its model; a value out of range is a mistake (400).
        let settings: JobSettings
        do {
            settings = JobSettings(method: method, hyperparameters: try Hyperparameters.resolve(values, method: method))
        } catch let error as HyperparameterError {
            let param = "hyperparameters.\(error.param)"
            if error.isConflict { throw APIError(status: 422, message: error.message, param: param, code: "conflicting_hyperparameters") }
            if error.isUnknownKey { throw APIError(status: 422, message: "\(error.message) (the parent job's method)", param: param, code: "does_not_fit_job") }
            throw APIError.invalid(error.message, param: param)
        }
        let h = settings.hyperparameters
        let training = try resources.files.file(parent.trainingFile, project: project)
        let steps = h.nSteps ?? training.flatMap(\.lines).map(h.totalSteps(datasetSize:)) ?? 0
        guard steps > step else {
            throw APIError(status: 422, message: "the fork would end at step \(steps), not after from_step \(step); raise n_steps",
                           param: "hyperparameters.n_steps", code: "conflicting_hyperparameters")
        }
        if method == .dro, h.bufferSize != parentSettings.hyperparameters.bufferSize {
            throw APIError(status: 422, message: "a fork continues the parent's replay buffer of \(parentSettings.hyperparameters.bufferSize ?? 0) slots: buffer_size cannot change",
                           param: "hyperparameters.buffer_size", code: "conflicting_hyperparameters")
        }
        // The parent's base: the copy of the checkpoint it started from, or its model.
        let weights: Artifact = artifacts.exists(.startingWeights(job: parent.id)) ? .startingWeights(job: parent.id) : .model(parent.model)
        guard let config = try? ModelFile.declaredConfig(artifacts.localPath(weights)) else {
            throw APIError(status: 409, message: "the base model of \(parent.id) is gone", param: "id", code: "model_unavailable")
        }
        let precision = request.precision ?? parent.mathPrecision ?? .fp32
        if let refusal = resources.settings.memoryBudget.trainingRefusal(config: config, method: method, hyperparameters: h, examples: training?.lines ?? 0,
                                                                         validationExamples: nil, precision: precision) {
            throw APIError(status: 400, message: refusal, param: "hyperparameters", code: "over_memory_budget")
        }
        try Quotas.checkActiveJobs(project: project, resources)
        let limits = try resources.projects.limits(project: project)
        let priority = request.priority ?? min(parent.priority, limits.maxPriority)
        guard priority <= limits.maxPriority else {
            throw APIError(status: 403, message: "priority \(priority) is above this project's limit of \(limits.maxPriority), which the operator sets (preftune projects set)",
                           param: "priority", code: "priority_not_allowed")
        }

        let id = "ftjob-" + APIKeys.randomHex(bytes: 12)
        var job = JobRecord(id: id, projectID: project, model: parent.model, trainingFile: parent.trainingFile, validationFile: parent.validationFile,
                            method: settings.methodJSON, hyperparameters: settings.hyperparametersJSON, seed: parent.seed,
                            suffix: request.suffix ?? parent.suffix, metadata: request.metadata.map { JSONBodyEncoder.string(SortedMembers($0)) } ?? parent.metadata,
                            webhookURL: parent.webhookURL, status: .validatingFiles, createdAt: Int(Date().timeIntervalSince1970))
        job.priority = priority
        job.maxRetries = parent.maxRetries
        job.maxDuration = parent.maxDuration
        job.evaluation = parent.evaluation
        job.parentJob = parent.id
        job.fromStep = step
        job.startCheckpoint = parent.startCheckpoint
        job.precision = request.precision?.rawValue ?? parent.precision
        do {
            try artifacts.publish(copyOf: artifacts.localPath(.trainingState(job: parent.id, step: step)), as: .forkState(job: id))
            if artifacts.exists(.startingWeights(job: parent.id)) {
                try artifacts.publish(copyOf: artifacts.localPath(.startingWeights(job: parent.id)), as: .startingWeights(job: id))
            }
        } catch {
            throw APIError(status: 503, message: "cannot link the checkpoint's training state into the fork: \(error)", type: "server_error",
                           param: "from_step", code: "storage_unavailable")
        }
        try resources.jobs.insert(job, firstEvent: "Created fine-tuning job \(id), forked from \(parent.id) at step \(step)")
        changes.post(jobID: job.id, status: .validatingFiles)
        return .json(FineTuningJob(job))
    }
}
