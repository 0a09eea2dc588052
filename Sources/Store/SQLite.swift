import CSQLite
import Foundation

public struct SQLiteError: Error, CustomStringConvertible, Equatable {
    /// SQLite's primary result code (e.g. SQLITE_CONSTRAINT = 19, SQLITE_BUSY = 5).
    public let code: Int32
    public let message: String
    public var description: String { "SQLite error \(code): \(message)" }
}

/// SQLITE_TRANSIENT: SQLite copies bound text and blobs before the call returns.
private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// One SQLite connection through the C API: WAL journal, a busy timeout, foreign
/// keys on. Not thread-safe by itself; the store gives each connection to one
/// thread at a time (one serialized writer, readers of their own).
public final class SQLiteConnection {
    let handle: OpaquePointer
    public let path: String

    /// Process-wide settings, applied once before the first connection opens.
    private static let configured: Void = { _ = preftune_sqlite_disable_memstatus() }()

    public init(path: String, readOnly: Bool = false, busyTimeoutMilliseconds: Int32 = 5000) throws {
        Self.configured
        var db: OpaquePointer?
        let flags = (readOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) | SQLITE_OPEN_NOMUTEX
        let status = sqlite3_open_v2(path, &db, flags, nil)
        guard status == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            sqlite3_close(db)
            throw SQLiteError(code: status, message: "\(path): \(message)")
        }
        handle = db
        self.path = path
        sqlite3_busy_timeout(db, busyTimeoutMilliseconds)
        sqlite3_extended_result_codes(db, 1)
        if !readOnly { try execute("PRAGMA journal_mode = WAL") }
        try execute("PRAGMA foreign_keys = ON")
        try execute("PRAGMA synchronous = NORMAL")
    }

    deinit {
        statements.removeAll()
        sqlite3_close_v2(handle)
    }

    func error(_ status: Int32) -> SQLiteError {
        SQLiteError(code: status & 0xFF, message: String(cString: sqlite3_errmsg(handle)))
    }

    /// Runs one statement without parameters or results, prepared once (BEGIN, COMMIT).
    public func run(_ sql: String) throws {
        let statement = try prepare(sql)
        defer { statement.reset() }
        _ = try statement.step()
    }

    /// Runs one or more statements without parameters or results.
    public func execute(_ sql: String) throws {
        var message: UnsafeMutablePointer<CChar>?
        let status = sqlite3_exec(handle, sql, nil, nil, &message)
        guard status == SQLITE_OK else {
            let text = message.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(handle))
            sqlite3_free(message)
            throw SQLiteError(code: status & 0xFF, message: text)
        }
    }

    /// Prepared statements by their SQL: each is compiled once per connection.
    private var statements: [String: SQLiteStatement] = [:]

    /// A prepared statement for `sql`, compiled on first use and reused after.
    public func prepare(_ sql: String) throws -> SQLiteStatement {
        if let cached = statements[sql] { return cached }
        var statement: OpaquePointer?
        let status = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard status == SQLITE_OK, let statement else { throw error(status) }
        let prepared = SQLiteStatement(statement, connection: self)
        if statements.count < 256 { statements[sql] = prepared }
        return prepared
    }

    /// Runs `body` in a transaction (BEGIN IMMEDIATE: takes the write lock up front,
    /// so a busy database waits at the start rather than failing at COMMIT).
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    public var changes: Int { Int(sqlite3_changes(handle)) }

    /// Copies this database to `path` with SQLite's online backup API, in one step: a
    /// consistent snapshot, taken under a read transaction that (in WAL mode) does not
    /// stop writers. Written beside `path` and renamed into place, so `path` is whole or absent.
    public func backup(to path: String) throws {
        let temporary = path + ".partial"
        unlink(temporary)
        var target: OpaquePointer?
        guard sqlite3_open_v2(temporary, &target, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nil) == SQLITE_OK, let target else {
            sqlite3_close(target)
            throw SQLiteError(code: SQLITE_CANTOPEN, message: "cannot create \(temporary)")
        }
        defer { sqlite3_close(target) }
        guard let backup = sqlite3_backup_init(target, "main", handle, "main") else {
            throw SQLiteError(code: sqlite3_errcode(target), message: String(cString: sqlite3_errmsg(target)))
        }
        var status: Int32
        repeat {
            status = sqlite3_backup_step(backup, -1)
            if status == SQLITE_BUSY || status == SQLITE_LOCKED { sqlite3_sleep(20) }
        } while status == SQLITE_BUSY || status == SQLITE_LOCKED
        sqlite3_backup_finish(backup)
        guard status == SQLITE_DONE else {
            unlink(temporary)
            throw SQLiteError(code: status, message: "backup to \(path): \(String(cString: sqlite3_errstr(status)))")
        }
        guard rename(temporary, path) == 0 else {
            unlink(temporary)
            throw SQLiteError(code: SQLITE_CANTOPEN, message: "cannot move the backup to \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Rows of a query, each as an array of values, for small reads and tests.
    public func rows(_ sql: String, _ arguments: [SQLValue] = []) throws -> [[SQLValue]] {
        let statement = try prepare(sql)
        try statement.bind(arguments)
        var result: [[SQLValue]] = []
        while try statement.step() { result.append((0..<statement.columnCount).map(statement.value)) }
        statement.reset()
        return result
    }
}

/// A column's or parameter's value, for either engine (SQLite, PostgreSQL).
public enum SQLValue: Sendable, Equatable {
    case null, integer(Int64), real(Double), text(String), blob([UInt8])
}

/// A prepared statement; reset and re-bound for each use.
public final class SQLiteStatement {
    let handle: OpaquePointer
    unowned let connection: SQLiteConnection

    init(_ handle: OpaquePointer, connection: SQLiteConnection) {
        self.handle = handle
        self.connection = connection
    }

    deinit { sqlite3_finalize(handle) }

    public func bind(_ values: [SQLValue]) throws {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
        for (i, value) in values.enumerated() {
            let index = Int32(i + 1)
            let status: Int32
            switch value {
            case .null: status = sqlite3_bind_null(handle, index)
            case let .integer(v): status = sqlite3_bind_int64(handle, index, v)
            case let .real(v): status = sqlite3_bind_double(handle, index, v)
            case let .text(v): status = sqlite3_bind_text(handle, index, v, -1, transient)
            case let .blob(v): status = v.withUnsafeBytes { sqlite3_bind_blob(handle, index, $0.baseAddress, Int32($0.count), transient) }
            }
            guard status == SQLITE_OK else { throw connection.error(status) }
        }
    }

    /// Advances to the next row; false when done.
    @discardableResult
    public func step() throws -> Bool {
        let status = sqlite3_step(handle)
        switch status {
        case SQLITE_ROW: return true
        case SQLITE_DONE:
            sqlite3_reset(handle)
            return false
        default:
            sqlite3_reset(handle)
            throw connection.error(status)
        }
    }

    public var columnCount: Int { Int(sqlite3_column_count(handle)) }

    /// Releases the statement's hold on the database (a finished read transaction).
    public func reset() { sqlite3_reset(handle) }

    public func value(_ column: Int) -> SQLValue {
        let index = Int32(column)
        switch sqlite3_column_type(handle, index) {
        case SQLITE_INTEGER: return .integer(sqlite3_column_int64(handle, index))
        case SQLITE_FLOAT: return .real(sqlite3_column_double(handle, index))
        case SQLITE_TEXT:
            // The length SQLite already knows, rather than strlen's walk.
            guard let text = sqlite3_column_text(handle, index) else { return .text("") }
            let count = Int(sqlite3_column_bytes(handle, index))
            return .text(String(decoding: UnsafeBufferPointer(start: text, count: count), as: UTF8.self))
        case SQLITE_BLOB:
            let count = Int(sqlite3_column_bytes(handle, index))
            guard count > 0, let bytes = sqlite3_column_blob(handle, index) else { return .blob([]) }
            return .blob(Array(UnsafeRawBufferPointer(start: bytes, count: count)))
        default: return .null
        }
    }
}

extension SQLiteConnection: SQLConnection {
    public var dialect: SQLDialect { .sqlite }
    public var location: String { path }

    @discardableResult
    public func run(_ sql: String, _ parameters: [SQLValue]) throws -> Int {
        let statement = try prepare(sql)
        defer { statement.reset() }
        try statement.bind(parameters)
        while try statement.step() {}
        return changes
    }

    public func execute(script sql: String) throws { try execute(sql) }
}
