import Diffusion
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `preftune serve` run as a child process, to be killed as a real server would be.
final class ServerProcess {
    let data: String
    let port: Int
    let process = Process()
    let logPath: String
    var base: String { "http://127.0.0.1:\(port)" }

    init(data: String, port: Int, arguments: [String] = []) async throws {
        self.data = data
        self.port = port
        logPath = data + ".server-\(UUID().uuidString.prefix(6)).log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: ExecutableTests.binary)
        process.arguments = ["serve", "--listen", "127.0.0.1:\(port)", "--data-dir", data] + arguments
        let log = FileHandle(forWritingAtPath: logPath)
        process.standardOutput = log
        process.standardError = log
        try process.runWithSignalsUnblocked()
        for _ in 0..<400 {
            if (try? await URLSession.shared.data(from: URL(string: "\(base)/healthz")!)) != nil { return }
            try await Task.sleep(for: .milliseconds(25))
        }
        throw HTTPTestFailure("the server did not start: \(output)")
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(atPath: logPath)
    }

    var output: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
    var key: String { ((try? String(contentsOfFile: "\(data)/admin.key", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines) }

    /// The server and its worker processes die at once, as in a machine's crash or the OOM
    /// killer taking the lot: the workers are frozen first, so none can save its state when the
    /// server's death reaches it.
    func killHard() {
        let workers = workerPIDs
        for worker in workers { kill(worker, SIGSTOP) }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        for worker in workers { kill(worker, SIGKILL) }
    }

    /// The worker processes the server started, as /proc lists its children.
    var workerPIDs: [pid_t] { Self.children(of: process.processIdentifier) }

    static func children(of pid: pid_t) -> [pid_t] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.flatMap { task in
            ((try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/children", encoding: .utf8)) ?? "").split(separator: " ").compactMap { pid_t($0) }
        }
    }

    /// Name and nice value of each thread of a process, from /proc.
    static func threads(of pid: pid_t) throws -> [(name: String, nice: Int)] {
        try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task").map { task in
            let base = "/proc/\(pid)/task/\(task)"
            let name = try String(contentsOfFile: base + "/comm", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            // Fields after the parenthesised name: state is 3rd, nice the 19th of the whole line.
            let stat = try String(contentsOfFile: base + "/stat", encoding: .utf8)
            let fields = stat[stat.index(after: stat.lastIndex(of: ")")!)...].split(separator: " ")
            return (name, Int(fields[16]) ?? -99)
        }
    }

    /// As `as` (a project's key), else as the admin.
    func send(_ method: String, _ path: String, json: [String: Any]? = nil, body: Data? = nil,
              contentType: String? = nil, as key: String? = nil) async throws -> [String: Any] {
        var request = URLRequest(url: URL(string: base + path)!)
        request.httpMethod = method
        request.setValue("Bearer \(key ?? self.key)", forHTTPHeaderField: "Authorization")
        if let json {
            request.httpBody = try JSONSerialization.data(withJSONObject: json)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        } else if let body {
            request.httpBody = body
            request.setValue(contentType, forHTTPHeaderField: "Content-Type")
        }
        let (data, _) = try await URLSession.shared.data(for: request)
        return (try JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
    }

    func upload(_ content: [UInt8], as key: String? = nil) async throws -> String {
        let boundary = "preftune-\(UUID().uuidString)"
        var body = Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n".utf8)
        body += Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"train.jsonl\"\r\n\r\n".utf8)
        body += Data(content) + Data("\r\n--\(boundary)--\r\n".utf8)
        return try await send("POST", "/v1/files", body: body, contentType: "multipart/form-data; boundary=\(boundary)", as: key)["id"] as! String
    }

    /// The tiny model (initialised with `seed`) and the training file the jobs here train on.
    func jobFixtures(seed: Int = 0) async throws -> (model: String, file: String) {
        let model = try await send("POST", "/v1/models", json: ["id": "tiny", "config": ModelsTests.config, "seed": seed])["id"] as! String
        return (model, try await upload(WorkerFixtures.samples))
    }

    /// An sft job long enough to be stopped mid-way (200,000 steps).
    static func longSFT(_ fixtures: (model: String, file: String)) -> [String: Any] {
        ["model": fixtures.model, "training_file": fixtures.file,
         "method": ["type": "sft", "sft": ["hyperparameters": ["n_steps": 200_000, "batch_size": 4, "log_every": 1000]]]]
    }

    func job(_ id: String) async throws -> [String: Any] { try await send("GET", "/v1/fine_tuning/jobs/\(id)") }

    func step(_ id: String) async throws -> Int { ((try await job(id))["progress"] as? [String: Any])?["step"] as? Int ?? 0 }

    func waitForEnd(_ id: String) async throws -> [String: Any] {
        try await poll("job \(id) to end") {
            let job = try await job(id)
            return ["succeeded", "failed", "cancelled"].contains(job["status"] as? String ?? "") ? job : nil
        }
    }
}

@Suite(.serialized, .ownThread) struct CrashRecoveryTests {
    /// `kill -9` mid-job, restart: the job resumes from its last training state and ends with
    /// the weights of a run that never stopped; its metric steps are strictly increasing, none twice.
    @Test func aJobSurvivesKillNineWithBitIdenticalWeights() async throws {
        let data = ExecutableTests.temporaryDirectory(), port = ExecutableTests.freePort()
        defer { try? FileManager.default.removeItem(atPath: data) }
        var server: ServerProcess? = try await ServerProcess(data: data, port: port, arguments: ["--workers", "1"])
        let (model, file) = try await server!.jobFixtures(seed: 1)
        let settings: [String: Any] = ["n_steps": 40_000, "batch_size": 4, "checkpoint_every": 5_000, "log_every": 500, "policy_steps": 4]
        let body: [String: Any] = ["model": model, "training_file": file, "seed": 11, "method": ["type": "dro", "dro": ["hyperparameters": settings]]]
        let id = try #require(try await server!.send("POST", "/v1/fine_tuning/jobs", json: body)["id"] as? String)

        // Killed after a checkpoint, with metrics recorded past it: those steps come again after the restart.
        while try await server!.step(id) < 7_000 { try await Task.sleep(for: .milliseconds(2)) }
        server!.killHard()
        let stepAtKill = try await ServerProcess.storedStep(data: data, job: id)
        #expect(stepAtKill >= 7_000 && stepAtKill < 40_000, "killed mid-job (step \(stepAtKill))")
        server = nil

        let restarted = try await ServerProcess(data: data, port: port, arguments: ["--workers", "1"])
        let done = try await restarted.waitForEnd(id)
        #expect(done["status"] as? String == "succeeded", "\(done)\n\(restarted.output)")
        let reference = try #require(try await restarted.send("POST", "/v1/fine_tuning/jobs", json: body)["id"] as? String)
        #expect(try await restarted.waitForEnd(reference)["status"] as? String == "succeeded")

        let resumed = try ModelFile.load("\(data)/jobs/\(id)/model.safetensors").parameters.array
        let uninterrupted = try ModelFile.load("\(data)/jobs/\(reference)/model.safetensors").parameters.array
        #expect(resumed == uninterrupted, "bit-identical to a run that never stopped")

        let events = try await restarted.send("GET", "/v1/fine_tuning/jobs/\(id)/events?limit=1000")["data"] as? [[String: Any]] ?? []
        let steps = events.reversed().filter { $0["type"] as? String == "metrics" }.compactMap { ($0["data"] as? [String: Any])?["step"] as? Int }
        #expect(steps == Array(stride(from: 500, through: 40_000, by: 500)))
        let messages = events.compactMap { $0["message"] as? String }
        #expect(messages.contains { $0.contains("previous worker's lease expired") })
        let resumedAt = messages.compactMap { message -> Int? in
            guard message.hasPrefix("resumed dro at step ") else { return nil }
            return Int(message.dropFirst("resumed dro at step ".count).prefix { $0.isNumber })
        }
        #expect(resumedAt.count == 1 && resumedAt[0] % 5_000 == 0 && resumedAt[0] <= stepAtKill,
                "resumed from the last checkpoint before the kill: \(resumedAt), killed at \(stepAtKill)")
    }

    /// SIGTERM while a job trains: the server writes its state, queues it, and exits 0; the next start finishes it.
    @Test func sigtermQueuesTheRunningJobAgain() async throws {
        let data = ExecutableTests.temporaryDirectory(), port = ExecutableTests.freePort()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let server = try await ServerProcess(data: data, port: port, arguments: ["--workers", "1"])
        let body = ServerProcess.longSFT(try await server.jobFixtures())
        let id = try #require(try await server.send("POST", "/v1/fine_tuning/jobs", json: body)["id"] as? String)
        while try await server.step(id) < 2_000 { try await Task.sleep(for: .milliseconds(5)) }
        kill(server.process.processIdentifier, SIGTERM)
        server.process.waitUntilExit()
        #expect(server.process.terminationStatus == 0, "\(server.output)")
        #expect(FileManager.default.fileExists(atPath: "\(data)/jobs/\(id)/state/latest.safetensors"))

        let restarted = try await ServerProcess(data: data, port: port, arguments: ["--workers", "1"])
        let events = try await restarted.send("GET", "/v1/fine_tuning/jobs/\(id)/events?limit=100")["data"] as? [[String: Any]] ?? []
        #expect(events.contains { ($0["message"] as? String)?.hasPrefix("Server stopping: training state saved") == true })
        _ = try await restarted.send("POST", "/v1/fine_tuning/jobs/\(id)/cancel", json: [:])
    }
}

/// Training runs in worker processes, below the request path's CPU priority: the worker thread
/// and OpenBLAS's threads at nice 10; the server's HTTP loop and handler threads at 0, and no
/// worker thread in it — read from /proc of the real processes.
@Suite(.ownThread) struct CPUPriorityTests {
    @Test func workersAndBLASThreadsRunBelowTheRequestPath() async throws {
        let data = ExecutableTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let server = try await ServerProcess(data: data, port: ExecutableTests.freePort(), arguments: ["--workers", "1", "--threads-per-job", "2"])
        let threads = try ServerProcess.threads(of: server.process.processIdentifier)
        #expect(threads.contains { $0.name == "preftune-http" && $0.nice == 0 }, "\(threads)")
        #expect(threads.filter { $0.name.hasPrefix("http-handler-") }.allSatisfy { $0.nice == 0 } && threads.contains { $0.name == "http-handler-0" })
        #expect(!threads.contains { $0.name.hasPrefix("worker-") && !$0.name.hasSuffix("-out") && !$0.name.hasSuffix("-err") },
                "the API process trains nothing: \(threads)")

        // The worker says how many OpenBLAS threads it lowered once it has.
        _ = try await poll("the worker's banner", seconds: 30) { server.output.contains("OpenBLAS threads") ? true : nil }
        let worker = try #require(server.workerPIDs.first, "\(server.output)")
        // The banner comes just before the pool starts its threads, which lower themselves as they start.
        // A failed wait throws, saying what the threads were then (a run once saw this wait end
        // within half a second, for a reason its `try?` hid).
        let workerThreads = try await poll("the worker thread at nice 10 (threads: \((try? ServerProcess.threads(of: worker)).map { "\($0)" } ?? "none"))",
                                           seconds: 30) {
            // A thread may end between the listing and the reading of its files: look again.
            let threads = try? ServerProcess.threads(of: worker)
            return threads?.contains { $0.name == "worker-0" && $0.nice == 10 } == true ? threads : nil
        }
        #expect(workerThreads.contains { $0.name == "worker-0" && $0.nice == 10 }, "\(workerThreads)")
        let blas = Int(server.output.components(separatedBy: "with ").last?.split(separator: " ").first ?? "") ?? -1
        #expect(workerThreads.filter { $0.nice == 10 }.count == 1 + blas, "the worker and the \(blas) OpenBLAS threads: \(workerThreads)\n\(server.output)")
    }
}

/// A worker process that dies mid-job (here kill -9; in life, the OOM killer or a crash) takes
/// nothing else with it: the API keeps answering, the supervisor starts a new worker, the job's
/// log keeps the dead worker's last lines, and the job resumes from its last training state.
@Suite(.serialized, .ownThread) struct WorkerProcessTests {
    @Test func aWorkerThatDiesLeavesItsLastLinesAndTheJobResumes() async throws {
        let data = ExecutableTests.temporaryDirectory(), port = ExecutableTests.freePort()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let server = try await ServerProcess(data: data, port: port, arguments: ["--workers", "1"])
        let (model, file) = try await server.jobFixtures(seed: 1)
        let settings: [String: Any] = ["n_steps": 16_000, "batch_size": 4, "checkpoint_every": 2_000, "log_every": 500, "policy_steps": 4]
        let body: [String: Any] = ["model": model, "training_file": file, "seed": 5, "method": ["type": "dro", "dro": ["hyperparameters": settings]]]
        let id = try #require(try await server.send("POST", "/v1/fine_tuning/jobs", json: body)["id"] as? String)
        while try await server.step(id) < 3_000 { try await Task.sleep(for: .milliseconds(2)) }

        let first = try #require(server.workerPIDs.first)
        kill(first, SIGKILL)
        // The API answers all along.
        for _ in 0..<20 {
            #expect(try await server.send("GET", "/v1/fine_tuning/jobs/\(id)")["id"] as? String == id)
            try await Task.sleep(for: .milliseconds(10))
        }
        let done = try await server.waitForEnd(id)
        #expect(done["status"] as? String == "succeeded", "\(done)\n\(server.output)")
        let second = try #require(server.workerPIDs.first)
        #expect(second != first, "a new worker process took over")
        #expect(server.output.contains("worker-0 (pid \(first)) was killed by signal 9"), "\(server.output)")

        let log = try String(contentsOfFile: "\(data)/jobs/\(id)/log.txt", encoding: .utf8)
        #expect(log.contains("the worker process training this job (pid \(first)) was killed by signal 9"), "\(log)")
        #expect(log.contains("| preftune: worker pid \(first):"), "its last lines of standard error: \(log)")
        let events = try await server.send("GET", "/v1/fine_tuning/jobs/\(id)/events?limit=1000")["data"] as? [[String: Any]] ?? []
        let messages = events.compactMap { $0["message"] as? String }
        #expect(messages.contains { $0.hasPrefix("The worker process training this job was killed by signal 9") }, "\(messages)")
        #expect(messages.contains { $0.hasPrefix("resumed dro at step ") }, "\(messages)")
    }

