import Foundation
import Synchronization

/// SQLite as the service uses it: one writer connection, serialized, and a few
/// reader connections that run concurrently with it and each other (WAL lets
/// readers see the last committed state while a write is in progress). A
/// connection never leaves its lock, which is what makes sharing this object safe.
public final class Database: StoreDatabase {
    /// A connection and the lock it never leaves.
    final class Guarded: Sendable {
        private let lock = Mutex(())
        nonisolated(unsafe) private let connection: SQLiteConnection
        init(_ connection: SQLiteConnection) { self.connection = connection }

        func withConnection<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
            try lock.withLock { _ in
                let result = try body(connection)
                // The result leaves the lock: callers return values read from the connection, never the connection.
                return UncheckedResult(result)
            }.value
        }
    }
    /// Lets a generic result cross `Mutex.withLock`'s `sending` boundary.
    struct UncheckedResult<T>: @unchecked Sendable {
        let value: T
        init(_ value: T) { self.value = value }
    }

    private let writer: Guarded
    private let readers: [Guarded]
    private let readerCursor = Atomic<Int>(0)

    /// Opens the writer (creating the file) and `readers` read-only connections.
    public init(path: String, readers: Int = 4) throws {
        location = path
        writer = Guarded(try SQLiteConnection(path: path))
        // WAL must be set by the writer before readers open the file read-only.
        self.readers = try (0..<max(1, readers)).map { _ in Guarded(try SQLiteConnection(path: path, readOnly: true)) }
    }

    /// The reader of the read transaction this thread is in, if any (`readTransaction`).
    private let currentReader = CurrentConnection<SQLiteConnection>()

    /// Runs a read on one of the reader connections (no write lock taken); inside
    /// `readTransaction`, on that transaction's reader.
    public func read<T>(_ body: (any SQLConnection) throws -> T) throws -> T {
        if let current = currentReader.connection { return try body(current) }
        return try nextReader().withConnection(body)
    }

    /// The next reader in turn.
    private func nextReader() -> Guarded {
        readers[readerCursor.wrappingAdd(1, ordering: .relaxed).oldValue % readers.count]
    }

    /// Runs `body` in one read transaction: every `read` it makes on this thread uses the same
    /// reader and sees the same snapshot, and the file's locks are taken once, not per statement
    /// (a request authenticates and reads its resource together). `body` must not block on
    /// anything but the database: it holds a reader.
    public func readTransaction<T>(_ body: () throws -> T) throws -> T {
        if currentReader.connection != nil { return try body() }
        return try nextReader().withConnection { connection in
            try connection.run("BEGIN")
            defer {
                // A read has nothing to keep: COMMIT ends it (ROLLBACK if COMMIT cannot).
                if (try? connection.run("COMMIT")) == nil { try? connection.run("ROLLBACK") }
            }
            return try currentReader.with(connection, body)
        }
    }

    /// Runs `body` in a transaction on the writer; writes are serialized.
    public func write<T>(_ body: (any SQLConnection) throws -> T) throws -> T {
        try writer.withConnection { writer in try writer.transaction { try body(writer) } }
    }

    /// The writer outside a transaction, for schema migrations and statements that manage their own.
    public func withWriter<T>(_ body: (any SQLConnection) throws -> T) throws -> T {
        try writer.withConnection(body)
    }

    public var dialect: SQLDialect { .sqlite }
    public let location: String

    /// A consistent copy of the database at `target` (SQLite's online backup, from a reader).
    public func backup(to target: String) throws {
        try nextReader().withConnection { try $0.backup(to: target) }
    }
}
