import Diffusion
import Foundation
import HTTP
import JSON
import Jobs
import Numerics
import Store
import Training

/// Models — `POST /v1/models` creates a base model from an architecture config
/// (`{"id", "config", "seed"}`, freshly initialised) or from an uploaded safetensors
/// file (`{"id", "file"}`, validated against its config); `GET /v1/models`,
/// `GET /v1/models/{id}`, `DELETE /v1/models/{id}`.
enum ModelsAPI {
    static func add(to router: inout Router, _ resources: Application.Resources) {
        let store = resources.models
        router.addRead("GET", "/v1/models") { context in
            let created = try Query.createdRange(context.request.query)
            return .json(ListPage(try store.models(visibleTo: context.principal.projectID, created: created).map(ModelObject.init), hasMore: nil))
        }
        router.addRead("GET", "/v1/models/{id}") { context in .json(ModelObject(try find(context, store: store))) }
        router.add("POST", "/v1/models") { context in try await create(context, resources) }
        router.add("DELETE", "/v1/models/{id}") { context in
            let model = try find(context, store: store)
            guard model.projectID != nil else {
                throw APIError(status: 403, message: "shared models cannot be deleted by a project", type: "permission_error",
                               param: "id", code: "forbidden")
            }
            let users = try resources.jobs.jobs(project: context.principal.projectID, usingModel: model.id, activeOnly: true)
            guard users.isEmpty else {
                throw APIError(status: 409, message: "model \(model.name) is the base of \(users.count) unfinished job(s), e.g. \(users[0]); cancel them first",
                               param: "id", code: "model_in_use")
            }
            try store.delete(model.id)
            // The weights go with the model: deleting is how a project frees its storage quota.
            resources.data.artifacts.remove(.model(model.id))
            return .json(Deleted(id: model.name, object: "model"))
        }
    }

    static func find(_ context: RequestContext, store: any ModelStore) throws -> ModelRow {
        let id = context.parameters["id"] ?? ""
        guard let model = try store.model(id, visibleTo: context.principal.projectID) else { throw APIError.notFound("model \(id)", param: "id") }
        return model
    }

    /// Bytes of a model's weights, from its config.
    static func weightBytes(_ config: String) -> Int {
        (try? ModelConfig.parse(config)).map { ParameterLayout($0).totalCount * 4 } ?? 0
    }

    /// `POST /v1/models`'s body: a name, and either an architecture (with an initialisation seed) or an uploaded file.
    struct CreateRequest: Decodable {
        enum Source { case config(ModelConfig, seed: Int), file(String) }
        var id: String
        var source: Source

        enum CodingKeys: String, CodingKey, CaseIterable { case id, config, seed, file }

        init(from decoder: any Decoder) throws {
            let body = try decoder.container(keyedBy: CodingKeys.self)
            guard let id = try body.decodeIfPresent(String.self, forKey: .id, explaining: "id must be a string") else {
                throw body.mistake(.id, "id is required: a name for the model")
            }
            guard ModelKey.isValidName(id) else {
                throw body.mistake(.id, "id must be 1-64 characters: a letter or digit, then letters, digits, '-', '_' or '.'")
            }
            self.id = id
            let config = try body.decodeIfPresent(JSONObject.self, forKey: .config, explaining: "config must be an object (SPEC §2)")
            let file = try body.decodeIfPresent(String.self, forKey: .file, explaining: "file must be the id of an uploaded safetensors file")
            switch (config, file) {
            case let (config?, nil):
                try ServiceLimits.rejectUnknownKeys(config)
                do {
                    source = .config(try ModelConfig.parse(JSONValue.object(config).text),
                                     seed: try body.decodeIfPresent(Int.self, forKey: .seed, in: 0...Int(Int32.max)) ?? 0)
                } catch let error as ModelConfigError {
                    throw JSONFieldError(error.message, path: "config.\(error.param)")
                }
            case let (nil, file?):
                source = .file(file)
            default:
                throw body.mistake(.config, "give either config (an architecture) or file (an uploaded safetensors model), not both")
            }
        }
    }

