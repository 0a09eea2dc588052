import CLinux
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A real PostgreSQL for the tests: Debian's server (`make test` installs the `postgresql`
/// package when it is missing), `initdb` into a temporary directory as an unprivileged user
/// (`postgres` when the tests run as root), listening on a Unix socket in that directory and
/// nowhere else. One server per test process, started on first use and stopped when the
/// process exits; each test gets a database of its own.
public final class PostgresServer: Sendable {
    public let directory: String
    let binaries: String
    let user: String?

    private static let shared = Mutex<Result<PostgresServer, PostgresServerError>?>(nil)

    /// The server of this test process, started on first use.
    public static func running() throws -> PostgresServer {
        try shared.withLock { server in
            if server == nil { server = Result { try PostgresServer() }.mapError { $0 as? PostgresServerError ?? PostgresServerError("\($0)") } }
            return try server!.get()
        }
    }

    /// A server of the caller's own, for a test that stops and starts it (the database going
    /// down under a running fleet); stopped when the process exits, as the shared one is.
    /// It commits durably (`synchronous_commit` on): an immediate stop keeps every committed
    /// transaction, as a real server's crash does.
    public static func dedicated() throws -> PostgresServer {
        do { return try PostgresServer(durable: true) } catch let error as PostgresServerError { throw error } catch { throw PostgresServerError("\(error)") }
    }

    /// Stops the server at once (`-m immediate`: as a crash or a failover would); its data stays.
    public func stop() throws {
        try run([binaries + "/pg_ctl", "-D", directory + "/data", "-m", "immediate", "-w", "stop"], asServerUser: true)
    }

    /// Starts it again after `stop`.
    public func start() throws {
        try run([binaries + "/pg_ctl", "-D", directory + "/data", "-o", options, "-l", directory + "/server.log", "-w", "-t", "60", "start"],
                asServerUser: true)
    }

    /// Durability past the operating system is not what these tests measure: no fsync makes
    /// them fast. Without `durable`, commits do not wait for the WAL either.
    var options: String {
        "-k \(directory) -c listen_addresses='' -c fsync=off -c synchronous_commit=\(durable ? "on" : "off") -c full_page_writes=off -c max_connections=200"
    }

    /// A new, empty database: a libpq URL for it.
    public func createDatabase() throws -> String {
        let name = "test_\(UUID().uuidString.prefix(8).lowercased())"
        try run([binaries + "/psql", "-h", directory, "-U", "preftune", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", "CREATE DATABASE \(name)"],
                asServerUser: false)
        return url(database: name)
    }

    public func url(database: String) -> String { "postgresql://preftune@/\(database)?host=\(directory)" }

    let durable: Bool

    init(durable: Bool = false) throws {
        self.durable = durable
        guard let version = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql"))?
            .compactMap(Int.init).max() else {
            throw PostgresServerError("no PostgreSQL server in /usr/lib/postgresql: `make test` installs Debian's postgresql package (scripts/ensure-deps.sh python)")
        }
        binaries = "/usr/lib/postgresql/\(version)/bin"
        user = getuid() == 0 ? "postgres" : nil
        directory = temporaryPath("preftune-pg")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if let user {
            // PostgreSQL refuses to run as root: the directory belongs to its own user.
            guard let account = getpwnam(user) else { throw PostgresServerError("no user \(user) to run PostgreSQL as (the postgresql package creates it)") }
            guard chown(directory, account.pointee.pw_uid, account.pointee.pw_gid) == 0 else {
                throw PostgresServerError("cannot give \(directory) to \(user): \(String(cString: strerror(errno)))")
            }
        }
        let data = directory + "/data"
        try run([binaries + "/initdb", "-D", data, "-U", "preftune", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"], asServerUser: true)
        try run([binaries + "/pg_ctl", "-D", data, "-o", options, "-l", directory + "/server.log", "-w", "-t", "60", "start"], asServerUser: true)
        let stop = [binaries + "/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"]
        Self.stopAtExit.withLock { $0.append((stop, user, directory)) }
        Self.registerExitHandler
    }

    private static let stopAtExit = Mutex<[(command: [String], user: String?, directory: String)]>([])
    private static let registerExitHandler: Void = {
        atexit {
            for server in PostgresServer.stopAtExit.withLock({ $0 }) {
                _ = try? runCommand(server.user.map { ["runuser", "-u", $0, "--"] + server.command } ?? server.command)
                try? FileManager.default.removeItem(atPath: server.directory)
            }
        }
    }()

    func run(_ command: [String], asServerUser: Bool) throws {
        let full = asServerUser ? (user.map { ["runuser", "-u", $0, "--"] + command } ?? command) : command
        let (status, output) = try runCommand(full)
        guard status == 0 else {
            let log = (try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)) ?? ""
            throw PostgresServerError("\(full.joined(separator: " ")) failed (\(status)): \(output)\n\(log.suffix(2000))")
        }
    }
}

public struct PostgresServerError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Runs a program to its end: its exit status and what it printed. Spawned and reaped here
/// (posix_spawn, waitpid) with its output in a file: `runuser` and `pg_ctl start` leave a
/// server running that may keep inherited descriptors, so neither a pipe nor Foundation's
/// `Process` (which never saw `runuser` exit) can tell when they are done.
public func runCommand(_ command: [String]) throws -> (Int32, String) {
    let path = temporaryPath("preftune-command", suffix: ".log")
    defer { unlink(path) }
    let input = open("/dev/null", O_RDONLY | O_CLOEXEC), log = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    defer { close(input); close(log) }
    guard input >= 0, log >= 0 else { throw PostgresServerError("cannot open \(path): \(String(cString: strerror(errno)))") }
    let arguments = ["/usr/bin/env"] + command
    let argv = arguments.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    // preftune_spawn passes the child no other descriptor of this process: a server started here
    // would otherwise hold, for its whole life, the write end of any pipe another test had open
    // at that moment, and that test's read would never end.
    let pid = preftune_spawn("/usr/bin/env", argv, environ, input, log, log)
    guard pid > 0 else { throw PostgresServerError("cannot run \(command[0]): \(String(cString: strerror(errno)))") }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0, errno == EINTR {}
    let output = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    return ((status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F), output)
}
