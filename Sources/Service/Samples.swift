import Diffusion
import Foundation
import HTTP
import JSON
import Numerics
import Store
import Training

/// `POST /v1/samples`: samples from any model the project may use — shared and own
/// models, fine-tuned results and their checkpoints (`ft:…:ckpt-step-N`) — as arrays
/// (`format` json) or a PNG grid of prompts × `n` (`format` png, for image shapes).
/// `noise` gives x_T per sample, so a sample can be reproduced by another implementation.
enum SamplesAPI {
    static let maximumSamples = 256

    static func add(to router: inout Router, _ resources: Application.Resources) {
        let data = resources.data, models = resources.models, jobs = resources.jobs
        router.add("POST", "/v1/samples") { context in
            let request = try RequestJSON.decode(SampleRequest.self, from: context.request)
            try JobsAPI.JobFields.checkPrecision(request.precision)
            let path = try resolve(request.model, project: context.principal.projectID, data: data, models: models, jobs: jobs)
            let config: ModelConfig
            do { config = try ModelFile.declaredConfig(path) } catch {
                throw APIError(status: 500, message: "the weights of \(request.model) cannot be read", type: "server_error")
            }
            try checkCost(request, config: config, resources.settings)
            let samples = try await resources.heavyWork.run { cancellation in
                let model: ModelFile
                do { model = try ModelFile.load(path) } catch {
                    throw APIError(status: 500, message: "the weights of \(request.model) cannot be read", type: "server_error")
                }
                // Handed back whole: the request's task waits and touched none of it meanwhile.
                return UncheckedSendable((model, try draw(request, model: model, cancellation: cancellation)))
            }.value
            return try response(request, model: samples.0, samples: samples.1)
        }
    }

    /// Refuses a request over the memory budget, or asking for more arithmetic than the server
    /// allows one request (n × steps × the model's FLOPs per sample, twice with guidance).
    static func checkCost(_ request: SampleRequest, config: ModelConfig, _ settings: ServiceSettings) throws {
        let rows = request.n * max(1, request.prompts?.count ?? request.conditions?.count ?? 1)
        if let refusal = settings.memoryBudget.refusal(MemoryEstimate.sampling(config: config, count: rows), what: "this sample request",
                                                      advice: "ask for fewer samples") {
            throw APIError(status: 400, message: refusal, param: "n", code: "over_memory_budget")
        }
        let perSample = 2.0 * Double(ParameterLayout(config).totalCount) * (request.guidance == 1 ? 1 : 2)
        let flops = Double(rows) * Double(request.steps) * perSample
        guard flops <= settings.maxSampleFLOPs else {
            throw APIError(status: 400, message: String(format: "this request needs about %.2g FLOPs (%d samples × %d steps × %.2g per sample), over this server's limit of %.2g per request (--max-sample-flops); ask for fewer samples or steps",
                                                        flops, rows, request.steps, perSample, settings.maxSampleFLOPs),
                           param: "steps", code: "over_compute_budget")
        }
    }

    /// A model id to its weights: a checkpoint of one of the project's jobs, or a model it may use.
    static func resolve(_ id: String, project: String, data: DataDirectory, models: any ModelStore,
                        jobs: any JobStore) throws -> String {
        if let checkpoint = try checkpoint(id, project: project, data: data, jobs: jobs) { return checkpoint.path }
        guard let row = try models.model(id, visibleTo: project) else { throw APIError.notFound("model \(id)", param: "model") }
        return data.artifacts.localPath(.model(row.id))
    }

    /// The weights of a checkpoint id (`ft:…:<job-id>:ckpt-step-N`) of one of the project's jobs,
    /// and that job; nil when `id` is not a checkpoint's, 404 when it names one the project does not have.
    static func checkpoint(_ id: String, project: String, data: DataDirectory, jobs: any JobStore) throws -> (path: String, job: JobRecord)? {
        let parts = id.split(separator: ":", omittingEmptySubsequences: false)
        guard id.hasPrefix("ft:"), parts.count >= 5, let last = parts.last, last.hasPrefix("ckpt-step-"),
              let step = Int(last.dropFirst("ckpt-step-".count)) else { return nil }
        let jobID = String(parts[parts.count - 2])
        guard let job = try jobs.job(jobID, project: project), data.artifacts.exists(.checkpoint(job: jobID, step: step)) else {
            throw APIError.notFound("model \(id)", param: "model")
        }
        return (data.artifacts.localPath(.checkpoint(job: jobID, step: step)), job)
    }

