import CPostgres
import Foundation
import Synchronization

public struct PostgresError: Error, CustomStringConvertible, Equatable {
    /// The SQLSTATE (e.g. 23505 unique_violation, 40001 serialization_failure); nil when the
    /// connection itself failed.
    public let sqlState: String?
    public let message: String
    public var description: String { "PostgreSQL error\(sqlState.map { " \($0)" } ?? ""): \(message)" }

    public var isUniqueViolation: Bool { sqlState == "23505" }
    /// The server cannot serve now (connection failure, shutdown, starting up, too many
    /// connections), as opposed to a statement's error.
    public var isUnavailability: Bool {
        guard let sqlState else { return true }
        return sqlState.hasPrefix("08") || sqlState.hasPrefix("57P") || sqlState == "53300"
    }
}

/// One PostgreSQL connection through libpq. Not thread-safe by itself: a pool gives each
/// connection to one thread at a time, as `Database` does with SQLite's.
///
/// Statements are written with SQLite's numbered parameters (`?1`, `?2`), which both engines'
/// SQL in this project shares; they are sent as PostgreSQL's `$1`, `$2`. Parameters go as text
/// (blobs as binary) and the server infers their types; results come back as text and are
/// read by column type into `SQLValue`.
public final class PostgresConnection: SQLConnection {
    private let handle: OpaquePointer
    /// Where it is connected, without the password, for messages.
    public let location: String
    public var dialect: SQLDialect { .postgres }

    /// `url` is a libpq connection string or URI: `postgres://user@host/db`, or
    /// `postgresql:///db?host=/run/postgresql` for a Unix socket.
    public init(url: String) throws {
        guard let handle = PQconnectdb(url) else { throw PostgresError(sqlState: nil, message: "out of memory connecting") }
        self.handle = handle
        location = Self.redacted(url)
        guard PQstatus(handle) == CONNECTION_OK else {
            let message = String(cString: PQerrorMessage(handle)).trimmingCharacters(in: .whitespacesAndNewlines)
            // Every stored property is set, so deinit runs and closes the handle.
            throw PostgresError(sqlState: nil, message: "cannot connect to \(location): \(message)")
        }
        // Notices (e.g. "relation already exists, skipping") are not errors: keep them off stderr.
        _ = try query("SET client_min_messages = warning", [])
    }

    deinit { PQfinish(handle) }

    /// The URL with any password replaced, for messages and logs.
    public static func redacted(_ url: String) -> String {
        guard let at = url.firstIndex(of: "@"), let scheme = url.range(of: "://"), scheme.upperBound < at,
              let colon = url[scheme.upperBound..<at].firstIndex(of: ":") else { return url }
        return String(url[..<colon]) + ":***" + String(url[at...])
    }

    // MARK: Statements

    /// Runs one statement with parameters: its rows, and how many rows it changed. A failure of
    /// the server or the connection, not of the statement, is `DatabaseUnavailable`.
    public func query(_ sql: String, _ parameters: [SQLValue]) throws -> (rows: [[SQLValue]], changes: Int) {
        do { return try send(sql, parameters) } catch let error as PostgresError where error.isUnavailability || isBroken {
            throw DatabaseUnavailable("\(location): \(error.message)")
        }
    }