    static func create(_ context: RequestContext, _ resources: Application.Resources) async throws -> HTTPResponse {
        let request = try RequestJSON.decode(CreateRequest.self, from: context.request)
        let project = context.principal.projectID, id = request.id
        let budget = resources.settings.memoryBudget
        let build: @Sendable (HeavyWork.Cancellation) throws -> UncheckedSendable<ModelFile>
        switch request.source {
        case let .config(parsed, seed):
            try ServiceLimits.check(parsed)
            try checkBudget(parsed, budget)
            build = { _ in UncheckedSendable(ModelFile(config: parsed, parameters: ResMLP(config: parsed).initialParameters(seed: UInt64(seed)))) }
        case let .file(file):
            guard try resources.files.file(file, project: project) != nil else { throw APIError.notFound("file \(file)", param: "file") }
            let path = resources.data.artifacts.localPath(.upload(file))
            // What the file declares is checked before anything of it is read: the limits a JSON config
            // gets, and the memory budget. Then its tensors must cover that config exactly.
            let declared: ModelConfig
            do { declared = try ModelFile.declaredConfig(path, requireTensors: false) } catch {
                throw APIError(status: 422, message: "the file is not a valid resmlp model: \(error)", param: "file", code: "invalid_model_file")
            }
            do { try ServiceLimits.check(declared) } catch let error as APIError {
                throw APIError(status: 422, message: "the file's config: \(error.message)", param: "file", code: "invalid_model_file")
            }
            try checkBudget(declared, budget)
            build = { _ in
                do { return UncheckedSendable(try ModelFile.load(path)) } catch {
                    throw APIError(status: 422, message: "the file is not a valid resmlp model: \(error)", param: "file", code: "invalid_model_file")
                }
            }
        }
        try Quotas.check(.model, project: project, adding: 0, resources)
        // Initialising or reading a model and writing its file take seconds at the largest sizes: not on a
        // request thread. The file is written beside its place and renamed in when the model is registered.
        let staged = try resources.data.artifacts.stagingPath(for: .model(ModelKey.key(project: project, name: id)))
        // Gone on every path: renamed into place, or removed after a refusal, a conflict or a cancelled build.
        defer { try? FileManager.default.removeItem(atPath: staged) }
        let built = try await resources.heavyWork.run { cancellation in
            let model = try build(cancellation).value
            try model.write(to: staged)
            return (config: model.config.json, bytes: model.parameters.count * 4)
        }
        try Quotas.check(.model, project: project, adding: built.bytes, resources)
        let inserted = try resources.models.create(id, project: project, config: built.config) { key in
            do { try resources.data.artifacts.publish(staged: staged, as: .model(key)) } catch {
                throw APIError(status: 500, message: "cannot store the model: \(error)", type: "server_error")
            }
        }
        guard inserted else { throw APIError(status: 409, message: "you have a model named \(id) already (or a shared model has that name)", param: "id", code: "conflict") }
        guard let created = try resources.models.model(id, visibleTo: project) else { throw APIError.notFound("model \(id)", param: "id") }
        return .json(ModelObject(created))
    }

    static func checkBudget(_ config: ModelConfig, _ budget: MemoryBudget) throws {
        if let refusal = budget.refusal(MemoryEstimate.model(config: config), what: "this model", advice: "choose a smaller architecture") {
            throw APIError(status: 400, message: refusal, param: "config", code: "over_memory_budget")
        }
    }
}

/// Decoding request bodies: a JSON object into the endpoint's request type, with errors
/// that name the field (`param`).
enum RequestJSON {
    static func decode<Request: Decodable>(_ type: Request.Type, from request: HTTPRequest) throws -> Request {
        let contentType = request.head.header("content-type")?.lowercased() ?? ""
        guard contentType.hasPrefix("application/json") else {
            throw APIError(status: 415, message: "send the request body as application/json", code: "unsupported_media_type")
        }
        let value: JSONValue
        do { value = try JSONParser.parse(request.body) } catch {
            throw APIError.invalid("the request body is not JSON: \(error)")
        }
        guard value.object != nil else { throw APIError.invalid("the request body is not a JSON object") }
        do { return try JSONValueDecoder.decode(Request.self, from: value) } catch let error as JSONFieldError {
            throw APIError.invalid(error.message, param: error.path)
        }
    }
}

/// The largest architectures this service creates (docs/openapi.yaml states the same
/// bounds): with all of them at their maximum a model has about 128 M parameters.
enum ServiceLimits {
    static let sampleDimension = 32, hidden = 512, depth = 16, mlpRatio = 8, timeFreqDim = 1024
    static let vocab = 32_768, maxTokens = 256, vectorDim = 4096

    /// The API takes exactly the SPEC §2 fields; a misspelt one is an error, not a silent default.
    static func rejectUnknownKeys(_ config: JSONObject) throws {
        func only(_ allowed: Set<String>, in object: JSONObject, at path: String) throws {
            if let unknown = object.keys.sorted().first(where: { !allowed.contains($0) }) {
                throw JSONFieldError("unknown field \(path).\(unknown)", path: "\(path).\(unknown)")
            }
        }
        try only(["arch", "sample_shape", "hidden", "depth", "mlp_ratio", "time_freq_dim", "cond", "schedule"], in: config, at: "config")
        if let cond = config["cond"]?.object {
            let kindFields: [String: Set<String>] = ["text": ["vocab", "max_tokens"], "vector": ["dim"], "none": []]
            try only(Set(["kind"]).union(kindFields[cond["kind"]?.string ?? ""] ?? []), in: cond, at: "config.cond")
        }
        if let schedule = config["schedule"]?.object {
            try only(["num_train_timesteps", "beta_schedule", "beta_start", "beta_end"], in: schedule, at: "config.schedule")
        }
    }

    static func check(_ config: ModelConfig) throws {
        func limit(_ value: Int, _ maximum: Int, _ param: String) throws {
            guard value <= maximum else { throw APIError.invalid("\(param) is at most \(maximum) on this service, got \(value)", param: "config.\(param)") }
        }
        for dimension in config.sampleShape { try limit(dimension, sampleDimension, "sample_shape") }
        try limit(config.hidden, hidden, "hidden")
        try limit(config.depth, depth, "depth")
        try limit(config.mlpRatio, mlpRatio, "mlp_ratio")
        try limit(config.timeFreqDim, timeFreqDim, "time_freq_dim")
        switch config.condition {
        case let .text(v, tokens):
            try limit(v, vocab, "cond.vocab")
            try limit(tokens, maxTokens, "cond.max_tokens")
        case let .vector(dim):
            try limit(dim, vectorDim, "cond.dim")
        case .none:
            break
        }
    }
}
