import Diffusion
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Service
import Testing

extension LiveService {
    func post(_ path: String, _ object: [String: Any], key: String? = nil) async throws -> (status: Int, json: [String: Any]) {
        let answer = try await postRaw(path, object, key: key)
        return (answer.status, (try? JSONSerialization.jsonObject(with: answer.body)) as? [String: Any] ?? [:])
    }

    /// The answer as bytes, with its content type (a PNG, say).
    func postRaw(_ path: String, _ object: [String: Any], key: String? = nil) async throws -> (status: Int, body: Data, type: String?) {
        try await handle("POST", path, key: key ?? adminKey, contentType: "application/json",
                         body: Array(try JSONSerialization.data(withJSONObject: object)))
    }
}

func param(_ json: [String: Any]) -> String? { (json["error"] as? [String: Any])?["param"] as? String }

@Suite struct ModelsTests {
    static var config: [String: Any] { [
        "arch": "resmlp", "sample_shape": [1, 4, 4], "hidden": 16, "depth": 1, "mlp_ratio": 2, "time_freq_dim": 8,
        "cond": ["kind": "text", "vocab": 32, "max_tokens": 4],
    ] }

    @Test func aBaseModelFromAConfigIsInitialisedAndListed() async throws {
        let service = try LiveService()
        let created = try await service.post("/v1/models", ["id": "tiny-base", "config": Self.config, "seed": 3])
        #expect(created.status == 200, "\(created.json)")
        #expect(created.json["id"] as? String == "tiny-base" && created.json["object"] as? String == "model")
        let file = try ModelFile.load(try service.modelPath("tiny-base"))
        #expect(file.parameters.array == ResMLP(config: file.config).initialParameters(seed: 3).array)
        let listed = try await service.request("GET", "/v1/models", key: service.adminKey)
        #expect((listed.json["data"] as? [[String: Any]])?.map { $0["id"] as? String } == ["tiny-base"])
        #expect(try await service.post("/v1/models", ["id": "tiny-base", "config": Self.config]).status == 409)
        #expect(try await service.request("DELETE", "/v1/models/tiny-base", key: service.adminKey).json["deleted"] as? Bool == true)
        #expect(try await service.request("GET", "/v1/models/tiny-base", key: service.adminKey).status == 404)
    }

    @Test func aModelFromAnUploadedFileIsValidated() async throws {
        let service = try LiveService()
        let config = try ModelConfig.parse(String(decoding: JSONSerialization.data(withJSONObject: Self.config), as: UTF8.self))
        let bytes = ModelFile(config: config, parameters: ResMLP(config: config).initialParameters(seed: 1)).serialized()
        let uploaded = try await service.upload(bytes, filename: "model.safetensors")
        let fromFile = try await service.post("/v1/models", ["id": "uploaded", "file": uploaded.json["id"] as! String])
        #expect(fromFile.status == 200, "\(fromFile.json)")
        let junk = try await service.upload(Array("not a model".utf8))
        let rejected = try await service.post("/v1/models", ["id": "junk", "file": junk.json["id"] as! String])
        #expect(rejected.status == 422 && param(rejected.json) == "file")
    }

    @Test func mistakesNameTheField() async throws {
        let service = try LiveService()
        var bad = Self.config
        bad["hidden"] = 0
        let cases: [([String: Any], Int, String)] = [
            (["config": Self.config], 400, "id"),
            (["id": "has space", "config": Self.config], 400, "id"),
            (["id": "m", "config": bad], 400, "config.hidden"),
            (["id": "m", "config": Self.config, "colour": "red"], 400, "colour"),
            (["id": "m", "config": Self.config, "seed": -1], 400, "seed"),
            (["id": "m", "file": "file-none"], 404, "file"),
            (["id": "m"], 400, "config"),
        ]
        for (body, status, field) in cases {
            let response = try await service.post("/v1/models", body)
            #expect(response.status == status && param(response.json) == field, "\(body): \(response.json)")
        }
    }
}
