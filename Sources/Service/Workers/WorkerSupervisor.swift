import CLinux
import Foundation
import Jobs
import Store
import Synchronization
import Threads
import Training

/// `preftune serve --workers N`: N worker processes (`preftune worker --supervised`), each
/// training one job at a time with threads, memory and BLAS settings of its own, so a job
/// that exhausts memory or crashes takes down its worker and nothing else. A worker that
/// dies is started again after a backoff; its last lines of standard error go into the log
/// of the job it was training, whose lease ends at once, so the job resumes from its last
/// training state on the next worker free.
///
/// The supervisor relays status changes both ways over each worker's standard input and
/// output (`WorkerMessage`): pause and cancel reach a running job at once, and the API's
/// webhooks, log followers and /metrics hear of what the workers do.
public final class WorkerSupervisor: Sendable {
    public struct Configuration: Sendable {
        /// Worker processes, each training one job at a time.
        public var processes: Int
        /// This program, as the workers are started.
        public var executable: String
        /// Each worker's arguments after the program name (`worker --supervised --data-dir …`).
        public var arguments: [String]
        /// Seconds before a dead worker starts again, by how many times it died in a row.
        public var restartDelays: [Double] = [0.5, 1, 2, 4, 8, 16, 30]
        /// A worker that ran this long before dying starts again after the shortest delay.
        public var stableSeconds = 60.0
        /// Lines of a dead worker's standard error kept for its job's log.
        public var lastLines = 20

        public init(processes: Int, executable: String, arguments: [String]) {
            self.processes = processes
            self.executable = executable
            self.arguments = arguments
        }
    }

    public let configuration: Configuration
    let data: DataDirectory
    let store: any JobStore
    let changes: JobStatusChanges
    let telemetry: Telemetry

    struct Child { let pid: pid_t; let input: Int32 }
    struct State {
        var stopping = false
        var children: [Int: Child] = [:]
        var threads: [DedicatedThreads] = []
    }
    private let state = Mutex(State())
    /// Cuts a restart's backoff short when the supervisor stops.
    private let stopped = DispatchSemaphore(value: 0)

    public init(configuration: Configuration, data: DataDirectory, store: any JobStore, changes: JobStatusChanges, telemetry: Telemetry) {
        self.configuration = configuration
        self.data = data
        self.store = store
        self.changes = changes
        self.telemetry = telemetry
        changes.observe(origins: [.local, .fleet]) { [weak self] jobID, status in self?.broadcast(.status(jobID: jobID, status)) }
    }

    /// Pids of the worker processes running now, by worker number.
    public var workerPIDs: [Int: pid_t] { state.withLock { $0.children.mapValues(\.pid) } }

    public func start() {
        telemetry.workersStarted(configuration.processes)
        let threads = (0..<configuration.processes).map { DedicatedThreads(threads: 1, name: "supervise-\($0)") }
        state.withLock { $0.threads = threads }
        for (index, thread) in threads.enumerated() {
            thread.run { [self] in supervise(index) }
            thread.stop()
        }
    }

    /// Asks every worker to stop (SIGTERM: running jobs save their state and go back to the
    /// queue) and returns when all have exited.
    public func stop() {
        let (children, threads) = state.withLock { state in
            state.stopping = true
            return (Array(state.children.values), state.threads)
        }
        for child in children { kill(child.pid, SIGTERM) }
        for _ in threads { stopped.signal() }
        for thread in threads { thread.join() }
    }

    private var isStopping: Bool { state.withLock { $0.stopping } }

    // MARK: - One worker's life, again and again

    private func supervise(_ index: Int) {
        var deathsInARow = 0
        while !isStopping {
            let started = Date()
            let ran = runWorker(index)
            if isStopping { break }
            deathsInARow = Date().timeIntervalSince(started) >= configuration.stableSeconds ? 1 : deathsInARow + 1
            let delay = configuration.restartDelays[min(deathsInARow, configuration.restartDelays.count) - 1]
            if let (pid, status, lastLines) = ran {
                let death = Self.describe(status)
                ServerLog.write("worker-\(index) (pid \(pid)) \(death); starting it again in \(delay) s")
                recoverJobs(of: pid, death: death, lastLines: lastLines)
            } else {
                ServerLog.write("worker-\(index): cannot start \(configuration.executable): \(String(cString: strerror(errno))); trying again in \(delay) s")
            }
            _ = stopped.wait(timeout: .now() + delay)
        }
    }

    /// Starts worker `index` and waits for it to exit: its pid, wait status and last lines of
    /// standard error; nil when it could not be started.
    private func runWorker(_ index: Int) -> (pid: pid_t, status: Int32, lastLines: [String])? {
        var input: [Int32] = [-1, -1], output: [Int32] = [-1, -1], errors: [Int32] = [-1, -1]
        guard preftune_pipe(&input) == 0 else { return nil }
        guard preftune_pipe(&output) == 0 else { close(input[0]); close(input[1]); return nil }
        guard preftune_pipe(&errors) == 0 else { [input[0], input[1], output[0], output[1]].forEach { close($0) }; return nil }
        // The supervisor writes to a worker that may have died: EPIPE, not SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        let pid = Self.spawn(configuration.executable, [configuration.executable] + configuration.arguments,
                             input: input[0], output: output[1], errors: errors[1])
        // The child has its copies; the supervisor keeps its ends only.
        close(input[0]); close(output[1]); close(errors[1])
        guard pid > 0 else {
            close(input[1]); close(output[0]); close(errors[0])
            return nil
        }
        let proceed = state.withLock { state -> Bool in
            state.children[index] = Child(pid: pid, input: input[1])
            return !state.stopping
        }
        // Stopped while it started: it stops too (what it claimed meanwhile goes back to the queue).
        if !proceed { kill(pid, SIGTERM) }

