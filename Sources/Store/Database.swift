import Foundation

/// SQLite behind one lock: every access is serialized (a single writer; readers
/// get their own connections when load calls for it). The connection never
/// leaves the lock, which is what makes sharing this object safe.
public final class Database: @unchecked Sendable {
    private let lock = NSLock()
    private let connection: SQLiteConnection

    public init(path: String) throws {
        connection = try SQLiteConnection(path: path)
    }

    public func read<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body(connection)
    }

    public func write<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        return try connection.transaction { try body(connection) }
    }
}

