import Foundation

/// SQLite as the service uses it: one writer connection, serialized, and a few
/// reader connections that run concurrently with it and each other (WAL lets
/// readers see the last committed state while a write is in progress). A
/// connection never leaves its lock, which is what makes sharing this object safe.
public final class Database: @unchecked Sendable {
    private let writer: SQLiteConnection
    private let writerLock = NSLock()
    private let readers: [(connection: SQLiteConnection, lock: NSLock)]
    private let nextReader = NSLock()
    private var readerCursor = 0

    /// Opens the writer (creating the file) and `readers` read-only connections.
    public init(path: String, readers: Int = 4) throws {
        writer = try SQLiteConnection(path: path)
        // WAL must be set by the writer before readers open the file read-only.
        self.readers = try (0..<max(1, readers)).map { _ in (try SQLiteConnection(path: path, readOnly: true), NSLock()) }
    }

    /// Runs a read on one of the reader connections (no write lock taken).
    public func read<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        nextReader.lock()
        let reader = readers[readerCursor % readers.count]
        readerCursor &+= 1
        nextReader.unlock()
        reader.lock.lock()
        defer { reader.lock.unlock() }
        return try body(reader.connection)
    }

    /// Runs `body` in a transaction on the writer; writes are serialized.
    public func write<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        writerLock.lock()
        defer { writerLock.unlock() }
        return try writer.transaction { try body(writer) }
    }

    /// The writer outside a transaction, for schema migrations and statements that manage their own.
    public func withWriter<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        writerLock.lock()
        defer { writerLock.unlock() }
        return try body(writer)
    }
}
