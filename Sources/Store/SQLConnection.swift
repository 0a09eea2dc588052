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