    /// `POST /v1/samples`'s body.
    struct SampleRequest: Decodable, Sendable {
        var model: String
        var prompts: [String]?
        var conditions: [[Double]?]?
        var n: Int
        var sampler: SamplerKind
        var steps: Int
        var guidance: Float
        var seed: UInt64
        var noise: [[Double]]?
        var png: Bool
        var precision: MathPrecision

        enum CodingKeys: String, CodingKey, CaseIterable {
            case model, prompts, conditions, n, sampler, steps, guidance = "guidance_scale", seed, noise, format, precision
        }

        init(from decoder: any Decoder) throws {
            let body = try decoder.container(keyedBy: CodingKeys.self)
            model = try body.decode(String.self, forKey: .model)
            prompts = try body.decodeIfPresent([String].self, forKey: .prompts, explaining: "prompts must be a non-empty array of strings")
            if prompts?.isEmpty == true { throw body.mistake(.prompts, "prompts must be a non-empty array of strings") }
            let conditionsMessage = "conditions must be a non-empty array of vectors, each an array of numbers or null"
            conditions = try body.decodeIfPresent([[Double]?].self, forKey: .conditions, explaining: conditionsMessage)
            if conditions?.isEmpty == true { throw body.mistake(.conditions, conditionsMessage) }
            n = try body.decodeIfPresent(Int.self, forKey: .n, in: 1...SamplesAPI.maximumSamples) ?? 1
            sampler = try body.decodeIfPresent(SamplerKind.self, forKey: .sampler,
                                               explaining: "sampler must be one of \(SamplerKind.allCases.map(\.rawValue).joined(separator: ", "))") ?? .dpmpp2m
            steps = try body.decodeIfPresent(Int.self, forKey: .steps, in: 1...1000) ?? 20
            let guidanceMessage = "guidance_scale must be a number in [0, 100]"
            let guidance = try body.decodeIfPresent(Double.self, forKey: .guidance, explaining: guidanceMessage) ?? 1
            guard (0...100).contains(guidance) else { throw body.mistake(.guidance, guidanceMessage) }
            self.guidance = Float(guidance)
            seed = UInt64(try body.decodeIfPresent(Int.self, forKey: .seed, in: 0...Int(Int32.max)) ?? 0)
            noise = try body.decodeIfPresent([[Double]].self, forKey: .noise, explaining: "noise must be an array of x_T arrays, one per sample")
            let format = try body.decodeIfPresent(String.self, forKey: .format, explaining: "format must be json or png") ?? "json"
            guard ["json", "png"].contains(format) else { throw body.mistake(.format, "format must be json or png") }
            png = format == "png"
            precision = try JobsAPI.JobFields.precision(body, .precision)
        }
    }

    /// The rows to sample: each prompt (or condition) `n` times, prompt-major.
    static func conditions(_ request: SampleRequest, config: ModelConfig) throws -> (Conditions, labels: [JSONValue]) {
        switch config.condition {
        case .text:
            guard let prompts = request.prompts, request.conditions == nil else {
                throw unfit("this model takes text: give prompts", param: "prompts")
            }
            let rows = prompts.flatMap { Array(repeating: $0, count: request.n) }
            try checkCount(rows.count)
            return (Conditions.prompts(rows, config: config), rows.map(JSONValue.string))
        case let .vector(dim):
            guard let vectors = request.conditions, request.prompts == nil else {
                throw unfit("this model takes condition vectors of \(dim) numbers: give conditions", param: "conditions")
            }
            let rows = vectors.flatMap { Array(repeating: $0, count: request.n) }
            try checkCount(rows.count)
            var conditions = Conditions.null(count: rows.count, config: config)
            for (row, vector) in rows.enumerated() {
                guard let vector else { continue }
                guard vector.count == dim, vector.allSatisfy(\.isFinite) else {
                    throw unfit("each condition must have \(dim) finite numbers", param: "conditions")
                }
                for (i, value) in vector.enumerated() { conditions.vectors[row * dim + i] = Float(value) }
                conditions.isNull[row] = 0
            }
            return (conditions, rows.map { $0.map { .array($0.map(JSONValue.number)) } ?? .null })
        case .none:
            guard request.prompts == nil, request.conditions == nil else {
                throw unfit("this model is unconditional: give only n", param: request.prompts != nil ? "prompts" : "conditions")
            }
            try checkCount(request.n)
            return (Conditions.null(count: request.n, config: config), Array(repeating: .null, count: request.n))
        }
    }