    private func send(_ sql: String, _ parameters: [SQLValue]) throws -> (rows: [[SQLValue]], changes: Int) {
        let text = Self.numberedParameters(sql)
        // Each parameter's bytes in memory of its own until PQexecParams returns: text as C
        // strings, blobs as bytes with their length (binary format); nil is SQL NULL.
        var lengths: [Int32] = [], formats: [Int32] = []
        let values = parameters.map { value -> UnsafeMutablePointer<CChar>? in
            lengths.append(0)
            formats.append(0)
            switch value {
            case .null: return nil
            case let .integer(number): return strdup(String(number))
            case let .real(number): return strdup(Self.exactText(number))
            case let .text(string): return strdup(string)
            case let .blob(bytes):
                lengths[lengths.count - 1] = Int32(bytes.count)
                formats[formats.count - 1] = 1
                let copy = UnsafeMutablePointer<CChar>.allocate(capacity: max(1, bytes.count))
                for (index, byte) in bytes.enumerated() { copy[index] = CChar(bitPattern: byte) }
                return copy
            }
        }
        defer {
            for (value, parameter) in zip(values, parameters) {
                if case .blob = parameter { value?.deallocate() } else { free(value) }
            }
        }
        let pointers = values.map { $0.map { UnsafePointer<CChar>($0) } }
        let result = if let name = try preparedName(text, parameters: parameters.count) {
            PQexecPrepared(handle, name, Int32(parameters.count), pointers, lengths, formats, 0)
        } else {
            PQexecParams(handle, text, Int32(parameters.count), nil, pointers, lengths, formats, 0)
        }
        guard let result else { throw connectionError() }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK:
            return ([], Int(String(cString: PQcmdTuples(result))) ?? 0)
        case PGRES_TUPLES_OK:
            let rows = Self.rows(of: result)
            return (rows, Int(String(cString: PQcmdTuples(result))) ?? rows.count)
        default:
            throw Self.error(of: result)
        }
    }

    /// Statements prepared on this connection, by their text: each is parsed and planned once
    /// per connection, as SQLite's are, not on every call (the server's CPU is the fleet's to share).
    private var prepared: [String: String] = [:]
    static let maxPrepared = 256

    /// The prepared statement for `text`, prepared now on first use; nil past the cache's size
    /// (statements built from varying lists), which then run unprepared.
    private func preparedName(_ text: String, parameters: Int) throws -> String? {
        if let name = prepared[text] { return name }
        guard prepared.count < Self.maxPrepared else { return nil }
        let name = "preftune_\(prepared.count)"
        guard let result = PQprepare(handle, name, text, Int32(parameters), nil) else { throw connectionError() }
        defer { PQclear(result) }
        guard PQresultStatus(result) == PGRES_COMMAND_OK else { throw Self.error(of: result) }
        prepared[text] = name
        return name
    }

    public func rows(_ sql: String, _ parameters: [SQLValue] = []) throws -> [[SQLValue]] { try query(sql, parameters).rows }

    @discardableResult
    public func run(_ sql: String, _ parameters: [SQLValue] = []) throws -> Int { try query(sql, parameters).changes }

    /// Several statements at once, without parameters (a migration).
    public func execute(script sql: String) throws {
        guard let result = PQexec(handle, sql) else { throw connectionError() }
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else { throw Self.error(of: result) }
    }

    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try execute(script: "BEGIN")
        do {
            let value = try body()
            try execute(script: "COMMIT")
            return value
        } catch {
            try? execute(script: "ROLLBACK")
            throw error
        }
    }

    // MARK: Values

    /// A Double as text that reads back as the same Double.
    static func exactText(_ number: Double) -> String {
        if number.isNaN { return "NaN" }
        if number.isInfinite { return number > 0 ? "Infinity" : "-Infinity" }
        return "\(number)"
    }

    // Type oids (pg_type.h): which text results are numbers or bytes.
    private static let integerTypes: Set<UInt32> = [20, 21, 23, 26]  // int8, int2, int4, oid
    private static let realTypes: Set<UInt32> = [700, 701, 1700]     // float4, float8, numeric
    private static let booleanType: UInt32 = 16
    private static let byteaType: UInt32 = 17

    static func rows(of result: OpaquePointer) -> [[SQLValue]] {
        let rowCount = PQntuples(result), columnCount = PQnfields(result)
        let types = (0..<columnCount).map { PQftype(result, $0) }
        return (0..<rowCount).map { row in
            (0..<columnCount).map { column -> SQLValue in
                if PQgetisnull(result, row, column) == 1 { return .null }
                let text = String(cString: PQgetvalue(result, row, column))
                let type = types[Int(column)]
                if integerTypes.contains(type) { return Int64(text).map(SQLValue.integer) ?? .text(text) }
                if realTypes.contains(type) { return Double(text).map(SQLValue.real) ?? .text(text) }
                if type == booleanType { return .integer(text == "t" ? 1 : 0) }
                if type == byteaType { return .blob(hexBytes(text)) }
                return .text(text)
            }
        }
    }

    /// bytea's text output: `\x` and two hex digits a byte.
    static func hexBytes(_ text: String) -> [UInt8] {
        let digits = Array(text.utf8.dropFirst(2))
        func value(_ digit: UInt8) -> UInt8 { digit <= 57 ? digit - 48 : (digit | 0x20) - 87 }
        return stride(from: 0, to: digits.count - 1, by: 2).map { value(digits[$0]) << 4 | value(digits[$0 + 1]) }
    }

    /// `?1`, `?2` (outside quotes) as `$1`, `$2`.
    static func numberedParameters(_ sql: String) -> String {
        var output = "", quote: Character?
        var characters = sql.makeIterator(), pending: Character? = nil
        while let character = pending ?? characters.next() {
            pending = nil
            if let open = quote {
                output.append(character)
                if character == open { quote = nil }
            } else if character == "'" || character == "\"" {
                quote = character
                output.append(character)
            } else if character == "?" {
                let next = characters.next()
                if let next, next.isNumber { output.append("$") } else { output.append("?") }
                pending = next
            } else {
                output.append(character)
            }
        }
        return output
    }

    private func connectionError() -> PostgresError {
        PostgresError(sqlState: nil, message: String(cString: PQerrorMessage(handle)).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    static func error(of result: OpaquePointer) -> PostgresError {
        let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
        let message = String(cString: PQresultErrorMessage(result)).trimmingCharacters(in: .whitespacesAndNewlines)
        return PostgresError(sqlState: state, message: message)
    }
}

extension PostgresConnection {
    /// The connection to the server is lost (it restarted, or ended this session).
    public var isBroken: Bool { PQstatus(handle) == CONNECTION_BAD }
}

/// PostgreSQL connections shared by threads, as `Database` shares SQLite's: at most `size`
/// open, each used by one thread at a time. A caller waits up to `timeout` seconds for one,
/// then gets an error that says the pool is exhausted (the API answers 503 with
/// `Retry-After`, not a hang). A connection found broken is dropped and replaced on next use,
/// so a restarted server costs the calls in flight, not the process.
public final class PostgresPool: Sendable {
    public let url: String
    public let size: Int
    public let timeout: Double

    /// A connection between uses: owned by the pool, handed to one caller at a time.
    private struct Idle: @unchecked Sendable { let connection: PostgresConnection }
    private let idle = Mutex<[Idle]>([])
    private let permits: DispatchSemaphore

    public init(url: String, size: Int, timeout: Double = 5) {
        precondition(size > 0, "a pool holds at least one connection")
        self.url = url
        self.size = size
        self.timeout = timeout
        permits = DispatchSemaphore(value: size)
    }

    /// Connections open now and not in use.
    public var idleCount: Int { idle.withLock { $0.count } }

    /// `body` with a connection of the pool (opened when none is idle).
    /// Failures of the server or the network, not of the statement, are `DatabaseUnavailable`.
    public func withConnection<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        guard permits.wait(timeout: .now() + timeout) == .success else {
            throw DatabaseUnavailable("all \(size) connections to \(PostgresConnection.redacted(url)) stayed busy for \(timeout) s")
        }
        defer { permits.signal() }
        let connection: PostgresConnection
        do {
            connection = try idle.withLock { $0.popLast() }?.connection ?? PostgresConnection(url: url)
        } catch let error as PostgresError {
            throw DatabaseUnavailable(error.message)
        }
        do {
            let result = try body(connection)
            giveBack(connection)
            return result
        } catch let error as PostgresError where error.isUnavailability || connection.isBroken {
            giveBack(connection)
            throw DatabaseUnavailable("\(PostgresConnection.redacted(url)): \(error.message)")
        } catch {
            giveBack(connection)
            throw error
        }
    }

    /// `body` in one transaction on one connection of the pool.
    public func transaction<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        try withConnection { connection in try connection.transaction { try body(connection) } }
    }

    private func giveBack(_ connection: PostgresConnection) {
        guard !connection.isBroken else { return }
        idle.withLock { $0.append(Idle(connection: connection)) }
    }
}

