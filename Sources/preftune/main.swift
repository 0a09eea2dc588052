import CLinux
import Diffusion
import Foundation
import HTTP
import Numerics
import Service
import Store
import Threads
import Training

// OpenBLAS reads its core type when it loads: pick the fastest kernels before anything else.
KernelSelection.ensureFastestKernels()

let version = "0.1.0"
let arguments = Array(CommandLine.arguments.dropFirst())
Flags.check(arguments)

func fail(_ message: String, status: Int32 = 1) -> Never {
    FileHandle.standardError.write(Data("preftune: \(message)\n".utf8))
    exit(status)
}

/// The value after `--name`, if given.
func option(_ name: String, in arguments: [String]) -> String? {
    guard let i = arguments.firstIndex(of: name) else { return nil }
    guard i + 1 < arguments.count else { fail("\(name) needs a value", status: 2) }
    return arguments[i + 1]
}

func printUsage() {
    print("""
    usage: preftune <command>

    commands:
      serve [--listen 127.0.0.1:8080] [--data-dir ./data] [--workers 1] [--threads-per-job CORES]
            [--max-job-memory SIZE] [--max-sample-flops N] [--quota-storage SIZE] [--quota-files N]
            [--quota-models N] [--quota-jobs N] [--webhook-allow CIDR,…] [--metrics-token TOKEN]
            [--shutdown-grace SECONDS] [--database postgres://… [--database-connections 16]]
            [--min-run-seconds 60|never] [--fair-share-window 3600] [--math onednn|openblas]
                                   run the API and the workers that train queued jobs;
                                   the first start on an empty data dir writes an
                                   admin key to <data-dir>/admin.key (docs/operations.md
                                   explains the budgets, quotas and egress rules);
                                   each worker is a process of its own (preftune worker)
      worker [--data-dir ./data] [--threads-per-job CORES] [--max-job-memory SIZE]
             [--database postgres://…] [--lease-seconds 30] [--webhook-allow CIDR,…] [--math onednn|openblas]
                                   train queued jobs, one at a time, and nothing else
                                   (serve starts these itself; run more against the same
                                   data dir, or on other machines against the same
                                   PostgreSQL and shared data dir, to add workers)
      keys create --project NAME [--admin] [--data-dir ./data] [--database postgres://…]
      keys list [--data-dir ./data] [--database postgres://…]
      keys revoke KEY_ID [--data-dir ./data] [--database postgres://…]
      projects list | set NAME [--max-priority N] [--max-running N|none] [--weight W]
                                   the operator's limits on a project sharing the workers:
                                   the highest priority its jobs may ask for (default 0),
                                   how many may run at once (default unlimited), and its
                                   weight in the fair share (default 1)
      backup --to FILE [--data-dir ./data] [--database postgres://…]
                                   a consistent copy of the database while the server runs
                                   (SQLite online backup; on PostgreSQL, pg_dump's custom
                                   format); docs/operations.md covers the files

    --database (or $PREFTUNE_DATABASE): a PostgreSQL server shared by a fleet of API nodes
    and workers, e.g. postgres://preftune@db.internal/preftune or
    postgresql:///preftune?host=/run/postgresql; without it, <data-dir>/preftune.db (SQLite).
      inspect-model <file>         architecture and parameter count of a model file

    client commands (server: PREFTUNE_URL, default http://127.0.0.1:8080; key:
    PREFTUNE_API_KEY, else <--data-dir>/admin.key):
      files upload PATH [--purpose fine-tune] | files list
      models create ID (--config JSON|@file | --file FILE_ID) [--seed N] | models list | models get ID
      jobs create --model ID --training-file FILE_ID --method sft|dpo|kto|dro|rpo
                  [--hyperparameters JSON|@file] [--set key=value]… [--validation-file ID]
                  [--suffix S] [--seed N] [--priority N] [--webhook-url URL]
                  [--early-stopping JSON] [--grader JSON|@file] [--result best|last]
                  [--precision fp32|bf16] [--follow]
                                   (--model ft:…:ckpt-step-N starts from a checkpoint's weights)
      jobs fork ID --from-step N [--hyperparameters JSON] [--set key=value]… [--suffix S]
                   [--precision fp32|bf16] [--follow]
                                   a new job continuing ID's full training state at that checkpoint
      jobs list | get ID | checkpoints ID | cancel ID | pause ID | resume ID | events ID
      jobs logs ID [-f]            the job's log; -f follows it to the end with a progress line
      sample --model ID --prompt TEXT… [--n N] [--steps N] [--guidance G] [--sampler S] [--seed N] [--png FILE]
             [--precision fp32|bf16]       bf16: products in bf16 mixed precision (AVX512-BF16 or AMX CPUs)
      --version                    version, BLAS kernels and threads in use
      help                         this text
    """)
}

