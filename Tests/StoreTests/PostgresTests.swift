import Foundation
import Store
import Synchronization
import TestSupport
import Testing

/// PostgreSQL through libpq, against a real server (`PostgresServer`): values round-trip
/// exactly, errors carry their SQLSTATE, transactions roll back, and both dialects'
/// migrations build the same schema.
@Suite(.ownThread) struct PostgresTests {
    static func connect() throws -> PostgresConnection {
        try PostgresConnection(url: try PostgresServer.running().createDatabase())
    }

    static var projectMigrationRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../migrations").standardized.path
    }

    @Test func valuesRoundTripExactly() throws {
        let connection = try Self.connect()
        try connection.execute(script: "CREATE TABLE t (i BIGINT, r DOUBLE PRECISION, s TEXT, b BYTEA)")
        let values: [[SQLValue]] = [
            [.integer(Int64.max), .real(0.1 + 0.2), .text("quote ' and \" and ?1 and ünïcode 🚀"), .blob(Array(0...255))],
            [.integer(Int64.min), .real(-1e-300), .text(""), .blob([])],
            [.null, .null, .null, .null],
        ]
        for row in values { try connection.run("INSERT INTO t (i, r, s, b) VALUES (?1, ?2, ?3, ?4)", row) }
        #expect(try connection.rows("SELECT i, r, s, b FROM t ORDER BY i NULLS LAST", []) == [values[1], values[0], values[2]])
        // A `?1` inside a string literal is text, not a parameter.
        #expect(try connection.rows("SELECT '?1', ?1::TEXT", [.text("x")]) == [[.text("?1"), .text("x")]])
        #expect(try connection.run("UPDATE t SET s = ?1 WHERE i IS NOT NULL", [.text("y")]) == 2, "changed rows")
    }

    /// Statements are prepared once per connection, up to a bound; past it they run unprepared.
    @Test func statementsPastThePreparedCacheStillRun() throws {
        let connection = try Self.connect()
        for offset in 0..<300 {
            #expect(try connection.rows("SELECT ?1::BIGINT + \(offset)", [.integer(1)]) == [[.integer(Int64(offset + 1))]])
        }
        #expect(try connection.rows("SELECT ?1::BIGINT + 7", [.integer(2)]) == [[.integer(9)]], "a prepared statement again, with new values")
    }

    @Test func errorsCarryTheirSQLStateAndTransactionsRollBack() throws {
        let connection = try Self.connect()
        try connection.execute(script: "CREATE TABLE k (id TEXT PRIMARY KEY)")
        try connection.run("INSERT INTO k VALUES (?1)", [.text("a")])
        do {
            try connection.run("INSERT INTO k VALUES (?1)", [.text("a")])
            Issue.record("a duplicate key was accepted")
        } catch let error as PostgresError {
            #expect(error.isUniqueViolation, "\(error)")
        }
        struct Abort: Error {}
        #expect(throws: Abort.self) {
            try connection.transaction {
                try connection.run("INSERT INTO k VALUES (?1)", [.text("b")])
                throw Abort()
            }
        }
        #expect(try connection.rows("SELECT id FROM k ORDER BY id", []) == [[.text("a")]], "the transaction left nothing")
        #expect(throws: PostgresError.self) { try connection.execute(script: "SELECT * FROM missing") }
        #expect(try connection.rows("SELECT 1", []) == [[.integer(1)]], "the connection is usable after an error")
    }

    @Test func aBadAddressIsAClearError() {
        do {
            _ = try PostgresConnection(url: "postgresql://nobody:secret@/nothing?host=/nonexistent-socket-dir")
            Issue.record("connected to nothing")
        } catch let error as PostgresError {
            #expect(error.description.contains("cannot connect to postgresql://nobody:***@"), "\(error)")
            #expect(!error.description.contains("secret"), "the password stays out of messages")
        } catch {
            Issue.record("\(error)")
        }
    }

    /// Both dialects' migrations apply once and build the same tables with the same columns.
    @Test func bothDialectsBuildTheSameSchema() throws {
        let postgres = try Self.connect()
        let sqlite = try SQLiteConnection(path: temporaryPath("preftune", suffix: ".db"))
        let pgMigrations = try Migration.load(.postgres, root: Self.projectMigrationRoot)
        let sqliteMigrations = try Migration.load(.sqlite, root: Self.projectMigrationRoot)
        #expect(pgMigrations.map(\.version) == sqliteMigrations.map(\.version) && pgMigrations.map(\.name) == sqliteMigrations.map(\.name),
                "every schema change exists in both dialects, under the same version and name")
        #expect(try Migrator.migrate(postgres, migrations: pgMigrations) == pgMigrations.map(\.version))
        #expect(try Migrator.migrate(postgres, migrations: pgMigrations) == [], "a second start applies nothing")
        try Migrator.migrate(sqlite, migrations: sqliteMigrations)

        let pgColumns = try postgres.rows("""
            SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, column_name
            """, []).compactMap { row -> String? in
            guard case let .text(table) = row[0], case let .text(column) = row[1] else { return nil }
            return "\(table).\(column)"
        }
        var sqliteColumns: [String] = []
        for table in try sqlite.rows("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name", []) {
            guard case let .text(name) = table[0] else { continue }
            for column in try sqlite.rows("SELECT name FROM pragma_table_info(?1) ORDER BY name", [.text(name)]) {
                if case let .text(columnName) = column[0] { sqliteColumns.append("\(name).\(columnName)") }
            }
            // SQLite's implicit rowid is an explicit column on PostgreSQL, where the stores order by it too.
            if try !sqlite.rows("SELECT 1 FROM pragma_table_info(?1) WHERE pk = 1 AND type = 'INTEGER'", [.text(name)]).isEmpty { continue }
            if ["jobs", "files", "models"].contains(name) { sqliteColumns.append("\(name).rowid") }
        }
        #expect(pgColumns == sqliteColumns.sorted())
        #expect(pgColumns.contains("jobs.claims_without_progress"))
    }

    @Test func aSchemaNewerThanThisBuildIsRefused() throws {
        let postgres = try Self.connect()
        let migrations = try Migration.load(.postgres, root: Self.projectMigrationRoot)
        try Migrator.migrate(postgres, migrations: migrations)
        try postgres.run("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, 'future', 0)", [.integer(Int64(migrations.count + 1))])
        #expect(throws: MigrationError.self) { try Migrator.migrate(postgres, migrations: migrations) }
    }
}

