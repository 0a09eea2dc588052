import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Numerics
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The `preftune` executable as users run it: `swift build --build-tests` builds it
/// beside the test bundle.
@Suite(.serialized) struct ExecutableTests {
    static var binary: String {
        URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("preftune").path
    }

    static func temporaryDirectory() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("preftune-cli-\(UUID())").path
    }

    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, length)
            return getsockname(fd, $0, &length)
        } }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    @Test func keysAreCreatedListedAndRevoked() throws {
        let data = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let created = try runTool([Self.binary, "keys", "create", "--project", "vision", "--data-dir", data])
        #expect(created.status == 0 && created.output.contains("sk-pt-"), "\(created.output)")
        let id = try #require(created.output.split(separator: " ").dropFirst().first.map(String.init))
        let listed = try runTool([Self.binary, "keys", "list", "--data-dir", data])
        #expect(listed.output.contains("\(id)") && listed.output.contains("project vision") && listed.output.contains("active"))
        #expect(try runTool([Self.binary, "keys", "revoke", id, "--data-dir", data]).status == 0)
        #expect(try runTool([Self.binary, "keys", "list", "--data-dir", data]).output.contains("revoked"))
        let again = try runTool([Self.binary, "keys", "revoke", id, "--data-dir", data])
        #expect(again.status == 1 && again.output.contains("no active key"))
        #expect(try runTool([Self.binary, "keys", "create", "--data-dir", data]).status == 2, "a missing --project is a usage error")
    }

    @Test func backupCopiesTheDatabaseConsistently() throws {
        let data = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: data) }
        _ = try runTool([Self.binary, "keys", "create", "--project", "vision", "--data-dir", data])
        let target = data + "/backup.db"
        let backup = try runTool([Self.binary, "backup", "--to", target, "--data-dir", data])
        #expect(backup.status == 0 && backup.output.contains("backed up"), "\(backup.output)")
        let check = try runTool(["python3", "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); print(c.execute('pragma integrity_check').fetchone()[0], c.execute('select count(*) from api_keys').fetchone()[0])", target])
        #expect(check.output.trimmingCharacters(in: .whitespacesAndNewlines) == "ok 2", "the admin key and the new one: \(check.output)")
        #expect(!FileManager.default.fileExists(atPath: target + ".partial"))
        #expect(try runTool([Self.binary, "backup", "--data-dir", data]).status == 2)
    }

    @Test func versionSaysWhichKernelsItChose() throws {
        let version = try runTool([Self.binary, "--version"])
        #expect(version.status == 0 && version.output.contains("blas: OpenBLAS"))
        let preferred = KernelSelection.preferredCoreType(cpuFlags: KernelSelection.cpuFlags())
        if let preferred, ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil {
            #expect(version.output.contains("OPENBLAS_CORETYPE=\(preferred)"), "\(version.output)")
            #expect(!version.output.contains("Prescott"))
        }
    }

    @Test func serveStartsWithAnAdminKeyAndStopsGracefullyOnSIGTERM() async throws {
        let data = Self.temporaryDirectory(), port = Self.freePort()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["serve", "--listen", "127.0.0.1:\(port)", "--data-dir", data]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        defer { if process.isRunning { process.terminate() } }

        var healthy = false
        for _ in 0..<200 where !healthy {
            healthy = (try? await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/healthz")!)) != nil
            if !healthy { try await Task.sleep(for: .milliseconds(25)) }
        }
        #expect(healthy)
        let key = try String(contentsOfFile: "\(data)/admin.key", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let permissions = try FileManager.default.attributesOfItem(atPath: "\(data)/admin.key")[.posixPermissions] as? NSNumber
        #expect(permissions?.intValue == 0o600)
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/v1/models")!)
        request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization")
        let (_, response) = try await URLSession.shared.data(for: request)
        #expect((response as? HTTPURLResponse)?.statusCode == 200)

        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0, "\(text)")
        #expect(text.contains("created an admin API key in \(data)/admin.key"))
        #expect(text.contains("stopping: finishing requests in flight") && text.contains("stopped"))
    }
}