/// The data directory, with its SQLite database or the PostgreSQL server of `--database`
/// (else `$PREFTUNE_DATABASE`): `postgres://user@host/db` or `postgresql:///db?host=/socket/dir`.
func openDataDirectory(_ arguments: [String], connections: Int = 8) -> DataDirectory {
    let path = option("--data-dir", in: arguments) ?? "./data"
    let url = databaseURL(arguments)
    do {
        return try DataDirectory.open(path, databaseURL: url, connections: connections)
    } catch {
        fail("cannot open the data directory \(path)\(url.map { " with the database \(PostgresConnection.redacted($0))" } ?? ""): \(error)")
    }
}

func databaseURL(_ arguments: [String]) -> String? {
    guard let url = option("--database", in: arguments) ?? ProcessInfo.processInfo.environment["PREFTUNE_DATABASE"].flatMap({ $0.isEmpty ? nil : $0 })
    else { return nil }
    guard url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") else {
        fail("--database takes a PostgreSQL URL (postgres://user@host/db); without it the data directory's SQLite database is used", status: 2)
    }
    return url
}

/// SIGTERM and SIGINT ask the process to stop: each signals `stopRequested`. Called before a
/// command starts anything. A stop sent while the command starts up is kept for it: a process
/// that started with the signals blocked (as a child spawned from a libdispatch thread does: it
/// inherits that thread's mask) holds one sent early as pending, and ignoring the signal, which
/// a dispatch source needs, would discard it; so a pending one is counted first. (Set up after
/// the server listened, a SIGTERM sent as soon as it answered was lost that way, and the server
/// never stopped.)
func catchStopSignals(_ stopRequested: DispatchSemaphore) -> [DispatchSourceSignal] {
    var pending = sigset_t()
    sigpending(&pending)
    return [SIGTERM, SIGINT].map { signalNumber in
        let wasPending = sigismember(&pending, signalNumber) == 1
        signal(signalNumber, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
        source.setEventHandler { stopRequested.signal() }
        source.resume()
        if wasPending { stopRequested.signal() }
        return source
    }
}

func serve(_ arguments: [String]) -> Never {
    let stopRequested = DispatchSemaphore(value: 0)
    let stopSignals = catchStopSignals(stopRequested)
    let listen = option("--listen", in: arguments) ?? "127.0.0.1:8080"
    guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port) else {
        fail("--listen takes HOST:PORT, e.g. 127.0.0.1:8080", status: 2)
    }
    var workers = WorkerPool.Configuration.defaults()
    if let value = option("--workers", in: arguments) {
        guard let count = Int(value), (0...64).contains(count) else { fail("--workers takes a number of worker processes (jobs trained at once), 0-64", status: 2) }
        workers.workers = count
    }
    workers.threadsPerJob = threadsPerJob(arguments) ?? workers.threadsPerJob
    _ = (minimumRunSeconds(arguments), fairShareWindow(arguments))  // checked here, applied by the workers
    selectMath(arguments)
    var settings = ServiceSettings.defaults(workers: max(1, workers.workers))
    settings.memoryBudget = memoryPerJob(arguments) ?? settings.memoryBudget
    if let value = option("--max-sample-flops", in: arguments) {
        guard let flops = Double(value), flops > 0, flops.isFinite else { fail("--max-sample-flops takes a number such as 5e12", status: 2) }
        settings.maxSampleFLOPs = flops
    }
    if let value = option("--quota-storage", in: arguments) {
        guard let bytes = ByteCount.parse(value) else { fail("--quota-storage takes a size such as 50G", status: 2) }
        settings.quotas.storageBytes = bytes
    }
    for (flag, path) in [("--quota-files", \ProjectQuotas.files), ("--quota-models", \ProjectQuotas.models), ("--quota-jobs", \ProjectQuotas.activeJobs)] {
        guard let value = option(flag, in: arguments) else { continue }
        guard let count = Int(value), count >= 0 else { fail("\(flag) takes a number", status: 2) }
        settings.quotas[keyPath: path] = count
    }
    if let allowed = webhookAllow(arguments) { settings.webhookAllow = allowed }
    settings.metricsToken = option("--metrics-token", in: arguments)
    let grace = option("--shutdown-grace", in: arguments).map { value -> Double in
        guard let seconds = Double(value), seconds > 0, seconds <= 3600 else { fail("--shutdown-grace takes seconds, 1-3600", status: 2) }
        return seconds
    } ?? 30
    workers.memoryBudget = settings.memoryBudget
    // Every connection is a descriptor (thousands of log followers): lift the soft limit to the hard one.
    var files = rlimit()
    if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &files) == 0, files.rlim_cur < files.rlim_max {
        files.rlim_cur = files.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &files)
    }
    let connections = option("--database-connections", in: arguments).map { value -> Int in
        guard let count = Int(value), (1...1000).contains(count) else { fail("--database-connections takes a number, 1-1000", status: 2) }
        return count
    } ?? 16
    let data = openDataDirectory(arguments, connections: connections)
    if data.createdAdminKey { print("created an admin API key in \(data.adminKeyPath) (readable by this user only)") }
    let application = Application(dataDirectory: data, settings: settings)
    // Worker processes find the same database through the environment (not their command
    // line, which every user of the machine can read).
    if let url = databaseURL(arguments) { setenv("PREFTUNE_DATABASE", url, 1) }
    let fleet = (data.database as? PostgresDatabase).map { FleetNotifications(database: $0, changes: application.statusChanges) }
    fleet?.start()
    // The API never trains: each worker is a process of its own, which a job that runs out
    // of memory or crashes takes down alone.
    let workerArguments = ["worker", "--supervised", "--data-dir", data.path, "--threads-per-job", "\(workers.threadsPerJob)",
                           "--max-job-memory", "\(settings.memoryBudget.bytes)"]
        + ["--min-run-seconds", "--fair-share-window", "--webhook-allow"].flatMap { flag in option(flag, in: arguments).map { [flag, $0] } ?? [] }
        + ["--math", MathBackend.current.rawValue]
    let supervisor = WorkerSupervisor(configuration: .init(processes: workers.workers, executable: currentExecutable(), arguments: workerArguments),
                                      data: data, store: application.jobs, changes: application.statusChanges, telemetry: application.telemetry)
    var configuration = HTTPServer.Configuration()
    configuration.host = String(listen[..<colon])
    configuration.port = port
    application.configure(&configuration)
    let server = HTTPServer(configuration: configuration, answer: application.answer)
    application.serve(on: server)
    do {
        let bound = try server.start()
        print("preftune \(version) listening on http://\(configuration.host):\(bound) (data: \(data.path), database: \(data.database.location), BLAS: \(BLASRuntime.coreName))")
        print("workers: \(workers.workers) processes × \(workers.threadsPerJob) threads per job, at nice 10, math on \(MathBackend.description); memory per job at most \(ByteCount.describe(settings.memoryBudget.bytes))")
        fflush(nil)
    } catch {
        fail("\(error)")
    }
    supervisor.start()
    // SIGTERM and SIGINT stop gracefully: no new connections, in-flight requests finish,
    // running jobs write a training state and go back to the queue.
    let stopping = DedicatedThreads(threads: 1, name: "stop")
    stopping.run {
        stopRequested.wait()
        print("stopping: finishing requests in flight; running jobs save their state (at most \(Int(grace)) s)")
        fflush(nil)
        // Past the grace period the process ends regardless: a stop must never hang.
        DispatchQueue.global().asyncAfter(deadline: .now() + grace) {
            print("stopping: the grace period of \(Int(grace)) s ran out; exiting now")
            fflush(nil)
            _exit(1)
        }
        application.stop()
        server.shutdown()
        supervisor.stop()
    }
    stopping.stop()  // does not wait: the thread ends once the stop above has run
    server.wait()
    withExtendedLifetime(stopSignals) {}
    supervisor.stop()
    print("stopped")
    fflush(nil)
    // Everything is stored; exit() would run OpenBLAS's exit handler, which can wait on its threads.
    _exit(0)
}

