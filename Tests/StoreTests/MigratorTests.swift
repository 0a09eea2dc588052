import Foundation
import Store
import TestSupport
import Testing

@Suite(.ownThread) struct MigratorTests {
    static func temporaryDatabase() -> String {
        temporaryPath("preftune", suffix: ".db")
    }

    static var projectMigrations: [Migration] {
        get throws {
            let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../migrations/sqlite").standardized.path
            return try Migration.load(directory: directory)
        }
    }

    @Test func theProjectMigrationsApplyOnceAndAreRecorded() throws {
        let path = Self.temporaryDatabase()
        let connection = try SQLiteConnection(path: path)
        let migrations = try Self.projectMigrations
        #expect(!migrations.isEmpty && migrations.first?.name == "initial")
        #expect(try Migrator.migrate(connection, migrations: migrations) == migrations.map(\.version))
        #expect(try Migrator.migrate(connection, migrations: migrations) == [], "a second start applies nothing")
        #expect(try Migrator.currentVersion(connection) == migrations.last!.version)
        let tables = try connection.rows("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").map { $0[0] }
        for table in ["api_keys", "checkpoints", "events", "files", "idempotency_keys", "jobs", "metric_points", "models", "projects"] {
            #expect(tables.contains(.text(table)), "\(table)")
        }
    }

    @Test func connectionsUseWALAndForeignKeys() throws {
        let connection = try SQLiteConnection(path: Self.temporaryDatabase())
        #expect(try connection.rows("PRAGMA journal_mode") == [[.text("wal")]])
        #expect(try connection.rows("PRAGMA foreign_keys") == [[.integer(1)]])
        try Migrator.migrate(connection, migrations: try Self.projectMigrations)
        #expect(throws: SQLiteError.self) {
            try connection.execute("INSERT INTO api_keys (id, project_id, key_hash, prefix, created_at) VALUES ('k', 'missing', 'h', 'p', 0)")
        }
    }

    @Test func aNewerDatabaseIsRefused() throws {
        let connection = try SQLiteConnection(path: Self.temporaryDatabase())
        let newer = [Migration(version: 1, name: "a", sql: "CREATE TABLE a (x)"), Migration(version: 2, name: "b", sql: "CREATE TABLE b (x)")]
        try Migrator.migrate(connection, migrations: newer)
        do {
            try Migrator.migrate(connection, migrations: Array(newer.prefix(1)))
            Issue.record("an older preftune accepted a newer database")
        } catch let error as MigrationError {
            #expect(error.description.contains("schema version 2, newer than this preftune knows (1)"))
        }
    }

    @Test func aFailingMigrationIsRolledBackWhole() throws {
        let connection = try SQLiteConnection(path: Self.temporaryDatabase())
        let broken = [Migration(version: 1, name: "half", sql: "CREATE TABLE good (x); CREATE TABLE good (y);")]
        #expect(throws: MigrationError.self) { try Migrator.migrate(connection, migrations: broken) }
        #expect(try connection.rows("SELECT name FROM sqlite_master WHERE name = 'good'").isEmpty)
        #expect(try Migrator.currentVersion(connection) == 0)
    }

    @Test func migrationFilesMustBeNumberedWithoutGaps() throws {
        let directory = temporaryPath("migrations")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try "CREATE TABLE a (x);".write(toFile: "\(directory)/0001_first.sql", atomically: true, encoding: .utf8)
        try "CREATE TABLE c (x);".write(toFile: "\(directory)/0003_third.sql", atomically: true, encoding: .utf8)
        #expect(throws: MigrationError.self) { try Migration.load(directory: directory) }
        try "x".write(toFile: "\(directory)/0002-bad-name.sql", atomically: true, encoding: .utf8)
        #expect(throws: MigrationError.self) { try Migration.load(directory: directory) }
    }

    @Test func statementsBindAndReadEveryType() throws {
        let connection = try SQLiteConnection(path: Self.temporaryDatabase())
        try connection.execute("CREATE TABLE t (a, b, c, d, e)")
        let insert = try connection.prepare("INSERT INTO t VALUES (?, ?, ?, ?, ?)")
        try insert.bind([.integer(1 << 40), .real(0.25), .text("snow ☃"), .blob([0, 255, 7]), .null])
        try insert.step()
        #expect(try connection.rows("SELECT * FROM t") == [[.integer(1 << 40), .real(0.25), .text("snow ☃"), .blob([0, 255, 7]), .null]])
        #expect(try connection.rows("SELECT a FROM t WHERE c = ?", [.text("snow ☃")]) == [[.integer(1 << 40)]])
    }
}
