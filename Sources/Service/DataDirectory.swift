import Foundation
import Store
import Training

/// The service's data directory: `preftune.db`, `files/`, `models/`, `jobs/`,
/// and on first start an admin key in `admin.key` (mode 0600).
public struct DataDirectory: Sendable {
    public let path: String
    public let database: Database
    /// Set when this opening created the admin key (the first start on an empty directory).
    public let createdAdminKey: Bool

    public var databasePath: String { "\(path)/preftune.db" }
    public var adminKeyPath: String { "\(path)/admin.key" }
    public func filePath(_ id: String) -> String { "\(path)/files/\(id)" }
    public func modelDirectory(_ id: String) -> String { "\(path)/models/\(id)" }
    public func modelPath(_ id: String) -> String { "\(modelDirectory(id))/model.safetensors" }
    /// `log.txt`, `checkpoints/`, `state/`, `samples/` and the final `model.safetensors` of a job.
    public func job(_ id: String) -> JobDirectory { JobDirectory("\(path)/jobs/\(id)") }
    public func jobDirectory(_ id: String) -> String { job(id).path }
    public func logPath(_ jobID: String) -> String { job(jobID).log }

    public static func open(_ path: String, migrations: [Migration]) throws -> DataDirectory {
        for folder in ["", "/files", "/models", "/jobs"] {
            try FileManager.default.createDirectory(atPath: path + folder, withIntermediateDirectories: true)
        }
        let database = try Database(path: "\(path)/preftune.db")
        _ = try database.withWriter { try Migrator.migrate($0, migrations: migrations) }
        let hasKeys = try database.read { try !$0.rows("SELECT 1 FROM api_keys LIMIT 1").isEmpty }
        var created = false
        if !hasKeys {
            let (_, secret) = try database.withWriter { try APIKeys(connection: $0).create(project: "admin", admin: true) }
            try Self.writePrivate(secret + "\n", to: "\(path)/admin.key")
            created = true
        }
        return DataDirectory(path: path, database: database, createdAdminKey: created)
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