/// `--min-run-seconds N|never`: how long a job runs before fair sharing may preempt it (nil: not given).
func minimumRunSeconds(_ arguments: [String]) -> Int?? {
    option("--min-run-seconds", in: arguments).map { value -> Int? in
        if value == "never" { return nil }
        guard let seconds = Int(value), (1...86_400).contains(seconds) else { fail("--min-run-seconds takes seconds (1-86400), or never", status: 2) }
        return seconds
    }
}

/// `--math onednn|openblas`: the library of the matrix products, for the whole process
/// (else `PREFTUNE_MATH`, else `MathBackend.preferred`).
func selectMath(_ arguments: [String]) {
    guard let value = option("--math", in: arguments) else { return }
    guard let backend = MathBackend(rawValue: value) else {
        fail("--math takes \(MathBackend.allCases.map(\.rawValue).joined(separator: " or "))", status: 2)
    }
    do { try MathBackend.select(backend) } catch { fail("--math \(value): \(error)", status: 2) }
}

/// `--webhook-allow CIDR,…`: private ranges webhooks and graders may reach (nil: not given).
func webhookAllow(_ arguments: [String]) -> [IPNetwork]? {
    option("--webhook-allow", in: arguments).map { value in
        value.split(separator: ",").map { piece in
            guard let network = IPNetwork(String(piece).trimmingCharacters(in: .whitespaces)) else {
                fail("--webhook-allow takes CIDR ranges separated by commas, e.g. 10.1.0.0/16,fd00::/8; '\(piece)' is not one", status: 2)
            }
            return network
        }
    }
}

