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
    func files(project: String, purpose: String?, created: CreatedRange, after: String?, limit: Int) throws -> [FileRow]
    func markDeleted(_ id: String) throws
    /// The project's stored files: how many, and their bytes.
    func usage(project: String) throws -> (files: Int, bytes: Int)
}

/// Models a project may use: its own and shared ones.
public protocol ModelStore: Sendable {
    /// The model a project means by `name`: its own, else a shared one.
    func model(_ name: String, visibleTo project: String) throws -> ModelRow?
    func models(visibleTo project: String, created: CreatedRange) throws -> [ModelRow]
    /// Registers the project's model `name`; false when the project has one by that name, or a shared
    /// model has it. `write` stores its weights (under the returned key's directory) inside the transaction.
    func create(_ name: String, project: String, config: String, write: (_ key: String) throws -> Void) throws -> Bool
    /// Removes a model: its row when nothing refers to it, else marks it deleted.
    func delete(_ key: String) throws
}

/// `FileStore` on SQL, the same on SQLite and PostgreSQL.
public final class SQLFileStore: FileStore {
    let database: any StoreDatabase
    public init(database: any StoreDatabase) { self.database = database }

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
            try connection.run("""
                INSERT INTO files (id, project_id, filename, purpose, bytes, status, created_at, lines, sha256)
                VALUES (?1, ?2, ?3, ?4, ?5, 'processed', ?6, ?7, ?8)
                """, [.text(file.id), .text(file.projectID), .text(file.filename), .text(file.purpose), .integer(Int64(file.bytes)),
                      .integer(Int64(file.createdAt)), file.lines.map { .integer(Int64($0)) } ?? .null,
                      file.sha256.map(SQLValue.text) ?? .null])
        }
    }

    public func usage(project: String) throws -> (files: Int, bytes: Int) {
        // SUM of BIGINT is NUMERIC on PostgreSQL: cast back to an integer.
        let row = try database.read {
            try $0.rows("SELECT COUNT(*), CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM files WHERE project_id = ?1 AND deleted_at IS NULL",
                        [.text(project)])
        }.first
        guard let row, case let .integer(count) = row[0], case let .integer(bytes) = row[1] else { return (0, 0) }
        return (Int(count), Int(bytes))
    }

    public func file(_ id: String, project: String) throws -> FileRow? {
        try database.read {
            try $0.rows("SELECT \(Self.columns) FROM files WHERE id = ?1 AND project_id = ?2 AND deleted_at IS NULL", [.text(id), .text(project)])
        }.first.flatMap(Self.row)
    }

    public func files(project: String, purpose: String?, created: CreatedRange = CreatedRange(), after: String?, limit: Int) throws -> [FileRow] {
        var sql = "SELECT \(Self.columns) FROM files WHERE project_id = ?1 AND deleted_at IS NULL"
        var arguments: [SQLValue] = [.text(project), .integer(Int64(limit))]
        if let purpose {
            arguments.append(.text(purpose))
            sql += " AND purpose = ?\(arguments.count)"
        }
        sql += created.conditions(appendingTo: &arguments)
        if let after {
            // rowid breaks ties between files made in the same second, in upload order.
            arguments.append(.text(after))
            sql += " AND (created_at, rowid) < (SELECT created_at, rowid FROM files WHERE id = ?\(arguments.count))"
        }
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?2"
        return try database.read { try $0.rows(sql, arguments) }.compactMap(Self.row)
    }

    public func markDeleted(_ id: String) throws {
        try database.write {
            try $0.run("UPDATE files SET deleted_at = ?1 WHERE id = ?2", [.integer(Int64(Date().timeIntervalSince1970)), .text(id)])
        }
    }
}

