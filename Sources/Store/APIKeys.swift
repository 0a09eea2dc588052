import Foundation

/// A project's view through one API key.
public struct Principal: Sendable, Equatable {
    public let projectID: String
    public let keyID: String
    public let isAdmin: Bool
}

public struct APIKeyRecord: Sendable, Equatable {
    public let id: String
    public let projectID: String
    public let projectName: String
    /// The first characters of the key, to recognise it in a list.
    public let prefix: String
    public let isAdmin: Bool
    public let createdAt: Int
    public let revokedAt: Int?
}

/// Projects and their API keys. A key is shown once, when created; only its
/// SHA-256 is stored, so a copy of the database does not hand out access.
/// The same SQL on SQLite and PostgreSQL.
public struct APIKeys {
    public let connection: any SQLConnection

    public init(connection: any SQLConnection) { self.connection = connection }

    /// Random bytes as hex, for ids and secrets.
    public static func randomHex(bytes: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return SHA256.hexString((0..<bytes).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970) }

    /// The project named `name`, created when missing (by whichever of two simultaneous
    /// callers comes first: the other finds it).
    public func project(named name: String) throws -> String {
        let find = "SELECT id FROM projects WHERE name = ?1"
        if case let .text(id)? = try connection.rows(find, [.text(name)]).first?.first { return id }
        try connection.run("INSERT INTO projects (id, name, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
                           [.text("proj_" + Self.randomHex(bytes: 12)), .text(name), .integer(Self.now())])
        guard case let .text(id)? = try connection.rows(find, [.text(name)]).first?.first else {
            throw StoreError("project \(name) was created and then not found")
        }
        return id
    }

    /// Creates a key for the project; returns its id and the secret (shown this once).
    public func create(project name: String, admin: Bool = false) throws -> (id: String, secret: String) {
        try connection.transaction {
            let projectID = try project(named: name)
            let secret = "sk-pt-" + Self.randomHex(bytes: 24)
            let id = "key_" + Self.randomHex(bytes: 8)
            try connection.run("INSERT INTO api_keys (id, project_id, key_hash, prefix, is_admin, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                               [.text(id), .text(projectID), .text(SHA256.hex(secret.utf8)), .text(String(secret.prefix(10))),
                                .integer(admin ? 1 : 0), .integer(Self.now())])
            return (id, secret)
        }
    }

    /// The principal of a presented key, or nil for an unknown or revoked one.
    public func authenticate(_ secret: String) throws -> Principal? { try Self.authenticate(secret, on: connection) }

    /// The same, on a connection of a known type: every request authenticates, and the
    /// specialised call skips the existential's dispatch.
    public static func authenticate(_ secret: String, on connection: some SQLConnection) throws -> Principal? {
        let rows = try connection.rows(
            "SELECT id, project_id, is_admin FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL", [.text(SHA256.hex(secret.utf8))])
        guard let row = rows.first, case let .text(id) = row[0], case let .text(project) = row[1], case let .integer(admin) = row[2]
        else { return nil }
        return Principal(projectID: project, keyID: id, isAdmin: admin != 0)
    }

    public func list() throws -> [APIKeyRecord] {
        try connection.rows("""
            SELECT k.id, k.project_id, p.name, k.prefix, k.is_admin, k.created_at, k.revoked_at
            FROM api_keys k JOIN projects p ON p.id = k.project_id ORDER BY k.created_at, k.id
            """, []).compactMap { row in
            guard case let .text(id) = row[0], case let .text(project) = row[1], case let .text(name) = row[2],
                  case let .text(prefix) = row[3], case let .integer(admin) = row[4], case let .integer(created) = row[5]
            else { return nil }
            let revoked: Int? = if case let .integer(at) = row[6] { Int(at) } else { nil }
            return APIKeyRecord(id: id, projectID: project, projectName: name, prefix: prefix, isAdmin: admin != 0,
                                createdAt: Int(created), revokedAt: revoked)
        }
    }

    /// Revokes a key; false when there is no such (unrevoked) key.
    @discardableResult
    public func revoke(_ id: String) throws -> Bool {
        try connection.run("UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL", [.integer(Self.now()), .text(id)]) > 0
    }
}