    /// A cancel reaches the job's worker process at once, through its supervisor, rather than at its next heartbeat.
    @Test func aCancelReachesTheWorkerProcessWithinASecond() async throws {
        let data = ExecutableTests.temporaryDirectory(), port = ExecutableTests.freePort()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let server = try await ServerProcess(data: data, port: port, arguments: ["--workers", "1"])
        let body = ServerProcess.longSFT(try await server.jobFixtures())
        // Three times: a heartbeat (every 2 s) would notice within 1 s only by luck, one time in two.
        for _ in 0..<3 {
            let id = try #require(try await server.send("POST", "/v1/fine_tuning/jobs", json: body)["id"] as? String)
            while try await server.step(id) < 1_000 { try await Task.sleep(for: .milliseconds(5)) }
            let cancelled = ContinuousClock.now
            _ = try await server.send("POST", "/v1/fine_tuning/jobs/\(id)/cancel", json: [:])
            _ = try await poll("the worker to stop the job", seconds: 10) {
                let events = try await server.send("GET", "/v1/fine_tuning/jobs/\(id)/events?limit=20")["data"] as? [[String: Any]] ?? []
                return events.contains { ($0["message"] as? String)?.hasPrefix("Stopped at step") == true } ? true : nil
            }
            let took = ContinuousClock.now - cancelled
            #expect(took < .seconds(1), "the worker stopped \(took) after the cancel(its heartbeat comes every 2 s)")
        }
    }
}

extension ServerProcess {
    /// The job's recorded step, read from the database of a stopped server.
    static func storedStep(data: String, job: String) async throws -> Int {
        let result = try await runToolAsync(["python3", "-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select step from jobs where id=?', (sys.argv[2],)).fetchone()[0])",
                                  "\(data)/preftune.db", job])
        return Int(result.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }
}

/// The command-line client against a real server: upload, create a model and a job,
/// follow its log to the end, list, sample.
@Suite(.serialized, .ownThread) struct CommandLineClientTests {
    @Test func aJobFromTheCommandLineIsFollowedToItsEnd() async throws {
        let data = ExecutableTests.temporaryDirectory(), port = ExecutableTests.freePort()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let server = try await ServerProcess(data: data, port: port, arguments: ["--workers", "1"])
        let dataset = data + "/../cli-train-\(UUID().uuidString.prefix(6)).jsonl"
        try Data(WorkerFixtures.samples).write(to: URL(fileURLWithPath: dataset))
        defer { try? FileManager.default.removeItem(atPath: dataset) }
        func cli(_ arguments: [String]) async throws -> (status: Int32, output: String) {
            try await runToolAsync(["env", "PREFTUNE_URL=\(server.base)", "PREFTUNE_API_KEY=\(server.key)", ExecutableTests.binary] + arguments)
        }
        let uploaded = try await cli(["files", "upload", dataset])
        let file = try #require(uploaded.output.split(separator: " ").first.map(String.init), "\(uploaded.output)")
        #expect(file.hasPrefix("file-"), "\(uploaded.output)")
        let config = String(decoding: try JSONSerialization.data(withJSONObject: ModelsTests.config), as: UTF8.self)
        #expect(try await cli(["models", "create", "tiny", "--config", config]).output.trimmingCharacters(in: .whitespacesAndNewlines) == "tiny")
        let created = try await cli(["jobs", "create", "--model", "tiny", "--training-file", file, "--method", "dro", "--set", "n_steps=20",
                               "--set", "batch_size=4", "--set", "policy_steps=4", "--set", "log_every=5", "--set", "checkpoint_every=10", "--suffix", "cli"])
        let job = created.output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(job.hasPrefix("ftjob-"), "\(created.output)")

        let followed = try await cli(["jobs", "logs", job, "-f"])
        #expect(followed.status == 0, "\(followed.output)")
        #expect(followed.output.contains("step 20/20 loss") && followed.output.contains("succeeded  dro  step 20/20"), "\(followed.output)")
        #expect(followed.output.contains("ft:tiny:cli:\(job)"))
        #expect(try await cli(["jobs", "list"]).output.contains("\(job)  succeeded"))
        let shown = try await cli(["jobs", "get", job]).output
        let object = try JSONSerialization.jsonObject(with: Data(shown.utf8)) as? [String: Any]
        #expect(object?["status"] as? String == "succeeded" && (object?["hyperparameters"] as? [String: Any])?["n_steps"] as? Int == 20, "\(shown)")
        let png = data + "/grid.png"
        #expect(try await cli(["sample", "--model", "ft:tiny:cli:\(job)", "--prompt", "shape 1", "--n", "2", "--png", png]).status == 0)
        #expect(FileManager.default.contents(atPath: png)?.prefix(4) == Data([0x89, 0x50, 0x4E, 0x47]))
        // Checkpoints (the best marked), a fork from one, and early stopping with the best as the result.
        let forked = try await cli(["jobs", "fork", job, "--from-step", "10", "--set", "learning_rate=0.002", "--suffix", "fork", "--follow"])
        #expect(forked.status == 0 && forked.output.contains("forked dro at step 10/20") && forked.output.contains("succeeded  dro  step 20/20"), "\(forked.output)")
        let checkpoints = try await cli(["jobs", "checkpoints", job]).output
        #expect(checkpoints.contains("step 20  ft:tiny:cli:\(job):ckpt-step-20") && checkpoints.contains("step 10  ft:tiny:cli:\(job):ckpt-step-10"), "\(checkpoints)")
        let early = try await cli(["jobs", "create", "--model", "tiny", "--training-file", file, "--method", "sft", "--set", "n_steps=40", "--set", "batch_size=4",
                                   "--set", "eval_every=5", "--validation-file", file, "--early-stopping", #"{"metric": "val_loss", "patience": 1, "min_delta": 1e9}"#,
                                   "--follow"])
        #expect(early.status == 0 && early.output.contains("early stop at step 10/40"), "\(early.output)")
        let earlyJob = try #require(early.output.split(separator: "\n").first.map(String.init))
        #expect(try await cli(["jobs", "checkpoints", earlyJob]).output.contains("* step 5"))
        let mistake = try await cli(["jobs", "create", "--model", "nope", "--training-file", file, "--method", "dro"])
        #expect(mistake.status == 1 && mistake.output.contains("HTTP 404") && mistake.output.contains("(model)"), "\(mistake.output)")
        let unreachable = try await runToolAsync(["env", "PREFTUNE_URL=http://127.0.0.1:1", "PREFTUNE_API_KEY=x", ExecutableTests.binary, "jobs", "list"])
        #expect(unreachable.status == 1 && unreachable.output.contains("cannot reach http://127.0.0.1:1"), "\(unreachable.output)")
    }
}
