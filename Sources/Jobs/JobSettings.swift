import Foundation
import JSON
import Training

/// What a job trains with, as created and as stored: its method and resolved
/// hyperparameters. The store keeps them as JSON (the API's `method` object and
/// `hyperparameters`); this is the one codec for both.
public struct JobSettings: Equatable, Sendable {
    public let method: TrainingMethod
    public let hyperparameters: Hyperparameters

    public init(method: TrainingMethod, hyperparameters: Hyperparameters) {
        self.method = method
        self.hyperparameters = hyperparameters
    }

    /// `{"type": "dro", "dro": {"hyperparameters": {…}}}`, as the API shows `method` and the store keeps it.
    public var methodJSON: String { JSONBodyEncoder.string(MethodObject(settings: self), nilMembers: .omitted) }

    /// The resolved hyperparameters as the API shows them (snake_case, without unset ones), as the store keeps them.
    public var hyperparametersJSON: String { JSONBodyEncoder.string(hyperparameters, nilMembers: .omitted) }

    struct MethodObject: Encodable {
        struct Settings: Encodable { let hyperparameters: Hyperparameters }
        let settings: JobSettings

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: AnyKey.self)
            try container.encode(settings.method.rawValue, forKey: AnyKey("type"))
            try container.encode(Settings(hyperparameters: settings.hyperparameters), forKey: AnyKey(settings.method.rawValue))
        }
    }

    /// The settings stored with a job; nil when they cannot be read.
    public init?(methodJSON: String, hyperparametersJSON: String) {
        guard let method = JSONValue.parse(methodJSON)?.object?["type"]?.string.flatMap(TrainingMethod.init(rawValue:)),
              let hyperparameters = try? JSONDecoder().decode(Hyperparameters.self, from: Data(hyperparametersJSON.utf8)) else { return nil }
        self.init(method: method, hyperparameters: hyperparameters)
    }
}
