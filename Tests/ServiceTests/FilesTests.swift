import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Service
import Store
import Testing

extension LiveService {
    /// Uploads `content` as the SDKs do: multipart/form-data with `purpose` and `file`.
    func upload(_ content: [UInt8], filename: String = "train.jsonl", purpose: String = "fine-tune", key: String? = nil) async throws
        -> (status: Int, json: [String: Any]) {
        let boundary = "preftune-test-\(UUID().uuidString)"
        var body = Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n\(purpose)\r\n".utf8)
        body += Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"\(filename)\"\r\nContent-Type: application/octet-stream\r\n\r\n".utf8)
        body += Data(content)
        body += Data("\r\n--\(boundary)--\r\n".utf8)
        var request = URLRequest(url: URL(string: base + "/v1/files")!)
        request.httpMethod = "POST"
        request.setValue("multipart/form-data; boundary=\(boundary)", forHTTPHeaderField: "Content-Type")
        request.setValue("Bearer \(key ?? adminKey)", forHTTPHeaderField: "Authorization")
        let (data, response) = try await URLSession.shared.upload(for: request, from: body)
        return ((response as! HTTPURLResponse).statusCode, (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:])
    }

    func download(_ path: String, key: String) async throws -> (Int, Data) {
        var request = URLRequest(url: URL(string: base + path)!)
        request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization")
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as! HTTPURLResponse).statusCode, data)
    }
}

@Suite struct FilesTests {
    @Test func uploadListFetchDownloadDelete() async throws {
        let service = try LiveService()
        var content = [UInt8]()
        for i in 0..<200_000 { content.append(UInt8(truncatingIfNeeded: i &* 31)) }  // binary, with CRLF and dashes inside
        let uploaded = try await service.upload(content)
        #expect(uploaded.status == 200, "\(uploaded.json)")
        let id = try #require(uploaded.json["id"] as? String)
        #expect(id.hasPrefix("file-") && uploaded.json["bytes"] as? Int == content.count)
        #expect(uploaded.json["object"] as? String == "file" && uploaded.json["status"] as? String == "processed")
        #expect(uploaded.json["filename"] as? String == "train.jsonl" && uploaded.json["purpose"] as? String == "fine-tune")

        let fetched = try await service.request("GET", "/v1/files/\(id)", key: service.adminKey)
        #expect(fetched.json["bytes"] as? Int == content.count)
        let (status, bytes) = try await service.download("/v1/files/\(id)/content", key: service.adminKey)
        #expect(status == 200 && [UInt8](bytes) == content)

        let second = try await service.upload(Array("{}\n".utf8), filename: "b.jsonl")
        let listed = try await service.request("GET", "/v1/files?limit=1", key: service.adminKey)
        #expect((listed.json["data"] as? [[String: Any]])?.first?["id"] as? String == second.json["id"] as? String)
        #expect(listed.json["has_more"] as? Bool == true)
        let next = try await service.request("GET", "/v1/files?limit=1&after=\(second.json["id"] as! String)", key: service.adminKey)
        #expect((next.json["data"] as? [[String: Any]])?.first?["id"] as? String == id)
        #expect(next.json["has_more"] as? Bool == false)

        let deleted = try await service.request("DELETE", "/v1/files/\(id)", key: service.adminKey)
        #expect(deleted.json["deleted"] as? Bool == true)
        #expect(try await service.request("GET", "/v1/files/\(id)", key: service.adminKey).status == 404)
        #expect(!FileManager.default.fileExists(atPath: service.data.filePath(id)))
    }

    @Test func anotherProjectsFileIsNotFound() async throws {
        let service = try LiveService()
        let uploaded = try await service.upload(Array("x".utf8))
        let other = try service.data.database.withWriter { try APIKeys(connection: $0).create(project: "other") }
        let id = try #require(uploaded.json["id"] as? String)
        for path in ["/v1/files/\(id)", "/v1/files/\(id)/content"] {
            #expect(try await service.request("GET", path, key: other.secret).status == 404)
        }
        #expect(try await service.request("DELETE", "/v1/files/\(id)", key: other.secret).status == 404)
        #expect((try await service.request("GET", "/v1/files", key: other.secret).json["data"] as? [Any])?.isEmpty == true)
    }

    @Test func mistakesAreClearErrors() async throws {
        let service = try LiveService()
        let purpose = try await service.upload(Array("x".utf8), purpose: "assistants")
        #expect(purpose.status == 400 && (purpose.json["error"] as? [String: Any])?["param"] as? String == "purpose")
        var request = URLRequest(url: URL(string: service.base + "/v1/files")!)
        request.httpMethod = "POST"
        request.setValue("Bearer \(service.adminKey)", forHTTPHeaderField: "Authorization")
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        let (_, response) = try await URLSession.shared.upload(for: request, from: Data("{}".utf8))
        #expect((response as! HTTPURLResponse).statusCode == 415)
        let anonymous = try await service.upload(Array(repeating: 7, count: 3_000_000), key: "sk-pt-nope")
        #expect(anonymous.status == 401, "an unread upload body is answered, not stalled")
        #expect(try await service.request("GET", "/v1/files?limit=0", key: service.adminKey).status == 400)
    }
}
