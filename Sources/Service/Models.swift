import Diffusion
import Foundation
import HTTP
import Numerics
import Store

/// Models — `POST /v1/models` creates a base model from an architecture config
/// (`{"id", "config", "seed"}`, freshly initialised) or from an uploaded safetensors
/// file (`{"id", "file"}`, validated against its config); `GET /v1/models`,
/// `GET /v1/models/{id}`, `DELETE /v1/models/{id}`.
enum ModelsAPI {
    static func add(to router: inout Router, data: DataDirectory, store: any ModelStore, files: any FileStore) {
        router.add("GET", "/v1/models") { context in
            JSON.response(["object": "list", "data": try store.models(visibleTo: context.principal!.projectID).map(object)])
        }
        router.add("GET", "/v1/models/{id}") { context in JSON.response(object(try find(context, store: store))) }
        router.add("POST", "/v1/models") { context in try create(context, data: data, store: store, files: files) }
        router.add("DELETE", "/v1/models/{id}") { context in
            let model = try find(context, store: store)
            guard model.projectID != nil else {
                throw APIError(status: 403, message: "shared models cannot be deleted by a project", type: "permission_error",
                               param: "id", code: "forbidden")
            }
            try store.markDeleted(model.id)
            return JSON.response(["id": model.id, "object": "model", "deleted": true])
        }
    }

    static func object(_ model: ModelRow) -> [String: Any] {
        ["id": model.id, "object": "model", "created": model.createdAt, "owned_by": model.projectID == nil ? "preftune" : "project",
         "config": RawJSON(text: model.config)]
    }

    static func find(_ context: RequestContext, store: any ModelStore) throws -> ModelRow {
        let id = context.parameters["id"] ?? ""
        guard let model = try store.model(id, visibleTo: context.principal!.projectID) else { throw APIError.notFound("model \(id)", param: "id") }
        return model
    }

    static func create(_ context: RequestContext, data: DataDirectory, store: any ModelStore, files: any FileStore) throws -> HTTPResponse {
        let body = try RequestJSON.object(context.request)
        try RequestJSON.allowOnly(["id", "config", "seed", "file"], in: body)
        guard let id = body["id"] as? String else { throw APIError.invalid("id is required: a name for the model", param: "id") }
        guard (1...64).contains(id.count), id.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }),
              !id.hasPrefix("ft:") else {
            throw APIError.invalid("id must be 1-64 letters, digits, '-', '_' or '.' (ft: names are for fine-tuned models)", param: "id")
        }
        let model: ModelFile
        switch (body["config"], body["file"]) {
        case let (config?, nil):
            guard let configObject = config as? [String: Any], let configData = try? JSONSerialization.data(withJSONObject: configObject) else {
                throw APIError.invalid("config must be an object (SPEC §2)", param: "config")
            }
            try ServiceLimits.rejectUnknownKeys(configObject)
            let parsed: ModelConfig
            do { parsed = try ModelConfig.parse(String(decoding: configData, as: UTF8.self)) } catch let error as ModelConfigError {
                throw APIError.invalid(error.message, param: "config.\(error.param)")
            }
            try ServiceLimits.check(parsed)
            let seed = try RequestJSON.integer(body["seed"], param: "seed", range: 0...Int(Int32.max)) ?? 0
            model = ModelFile(config: parsed, parameters: ResMLP(config: parsed).initialParameters(seed: UInt64(seed)))
        case let (nil, file as String):
            guard try files.file(file, project: context.principal!.projectID) != nil else { throw APIError.notFound("file \(file)", param: "file") }
            do { model = try ModelFile.load(data.filePath(file)) } catch {
                throw APIError(status: 422, message: "the file is not a valid resmlp model: \(error)", param: "file", code: "invalid_model_file")
            }
        default:
            throw APIError.invalid("give either config (an architecture) or file (an uploaded safetensors model), not both", param: "config")
        }
        let directory = data.modelDirectory(id)
        let inserted = try store.create(id, project: context.principal!.projectID, config: model.config.json) {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try model.write(to: "\(directory)/model.safetensors")
        }
        guard inserted else { throw APIError(status: 409, message: "a model named \(id) exists already", param: "id", code: "conflict") }
        return JSON.response(object(try find(RequestContext(request: context.request, parameters: ["id": id], principal: context.principal), store: store)))
    }
}

/// Decoding request bodies: JSON objects only, with errors that name the field.
enum RequestJSON {
    static func object(_ request: HTTPRequest) throws -> [String: Any] {
        let type = request.head.header("content-type")?.lowercased() ?? ""
        guard type.hasPrefix("application/json") else {
            throw APIError(status: 415, message: "send the request body as application/json", code: "unsupported_media_type")
        }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(request.body))) as? [String: Any] else {
            throw APIError.invalid("the request body is not a JSON object")
        }
        return object
    }

    static func allowOnly(_ keys: Set<String>, in object: [String: Any]) throws {
        if let unknown = object.keys.sorted().first(where: { !keys.contains($0) }) {
            throw APIError.invalid("unknown field \(unknown); expected \(keys.sorted().joined(separator: ", "))", param: unknown)
        }
    }

    static func integer(_ value: Any?, param: String, range: ClosedRange<Int>) throws -> Int? {
        guard let value, !(value is NSNull) else { return nil }
        guard let number = value as? NSNumber, String(cString: number.objCType) != "c", let exact = Int(exactly: number.doubleValue),
              range.contains(exact) else {
            throw APIError.invalid("\(param) must be an integer in \(range.lowerBound)...\(range.upperBound)", param: param)
        }
        return exact
    }
}

/// The largest architectures this service creates (docs/openapi.yaml states the same
/// bounds): with all of them at their maximum a model has about 128 M parameters.
enum ServiceLimits {
    static let sampleDimension = 32, hidden = 512, depth = 16, mlpRatio = 8, timeFreqDim = 1024
    static let vocab = 32_768, maxTokens = 256, vectorDim = 4096

    /// The API takes exactly the SPEC §2 fields; a misspelt one is an error, not a silent default.
    static func rejectUnknownKeys(_ config: [String: Any]) throws {
        func only(_ allowed: Set<String>, in object: [String: Any], at path: String) throws {
            if let unknown = object.keys.sorted().first(where: { !allowed.contains($0) }) {
                throw APIError.invalid("unknown field \(path).\(unknown)", param: "\(path).\(unknown)")
            }
        }
        try only(["arch", "sample_shape", "hidden", "depth", "mlp_ratio", "time_freq_dim", "cond", "schedule"], in: config, at: "config")
        if let cond = config["cond"] as? [String: Any] {
            let kindFields: [String: Set<String>] = ["text": ["vocab", "max_tokens"], "vector": ["dim"], "none": []]
            try only(Set(["kind"]).union(kindFields[cond["kind"] as? String ?? ""] ?? []), in: cond, at: "config.cond")
        }
        if let schedule = config["schedule"] as? [String: Any] {
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