/// `--fair-share-window SECONDS`: how far back a project's use of the workers counts.
func fairShareWindow(_ arguments: [String]) -> Int? {
    option("--fair-share-window", in: arguments).map { value -> Int in
        guard let seconds = Int(value), (60...30 * 86_400).contains(seconds) else { fail("--fair-share-window takes seconds, 60 to 2592000", status: 2) }
        return seconds
    }
}

func threadsPerJob(_ arguments: [String]) -> Int? {
    option("--threads-per-job", in: arguments).map { value in
        guard let count = Int(value), (1...256).contains(count) else { fail("--threads-per-job takes a number of BLAS threads, 1-256", status: 2) }
        return count
    }
}

func memoryPerJob(_ arguments: [String]) -> MemoryBudget? {
    option("--max-job-memory", in: arguments).map { value in
        guard let bytes = ByteCount.parse(value), bytes >= 16 << 20 else { fail("--max-job-memory takes a size such as 4G or 512M (at least 16M)", status: 2) }
        return MemoryBudget(bytes: bytes)
    }
}

/// This program's path, for starting its worker processes.
func currentExecutable() -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    return length > 0 ? String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
}

/// `preftune worker`: one job at a time, from the data dir's queue. Started by `serve`
/// (`--supervised`: it hears the API's status changes on standard input, reports on standard
/// output, and stops when its supervisor goes), or on its own beside a server on this machine.
func worker(_ arguments: [String]) -> Never {
    // Before anything else starts a thread: the others now are OpenBLAS's.
    let blasThreads = CPUPriority.threadsAtStartup()
    var configuration = WorkerPool.Configuration.defaults()
    configuration.workers = 1
    configuration.blasThreads = blasThreads
    configuration.threadsPerJob = threadsPerJob(arguments) ?? configuration.threadsPerJob
    selectMath(arguments)
    configuration.memoryBudget = memoryPerJob(arguments) ?? configuration.memoryBudget
    configuration.egress = EgressPolicy(allowed: webhookAllow(arguments) ?? [])
    let supervised = arguments.contains("--supervised")
    let stopRequested = DispatchSemaphore(value: 0)
    let stopSignals = catchStopSignals(stopRequested)
    if supervised, preftune_terminate_with_parent(SIGTERM, getppid()) != 0 { fail("the server that started this worker is gone") }
    if let value = option("--lease-seconds", in: arguments) {
        guard let seconds = Int(value), (3...3600).contains(seconds) else { fail("--lease-seconds takes seconds, 3-3600", status: 2) }
        configuration.leaseSeconds = seconds
        configuration.heartbeatSeconds = min(configuration.heartbeatSeconds, Double(seconds) / 3)
    }
    if let minimum = minimumRunSeconds(arguments) { configuration.minimumRunSeconds = minimum }
    let data = openDataDirectory(arguments, connections: 4)
    let changes = JobStatusChanges()
    let channel = supervised ? WorkerChannel(changes: changes, onSupervisorGone: { stopRequested.signal() }) : nil
    // On its own, beside a fleet: status changes and log growth travel through the database
    // (supervised, its server carries them).
    let fleet = supervised ? nil : (data.database as? PostgresDatabase).map { FleetNotifications(database: $0, changes: changes) }
    fleet?.start()
    let window = fairShareWindow(arguments) ?? 3600
    let pool = WorkerPool(data: data, store: SQLJobStore(database: data.database, fairShareWindowSeconds: window), changes: changes, configuration: configuration,
                          telemetry: channel)
    FileHandle.standardError.write(Data("preftune: worker pid \(getpid()): \(configuration.threadsPerJob) threads per job (math: \(MathBackend.description)), at nice 10 with \(blasThreads.count) OpenBLAS threads; memory per job at most \(ByteCount.describe(configuration.memoryBudget.bytes))\n".utf8))
    pool.start()
    stopRequested.wait()
    // A running job writes its training state and goes back to the queue.
    pool.stop()
    withExtendedLifetime(stopSignals) {}
    _exit(0)
}

