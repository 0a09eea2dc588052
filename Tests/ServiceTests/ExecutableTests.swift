import Foundation
import Synchronization
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Numerics
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The `preftune` executable as users run it: `swift build --build-tests` builds it
/// beside the test bundle.
@Suite(.serialized, .ownThread) struct ExecutableTests {
    static var binary: String {
        URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("preftune").path
    }

    static func temporaryDirectory() -> String {
        temporaryPath("preftune-cli")
    }

    /// Polls /healthz for up to 10 s; whether a server answered.
    static func waitHealthy(port: Int) async throws -> Bool {
        for _ in 0..<200 {
            if (try? await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/healthz")!)) != nil { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return false
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

    /// The same commands on a fleet's PostgreSQL: keys in the shared database, and a backup
    /// that is pg_dump's consistent snapshot, which pg_restore reads.
    @Test func keysAndBackupWorkOnPostgreSQL() throws {
        let data = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let database = try PostgresServer.running().createDatabase()
        let created = try runTool([Self.binary, "keys", "create", "--project", "vision", "--data-dir", data, "--database", database])
        #expect(created.status == 0 && created.output.contains("sk-pt-"), "\(created.output)")
        let listed = try runTool([Self.binary, "keys", "list", "--data-dir", data, "--database", database])
        #expect(listed.output.contains("project vision") && listed.output.contains("project admin"), "\(listed.output)")
        #expect(!FileManager.default.fileExists(atPath: data + "/preftune.db"), "no SQLite database beside a PostgreSQL one")
        let target = data + "/backup.dump"
        let backup = try runTool([Self.binary, "backup", "--to", target, "--data-dir", data, "--database", database])
        #expect(backup.status == 0 && backup.output.contains("pg_dump"), "\(backup.output)")
        let contents = try runTool(["pg_restore", "--list", target])
        #expect(contents.status == 0 && contents.output.contains("TABLE public jobs") && contents.output.contains("TABLE DATA public api_keys"),
                "\(contents.output.prefix(600))")
        let refused = try runTool([Self.binary, "keys", "list", "--data-dir", data, "--database", "mysql://x"])
        #expect(refused.status == 2 && refused.output.contains("PostgreSQL URL"))
    }

    @Test func projectLimitsAreSetAndListed() throws {
        let data = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let set = try runTool([Self.binary, "projects", "set", "vision", "--max-priority", "5", "--max-running", "2", "--data-dir", data])
        #expect(set.status == 0, "\(set.output)")
        #expect(try runTool([Self.binary, "projects", "list", "--data-dir", data]).output.contains("vision  proj_"))
        #expect(try runTool([Self.binary, "projects", "list", "--data-dir", data]).output.contains("max priority 5  max running 2"))
        _ = try runTool([Self.binary, "projects", "set", "vision", "--max-running", "none", "--data-dir", data])
        #expect(try runTool([Self.binary, "projects", "list", "--data-dir", data]).output.contains("max priority 5  max running unlimited  weight 1.0"))
        _ = try runTool([Self.binary, "projects", "set", "vision", "--weight", "2.5", "--data-dir", data])
        #expect(try runTool([Self.binary, "projects", "list", "--data-dir", data]).output.contains("weight 2.5"))
        #expect(try runTool([Self.binary, "projects", "set", "vision", "--max-priority", "500", "--data-dir", data]).status == 2)
        #expect(try runTool([Self.binary, "projects", "set", "vision", "--data-dir", data]).status == 2, "nothing to set")
    }

    @Test func versionSaysWhichKernelsItChose() throws {
        let version = try runTool([Self.binary, "--version"])
        #expect(version.status == 0 && version.output.contains("blas: OpenBLAS"))
        // The math backend in use, and how to choose the other.
        // oneDNN is the default where it runs AVX-512 kernels, OpenBLAS elsewhere (AVX2 included).
        let expected = MathBackend.preferred == .onednn ? "math: oneDNN 2." : "math: OpenBLAS ("
        #expect(version.output.contains(expected) && version.output.contains("onednn: oneDNN 2."), "\(version.output)")
        // oneDNN capped at AVX2, as on a Zen 3, whatever this CPU has: OpenBLAS by default, oneDNN on request.
        let oneDNNLine = version.output.split(separator: "\n").first { $0.hasPrefix("onednn:") } ?? ""
        if oneDNNLine.contains("(avx2)") || oneDNNLine.contains("(avx512") {
            let avx2 = try runTool(["DNNL_MAX_CPU_ISA=AVX2", Self.binary, "--version"])
            #expect(avx2.output.contains("math: OpenBLAS (") && avx2.output.contains("(avx2), OpenMP"), "\(avx2.output)")
            let avx2OnRequest = try runTool(["DNNL_MAX_CPU_ISA=AVX2", "PREFTUNE_MATH=onednn", Self.binary, "--version"])
            #expect(avx2OnRequest.output.contains("math: oneDNN 2.") && avx2OnRequest.output.contains("(avx2) (of onednn"),
                    "\(avx2OnRequest.output)")
        }
        let openblas = try runTool(["PREFTUNE_MATH=openblas", Self.binary, "--version"])
        #expect(openblas.output.contains("math: OpenBLAS ("), "\(openblas.output)")
        // libgomp's threads sleep between products unless the environment says otherwise.
        let environment = try runTool(["sh", "-c", "unset OMP_WAIT_POLICY; exec \(Self.binary) --version"])
        #expect(environment.output.contains("OpenMP threads waiting passive"), "\(environment.output)")
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
        try process.runWithSignalsUnblocked()
        defer { if process.isRunning { process.terminate() } }

        let healthy = try await ExecutableTests.waitHealthy(port: port)
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

/// The executable refuses what it does not understand, and always stops when told to.
@Suite(.serialized, .ownThread) struct ExecutableHardeningTests {
    @Test func unknownFlagsAndMissingValuesAreUsageErrors() throws {
        let data = ExecutableTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let typo = try runTool([ExecutableTests.binary, "serve", "--wrokers", "4", "--data-dir", data])
        #expect(typo.status == 2 && typo.output.contains("unknown flag --wrokers") && typo.output.contains("did you mean --workers?"), "\(typo.output)")
        #expect(!FileManager.default.fileExists(atPath: data), "nothing was started")
        let math = try runTool([ExecutableTests.binary, "serve", "--math", "mkl", "--data-dir", data])
        #expect(math.status == 2 && math.output.contains("--math takes onednn or openblas"), "\(math.output)")
        #expect(!FileManager.default.fileExists(atPath: data), "nothing was started")
        // The bench too: a misspelt flag must not measure the wrong thing.
        let bench = URL(fileURLWithPath: ExecutableTests.binary).deletingLastPathComponent().appendingPathComponent("preftune-bench").path
        if FileManager.default.isExecutableFile(atPath: bench) {
            for arguments in [["--quik"], ["--only"], ["--precision", "fp16"]] {
                let result = try runTool([bench] + arguments)
                #expect(result.status == 2, "preftune-bench \(arguments): \(result.status) \(result.output)")
            }
        }
        for arguments in [["serve", "--workers"], ["keys", "list", "--bogus"], ["keys", "create", "--project"], ["jobs", "get"],
                          ["jobs", "get", "a", "b"], ["backup", "--to"], ["inspect-model"], ["files", "upload", "x", "--purpos", "y"],
                          ["sample", "--model", "m", "--stepz", "3"], ["models", "create", "m", "--seeed", "1"]] {
            let result = try runTool([ExecutableTests.binary] + arguments)
            #expect(result.status == 2 && result.output.contains("usage: preftune"), "\(arguments): \(result.status) \(result.output)")
        }
    }

    /// SIGTERM during a long sample request: the sample is cancelled and the process exits within its grace period.
    @Test func sigtermEndsWithinTheGracePeriodDuringALongSample() async throws {
        let data = ExecutableTests.temporaryDirectory(), port = ExecutableTests.freePort()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ExecutableTests.binary)
        process.arguments = ["serve", "--listen", "127.0.0.1:\(port)", "--data-dir", data, "--workers", "0", "--shutdown-grace", "3",
                             "--max-sample-flops", "1e15"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        // When it exited, noted by Foundation's own thread: polling on the cooperative pool would time
        // the test too, and under the full suite other suites' training can hold the pool's threads.
        let exited = Mutex<Date?>(nil)
        process.terminationHandler = { _ in exited.withLock { $0 = Date() } }
        try process.runWithSignalsUnblocked()
        defer { if process.isRunning { process.terminate() } }
        let base = "http://127.0.0.1:\(port)"
        _ = try await ExecutableTests.waitHealthy(port: port)
        let key = try String(contentsOfFile: "\(data)/admin.key", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        func post(_ path: String, _ body: [String: Any]) -> URLRequest {
            var request = URLRequest(url: URL(string: base + path)!)
            request.httpMethod = "POST"
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization")
            request.httpBody = try? JSONSerialization.data(withJSONObject: body)
            return request
        }
        let config: [String: Any] = ["sample_shape": [1, 4, 4], "hidden": 256, "depth": 4, "cond": ["kind": "text", "vocab": 32, "max_tokens": 4]]
        _ = try await URLSession.shared.data(for: post("/v1/models", ["id": "m", "config": config]))
        let sample = UncheckedSendable(post("/v1/samples", ["model": "m", "prompts": ["a"], "n": 256, "steps": 1000]))
        let pending = Task { try? await URLSession.shared.data(for: sample.value) }
        try await Task.sleep(for: .milliseconds(700))
        let signalled = Date()
        kill(process.processIdentifier, SIGTERM)
        while process.isRunning, Date().timeIntervalSince(signalled) < 20 { try await Task.sleep(for: .milliseconds(20)) }
        pending.cancel()
        let took = (exited.withLock { $0 } ?? Date()).timeIntervalSince(signalled)
        // The grace period is 3 s; a busy test machine adds scheduling delay to the watchdog.
        #expect(!process.isRunning && took < 6, "exited \(took) s after SIGTERM (status \(process.terminationStatus))")
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(text.contains("stopping:"), "\(text)")
    }

    /// A stop sent while the server or a worker starts up is not lost. The SIGTERM here is
    /// pending when `preftune serve` (or `worker`) begins (its parent blocked SIGTERM, signalled
    /// itself and exec'd it, and a blocked signal stays pending across exec): it stops as soon as
    /// it can, without another. This is the window a SIGTERM sent right after the server first
    /// answered used to fall in: setting the signal's disposition discarded it, and the server
    /// never stopped.
    @Test(arguments: ["serve", "worker"]) func aStopPendingAtStartUpIsNotLost(command: String) async throws {
        let data = ExecutableTests.temporaryDirectory(), port = ExecutableTests.freePort()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        let python = """
            import os, signal, sys
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            os.kill(os.getpid(), signal.SIGTERM)
            os.execv(sys.argv[1], sys.argv[1:])
            """
        let options = command == "serve" ? ["--listen", "127.0.0.1:\(port)", "--data-dir", data, "--workers", "1"] : ["--data-dir", data]
        process.arguments = ["python3", "-c", python, ExecutableTests.binary, command] + options
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.runWithSignalsUnblocked()
        defer { if process.isRunning { process.terminate() } }
        let stopped = await secondsUntil({ !process.isRunning }, atMost: 60)
        #expect(stopped != nil, "\(command) did not stop within 60 s of a SIGTERM pending at start-up")
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0, "\(command) exited \(process.terminationStatus): \(text)")
        if command == "serve" { #expect(text.contains("stopping:") && text.contains("stopped"), "\(text)") }
    }

    /// Out of descriptors, the server stops accepting for a moment instead of spinning on accept,
    /// and serves again once connections close.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/prlimit"), "needs util-linux's prlimit"))
    func runningOutOfDescriptorsDoesNotSpin() async throws {
        let data = ExecutableTests.temporaryDirectory(), port = ExecutableTests.freePort()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/prlimit")
        process.arguments = ["--nofile=48:48", ExecutableTests.binary, "serve", "--listen", "127.0.0.1:\(port)", "--data-dir", data, "--workers", "0"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.runWithSignalsUnblocked()
        defer { if process.isRunning { process.terminate() } }
        let healthy = try await ExecutableTests.waitHealthy(port: port)
        #expect(healthy)
        // More connections than descriptors: the kernel's backlog holds what the server cannot accept.
        var sockets: [RawClient] = []
        for _ in 0..<120 { if let socket = try? RawClient(port: port) { sockets.append(socket) } }
        func cpuSeconds() -> Double {
            let stat = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/stat", encoding: .utf8)) ?? ""
            let fields = stat.split(separator: ")").last?.split(separator: " ") ?? []
            guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
            return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
        }
        try await Task.sleep(for: .milliseconds(300))
        let before = cpuSeconds()
        try await Task.sleep(for: .seconds(1))
        let used = cpuSeconds() - before
        #expect(used < 0.3, "the server used \(used) s of CPU in 1 s while out of descriptors")
        for socket in sockets { socket.close() }
        let again = try await ExecutableTests.waitHealthy(port: port)
        #expect(again, "serves again once descriptors are free")
    }
}