/// `ModelStore` on SQL, the same on SQLite and PostgreSQL.
public final class SQLModelStore: ModelStore {
    let database: any StoreDatabase
    public init(database: any StoreDatabase) { self.database = database }

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
                ORDER BY (id = ?1) DESC LIMIT 1
                """, [.text(ModelKey.key(project: project, name: name)), .text(name), .text(project)])
        }.first.flatMap(Self.row)
    }

    public func models(visibleTo project: String, created: CreatedRange = CreatedRange()) throws -> [ModelRow] {
        var arguments: [SQLValue] = [.text(project)]
        let range = created.conditions(appendingTo: &arguments)
        return try database.read {
            try $0.rows("""
                SELECT id, project_id, config, created_at FROM models WHERE deleted_at IS NULL AND (project_id IS NULL OR project_id = ?1)\(range)
                ORDER BY created_at, rowid
                """, arguments)
        }.compactMap(Self.row)
    }

    public func create(_ name: String, project: String, config: String, write: (_ key: String) throws -> Void) throws -> Bool {
        let key = ModelKey.key(project: project, name: name)
        do {
            return try database.write { connection in
                // Taken: the project's own model of that name (even deleted, while jobs refer to it), or a shared one.
                guard try connection.rows("""
                    SELECT 1 FROM models WHERE id = ?1 OR (id = ?2 AND (project_id IS NULL OR project_id = ?3)) AND deleted_at IS NULL
                    """, [.text(key), .text(name), .text(project)]).isEmpty else { return false }
                try write(key)
                try connection.run("INSERT INTO models (id, project_id, config, created_at) VALUES (?1, ?2, ?3, ?4)",
                                   [.text(key), .text(project), .text(config), .integer(Int64(Date().timeIntervalSince1970))])
                return true
            }
        } catch let error as PostgresError where error.isUniqueViolation {
            // Another node registered the name between the check and the insert.
            return false
        }
    }

    public func delete(_ key: String) throws {
        try database.write { connection in
            let referenced = try !connection.rows("SELECT 1 FROM jobs WHERE model = ?1 UNION ALL SELECT 1 FROM models WHERE parent = ?1 LIMIT 1",
                                                  [.text(key)]).isEmpty
            if referenced {
                try connection.run("UPDATE models SET deleted_at = ?1 WHERE id = ?2", [.integer(Int64(Date().timeIntervalSince1970)), .text(key)])
            } else {
                try connection.run("DELETE FROM models WHERE id = ?1", [.text(key)])
            }
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

/// `IdempotencyStore` on SQL, the same on SQLite and PostgreSQL. A key is reserved by
/// inserting it: of two simultaneous first uses (on one node or two), one inserts, and the
/// other finds the row.
public final class SQLIdempotencyStore: IdempotencyStore {
    let database: any StoreDatabase
    /// A reservation older than this was left by a server that stopped mid-request.
    let abandonedAfter: Int64
    private let forUpdate: String

    public init(database: any StoreDatabase, abandonedAfterSeconds: Int = 600) {
        self.database = database
        abandonedAfter = Int64(abandonedAfterSeconds)
        forUpdate = database.dialect == .postgres ? " FOR UPDATE" : ""
    }

    public func reserve(project: String, key: String, request: String) throws -> IdempotencyReservation {
        try database.write { connection in
            let now = Int64(Date().timeIntervalSince1970)
            let inserted = try connection.run("""
                INSERT INTO idempotency_keys (project_id, key, request, status, body, created_at) VALUES (?1, ?2, ?3, 0, ?4, ?5)
                ON CONFLICT (project_id, key) DO NOTHING
                """, [.text(project), .text(key), .text(request), .blob([]), .integer(now)])
            if inserted == 1 { return .reserved }
            let rows = try connection.rows("SELECT request, status, body, created_at FROM idempotency_keys WHERE project_id = ?1 AND key = ?2\(forUpdate)",
                                           [.text(project), .text(key)])
            if let row = rows.first, case let .text(stored) = row[0], case let .integer(status) = row[1], case let .integer(created) = row[3] {
                if status != 0, case let .blob(body) = row[2] {
                    return .completed(IdempotentResponse(request: stored, status: Int(status), body: body))
                }
                if now - created < abandonedAfter { return .inProgress(request: stored) }
            }
            // Abandoned by a server that stopped mid-request (or released just now): this request takes it.
            try connection.run("""
                INSERT INTO idempotency_keys (project_id, key, request, status, body, created_at) VALUES (?1, ?2, ?3, 0, ?4, ?5)
                ON CONFLICT (project_id, key) DO UPDATE SET request = ?3, status = 0, body = ?4, created_at = ?5
                """, [.text(project), .text(key), .text(request), .blob([]), .integer(now)])
            return .reserved
        }
    }

    public func complete(project: String, key: String, _ response: IdempotentResponse) throws {
        try database.write {
            try $0.run("UPDATE idempotency_keys SET request = ?1, status = ?2, body = ?3 WHERE project_id = ?4 AND key = ?5",
                       [.text(response.request), .integer(Int64(response.status)), .blob(response.body), .text(project), .text(key)])
        }
    }

    public func release(project: String, key: String) throws {
        try database.write {
            try $0.run("DELETE FROM idempotency_keys WHERE project_id = ?1 AND key = ?2 AND status = 0", [.text(project), .text(key)])
        }
    }
}

extension CreatedRange {
    /// The range as SQL conditions (` AND created_at > ?n …`), its arguments appended to theirs.
    func conditions(appendingTo arguments: inout [SQLValue]) -> String {
        var sql = ""
        if let after {
            arguments.append(.integer(Int64(after)))
            sql += " AND created_at > ?\(arguments.count)"
        }
        if let before {
            arguments.append(.integer(Int64(before)))
            sql += " AND created_at < ?\(arguments.count)"
        }
        return sql
    }
}
