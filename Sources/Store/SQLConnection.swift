import Foundation

/// The SQL engines preftune stores in: SQLite, the embedded default, and PostgreSQL, for a
/// fleet of API nodes and workers sharing one database.
public enum SQLDialect: String, Sendable, CaseIterable {
    case sqlite, postgres
}

/// What the stores and the migrator need of a connection, on either engine. SQL is written
/// once where both engines agree, with numbered parameters (`?1`, `?2`), and per dialect
/// where they do not. A connection is used by one thread at a time.
public protocol SQLConnection: AnyObject {
    var dialect: SQLDialect { get }
    /// Where it is connected (a file, a server without its password), for messages.
    var location: String { get }
    /// The rows one statement returns.
    func rows(_ sql: String, _ parameters: [SQLValue]) throws -> [[SQLValue]]
    /// Runs one statement; how many rows it changed.
    @discardableResult
    func run(_ sql: String, _ parameters: [SQLValue]) throws -> Int
    /// Several statements without parameters (a migration).
    func execute(script: String) throws
    /// `body` in one transaction: committed when it returns, rolled back when it throws.
    func transaction<T>(_ body: () throws -> T) throws -> T
}

/// A store's own failure, on either engine (the engines' errors are `SQLiteError` and `PostgresError`).
public struct StoreError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A database as the stores use it, on either engine: reads that may run beside each other,
/// and writes, each one transaction. `Database` is SQLite's (one writer, a few readers, one
/// file); `PostgresDatabase` is PostgreSQL's (a bounded pool of connections to a server).
/// A connection never leaves the call that was given it.
public protocol StoreDatabase: Sendable {
    var dialect: SQLDialect { get }
    /// Where it is, for messages (a file, or a server without its password).
    var location: String { get }
    /// A read; inside `readTransaction`, on that transaction's connection.
    func read<T>(_ body: (any SQLConnection) throws -> T) throws -> T
    /// `body`'s reads (every `read` it makes on this thread) on one connection: on SQLite in one
    /// snapshot; on PostgreSQL each read is its own statement, sparing a request two round trips.
    func readTransaction<T>(_ body: () throws -> T) throws -> T
    /// `body` in one write transaction: committed when it returns, rolled back when it throws.
    func write<T>(_ body: (any SQLConnection) throws -> T) throws -> T
    /// A connection outside any transaction, for migrations and statements that manage their own.
    func withWriter<T>(_ body: (any SQLConnection) throws -> T) throws -> T
}

/// The database could not be reached (the server is down or restarting, or every pooled
/// connection stayed busy): a moment's trouble, not the request's fault. The API answers
/// 503 with `Retry-After`; workers wait and carry on.
public struct DatabaseUnavailable: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A job's lease is no longer the writer's (it expired and another worker claimed the job,
/// or the job ended): the write was refused, and the worker must stop without writing more.
public struct LeaseLost: Error, CustomStringConvertible, Equatable {
    public let jobID: String
    public let worker: String
    public var description: String { "\(worker) no longer holds the lease of \(jobID); the write was refused" }
    public init(jobID: String, worker: String) {
        self.jobID = jobID
        self.worker = worker
    }
}

/// The connection of the read transaction the calling thread is in, if any: what lets a
/// request's nested reads use the connection its read transaction holds, on either engine.
final class CurrentConnection<Connection: AnyObject>: @unchecked Sendable {
    private let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    deinit { pthread_key_delete(key) }

    var connection: Connection? {
        pthread_getspecific(key).map { Unmanaged<Connection>.fromOpaque($0).takeUnretainedValue() }
    }

    /// `body` with `connection` as this thread's current one.
    func with<T>(_ connection: Connection, _ body: () throws -> T) rethrows -> T {
        pthread_setspecific(key, Unmanaged.passUnretained(connection).toOpaque())
        defer { pthread_setspecific(key, nil) }
        return try body()
    }
}
