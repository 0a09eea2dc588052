import Foundation
import Store
import Training

/// The service's data directory: `preftune.db`, `files/`, `models/`, `jobs/`,
/// and on first start an admin key in `admin.key` (mode 0600). With a PostgreSQL
/// database (a fleet), the directory holds the artifacts only, shared by every node
/// (e.g. over NFS), and the database is the server's.
public struct DataDirectory: Sendable {
    public let path: String
    public let database: any StoreDatabase
    /// Uploads, models and jobs' files: every access by the API and the workers goes through it.
    public let artifacts: any ArtifactStore
    /// Set when this opening created the admin key (the first start on an empty directory).
    public let createdAdminKey: Bool

    public var databasePath: String { "\(path)/preftune.db" }
    public var adminKeyPath: String { "\(path)/admin.key" }
    // Where artifacts are, for tests and tools; the service asks `artifacts`.
    public func filePath(_ id: String) -> String { artifacts.localPath(.upload(id)) }
    public func modelPath(_ id: String) -> String { artifacts.localPath(.model(id)) }
    /// `log.txt`, `checkpoints/`, `state/`, `samples/` and the final `model.safetensors` of a job.
    public func job(_ id: String) -> JobDirectory { artifacts.workingDirectory(job: id) }
    public func logPath(_ jobID: String) -> String { artifacts.localPath(.jobLog(jobID)) }

    /// Opens the directory with its SQLite database, or with the PostgreSQL server at
    /// `databaseURL` (`postgres://…`); migrates the database, and on a database without keys
    /// creates the admin key.
    public static func open(_ path: String, databaseURL: String? = nil, connections: Int = 8, migrationsRoot: String = Migration.defaultDirectory)
        throws -> DataDirectory
    {
        try createFolders(path)
        let database: any StoreDatabase = if let databaseURL {
            PostgresDatabase(url: databaseURL, connections: connections)
        } else {
            try Database(path: "\(path)/preftune.db")
        }
        return try open(path, database: database, migrations: try Migration.load(database.dialect, root: migrationsRoot))
    }

    public static func open(_ path: String, migrations: [Migration]) throws -> DataDirectory {
        try createFolders(path)
        return try open(path, database: try Database(path: "\(path)/preftune.db"), migrations: migrations)
    }

    static func createFolders(_ path: String) throws {
        for folder in ["", "/files", "/models", "/jobs"] {
            try FileManager.default.createDirectory(atPath: path + folder, withIntermediateDirectories: true)
        }
    }

    public static func open(_ path: String, database: any StoreDatabase, migrations: [Migration]) throws -> DataDirectory {
        try createFolders(path)
        _ = try database.withWriter { try Migrator.migrate($0, migrations: migrations) }
        // Nodes of a fleet starting together: one of them creates the admin key (the migrator's lock orders them).
        let secret: String? = try database.withWriter { connection in
            try Migrator.exclusively(connection) {
                guard try connection.rows("SELECT 1 FROM api_keys LIMIT 1", []).isEmpty else { return nil }
                return try APIKeys(connection: connection).create(project: "admin", admin: true).secret
            }
        }
        if let secret { try Self.writePrivate(secret + "\n", to: "\(path)/admin.key") }
        return DataDirectory(path: path, database: database, artifacts: SharedDirectoryArtifacts(root: path), createdAdminKey: secret != nil)
    }

    /// Writes a file readable by its owner only, atomically.
    static func writePrivate(_ text: String, to path: String) throws {
        let temporary = path + ".tmp"
        let fd = Foundation.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw APIError(status: 500, message: "cannot write \(path): \(String(cString: strerror(errno)))") }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
        fsync(fd)
        close(fd)
        guard written == bytes.count, rename(temporary, path) == 0 else {
            unlink(temporary)
            throw APIError(status: 500, message: "cannot write \(path)")
        }
    }
}
