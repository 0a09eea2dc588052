import Foundation
import Jobs
import JSON
import Synchronization
import Threads

/// One line between `preftune serve` and a worker process it supervises: a JSON object
/// per line, on the worker's standard input (to it) and output (from it).
///
/// To the worker: the status changes the API makes (a job queued, paused, cancelled), so a
/// running job hears of them at once rather than at its next heartbeat. From the worker: the
/// status changes and log lines of the jobs it trains, and their progress, so the API's
/// webhooks, log followers and /metrics see them as they happen.
public enum WorkerMessage: Equatable, Sendable {
    case status(jobID: String, JobStatus)
    case logAppended(jobID: String)
    case jobStarted(jobID: String)
    case jobStopped(jobID: String)
    case progress(jobID: String, step: Int, loss: Double?, samples: Int)

    /// The longest line either side reads; a longer one is a broken peer.
    static let maximumLineBytes = 4096

    private struct Wire: Codable {
        var kind: String
        var job: String
        var status: JobStatus?
        var step: Int?
        var loss: Double?
        var samples: Int?
        enum CodingKeys: String, CodingKey, CaseIterable { case kind, job, status, step, loss, samples }
    }

    /// The message as one line, newline included.
    public var line: [UInt8] {
        let wire = switch self {
        case let .status(job, status): Wire(kind: "status", job: job, status: status)
        case let .logAppended(job): Wire(kind: "log", job: job)
        case let .jobStarted(job): Wire(kind: "started", job: job)
        case let .jobStopped(job): Wire(kind: "stopped", job: job)
        case let .progress(job, step, loss, samples): Wire(kind: "progress", job: job, step: step, loss: loss, samples: samples)
        }
        return JSONBodyEncoder.encode(wire, nilMembers: .omitted) + [0x0A]
    }

    public init(line: some Collection<UInt8>) throws {
        let wire = try JSONValueDecoder.decode(Wire.self, from: try JSONParser.parse(line))
        func required<T>(_ value: T?, _ name: String) throws -> T {
            guard let value else { throw JSONFieldError("\(name) is required for \(wire.kind)", path: name) }
            return value
        }
        switch wire.kind {
        case "status": self = .status(jobID: wire.job, try required(wire.status, "status"))
        case "log": self = .logAppended(jobID: wire.job)
        case "started": self = .jobStarted(jobID: wire.job)
        case "stopped": self = .jobStopped(jobID: wire.job)
        case "progress": self = .progress(jobID: wire.job, step: try required(wire.step, "step"), loss: wire.loss, samples: wire.samples ?? 0)
        default: throw JSONFieldError("unknown kind \(wire.kind)", path: "kind")
        }
    }
}

/// Reads a descriptor line by line until end of file, on the calling thread. Lines longer
/// than `maximumLineBytes` are cut there (the rest of such a line is dropped), so a peer
/// cannot make the reader hold more than that.
struct LineReader {
    let fd: Int32
    let maximumLineBytes: Int

    func forEachLine(_ body: ([UInt8]) -> Void) {
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        var line: [UInt8] = []
        var overlong = false
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { break }
            for byte in buffer[0..<n] {
                if byte == 0x0A {
                    body(line)
                    line.removeAll(keepingCapacity: true)
                    overlong = false
                } else if line.count < maximumLineBytes {
                    line.append(byte)
                } else if !overlong {
                    overlong = true
                }
            }
        }
        if !line.isEmpty { body(line) }
    }
}

/// The worker process's end of the channel: what its supervisor says is posted to the
/// worker's `JobStatusChanges`; what the worker's jobs do is written to standard output.
/// When standard input ends, the supervisor is gone: `onSupervisorGone` runs (the worker
/// stops, its jobs saving their state), so no worker outlives the server that started it.
public final class WorkerChannel: TrainingObserver {
    private let output = Mutex<Int32>(STDOUT_FILENO)
    private let reader = DedicatedThreads(threads: 1, name: "supervisor-in")

    public init(changes: JobStatusChanges, onSupervisorGone: @escaping @Sendable () -> Void) {
        changes.observe(origins: [.local]) { [weak self] jobID, status in self?.send(.status(jobID: jobID, status)) }
        changes.observeLogs(origins: [.local]) { [weak self] jobID in self?.send(.logAppended(jobID: jobID)) }
        reader.run {
            LineReader(fd: STDIN_FILENO, maximumLineBytes: WorkerMessage.maximumLineBytes).forEachLine { line in
                guard let message = try? WorkerMessage(line: line) else {
                    return ServerLog.write("a line from the supervisor is not a message: \(String(decoding: line.prefix(200), as: UTF8.self))")
                }
                if case let .status(jobID, status) = message { changes.post(jobID: jobID, status: status, origin: .relayed) }
            }
            onSupervisorGone()
        }
        reader.stop()
    }

    func send(_ message: WorkerMessage) {
        let line = message.line
        // One write per line, under the lock: lines from different threads never interleave.
        output.withLock { fd in
            var written = 0
            while written < line.count {
                let n = line[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                if n < 0, errno == EINTR { continue }
                guard n > 0 else { return }  // the supervisor is gone; stdin's end says so
                written += n
            }
        }
    }

    /// The supervisor counts the processes it started itself.
    public func workersStarted(_ count: Int) {}
    public func jobStarted(_ id: String) { send(.jobStarted(jobID: id)) }
    public func jobStopped(_ id: String) { send(.jobStopped(jobID: id)) }
    public func jobProgress(_ id: String, step: Int, loss: Double?, samples: Int) {
        send(.progress(jobID: id, step: step, loss: loss, samples: samples))
    }
}