/// The bounded pool: never more than its size open, a clear error when exhausted, and a
/// broken connection replaced rather than handed out again.
@Suite(.ownThread) struct PostgresPoolTests {
    static func backends(_ connection: PostgresConnection) throws -> Int64 {
        guard case let .integer(count)? = try connection.rows(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()", []).first?.first
        else { return -1 }
        return count
    }

    @Test func itOpensAtMostItsSizeAndReusesConnections() throws {
        let url = try PostgresServer.running().createDatabase()
        let pool = PostgresPool(url: url, size: 2, timeout: 10)
        let failures = Mutex<[String]>([])
        let threads = (0..<6).map { _ in
            Thread {
                for _ in 0..<20 {
                    do { _ = try pool.withConnection { try $0.rows("SELECT pg_sleep(0.001)", []) } } catch {
                        failures.withLock { $0.append("\(error)") }
                    }
                }
            }
        }
        threads.forEach { $0.start() }
        while threads.contains(where: { !$0.isFinished }) { usleep(5_000) }
        #expect(failures.withLock { $0 } == [])
        #expect(pool.idleCount <= 2)
        let observer = try PostgresConnection(url: url)
        #expect(try Self.backends(observer) == Int64(pool.idleCount), "the pool's connections are all it opened")
    }

    @Test func anExhaustedPoolSaysSoInsteadOfWaitingForever() throws {
        let pool = PostgresPool(url: try PostgresServer.running().createDatabase(), size: 1, timeout: 0.2)
        let holding = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        let holder = Thread {
            _ = try? pool.withConnection { _ in
                holding.signal()
                release.wait()
            }
        }
        holder.start()
        holding.wait()
        do {
            _ = try pool.withConnection { _ in 1 }
            Issue.record("a second connection was handed out past the pool's size")
        } catch let error as DatabaseUnavailable {
            #expect(error.description.contains("all 1 connections") && error.description.contains("busy"), "\(error)")
        }
        release.signal()
        while !holder.isFinished { usleep(1_000) }
        #expect(try pool.withConnection { try $0.rows("SELECT 1", []) } == [[.integer(1)]])
    }

    @Test func aBrokenConnectionIsReplaced() throws {
        let url = try PostgresServer.running().createDatabase()
        let pool = PostgresPool(url: url, size: 1)
        guard case let .integer(pid)? = try pool.withConnection({ try $0.rows("SELECT pg_backend_pid()", []) }).first?.first else {
            Issue.record("no backend pid")
            return
        }
        // The server ends that session, as a restart or an administrator would.
        _ = try PostgresConnection(url: url).rows("SELECT pg_terminate_backend(?1::INT)", [.integer(pid)])
        usleep(100_000)
        #expect(throws: DatabaseUnavailable.self, "the call in flight on the dead session fails, as the database's unavailability") {
            try pool.withConnection { try $0.rows("SELECT 1", []) }
        }
        guard case let .integer(next)? = try pool.withConnection({ try $0.rows("SELECT pg_backend_pid()", []) }).first?.first else {
            Issue.record("no backend pid after the break")
            return
        }
        #expect(next != pid, "a new session replaced the broken one")
    }

    @Test func aServerThatCannotBeReachedIsUnavailableNotAnError() throws {
        let pool = PostgresPool(url: "postgresql://preftune@/none?host=/nonexistent-socket-dir", size: 1)
        #expect(throws: DatabaseUnavailable.self) { try pool.withConnection { try $0.rows("SELECT 1", []) } }
    }
}
