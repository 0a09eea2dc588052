import Foundation
import HTTP
import Jobs
import Store

/// Files — `POST /v1/files` (multipart/form-data with `file` and `purpose`, as the
/// OpenAI SDK sends it, streamed to disk), `GET /v1/files`, `GET /v1/files/{id}`,
/// `GET /v1/files/{id}/content`, `DELETE /v1/files/{id}`.
enum FilesAPI {
    /// Largest upload accepted.
    static let maximumUpload = 8 << 30

    static func add(to router: inout Router, _ resources: Application.Resources) {
        let data = resources.data, store = resources.files
        // Uploads stream to disk as they arrive; the multipart framing may add a little to the file's size.
        router.add("POST", "/v1/files", streamsBody: true, maxBodyBytes: maximumUpload + (1 << 20)) { context in
            try await upload(context, resources)
        }
        router.addRead("GET", "/v1/files") { context in try list(context, store: store) }
        router.addRead("GET", "/v1/files/{id}") { context in .json(FileObject(try find(context, store: store))) }
        router.addRead("GET", "/v1/files/{id}/content") { context in
            let file = try find(context, store: store)
            return HTTPResponse(status: 200, headers: [("Content-Type", "application/octet-stream")],
                                body: .file(path: data.artifacts.localPath(.upload(file.id)), size: file.bytes))
        }
        router.add("DELETE", "/v1/files/{id}") { context in
            let file = try find(context, store: store)
            try store.markDeleted(file.id)
            data.artifacts.remove(.upload(file.id))
            return .json(Deleted(id: file.id, object: "file"))
        }
    }

    /// The project's file named by the path; another project's file is 404, as a missing one.
    static func find(_ context: RequestContext, store: any FileStore) throws -> FileRow {
        let id = context.parameters["id"] ?? ""
        guard let file = try store.file(id, project: context.principal.projectID) else { throw APIError.notFound("file \(id)", param: "id") }
        return file
    }

    static func list(_ context: RequestContext, store: any FileStore) throws -> HTTPResponse {
        let query = context.request.query
        let limit = try Pagination.limit(query["limit"], default: 10_000, maximum: 10_000)
        let rows = try store.files(project: context.principal.projectID, purpose: query["purpose"], created: try Query.createdRange(query),
                                   after: query["after"], limit: limit + 1)
        let page = Array(rows.prefix(limit))
        return .json(FilePage(data: page.map(FileObject.init), hasMore: rows.count > limit, firstID: page.first?.id, lastID: page.last?.id))
    }

    /// A page of files, with the cursors OpenAI's file list has.
    struct FilePage: Encodable {
        let object = "list"
        let data: [FileObject]
        let hasMore: Bool
        let firstID: String?
        let lastID: String?

        enum CodingKeys: String, CodingKey { case object, data, hasMore = "has_more", firstID = "first_id", lastID = "last_id" }
    }

