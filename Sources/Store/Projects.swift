import Foundation

/// What the operator allows a project on a shared pool.
public struct ProjectLimits: Sendable, Equatable {
    /// The highest `priority` its jobs may ask for (any job may ask for less, down to -100).
    public var maxPriority: Int
    /// How many of its jobs may run at once; nil: no limit.
    public var maxRunning: Int?
    /// Its share of the workers relative to other projects with work (fair share); 1 by default.
    public var weight: Double

    public init(maxPriority: Int = 0, maxRunning: Int? = nil, weight: Double = 1) {
        self.maxPriority = maxPriority
        self.maxRunning = maxRunning
        self.weight = weight
    }

    /// A job's priority: -100 (last) to 100 (first); 0 unless asked.
    public static let priorities = -100...100
}

/// Projects and the operator's limits on them, on either engine.
public struct SQLProjectStore: Sendable {
    let database: any StoreDatabase

    public init(database: any StoreDatabase) { self.database = database }

    public func limits(project id: String) throws -> ProjectLimits {
        guard let row = try database.read({ try $0.rows("SELECT max_priority, max_running, weight FROM projects WHERE id = ?1", [.text(id)]) }).first
        else { return ProjectLimits() }
        return Self.limits(row[0], row[1], row[2])
    }

    static func limits(_ priority: SQLValue, _ running: SQLValue, _ weight: SQLValue) -> ProjectLimits {
        let maxPriority: Int = if case let .integer(value) = priority { Int(value) } else { 0 }
        let maxRunning: Int? = if case let .integer(value) = running { Int(value) } else { nil }
        let share: Double = switch weight { case let .real(value): value; case let .integer(value): Double(value); default: 1 }
        return ProjectLimits(maxPriority: maxPriority, maxRunning: maxRunning, weight: share)
    }

    /// Sets the project's limits (creating the project when it has no keys yet); nil leaves one as it is.
    public func set(project name: String, maxPriority: Int?, maxRunning: Int??, weight: Double? = nil) throws {
        try database.write { connection in
            let id = try APIKeys(connection: connection).project(named: name)
            if let maxPriority {
                try connection.run("UPDATE projects SET max_priority = ?1 WHERE id = ?2", [.integer(Int64(maxPriority)), .text(id)])
            }
            if let weight {
                try connection.run("UPDATE projects SET weight = ?1 WHERE id = ?2", [.real(weight), .text(id)])
            }
            if let maxRunning {
                try connection.run("UPDATE projects SET max_running = ?1 WHERE id = ?2", [maxRunning.map { .integer(Int64($0)) } ?? .null, .text(id)])
            }
        }
    }

    /// A new webhook signing secret for the project, replacing any before it: `whsec_` and 32
    /// random bytes in base64, as Standard Webhooks and OpenAI's SDK expect. Shown once.
    public func rotateWebhookSecret(project id: String) throws -> String {
        var generator = SystemRandomNumberGenerator()
        let secret = "whsec_" + Data((0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }).base64EncodedString()
        try database.write { try $0.run("UPDATE projects SET webhook_secret = ?1 WHERE id = ?2", [.text(secret), .text(id)]) }
        return secret
    }

    /// The project's webhook signing secret, if it made one.
    public func webhookSecret(project id: String) throws -> String? {
        guard case let .text(secret)? = try database.read({ try $0.rows("SELECT webhook_secret FROM projects WHERE id = ?1", [.text(id)]) }).first?.first
        else { return nil }
        return secret
    }

    /// Every project with its limits, by name.
    public func list() throws -> [(name: String, id: String, limits: ProjectLimits)] {
        try database.read { connection in
            try connection.rows("SELECT name, id, max_priority, max_running, weight FROM projects ORDER BY name", []).compactMap { row in
                guard case let .text(name) = row[0], case let .text(id) = row[1] else { return nil }
                return (name, id, Self.limits(row[2], row[3], row[4]))
            }
        }
    }
}
