import Diffusion
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Numerics
import Testing

@Suite struct SamplesTests {
    @Test func samplesWithExplicitNoiseMatchTheSamplerRunLocally() async throws {
        let service = try LiveService()
        let model = try await WorkerFixtures.baseModel(service)
        var random = Philox(seed: 5, stream: 1)
        let noise = (0..<4).map { _ in (0..<16).map { _ in Double(random.nextUniform()) * 2 - 1 } }
        let body: [String: Any] = ["model": model, "prompts": ["shape 1", "shape 2"], "n": 2, "sampler": "ddim", "steps": 8,
                                   "guidance_scale": 2.0, "noise": noise]
        let answer = try await service.post("/v1/samples", body)
        #expect(answer.status == 200, "\(answer.json)")
        let rows = try #require(answer.json["data"] as? [[String: Any]])
        #expect(rows.map { $0["prompt"] as? String } == ["shape 1", "shape 1", "shape 2", "shape 2"])
        #expect(answer.json["shape"] as? [Int] == [1, 4, 4])

        // The same sampler, weights and x_T here give the same numbers.
        let file = try ModelFile.load(try service.modelPath(model))
        let x = FloatBuffer(count: 4 * 16)
        for (row, values) in noise.enumerated() { for (i, v) in values.enumerated() { x[row * 16 + i] = Float(v) } }
        Sampler(model: ResMLP(config: file.config), kind: .ddim, maxBatch: 4).sample(
            parameters: file.parameters, x: x.pointer, batch: 4,
            conditions: Conditions.prompts(["shape 1", "shape 1", "shape 2", "shape 2"], config: file.config), guidance: 2, steps: 8)
        let served = rows.flatMap { ($0["sample"] as? [Double] ?? []).map(Float.init) }
        #expect(served == x.array)

        let again = try await service.post("/v1/samples", ["model": model, "prompts": ["shape 1"], "n": 3, "seed": 9])
        let repeated = try await service.post("/v1/samples", ["model": model, "prompts": ["shape 1"], "n": 3, "seed": 9])
        #expect((again.json["data"] as? [[String: Any]])?.count == 3)
        #expect(NSDictionary(dictionary: again.json).isEqual(to: repeated.json), "a seed reproduces its samples")
    }

    @Test func aPNGGridOpensAsAValidImage() async throws {
        let service = try LiveService()
        let config: [String: Any] = ["arch": "resmlp", "sample_shape": [3, 8, 8], "hidden": 16, "depth": 1, "mlp_ratio": 2,
                                     "time_freq_dim": 8, "cond": ["kind": "text", "vocab": 32, "max_tokens": 4]]
        let model = try await service.post("/v1/models", ["id": "rgb", "config": config]).json["id"] as! String
        let answer = try await service.postRaw("/v1/samples", ["model": model, "prompts": ["a", "b"], "n": 3, "format": "png", "steps": 4])
        #expect(answer.status == 200 && answer.type == "image/png")
        let path = service.directory + "/grid.png"
        try answer.body.write(to: URL(fileURLWithPath: path))
        // An independent reader: chunk CRCs, zlib stream, filter bytes and the size of the grid (3 × 2 tiles of 64 px, 1 px apart).
        let check = try runTool(["python3", "-c", """
            import struct, sys, zlib
            data = open(sys.argv[1], 'rb').read()
            assert data[:8] == b'\\x89PNG\\r\\n\\x1a\\n'
            pos, chunks = 8, {}
            while pos < len(data):
                n, = struct.unpack('>I', data[pos:pos+4]); kind = data[pos+4:pos+8]; body = data[pos+8:pos+8+n]
                assert zlib.crc32(kind + body) == struct.unpack('>I', data[pos+8+n:pos+12+n])[0], kind
                chunks[kind] = chunks.get(kind, b'') + body; pos += 12 + n
            w, h, depth, colour = struct.unpack('>IIBB', chunks[b'IHDR'][:10])
            raw = zlib.decompress(chunks[b'IDAT'])
            assert len(raw) == h * (1 + 3 * w) and all(raw[y * (1 + 3 * w)] == 0 for y in range(h))
            print(w, h, depth, colour)
            """, path])
        #expect(check.output.trimmingCharacters(in: .whitespacesAndNewlines) == "194 129 8 2", "\(check.output)")
    }

    @Test func mistakesAreNamedAndCheckpointsCanBeSampled() async throws {
        let service = try LiveService(workers: 1)
        let model = try await WorkerFixtures.baseModel(service)
        #expect(param(try await service.post("/v1/samples", ["model": "nope", "prompts": ["a"]]).json) == "model")
        #expect(param(try await service.post("/v1/samples", ["model": model]).json) == "prompts")
        #expect(param(try await service.post("/v1/samples", ["model": model, "prompts": ["a"], "n": 1000]).json) == "n")
        #expect(param(try await service.post("/v1/samples", ["model": model, "prompts": ["a"], "sampler": "euler"]).json) == "sampler")
        #expect(param(try await service.post("/v1/samples", ["model": model, "prompts": ["a"], "noise": [[1, 2]]]).json) == "noise")
        #expect(param(try await service.post("/v1/samples", ["model": model, "prompts": ["a"], "format": "gif"]).json) == "format")

        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let id = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 10, "batch_size": 4, "checkpoint_every": 5])
        _ = try await service.waitFor(id, ["succeeded"])
        let checkpoints = try await service.request("GET", "/v1/fine_tuning/jobs/\(id)/checkpoints", key: service.adminKey).json["data"] as? [[String: Any]]
        let checkpoint = try #require(checkpoints?.last?["fine_tuned_model_checkpoint"] as? String)
        #expect(checkpoint.hasSuffix(":ckpt-step-5"))
        #expect(try await service.post("/v1/samples", ["model": checkpoint, "prompts": ["a"]]).status == 200)
        #expect(try await service.post("/v1/samples", ["model": checkpoint.replacingOccurrences(of: "step-5", with: "step-7"), "prompts": ["a"]]).status == 404)
    }
}
