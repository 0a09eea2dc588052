import Foundation

public struct FileRow: Sendable, Equatable {
    public let id: String, projectID: String, filename: String, purpose: String, bytes: Int, createdAt: Int
    /// Lines in the file (JSONL examples, blank lines included), counted at upload; nil for older uploads.
    public let lines: Int?
    /// SHA-256 of the content, hex; nil for older uploads.
    public let sha256: String?
    public init(id: String, projectID: String, filename: String, purpose: String, bytes: Int, createdAt: Int,
                lines: Int? = nil, sha256: String? = nil) {
        self.id = id
        self.projectID = projectID
        self.filename = filename
        self.purpose = purpose
        self.bytes = bytes
        self.createdAt = createdAt
        self.lines = lines
        self.sha256 = sha256
    }
}

public struct ModelRow: Sendable, Equatable {
    /// The storage key (`ModelKey`): the row's id, its directory under models/, and what jobs record.
    public let id: String
    /// nil: shared with every project.
    public let projectID: String?
    public let config: String
    public let createdAt: Int
    /// The id the API shows.
    public var name: String { ModelKey.name(of: id) }
}

/// Uploaded files, as the API and the workers need them.
public protocol FileStore: Sendable {
    func insert(_ file: FileRow) throws
    /// The project's file, unless deleted.
    func file(_ id: String, project: String) throws -> FileRow?
    /// Newest first, after the file `after`.
    func files(project: String, purpose: String?, after: String?, limit: Int) throws -> [FileRow]
    func markDeleted(_ id: String) throws
    /// The project's stored files: how many, and their bytes.
    func usage(project: String) throws -> (files: Int, bytes: Int)
}

/// Models a project may use: its own and shared ones.
public protocol ModelStore: Sendable {
    /// The model a project means by `name`: its own, else a shared one.
    func model(_ name: String, visibleTo project: String) throws -> ModelRow?
    func models(visibleTo project: String) throws -> [ModelRow]
    /// Registers the project's model `name`; false when the project has one by that name, or a shared
    /// model has it. `write` stores its weights (under the returned key's directory) inside the transaction.
    func create(_ name: String, project: String, config: String, write: (_ key: String) throws -> Void) throws -> Bool
    /// Removes a model: its row when nothing refers to it, else marks it deleted.
    func delete(_ key: String) throws
}

public final class SQLiteFileStore: FileStore {
    let database: Database
    public init(database: Database) { self.database = database }

    static func row(_ values: [SQLValue]) -> FileRow? {
        guard case let .text(id) = values[0], case let .text(project) = values[1], case let .text(filename) = values[2],
              case let .text(purpose) = values[3], case let .integer(bytes) = values[4], case let .integer(created) = values[5] else { return nil }
        let lines: Int? = if case let .integer(n) = values[6] { Int(n) } else { nil }
        let sha256: String? = if case let .text(h) = values[7] { h } else { nil }
        return FileRow(id: id, projectID: project, filename: filename, purpose: purpose, bytes: Int(bytes), createdAt: Int(created),
                       lines: lines, sha256: sha256)
    }

    static let columns = "id, project_id, filename, purpose, bytes, created_at, lines, sha256"

    public func insert(_ file: FileRow) throws {
        try database.write { connection in
            let insert = try connection.prepare("""
                INSERT INTO files (id, project_id, filename, purpose, bytes, status, created_at, lines, sha256)
                VALUES (?, ?, ?, ?, ?, 'processed', ?, ?, ?)
                """)
            try insert.bind([.text(file.id), .text(file.projectID), .text(file.filename), .text(file.purpose), .integer(Int64(file.bytes)),
                             .integer(Int64(file.createdAt)), file.lines.map { .integer(Int64($0)) } ?? .null,
                             file.sha256.map(SQLValue.text) ?? .null])
            try insert.step()
        }
    }

