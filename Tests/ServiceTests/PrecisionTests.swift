import Diffusion
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import JSON
import Numerics
import TestSupport
import Testing
import Training

/// `"precision": "bf16"` on jobs and sample requests: bf16 mixed precision in the products,
/// shown on the job and the samples, and refused with a 400 where the CPU cannot compute it.
@Suite struct PrecisionTests {
    @Test(.enabled(if: MathPrecision.nativeBF16, "this CPU has no bf16 instructions: aCPUWithoutBF16RefusesBF16WithA400 covers it"))
    func aBF16JobTrainsAndItsForkKeepsItsPrecision() async throws {
        let service = try LiveService(workers: 1)
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.pairs)
        let hyper: [String: Any] = ["n_steps": 10, "batch_size": 4, "checkpoint_every": 5, "learning_rate": 1e-3]
        let bf16 = try await service.createJob(model: model, file: file, method: "dpo", hyper, extra: ["precision": "bf16"])
        let fp32 = try await service.createJob(model: model, file: file, method: "dpo", hyper)
        let done = try await service.waitFor(bf16, ["succeeded", "failed", "cancelled"])
        #expect(done["status"] as? String == "succeeded" && done["precision"] as? String == "bf16", "\(done)")
        let plain = try await service.waitFor(fp32, ["succeeded", "failed", "cancelled"])
        #expect(plain["precision"] as? String == "fp32")
        let log = try String(contentsOfFile: service.data.logPath(bf16), encoding: .utf8)
        #expect(log.contains(" in bf16"), "\(log)")
        // The same job in the two precisions: close, not the same bits. Checkpoints stay fp32 files.
        let a = try service.finalWeights(bf16), b = try service.finalWeights(fp32)
        #expect(a != b && a.count == b.count)
        #expect(zip(a, b).map { abs($0 - $1) }.max()! < 0.05)

        let fork = try await service.post("/v1/fine_tuning/jobs/\(bf16)/fork", ["from_step": 5, "hyperparameters": [:]])
        #expect(fork.status == 200 && fork.json["precision"] as? String == "bf16", "\(fork.json)")
        let forkFP32 = try await service.post("/v1/fine_tuning/jobs/\(bf16)/fork", ["from_step": 5, "hyperparameters": [:], "precision": "fp32"])
        #expect(forkFP32.json["precision"] as? String == "fp32", "\(forkFP32.json)")
        let wrong = try await service.post("/v1/fine_tuning/jobs", ["model": model, "training_file": file, "precision": "fp16",
                                                                     "method": ["type": "dpo"]])
        #expect(wrong.status == 400 && (wrong.json["error"] as? [String: Any])?["param"] as? String == "precision", "\(wrong.json)")

        // A trained model (a new one predicts zeros: its out_proj starts at zero) samples in both precisions.
        try await Self.bf16SamplesAreCloseToFP32AndSayTheirPrecision(service, model: try #require(plain["fine_tuned_model"] as? String))
    }

    static func bf16SamplesAreCloseToFP32AndSayTheirPrecision(_ service: LiveService, model: String) async throws {
        let body: [String: Any] = ["model": model, "prompts": ["shape 1", "shape 2"], "n": 2, "steps": 10, "seed": 3]
        let fp32 = try await service.post("/v1/samples", body)
        let bf16 = try await service.post("/v1/samples", body.merging(["precision": "bf16"]) { $1 })
        #expect(fp32.status == 200 && bf16.status == 200, "\(bf16.json)")
        #expect(fp32.json["precision"] as? String == "fp32" && bf16.json["precision"] as? String == "bf16")
        func values(_ answer: [String: Any]) -> [Float] {
            (answer["data"] as? [[String: Any]] ?? []).flatMap { ($0["sample"] as? [Double] ?? []).map(Float.init) }
        }
        let x = values(fp32.json), y = values(bf16.json)
        #expect(x.count == 4 * 16 && y.count == x.count && x != y)
        let scale = x.map(abs).max()!
        #expect(zip(x, y).map { abs($0 - $1) }.max()! < 0.05 * scale, "bf16 samples far from fp32's")

        // The same request here, in bf16, gives the served numbers (up to the order of fp32 sums).
        let file = try ModelFile.load(try service.modelPath(model))
        let local = MathPrecision.with(.bf16) {
            SampleDrawing.denoise(SampleDrawing.initialNoise(seed: 3, count: 4, config: file.config), model: file,
                                  conditions: Conditions.prompts(["shape 1", "shape 1", "shape 2", "shape 2"], config: file.config),
                                  sampler: .dpmpp2m, steps: 10, guidance: 1, seed: 3, shouldStop: { false })
        }
        let near = try #require(local).flatMap { $0 }
        #expect(zip(near, y).map { abs($0 - $1) }.max()! <= 1e-4 * scale)

        let wrong = try await service.post("/v1/samples", body.merging(["precision": "half"]) { $1 })
        #expect(wrong.status == 400 && (wrong.json["error"] as? [String: Any])?["param"] as? String == "precision")
    }

