import Foundation
import HTTP
import Store

/// An error a client caused or must know about, in the envelope OpenAI's SDKs
/// parse: {"error": {"message", "type", "param", "code"}}.
public struct APIError: Error, Sendable, Equatable {
    public let status: Int
    public let message: String
    public let type: String
    public let param: String?
    public let code: String?

    public init(status: Int, message: String, type: String = "invalid_request_error", param: String? = nil, code: String? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
    }

    public static func invalid(_ message: String, param: String? = nil, code: String? = nil) -> APIError {
        APIError(status: 400, message: message, param: param, code: code)
    }

    public static func notFound(_ what: String, param: String? = nil) -> APIError {
        APIError(status: 404, message: "\(what) not found", param: param, code: "not_found")
    }

    public static let unauthorized = APIError(
        status: 401, message: "missing or invalid API key: send Authorization: Bearer <key> (preftune keys create makes one)",
        type: "authentication_error", code: "invalid_api_key")

    /// The seconds a client should wait before retrying a 503 (the store or a queue is busy for a moment).
    public static let retryAfterSeconds = 2

    public var response: HTTPResponse {
        var response = HTTPResponse.json(ErrorEnvelope(error: .init(message: message, type: type, param: param, code: code)), status: status)
        if status == 503 { response.headers.append(("Retry-After", "\(Self.retryAfterSeconds)")) }
        return response
    }

    /// The database is unreachable for now (down, restarting, or every connection busy).
    public static func databaseUnavailable(_ error: DatabaseUnavailable) -> APIError {
        APIError(status: 503, message: "the database is unavailable; retry shortly", type: "server_error", code: "database_unavailable")
    }
}
