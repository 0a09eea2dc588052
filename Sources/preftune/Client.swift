import Foundation
import JSON
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The API as the command line uses it: URLSession, one request at a time. The server
/// is `PREFTUNE_URL` (default http://127.0.0.1:8080); the key `PREFTUNE_API_KEY`, else
/// the admin key of the local data dir (`--data-dir`, default ./data).
struct APIClient {
    let base: String
    let key: String

    init(arguments: [String]) {
        let environment = ProcessInfo.processInfo.environment
        base = (environment["PREFTUNE_URL"] ?? "http://127.0.0.1:8080").trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        if let key = environment["PREFTUNE_API_KEY"], !key.isEmpty {
            self.key = key
        } else {
            let path = "\(option("--data-dir", in: arguments) ?? "./data")/admin.key"
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                fail("no API key: set PREFTUNE_API_KEY, or run where \(path) exists (--data-dir)", status: 2)
            }
            key = text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    struct Response {
        let status: Int
        let body: Data
        /// The body as JSON; null when it is not JSON.
        var json: JSONValue { (try? JSONParser.parse(body)) ?? .null }
    }

    /// Sends a request and waits; a connection failure ends the program with a clear message.
    func send(_ method: String, _ path: String, json: JSONValue? = nil) -> Response {
        var request = URLRequest(url: URL(string: base + path)!)
        request.httpMethod = method
        request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization")
        if let json {
            request.httpBody = Data(JSONBodyEncoder.encode(json))
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        return perform { URLSession.shared.dataTask(with: request, completionHandler: $0) }
    }

    /// Uploads a file as multipart/form-data, streamed from a temporary file rather than held in memory.
    func upload(_ path: String, purpose: String) -> Response {
        guard let input = FileHandle(forReadingAtPath: path) else { fail("cannot read \(path)") }
        let boundary = "preftune-\(UUID().uuidString)"
        let body = FileManager.default.temporaryDirectory.appendingPathComponent("preftune-upload-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: body) }
        _ = FileManager.default.createFile(atPath: body.path, contents: nil)
        guard let output = FileHandle(forWritingAtPath: body.path) else { fail("cannot write a temporary file") }
        let name = URL(fileURLWithPath: path).lastPathComponent.replacingOccurrences(of: "\"", with: "")
        output.write(Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n\(purpose)\r\n".utf8))
        output.write(Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"\(name)\"\r\nContent-Type: application/octet-stream\r\n\r\n".utf8))
        while let chunk = try? input.read(upToCount: 1 << 20), !chunk.isEmpty { output.write(chunk) }
        output.write(Data("\r\n--\(boundary)--\r\n".utf8))
        try? output.close()
        var request = URLRequest(url: URL(string: base + "/v1/files")!)
        request.httpMethod = "POST"
        request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization")
        request.setValue("multipart/form-data; boundary=\(boundary)", forHTTPHeaderField: "Content-Type")
        return perform { URLSession.shared.uploadTask(with: request, fromFile: body, completionHandler: $0) }
    }

    private func perform(_ task: (@escaping @Sendable (Data?, URLResponse?, Error?) -> Void) -> URLSessionTask) -> Response {
        let done = DispatchSemaphore(value: 0)
        let result = ResultBox()
        task { data, response, error in
            result.value = (data, response, error)
            done.signal()
        }.resume()
        done.wait()
        let (data, response, error) = result.value ?? (nil, nil, nil)
        guard let http = response as? HTTPURLResponse else {
            fail("cannot reach \(base): \(error?.localizedDescription ?? "no response") (is `preftune serve` running? PREFTUNE_URL sets the address)")
        }
        return Response(status: http.statusCode, body: data ?? Data())
    }

    /// The response's JSON, or the API's error message and exit status 1.
    func expect(_ response: Response) -> JSONValue {
        guard (200..<300).contains(response.status) else {
            let error = response.json["error"]
            let message = error?["message"]?.string ?? String(decoding: response.body, as: UTF8.self)
            let param = error?["param"]?.string.map { " (\($0))" } ?? ""
            fail("HTTP \(response.status): \(message)\(param)")
        }
        return response.json
    }
}

/// Carries a URLSession callback's result to the waiting thread.
final class ResultBox: @unchecked Sendable {
    var value: (Data?, URLResponse?, Error?)?
}