/// `pg_dump` of the whole database in its custom format (restored with `pg_restore`): one
/// consistent snapshot, taken in a repeatable-read transaction that does not stop writers.
/// Written beside `target` and renamed into place, so `target` is whole or absent.
func backupPostgres(url: String, to target: String) -> Never {
    let partial = target + ".partial"
    let dump = Process()
    dump.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    dump.arguments = ["pg_dump", "--format=custom", "--file=\(partial)", "--dbname=\(url)"]
    do { try dump.run() } catch {
        fail("backup needs pg_dump (Debian's postgresql-client, at the server's major version or newer): \(error)")
    }
    dump.waitUntilExit()
    guard dump.terminationStatus == 0 else {
        unlink(partial)
        fail("pg_dump of \(PostgresConnection.redacted(url)) failed (exit \(dump.terminationStatus)); its message is above")
    }
    guard rename(partial, target) == 0 else { fail("cannot move the backup to \(target): \(String(cString: strerror(errno)))") }
    print("backed up \(PostgresConnection.redacted(url)) to \(target) (pg_dump custom format; restore with pg_restore)")
    exit(0)
}

/// `preftune projects list | set NAME [--max-priority N] [--max-running N|none]`: the operator's
/// limits on each project sharing the workers.
func projects(_ arguments: [String]) -> Never {
    let data = openDataDirectory(arguments, connections: 2)
    let store = SQLProjectStore(database: data.database)
    do {
        switch arguments.first {
        case "list":
            for project in try store.list() {
                print("\(project.name)  \(project.id)  max priority \(project.limits.maxPriority)  max running \(project.limits.maxRunning.map(String.init) ?? "unlimited")  weight \(project.limits.weight)")
            }
        case "set":
            let name = arguments[1]
            let priority = option("--max-priority", in: arguments).map { value -> Int in
                guard let number = Int(value), ProjectLimits.priorities.contains(number) else { fail("--max-priority takes -100 to 100", status: 2) }
                return number
            }
            let running = option("--max-running", in: arguments).map { value -> Int? in
                if value == "none" || value == "unlimited" { return nil }
                guard let number = Int(value), number >= 0 else { fail("--max-running takes a number of jobs, or none", status: 2) }
                return number
            }
            let weight = option("--weight", in: arguments).map { value -> Double in
                guard let number = Double(value), number > 0, number <= 1000 else { fail("--weight takes a number above 0, at most 1000", status: 2) }
                return number
            }
            guard priority != nil || running != nil || weight != nil else { fail("projects set needs --max-priority, --max-running or --weight", status: 2) }
            try store.set(project: name, maxPriority: priority, maxRunning: running, weight: weight)
            print("project \(name): max priority \(priority.map(String.init) ?? "unchanged"), max running \(running.map { $0.map(String.init) ?? "unlimited" } ?? "unchanged")")
        default:
            fail("usage: preftune projects list | set NAME [--max-priority N] [--max-running N|none] [--weight W]", status: 2)
        }
    } catch {
        fail("\(error)")
    }
    exit(0)
}

