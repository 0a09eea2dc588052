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

    /// The reader of the read transaction this thread is in, if any (`readTransaction`).
    private let currentReader: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    deinit { pthread_key_delete(currentReader) }

    /// Runs a read on one of the reader connections (no write lock taken); inside
    /// `readTransaction`, on that transaction's reader.
    public func read<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        if let current = pthread_getspecific(currentReader) {
            return try body(Unmanaged<SQLiteConnection>.fromOpaque(current).takeUnretainedValue())
        }
        let reader = takeReader()
        defer { reader.lock.unlock() }
        return try body(reader.connection)
    }

    /// The next reader in turn, locked: its caller unlocks it.
    private func takeReader() -> (connection: SQLiteConnection, lock: NSLock) {
        nextReader.lock()
        let reader = readers[readerCursor % readers.count]
        readerCursor &+= 1
        nextReader.unlock()
        reader.lock.lock()
        return reader
    }

    /// Runs `body` in one read transaction: every `read` it makes on this thread uses the same
    /// reader and sees the same snapshot, and the file's locks are taken once, not per statement
    /// (a request authenticates and reads its resource together). `body` must not block on
    /// anything but the database: it holds a reader.
    public func readTransaction<T>(_ body: () throws -> T) throws -> T {
        if pthread_getspecific(currentReader) != nil { return try body() }
        let reader = takeReader()
        defer { reader.lock.unlock() }
        try reader.connection.run("BEGIN")
        pthread_setspecific(currentReader, Unmanaged.passUnretained(reader.connection).toOpaque())
        defer {
            pthread_setspecific(currentReader, nil)
            // A read has nothing to keep: COMMIT ends it (ROLLBACK if COMMIT cannot).
            if (try? reader.connection.run("COMMIT")) == nil { try? reader.connection.run("ROLLBACK") }
        }
        return try body()
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