    /// Streams the multipart body: the `file` part goes straight to a temporary file
    /// beside its destination, renamed into place only when the upload is complete and valid.
    static func upload(_ context: RequestContext, _ resources: Application.Resources) async throws -> HTTPResponse {
        let data = resources.data, store = resources.files, project = context.principal.projectID
        guard let contentType = context.request.head.header("content-type"),
              let boundary = MultipartParser.boundary(contentType: contentType) else {
            throw APIError(status: 415, message: "upload a file as multipart/form-data with the fields `file` and `purpose`",
                           code: "unsupported_media_type")
        }
        // No body at all: the server streams only bodies that exist.
        guard let body = context.request.bodyStream else {
            throw APIError.invalid("the request has no body: send multipart/form-data with the fields `file` and `purpose`", param: "file")
        }
        let declared = Int(context.request.head.header("content-length") ?? "") ?? 0
        try Quotas.check(.file, project: project, adding: declared, resources)
        let id = "file-" + APIKeys.randomHex(bytes: 12)
        let temporary = try data.artifacts.stagingPath(for: .upload(id))
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw APIError(status: 500, message: "cannot store the upload: \(String(cString: strerror(errno)))", type: "server_error") }
        var keep = false
        defer {
            close(fd)
            if !keep { unlink(temporary) }
        }
        var parser = MultipartParser(boundary: boundary)
        var field: String?, filename: String?, purpose: [UInt8] = [], bytes = 0, sawFile = false
        // Counted as the bytes go by: memory budgets need the examples before a job is queued,
        // and an upload's Idempotency-Key covers its content.
        var lines = 0, lastByte: UInt8 = 0x0A, hasher = SHA256.Hasher()
        do {
            while let piece = try await body.next() {
                for event in try parser.feed(piece) {
                    switch event {
                    case let .partStart(name, file, _):
                        field = name
                        if name == "file" {
                            guard !sawFile else { throw APIError.invalid("send one file per upload", param: "file") }
                            sawFile = true
                            let given = file ?? "upload"
                            guard !given.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }), given.utf8.count <= 512 else {
                                throw APIError.invalid("the filename must be at most 512 bytes without control characters (such as NUL)", param: "file")
                            }
                            filename = given
                        }
                    case let .data(chunk):
                        if field == "file" {
                            bytes += chunk.count
                            guard bytes <= maximumUpload else {
                                throw APIError(status: 413, message: "files are limited to \(maximumUpload) bytes", param: "file")
                            }
                            try writeAll(chunk, to: fd)
                            hasher.update(chunk)
                            for byte in chunk where byte == 0x0A { lines += 1 }
                            if let last = chunk.last { lastByte = last }
                        } else if field == "purpose" {
                            purpose += chunk
                            guard purpose.count <= 64 else { throw APIError.invalid("purpose is too long", param: "purpose") }
                        }
                    case .partEnd:
                        field = nil
                    case .end:
                        break
                    }
                }
            }
        } catch let error as MultipartError {
            throw APIError.invalid("the multipart body is malformed: \(error)")
        } catch let error as HTTPServerError {
            throw APIError.invalid("the upload was interrupted: \(error)")
        }
        guard parser.isComplete else { throw APIError.invalid("the multipart body ended before its closing boundary") }
        guard sawFile else { throw APIError.invalid("missing the file field", param: "file") }
        let purposeText = String(decoding: purpose, as: UTF8.self)
        guard purposeText == "fine-tune" else {
            throw APIError.invalid("purpose must be \"fine-tune\", got \"\(purposeText)\"", param: "purpose")
        }
        if bytes > 0, lastByte != 0x0A { lines += 1 }
        let digest = hasher.finalizeHex()
        try Quotas.check(.file, project: project, adding: bytes, resources)
        try context.idempotency?.verify(content: "sha256=\(digest) purpose=\(purposeText)")
        do { try data.artifacts.publish(staged: temporary, as: .upload(id)) } catch {
            throw APIError(status: 500, message: "cannot store the upload: \(error)", type: "server_error")
        }
        keep = true
        let file = FileRow(id: id, projectID: project, filename: filename ?? "upload", purpose: purposeText,
                           bytes: bytes, createdAt: Int(Date().timeIntervalSince1970), lines: lines, sha256: digest)
        try store.insert(file)
        return .json(FileObject(file))
    }

    static func writeAll(_ bytes: [UInt8], to fd: Int32) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw APIError(status: errno == ENOSPC ? 507 : 500, message: "cannot store the upload: \(String(cString: strerror(errno)))",
                               type: "server_error")
            }
            offset += n
        }
    }
}

enum Pagination {
    static func limit(_ text: String?, default fallback: Int, maximum: Int) throws -> Int {
        try Query.integer(text, param: "limit", range: 1...maximum) ?? fallback
    }
}

/// Query-string values.
enum Query {
    static func integer(_ text: String?, param: String, range: ClosedRange<Int>) throws -> Int? {
        guard let text else { return nil }
        guard let value = Int(text), range.contains(value) else {
            throw APIError.invalid("\(param) must be an integer in \(range.lowerBound)...\(range.upperBound)", param: param)
        }
        return value
    }

    /// `created_after` and `created_before`, Unix seconds, as every list takes them.
    static func createdRange(_ query: [String: String]) throws -> CreatedRange {
        CreatedRange(after: try integer(query["created_after"], param: "created_after", range: 0...Int(Int32.max) * 2),
                     before: try integer(query["created_before"], param: "created_before", range: 0...Int(Int32.max) * 2))
    }
}