    public func usage(project: String) throws -> (files: Int, bytes: Int) {
        let row = try database.read {
            try $0.rows("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM files WHERE project_id = ? AND deleted_at IS NULL", [.text(project)])
        }.first
        guard let row, case let .integer(count) = row[0], case let .integer(bytes) = row[1] else { return (0, 0) }
        return (Int(count), Int(bytes))
    }

    public func file(_ id: String, project: String) throws -> FileRow? {
        try database.read {
            try $0.rows("SELECT \(Self.columns) FROM files WHERE id = ? AND project_id = ? AND deleted_at IS NULL", [.text(id), .text(project)])
        }.first.flatMap(Self.row)
    }

    public func files(project: String, purpose: String?, after: String?, limit: Int) throws -> [FileRow] {
        var sql = "SELECT \(Self.columns) FROM files WHERE project_id = ? AND deleted_at IS NULL"
        var arguments: [SQLValue] = [.text(project)]
        if let purpose { sql += " AND purpose = ?"; arguments.append(.text(purpose)) }
        if let after {
            // rowid breaks ties between files made in the same second, in upload order.
            sql += " AND (created_at, rowid) < (SELECT created_at, rowid FROM files WHERE id = ?)"
            arguments.append(.text(after))
        }
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        arguments.append(.integer(Int64(limit)))
        return try database.read { try $0.rows(sql, arguments) }.compactMap(Self.row)
    }

    public func markDeleted(_ id: String) throws {
        try database.write { connection in
            let update = try connection.prepare("UPDATE files SET deleted_at = ? WHERE id = ?")
            try update.bind([.integer(Int64(Date().timeIntervalSince1970)), .text(id)])
            try update.step()
        }
    }
}

public final class SQLiteModelStore: ModelStore {
    let database: Database
    public init(database: Database) { self.database = database }

    static func row(_ values: [SQLValue]) -> ModelRow? {
        guard case let .text(id) = values[0], case let .text(config) = values[2], case let .integer(created) = values[3] else { return nil }
        let project: String? = if case let .text(p) = values[1] { p } else { nil }
        return ModelRow(id: id, projectID: project, config: config, createdAt: Int(created))
    }

    public func model(_ name: String, visibleTo project: String) throws -> ModelRow? {
        // A name with '/' is never a model's: it could only reach into another project's keys.
        guard !name.contains("/") else { return nil }
        return try database.read {
            try $0.rows("""
                SELECT id, project_id, config, created_at FROM models
                WHERE id IN (?1, ?2) AND deleted_at IS NULL AND (project_id IS NULL OR project_id = ?3)
                ORDER BY id = ?1 DESC LIMIT 1
                """, [.text(ModelKey.key(project: project, name: name)), .text(name), .text(project)])
        }.first.flatMap(Self.row)
    }

    public func models(visibleTo project: String) throws -> [ModelRow] {
        try database.read {
            try $0.rows("SELECT id, project_id, config, created_at FROM models WHERE deleted_at IS NULL AND (project_id IS NULL OR project_id = ?) ORDER BY created_at, rowid",
                        [.text(project)])
        }.compactMap(Self.row)
    }

    public func create(_ name: String, project: String, config: String, write: (_ key: String) throws -> Void) throws -> Bool {
        let key = ModelKey.key(project: project, name: name)
        return try database.write { connection in
            // Taken: the project's own model of that name (even deleted, while jobs refer to it), or a shared one.
            guard try connection.rows("""
                SELECT 1 FROM models WHERE id = ?1 OR (id = ?2 AND (project_id IS NULL OR project_id = ?3)) AND deleted_at IS NULL
                """, [.text(key), .text(name), .text(project)]).isEmpty else { return false }
            try write(key)
            let insert = try connection.prepare("INSERT INTO models (id, project_id, config, created_at) VALUES (?, ?, ?, ?)")
            try insert.bind([.text(key), .text(project), .text(config), .integer(Int64(Date().timeIntervalSince1970))])
            try insert.step()
            return true
        }
    }

