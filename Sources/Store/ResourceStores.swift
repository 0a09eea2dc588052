import Foundation

public struct FileRow: Sendable, Equatable {
    public let id: String, projectID: String, filename: String, purpose: String, bytes: Int, createdAt: Int
    public init(id: String, projectID: String, filename: String, purpose: String, bytes: Int, createdAt: Int) {
        self.id = id
        self.projectID = projectID
        self.filename = filename
        self.purpose = purpose
        self.bytes = bytes
        self.createdAt = createdAt
    }
}

public struct ModelRow: Sendable, Equatable {
    public let id: String
    /// nil: shared with every project.
    public let projectID: String?
    public let config: String
    public let createdAt: Int
}

/// Uploaded files, as the API and the workers need them.
public protocol FileStore: Sendable {
    func insert(_ file: FileRow) throws
    /// The project's file, unless deleted.
    func file(_ id: String, project: String) throws -> FileRow?
    /// Newest first, after the file `after`.
    func files(project: String, purpose: String?, after: String?, limit: Int) throws -> [FileRow]
    func markDeleted(_ id: String) throws
}

/// Models a project may use: its own and shared ones.
public protocol ModelStore: Sendable {
    func model(_ id: String, visibleTo project: String) throws -> ModelRow?
    func models(visibleTo project: String) throws -> [ModelRow]
    /// Registers a model; false when the id is taken. `write` stores its weights inside the transaction.
    func create(_ id: String, project: String, config: String, write: () throws -> Void) throws -> Bool
    func markDeleted(_ id: String) throws
}

public final class SQLiteFileStore: FileStore {
    let database: Database
    public init(database: Database) { self.database = database }

    static func row(_ values: [SQLiteValue]) -> FileRow? {
        guard case let .text(id) = values[0], case let .text(project) = values[1], case let .text(filename) = values[2],
              case let .text(purpose) = values[3], case let .integer(bytes) = values[4], case let .integer(created) = values[5] else { return nil }
        return FileRow(id: id, projectID: project, filename: filename, purpose: purpose, bytes: Int(bytes), createdAt: Int(created))
    }

    static let columns = "id, project_id, filename, purpose, bytes, created_at"

    public func insert(_ file: FileRow) throws {
        try database.write { connection in
            let insert = try connection.prepare(
                "INSERT INTO files (id, project_id, filename, purpose, bytes, status, created_at) VALUES (?, ?, ?, ?, ?, 'processed', ?)")
            try insert.bind([.text(file.id), .text(file.projectID), .text(file.filename), .text(file.purpose), .integer(Int64(file.bytes)),
                             .integer(Int64(file.createdAt))])
            try insert.step()
        }
    }

    public func file(_ id: String, project: String) throws -> FileRow? {
        try database.read {
            try $0.rows("SELECT \(Self.columns) FROM files WHERE id = ? AND project_id = ? AND deleted_at IS NULL", [.text(id), .text(project)])
        }.first.flatMap(Self.row)
    }

    public func files(project: String, purpose: String?, after: String?, limit: Int) throws -> [FileRow] {
        var sql = "SELECT \(Self.columns) FROM files WHERE project_id = ? AND deleted_at IS NULL"
        var arguments: [SQLiteValue] = [.text(project)]
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

    static func row(_ values: [SQLiteValue]) -> ModelRow? {
        guard case let .text(id) = values[0], case let .text(config) = values[2], case let .integer(created) = values[3] else { return nil }
        let project: String? = if case let .text(p) = values[1] { p } else { nil }
        return ModelRow(id: id, projectID: project, config: config, createdAt: Int(created))
    }

    public func model(_ id: String, visibleTo project: String) throws -> ModelRow? {
        try database.read {
            try $0.rows("SELECT id, project_id, config, created_at FROM models WHERE id = ? AND deleted_at IS NULL AND (project_id IS NULL OR project_id = ?)",
                        [.text(id), .text(project)])
        }.first.flatMap(Self.row)
    }

    public func models(visibleTo project: String) throws -> [ModelRow] {
        try database.read {
            try $0.rows("SELECT id, project_id, config, created_at FROM models WHERE deleted_at IS NULL AND (project_id IS NULL OR project_id = ?) ORDER BY created_at, rowid",
                        [.text(project)])
        }.compactMap(Self.row)
    }

    public func create(_ id: String, project: String, config: String, write: () throws -> Void) throws -> Bool {
        try database.write { connection in
            guard try connection.rows("SELECT 1 FROM models WHERE id = ?", [.text(id)]).isEmpty else { return false }
            try write()
            let insert = try connection.prepare("INSERT INTO models (id, project_id, config, created_at) VALUES (?, ?, ?, ?)")
            try insert.bind([.text(id), .text(project), .text(config), .integer(Int64(Date().timeIntervalSince1970))])
            try insert.step()
            return true
        }
    }

    public func markDeleted(_ id: String) throws {
        try database.write { connection in
            let update = try connection.prepare("UPDATE models SET deleted_at = ? WHERE id = ?")
            try update.bind([.integer(Int64(Date().timeIntervalSince1970)), .text(id)])
            try update.step()
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

/// The first response to each (project, Idempotency-Key).
public protocol IdempotencyStore: Sendable {
    func response(project: String, key: String) throws -> IdempotentResponse?
    /// Keeps the first response for the key; a later one for the same key is ignored.
    func remember(project: String, key: String, _ response: IdempotentResponse) throws
}

public final class SQLiteIdempotencyStore: IdempotencyStore {
    let database: Database
    public init(database: Database) { self.database = database }

    public func response(project: String, key: String) throws -> IdempotentResponse? {
        let rows = try database.read {
            try $0.rows("SELECT request, status, body FROM idempotency_keys WHERE project_id = ? AND key = ?", [.text(project), .text(key)])
        }
        guard let row = rows.first, case let .text(request) = row[0], case let .integer(status) = row[1], case let .blob(body) = row[2]
        else { return nil }
        return IdempotentResponse(request: request, status: Int(status), body: body)
    }

    public func remember(project: String, key: String, _ response: IdempotentResponse) throws {
        try database.write { connection in
            let insert = try connection.prepare(
                "INSERT OR IGNORE INTO idempotency_keys (project_id, key, request, status, body, created_at) VALUES (?, ?, ?, ?, ?, ?)")
            try insert.bind([.text(project), .text(key), .text(response.request), .integer(Int64(response.status)), .blob(response.body),
                             .integer(Int64(Date().timeIntervalSince1970))])
            try insert.step()
        }
    }
}
