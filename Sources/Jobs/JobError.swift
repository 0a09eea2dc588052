import Foundation
import JSON

/// Why a job failed, as the API shows it (`error` of a job: `{code, message, param}`) and
/// as the store keeps it. The only place this JSON is made.
public struct JobError: Decodable, JSONMembers, Equatable, Sendable, Error, CustomStringConvertible {
    /// Machine-readable: `invalid_training_file`, `over_memory_budget`, `worker_crashed`, …
    public let code: String
    public let message: String
    /// The request field at fault, if one is.
    public let param: String?

    public init(code: String, message: String, param: String? = nil) {
        self.code = code
        self.message = message
        self.param = param
    }

    public var description: String { message }

    /// JSON text with `param` present (null when absent), as the API shows it.
    public var json: String { JSONBodyEncoder.string(self) }

    enum CodingKeys: String, CodingKey { case code, message, param }

    public func writeMembers(to object: inout JSONObjectWriter) {
        object.member("code", code)
        object.member("message", message)
        object.member("param", param)
    }

    /// Decodes stored JSON; nil for anything else.
    public init?(json: String) {
        guard let value = try? JSONDecoder().decode(JobError.self, from: Data(json.utf8)) else { return nil }
        self = value
    }
}