    public func delete(_ key: String) throws {
        try database.write { connection in
            let referenced = try !connection.rows("SELECT 1 FROM jobs WHERE model = ?1 UNION ALL SELECT 1 FROM models WHERE parent = ?1 LIMIT 1",
                                                  [.text(key)]).isEmpty
            let statement = try connection.prepare(referenced ? "UPDATE models SET deleted_at = ?1 WHERE id = ?2" : "DELETE FROM models WHERE id = ?2")
            try statement.bind([.integer(Int64(Date().timeIntervalSince1970)), .text(key)])
            try statement.step()
        }
    }
}

/// A stored answer to a POST with an `Idempotency-Key`.
public struct IdempotentResponse: Sendable, Equatable {
    /// Method, path and a hash of the body: what the key was first used for.
    public let request: String
    public let status: Int
    public let body: [UInt8]

    public init(request: String, status: Int, body: [UInt8]) {
        self.request = request
        self.status = status
        self.body = body
    }
}

/// What reserving an Idempotency-Key found.
public enum IdempotencyReservation: Sendable, Equatable {
    /// The key is this request's now: run it, then `complete` (or `release` on a server error).
    case reserved
    /// A request with this key is running; its `request` signature so far.
    case inProgress(request: String)
    case completed(IdempotentResponse)
}

/// The first response to each (project, Idempotency-Key). A key is reserved atomically
/// before its request runs, so simultaneous repeats cannot both run.
public protocol IdempotencyStore: Sendable {
    func reserve(project: String, key: String, request: String) throws -> IdempotencyReservation
    /// Stores the response (and the request's final signature) for the reserved key.
    func complete(project: String, key: String, _ response: IdempotentResponse) throws
    /// Frees a reserved key whose request failed on the server's side, so that a retry runs again.
    func release(project: String, key: String) throws
}

public final class SQLiteIdempotencyStore: IdempotencyStore {
    let database: Database
    /// A reservation older than this was left by a server that stopped mid-request.
    let abandonedAfter: Int64

    public init(database: Database, abandonedAfterSeconds: Int = 600) {
        self.database = database
        abandonedAfter = Int64(abandonedAfterSeconds)
    }

    public func reserve(project: String, key: String, request: String) throws -> IdempotencyReservation {
        try database.write { connection in
            let now = Int64(Date().timeIntervalSince1970)
            let rows = try connection.rows("SELECT request, status, body, created_at FROM idempotency_keys WHERE project_id = ? AND key = ?",
                                           [.text(project), .text(key)])
            if let row = rows.first, case let .text(stored) = row[0], case let .integer(status) = row[1], case let .integer(created) = row[3] {
                if status != 0, case let .blob(body) = row[2] {
                    return .completed(IdempotentResponse(request: stored, status: Int(status), body: body))
                }
                if now - created < abandonedAfter { return .inProgress(request: stored) }
            }
            let upsert = try connection.prepare("""
                INSERT INTO idempotency_keys (project_id, key, request, status, body, created_at) VALUES (?1, ?2, ?3, 0, x'', ?4)
                ON CONFLICT (project_id, key) DO UPDATE SET request = ?3, status = 0, body = x'', created_at = ?4
                """)
            try upsert.bind([.text(project), .text(key), .text(request), .integer(now)])
            try upsert.step()
            return .reserved
        }
    }

    public func complete(project: String, key: String, _ response: IdempotentResponse) throws {
        try database.write { connection in
            let update = try connection.prepare("UPDATE idempotency_keys SET request = ?, status = ?, body = ? WHERE project_id = ? AND key = ?")
            try update.bind([.text(response.request), .integer(Int64(response.status)), .blob(response.body), .text(project), .text(key)])
            try update.step()
        }
    }

    public func release(project: String, key: String) throws {
        try database.write { connection in
            let delete = try connection.prepare("DELETE FROM idempotency_keys WHERE project_id = ? AND key = ? AND status = 0")
            try delete.bind([.text(project), .text(key)])
            try delete.step()
        }
    }
}