func keys(_ arguments: [String]) -> Never {
    let data = openDataDirectory(arguments)
    do {
        switch arguments.first {
        case "create":
            guard let project = option("--project", in: arguments) else { fail("keys create needs --project NAME", status: 2) }
            let created = try data.database.withWriter { try APIKeys(connection: $0).create(project: project, admin: arguments.contains("--admin")) }
            print("created \(created.id) for project \(project); the key (shown only now):")
            print(created.secret)
        case "list":
            for record in try data.database.read({ try APIKeys(connection: $0).list() }) {
                let state = record.revokedAt == nil ? "active" : "revoked"
                print("\(record.id)  \(record.prefix)…  project \(record.projectName)\(record.isAdmin ? " (admin)" : "")  \(state)")
            }
        case "revoke":
            guard arguments.count >= 2, !arguments[1].hasPrefix("--") else { fail("keys revoke needs a KEY_ID (see keys list)", status: 2) }
            guard try data.database.withWriter({ try APIKeys(connection: $0).revoke(arguments[1]) }) else { fail("no active key \(arguments[1])") }
            print("revoked \(arguments[1])")
        default:
            fail("keys takes create, list or revoke", status: 2)
        }
    } catch {
        fail("\(error)")
    }
    exit(0)
}

switch arguments.first {
case "--version", "version":
    print("preftune \(version)")
    print("math: \(MathBackend.description) (of \(MathBackend.allCases.map(\.rawValue).joined(separator: ", ")); --math or PREFTUNE_MATH chooses)")
    print("blas: OpenBLAS \(BLASRuntime.coreName) kernels, \(BLASRuntime.threadCount) threads (OPENBLAS_CORETYPE=\(ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "unset"))")
    print("onednn: \(MathBackend.description(of: .onednn)), OpenMP threads waiting \(ProcessInfo.processInfo.environment["OMP_WAIT_POLICY"] ?? "unset") (OMP_WAIT_POLICY)")
    print("bf16: \(MathPrecision.bf16Refusal.map { "no — \($0)" } ?? "yes (\"precision\": \"bf16\" on jobs and sample requests)")")
case "serve":
    serve(Array(arguments.dropFirst()))
case "worker":
    worker(Array(arguments.dropFirst()))
case "keys":
    keys(Array(arguments.dropFirst()))
case "projects":
    projects(Array(arguments.dropFirst()))
case "files":
    ClientCommands.files(Array(arguments.dropFirst()))
case "models":
    ClientCommands.models(Array(arguments.dropFirst()))
case "jobs":
    ClientCommands.jobs(Array(arguments.dropFirst()))
case "sample":
    ClientCommands.sample(Array(arguments.dropFirst()))
case "backup":
    let rest = Array(arguments.dropFirst())
    guard let target = option("--to", in: rest) else { fail("usage: preftune backup --to FILE [--data-dir ./data] [--database postgres://…]", status: 2) }
    if let url = databaseURL(rest) {
        backupPostgres(url: url, to: target)
    }
    let data = openDataDirectory(rest)
    do {
        guard let database = data.database as? Database else { fail("backup: not an SQLite database") }
        try database.backup(to: target)
        print("backed up \(data.databasePath) to \(target)")
    } catch {
        fail("\(error)")
    }
case "inspect-model":
    guard arguments.count == 2 else { fail("usage: preftune inspect-model <file.safetensors>", status: 2) }
    do {
        let model = try ModelFile.load(arguments[1])
        print("config: \(model.config.json)")
        print("parameters: \(model.parameters.count)")
    } catch {
        fail("\(error)")
    }
case nil, "help", "--help", "-h":
    printUsage()
default:
    printUsage()
    fail("unknown command '\(arguments[0])'", status: 2)
}
