import HTTP
import Jobs
import JSON
import Store

// The API's response bodies: one Encodable type per representation, rendered by
// `JSONBodyEncoder` (members in declaration order, absent values as null).

extension HTTPResponse {
    static func json<Body: Encodable>(_ body: Body, status: Int = 200) -> HTTPResponse {
        HTTPResponse(status: status, headers: [("Content-Type", "application/json")], body: .bytes(JSONBodyEncoder.encode(body)))
    }
}

/// A page of a list endpoint: `{"object": "list", "data": […], "has_more": …}`.
struct ListPage<Item: Encodable>: Encodable {
    let object = "list"
    let data: [Item]
    let hasMore: Bool?

    init(_ data: [Item], hasMore: Bool?) {
        self.data = data
        self.hasMore = hasMore
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: AnyKey.self)
        try container.encode(object, forKey: AnyKey("object"))
        try container.encode(data, forKey: AnyKey("data"))
        // A list that is never paged (models) has no has_more, as OpenAI's.
        if let hasMore { try container.encode(hasMore, forKey: AnyKey("has_more")) }
    }
}

/// The answer to a DELETE: `{"id", "object", "deleted": true}`.
struct Deleted: Encodable {
    let id: String
    let object: String
    let deleted = true
}

/// The error envelope OpenAI's SDKs parse.
struct ErrorEnvelope: Encodable {
    struct Body: Encodable {
        let message: String
        let type: String
        let param: String?
        let code: String?
    }
    let error: Body
}

/// An uploaded file (`file`).
struct FileObject: Encodable {
    let id: String
    let object = "file"
    let bytes: Int
    let createdAt: Int
    let filename: String
    let purpose: String
    let status = "processed"
    let statusDetails: String? = nil

    init(_ file: FileRow) {
        id = file.id
        bytes = file.bytes
        createdAt = file.createdAt
        filename = file.filename
        purpose = file.purpose
    }

    enum CodingKeys: String, CodingKey {
        case id, object, bytes, createdAt = "created_at", filename, purpose, status, statusDetails = "status_details"
    }
}

/// A model (`model`), with its architecture config.
struct ModelObject: Encodable {
    let id: String
    let object = "model"
    let created: Int
    let ownedBy: String
    let config: RawJSON

    init(_ model: ModelRow) {
        id = model.name
        created = model.createdAt
        ownedBy = model.projectID == nil ? "preftune" : "project"
        config = RawJSON(text: model.config)
    }

    enum CodingKeys: String, CodingKey { case id, object, created, ownedBy = "owned_by", config }
}