    /// A well-formed request that does not fit the chosen model: 422, naming the field.
    static func unfit(_ message: String, param: String) -> APIError {
        APIError(status: 422, message: message, param: param, code: "does_not_fit_model")
    }

    static func checkCount(_ count: Int) throws {
        guard count <= maximumSamples else {
            throw unfit("at most \(maximumSamples) samples per request (prompts × n)", param: "n")
        }
    }

    struct Drawn: Sendable { let rows: [[Float]]; let labels: [JSONValue] }

    /// Draws on a heavy-work thread (the request threads stay responsive), and stops between
    /// sampler steps once `cancellation` is set: the client left, or the server is stopping.
    static func draw(_ request: SampleRequest, model: ModelFile, cancellation: HeavyWork.Cancellation) throws -> Drawn {
        let config = model.config, D = config.sampleSize
        let (conditions, labels) = try Self.conditions(request, config: config)
        let count = conditions.count
        let x: FloatBuffer
        if let noise = request.noise {
            guard noise.count == count, noise.allSatisfy({ $0.count == D && $0.allSatisfy(\.isFinite) }) else {
                throw unfit("noise must hold \(count) arrays of \(D) finite numbers (one x_T per sample)", param: "noise")
            }
            x = FloatBuffer(count: count * D)
            for (row, values) in noise.enumerated() { for (i, value) in values.enumerated() { x[row * D + i] = Float(value) } }
        } else {
            x = SampleDrawing.initialNoise(seed: request.seed, count: count, config: config)
        }
        let drawn = MathPrecision.with(request.precision) {
            SampleDrawing.denoise(x, model: model, conditions: conditions, sampler: request.sampler, steps: request.steps,
                                  guidance: request.guidance, seed: request.seed, shouldStop: { cancellation.isCancelled })
        }
        guard let rows = drawn else {
            throw CancellationError()
        }
        return Drawn(rows: rows, labels: labels)
    }

    static func response(_ request: SampleRequest, model: ModelFile, samples: Drawn) throws -> HTTPResponse {
        let shape = model.config.sampleShape
        if request.png {
            guard SampleDrawing.isImage(shape) else {
                throw unfit("png needs an image shape [C, H, W] with C 1 or 3; this model's samples are \(shape)", param: "format")
            }
            let scale = max(1, 64 / max(shape[1], shape[2]))
            let png = PNG.grid(samples: samples.rows, channels: shape[0], height: shape[1], width: shape[2], columns: request.n, scale: scale)
            return HTTPResponse(status: 200, headers: [("Content-Type", "image/png")], body: .bytes(png))
        }
        let labelKey = request.prompts != nil ? "prompt" : "condition"
        let data = samples.rows.enumerated().map { index, row in
            Sample(index: index, sample: row, labelKey: labelKey, label: samples.labels[index])
        }
        return .json(SampleList(model: request.model, shape: shape, sampler: request.sampler.rawValue, steps: request.steps,
                                guidanceScale: request.guidance, seed: Int(request.seed), precision: request.precision.rawValue, data: data))
    }

    /// The samples drawn, in request order.
    struct SampleList: Encodable {
        let object = "list"
        let model: String
        let shape: [Int]
        let sampler: String
        let steps: Int
        let guidanceScale: Float
        let seed: Int
        let precision: String
        let data: [Sample]

        enum CodingKeys: String, CodingKey { case object, model, shape, sampler, steps, guidanceScale = "guidance_scale", seed, precision, data }
    }

    /// One sample, with the prompt (or class condition) it was drawn for.
    struct Sample: Encodable {
        let index: Int
        let sample: [Float]
        let labelKey: String
        let label: JSONValue

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: AnyKey.self)
            try container.encode(index, forKey: AnyKey("index"))
            try container.encode(sample, forKey: AnyKey("sample"))
            try container.encode(label, forKey: AnyKey(labelKey))
        }
    }
}
