import Foundation

/// One schema change: `migrations/<dialect>/NNNN_name.sql`. Never edited once released;
/// a change to the schema is a new file, for each dialect (`sqlite/`, `postgres/`), with
/// the same version and name in both.
public struct Migration: Sendable, Equatable {
    public let version: Int
    public let name: String
    public let sql: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }

    /// Every `NNNN_name.sql` in `directory`, in version order. Gaps and duplicate
    /// versions are errors: they mean a file went missing or two branches collided.
    public static func load(directory: String) throws -> [Migration] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else {
            throw MigrationError("no migrations directory at \(directory)")
        }
        var migrations: [Migration] = []
        for file in names.sorted() where file.hasSuffix(".sql") {
            let stem = file.dropLast(4)
            guard let underscore = stem.firstIndex(of: "_"), let version = Int(stem[..<underscore]), version > 0 else {
                throw MigrationError("\(file): migration files are named NNNN_name.sql")
            }
            let sql = try String(contentsOfFile: "\(directory)/\(file)", encoding: .utf8)
            migrations.append(Migration(version: version, name: String(stem[stem.index(after: underscore)...]), sql: sql))
        }
        for (i, migration) in migrations.enumerated() where migration.version != i + 1 {
            throw MigrationError("migration versions must run 1, 2, 3…; found \(migration.version) in place of \(i + 1)")
        }
        return migrations
    }

    /// The dialect's migrations under `root` (the project's `migrations/`).
    public static func load(_ dialect: SQLDialect, root: String = defaultDirectory) throws -> [Migration] {
        try load(directory: "\(root)/\(dialect.rawValue)")
    }

    /// The project's `migrations/` folder: `$PREFTUNE_MIGRATIONS`, else beside the
    /// executable (`../share/preftune/migrations`), else the working directory's, else
    /// the source checkout's.
    public static var defaultDirectory: String {
        let environment = ProcessInfo.processInfo.environment
        if let path = environment["PREFTUNE_MIGRATIONS"], !path.isEmpty { return path }
        let executable = URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath().deletingLastPathComponent()
        let candidates = [
            executable.appendingPathComponent("../share/preftune/migrations").standardized.path,
            FileManager.default.currentDirectoryPath + "/migrations",
            URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../migrations").standardized.path,
        ]
        return candidates.first { FileManager.default.fileExists(atPath: $0) } ?? candidates.last!
    }
}

public struct MigrationError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Applies migrations in order, each in its own transaction, and records them in
/// `schema_migrations`. A database written by a newer preftune is refused.
public enum Migrator {
    /// `body` while holding the database's migration lock: on PostgreSQL a session advisory
    /// lock, so that nodes of a fleet starting together migrate one after another; SQLite's
    /// single writer serializes already.
    public static func exclusively<T>(_ connection: any SQLConnection, _ body: () throws -> T) throws -> T {
        guard connection.dialect == .postgres else { return try body() }
        _ = try connection.rows("SELECT pg_advisory_lock(\(lockKey))", [])
        defer { _ = try? connection.rows("SELECT pg_advisory_unlock(\(lockKey))", []) }
        return try body()
    }

    /// The advisory lock's key: "preftune" in ASCII, as a number.
    static let lockKey: Int64 = 0x7072_6566_7475_6E65

    @discardableResult
    public static func migrate(_ connection: any SQLConnection, migrations: [Migration]) throws -> [Int] {
        try exclusively(connection) { try migrateLocked(connection, migrations: migrations) }
    }

    static func migrateLocked(_ connection: any SQLConnection, migrations: [Migration]) throws -> [Int] {
        let timestamp = connection.dialect == .postgres ? "BIGINT" : "INTEGER"
        try connection.execute(script: """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY,
                name TEXT NOT NULL,
                applied_at \(timestamp) NOT NULL
            )
            """)
        let current = try currentVersion(connection)
        let known = migrations.last?.version ?? 0
        guard current <= known else {
            throw MigrationError("the database at \(connection.location) has schema version \(current), newer than this preftune knows (\(known)); run a newer preftune, or restore a backup made by this version")
        }
        var applied: [Int] = []
        for migration in migrations where migration.version > current {
            do {
                try connection.transaction {
                    try connection.execute(script: migration.sql)
                    try connection.run("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                                       [.integer(Int64(migration.version)), .text(migration.name), .integer(Int64(Date().timeIntervalSince1970))])
                }
            } catch {
                throw MigrationError("migration \(String(format: "%04d", migration.version))_\(migration.name) failed and was rolled back: \(error)")
            }
            applied.append(migration.version)
        }
        return applied
    }

    public static func currentVersion(_ connection: any SQLConnection) throws -> Int {
        guard case let .integer(version)? = try connection.rows("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", []).first?.first
        else { return 0 }
        return Int(version)
    }
}