        let (messagesFD, errorsFD) = (output[0], errors[0])
        let messages = DedicatedThreads(threads: 1, name: "worker-\(index)-out")
        messages.run { [self] in
            LineReader(fd: messagesFD, maximumLineBytes: WorkerMessage.maximumLineBytes).forEachLine { line in received(line, from: index) }
            close(messagesFD)
        }
        messages.stop()
        let lastLines = Mutex<[String]>([])
        let diagnostics = DedicatedThreads(threads: 1, name: "worker-\(index)-err")
        diagnostics.run { [configuration] in
            LineReader(fd: errorsFD, maximumLineBytes: 4096).forEachLine { bytes in
                let line = String(decoding: bytes, as: UTF8.self)
                // The operator sees a worker's diagnostics in the server's, marked with its name.
                ServerLog.write("worker-\(index): \(line.hasPrefix("preftune: ") ? String(line.dropFirst(10)) : line)")
                lastLines.withLock { lines in
                    lines.append(line)
                    if lines.count > configuration.lastLines { lines.removeFirst(lines.count - configuration.lastLines) }
                }
            }
            close(errorsFD)
        }
        diagnostics.stop()

        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        // Its pipes reach end of file now that it is gone.
        messages.join()
        diagnostics.join()
        state.withLock { $0.children[index] = nil }
        close(input[1])
        return (pid, status, lastLines.withLock { $0 })
    }

    static func spawn(_ path: String, _ arguments: [String], input: Int32, output: Int32, errors: Int32) -> pid_t {
        // The server's environment, with `KernelSelection`'s settings (OMP_WAIT_POLICY among them)
        // already in it: `serve` re-executed itself with them.
        let environment = ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }
        func cStrings(_ strings: [String]) -> [UnsafeMutablePointer<CChar>?] { strings.map { strdup($0) } + [nil] }
        let argv = cStrings(arguments), envp = cStrings(environment)
        defer { (argv + envp).forEach { free($0) } }
        return pid_t(preftune_spawn(path, argv, envp, input, output, errors))
    }

    static func describe(_ status: Int32) -> String {
        // WIFSIGNALED / WTERMSIG / WEXITSTATUS, which Swift does not import as macros.
        let signal = status & 0x7F
        if signal != 0 && signal != 0x7F { return "was killed by signal \(signal) (\(String(cString: strsignal(signal))))" }
        return "exited with status \((status >> 8) & 0xFF)"
    }

    // MARK: - Messages

    /// What a worker says: status changes and log lines for the API's listeners, progress for /metrics.
    private func received(_ line: [UInt8], from index: Int) {
        guard let message = try? WorkerMessage(line: line) else {
            return ServerLog.write("worker-\(index): a line on its output is not a message: \(String(decoding: line.prefix(200), as: UTF8.self))")
        }
        switch message {
        case let .status(jobID, status): changes.post(jobID: jobID, status: status, origin: .relayed)
        case let .logAppended(jobID): changes.logAppended(jobID: jobID, origin: .relayed)
        case let .jobStarted(jobID): telemetry.jobStarted(jobID)
        case let .jobStopped(jobID): telemetry.jobStopped(jobID)
        case let .progress(jobID, step, loss, samples): telemetry.jobProgress(jobID, step: step, loss: loss, samples: samples)
        }
    }

    /// A status change the API made, to every worker (the one training the job acts on it;
    /// an idle one claims a job just queued).
    private func broadcast(_ message: WorkerMessage) {
        let line = message.line
        for child in state.withLock({ Array($0.children.values) }) {
            // A pipe takes a small line whole (PIPE_BUF); a worker that stopped reading is dying anyway.
            _ = line.withUnsafeBytes { write(child.input, $0.baseAddress, $0.count) }
        }
    }

    // MARK: - A worker died

    /// The jobs a dead worker held: their logs get its last words, and their leases end now
    /// instead of when they expire, so they resume at once on the next worker free.
    private func recoverJobs(of pid: pid_t, death: String, lastLines: [String]) {
        let owner = "\(ProcessInfo.processInfo.hostName)/\(pid)/"
        guard let leases = try? store.leases() else { return }
        for (jobID, holder) in leases where holder.hasPrefix(owner) {
            telemetry.jobStopped(jobID)
            JobSink.append(["the worker process training this job (pid \(pid)) \(death); its last output:"] + lastLines.map { "  | \($0)" },
                           to: jobID, in: data.artifacts)
            changes.logAppended(jobID: jobID)
            try? store.appendEvent(jobID, level: "error", type: "message",
                                   message: "The worker process training this job \(death); the job resumes from its last training state", data: nil)
            try? store.expireLease(jobID, owner: holder)
        }
    }
}