/// PostgreSQL as the stores use it (`StoreDatabase`): each read and each write on a connection
/// of a bounded pool. A read transaction holds one connection for its reads, as `Database`
/// holds one SQLite reader.
public final class PostgresDatabase: StoreDatabase {
    public let pool: PostgresPool
    public var dialect: SQLDialect { .postgres }
    public var location: String { PostgresConnection.redacted(pool.url) }

    public init(url: String, connections: Int = 8, timeout: Double = 5) {
        pool = PostgresPool(url: url, size: connections, timeout: timeout)
    }

    /// The connection of the read transaction this thread is in, if any.
    private let currentReader = CurrentConnection<PostgresConnection>()

    public func read<T>(_ body: (any SQLConnection) throws -> T) throws -> T {
        if let current = currentReader.connection { return try body(current) }
        return try pool.withConnection(body)
    }

    /// The reads of `body` on one connection, each its own statement: on a server, BEGIN and
    /// COMMIT would be two more round trips for every request, which a request's reads (its key,
    /// then its resource) do not need — each is consistent by itself, and a key revoked between
    /// the two is honoured from the next request on.
    public func readTransaction<T>(_ body: () throws -> T) throws -> T {
        if currentReader.connection != nil { return try body() }
        return try pool.withConnection { connection in try currentReader.with(connection, body) }
    }

    public func write<T>(_ body: (any SQLConnection) throws -> T) throws -> T {
        try pool.transaction(body)
    }

    public func withWriter<T>(_ body: (any SQLConnection) throws -> T) throws -> T {
        try pool.withConnection(body)
    }
}