    /// oneDNN's own switch, DNNL_MAX_CPU_ISA, makes this CPU one without bf16 instructions for a
    /// server: bf16 is then a 400 that says why, and fp32 goes on.
    /// A bf16 job holds θ rounded to bf16 beside θ (`BF16Shadow`): the API's memory check counts
    /// it. Under a budget between the fp32 and the bf16 job's needs, only the fp32 one is taken.
    @Test(.enabled(if: MathPrecision.nativeBF16, "this CPU has no bf16 instructions: aCPUWithoutBF16RefusesBF16WithA400 covers it"))
    func theMemoryCheckCountsABF16JobsCopyOfTheta() async throws {
        let config = try ModelConfig.parse(String(decoding: try JSONSerialization.data(withJSONObject: ModelsTests.config), as: UTF8.self))
        let h = try Hyperparameters.resolve(["n_steps": 4, "batch_size": 4], method: .sft)
        let lines = 16  // WorkerFixtures.samples
        let fp32 = MemoryEstimate.training(config: config, method: .sft, hyperparameters: h, examples: lines).total
        let bf16 = MemoryEstimate.training(config: config, method: .sft, hyperparameters: h, examples: lines, precision: .bf16).total
        #expect(bf16 > fp32)
        let service = try LiveService(settings: ServiceHardeningTests.settings(budget: (fp32 + bf16) / 2))
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let method: [String: Any] = ["type": "sft", "sft": ["hyperparameters": ["n_steps": 4, "batch_size": 4]]]
        let refused = try await service.post("/v1/fine_tuning/jobs", ["model": model, "training_file": file, "method": method, "precision": "bf16"])
        #expect(refused.status == 400 && errorCode(refused.json) == "over_memory_budget", "\(refused.json)")
        let taken = try await service.post("/v1/fine_tuning/jobs", ["model": model, "training_file": file, "method": method])
        #expect(taken.status == 200, "\(taken.json)")
    }

    @Test func aCPUWithoutBF16RefusesBF16WithA400() async throws {
        let data = ExecutableTests.temporaryDirectory(), port = ExecutableTests.freePort()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let version = try runTool(["DNNL_MAX_CPU_ISA=AVX512_CORE", ExecutableTests.binary, "--version"])
        #expect(version.output.contains("bf16: no — precision bf16 needs a CPU with AVX512-BF16 or AMX"), "\(version.output)")
        // What the capped oneDNN offers: avx512_core on an AVX-512 CPU, avx2 on one without it.
        let offered = version.output.split(separator: "\n").first { $0.hasPrefix("bf16: no") }?
            .components(separatedBy: "this one offers ").last?.split(separator: " ").first.map(String.init)
        #expect(offered == "avx512_core" || offered == "avx2", "\(version.output)")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ExecutableTests.binary)
        process.arguments = ["serve", "--listen", "127.0.0.1:\(port)", "--data-dir", data, "--workers", "0"]
        process.environment = ProcessInfo.processInfo.environment.merging(["DNNL_MAX_CPU_ISA": "AVX512_CORE"]) { $1 }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.runWithSignalsUnblocked()
        defer { if process.isRunning { process.terminate() } }
        #expect(try await ExecutableTests.waitHealthy(port: port))
        let key = try String(contentsOfFile: "\(data)/admin.key", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        func post(_ path: String, _ body: [String: Any]) async throws -> (status: Int, error: [String: Any]) {
            var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
            request.httpMethod = "POST"
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization")
            request.httpBody = try JSONSerialization.data(withJSONObject: body)
            let (data, response) = try await URLSession.shared.data(for: request)
            let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
            return ((response as? HTTPURLResponse)?.statusCode ?? 0, json["error"] as? [String: Any] ?? [:])
        }
        let config: [String: Any] = ["sample_shape": [1, 4, 4], "hidden": 16, "depth": 1, "cond": ["kind": "text", "vocab": 32, "max_tokens": 4]]
        _ = try await post("/v1/models", ["id": "m", "config": config])
        let sample = try await post("/v1/samples", ["model": "m", "prompts": ["a"], "precision": "bf16"])
        #expect(sample.status == 400 && sample.error["code"] as? String == "unsupported_precision" && sample.error["param"] as? String == "precision")
        #expect((sample.error["message"] as? String)?.contains("AVX512-BF16 or AMX; this one offers \(offered ?? "?") (use fp32)") == true, "\(sample.error)")
        #expect(try await post("/v1/samples", ["model": "m", "prompts": ["a"]]).status == 200)
        let job = try await post("/v1/fine_tuning/jobs", ["model": "m", "training_file": "file-none", "precision": "bf16",
                                                           "method": ["type": "sft"]])
        #expect(job.status == 400 && job.error["code"] as? String == "unsupported_precision", "\(job.error)")
    }
}
