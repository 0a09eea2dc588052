import Foundation
import Synchronization
import HTTP
import Store

/// `GET /v1/fine_tuning/jobs/{id}/logs`: the job's `log.txt` as text; `tail=N` for the
/// last lines; `follow=true` keeps the response open (chunked) and streams new lines
/// until the job ends or the client leaves. With `Accept: text/event-stream` the same
/// as Server-Sent Events whose ids are line numbers, so `Last-Event-ID` resumes without
/// gaps or repeats. A follower holds no thread while it waits: it is a suspended task
/// woken when the job's log grows or its status changes.
enum LogsAPI {
    static let maximumTail = 100_000

    static func add(to router: inout Router, data: DataDirectory, store: any JobStore, followers: LogFollowers) {
        router.add("GET", "/v1/fine_tuning/jobs/{id}/logs") { context in
            let job = try JobsAPI.find(context, store: store)
            let query = context.request.query
            let tail = try Query.integer(query["tail"], param: "tail", range: 0...maximumTail)
            let sse = context.request.head.header("accept")?.contains("text/event-stream") == true
            guard ["true", "false", "1", "0", nil].contains(query["follow"]) else { throw APIError.invalid("follow must be true or false", param: "follow") }
            let follow = sse || query["follow"] == "true" || query["follow"] == "1"
            var after: Int?
            if let header = context.request.head.header("last-event-id") {
                guard let line = Int(header.trimmingCharacters(in: .whitespaces)), line >= 0 else {
                    throw APIError.invalid("Last-Event-ID must be a line number", param: "Last-Event-ID")
                }
                // Only an SSE client resumes by id; a plain read ignores it.
                if sse { after = line }
            }
            let path = data.artifacts.localPath(.jobLog(job.id))
            let start = LogReader.start(path: path, afterLine: after, tail: tail)
            guard follow else {
                // The whole log streams from disk; a tail is read from its offset to the end.
                guard data.artifacts.exists(.jobLog(job.id)) else {
                    return HTTPResponse(status: 200, headers: [("Content-Type", "text/plain; charset=utf-8")], body: .bytes([]))
                }
                guard start.offset > 0, let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber else {
                    return try FileResponse.make(path: path, contentType: "text/plain; charset=utf-8", request: context.request)
                }
                return HTTPResponse(status: 200, headers: [("Content-Type", "text/plain; charset=utf-8")],
                                    body: .file(path: path, offset: start.offset, size: size.intValue - start.offset))
            }
            let headers: [(String, String)] = sse
                ? [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")]
                : [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")]
            return HTTPResponse(status: 200, headers: headers,
                                body: .stream(followers.follow(job.id, from: start, sse: sse, store: store)))
        }
    }
}

/// Reads a growing log file from an offset, whole lines at a time, counting them.
struct LogReader {
    let path: String
    var offset: Int
    /// Lines before `offset`.
    var lineNumber: Int

    struct Line { let number: Int; let text: String }

    /// Where to begin: after line `afterLine`, or at the last `tail` lines, or at the start. One pass
    /// over the file in 1 MiB pieces; for a tail, a ring of the last `tail + 1` line ends.
    static func start(path: String, afterLine: Int?, tail: Int?) -> LogReader {
        guard afterLine != nil || tail != nil, let handle = FileHandle(forReadingAtPath: path) else {
            return LogReader(path: path, offset: 0, lineNumber: 0)
        }
        defer { try? handle.close() }
        let ringSize = (tail ?? 0) + 1
        var ends = [Int](repeating: 0, count: ringSize)   // ends[n % ringSize]: the offset after line n
        var lines = 0, position = 0
        while let piece = try? handle.read(upToCount: 1 << 20), !piece.isEmpty {
            for (i, byte) in piece.enumerated() where byte == 10 {
                lines += 1
                ends[lines % ringSize] = position + i + 1
                if lines == afterLine { return LogReader(path: path, offset: position + i + 1, lineNumber: lines) }
            }
            position += piece.count
        }
        // After a line beyond the end: from the end of the last whole line. A tail: from the end of line lines − tail.
        let skip = afterLine.map { min($0, lines) } ?? max(0, lines - tail!)
        return LogReader(path: path, offset: skip == 0 ? 0 : ends[skip % ringSize], lineNumber: skip)
    }

    /// The whole lines written since the last call, up to about `limit` bytes (a line still being
    /// written waits); `more` when there is more to read now.
    mutating func readNewLines(limit: Int = 1 << 20) -> (lines: [Line], more: Bool) {
        guard let handle = FileHandle(forReadingAtPath: path) else { return ([], false) }
        defer { try? handle.close() }
        guard (try? handle.seek(toOffset: UInt64(offset))) != nil, let data = try? handle.read(upToCount: limit), !data.isEmpty else { return ([], false) }
        let bytes = [UInt8](data)
        guard let lastNewline = bytes.lastIndex(of: 10) else { return ([], false) }
        var lines: [Line] = []
        var start = 0
        for i in 0...lastNewline where bytes[i] == 10 {
            lineNumber += 1
            lines.append(Line(number: lineNumber, text: String(decoding: bytes[start..<i], as: UTF8.self)))
            start = i + 1
        }
        offset += lastNewline + 1
        return (lines, bytes.count == limit)
    }
}

/// The log followers of every job: each waits on its own stream of wake-ups, sent when
/// its job's log grows or its status changes, and every 15 s so SSE can keep the
/// connection alive through proxies.
public final class LogFollowers: Sendable {
    static let keepAliveSeconds = 15.0

    struct Followers {
        var waiting: [String: [UUID: AsyncStream<Void>.Continuation]] = [:]
        /// Jobs with followers that ended while followed.
        var ended: Set<String> = []
    }
    private let followers = Mutex(Followers())
    /// Wakes every follower every 15 s (SSE's keep-alive comment).
    private let ticker = Mutex<Task<Void, Never>?>(nil)
    /// Where followers run: the server's handler threads (`Application.serve(on:)`), else Swift's global pool.
    private let preferredExecutor = Mutex<(any TaskExecutor)?>(nil)

    func run(on executor: any TaskExecutor) { preferredExecutor.withLock { $0 = executor } }

    /// `polling`: every `seconds`, each followed job's status is read from `store` and every
    /// follower looks at its file, for logs written on other machines (a fleet), whose
    /// notifications may not arrive; the files' growth cannot be watched there (inotify does
    /// not see writes made by other NFS clients). Without it, followers hear of every change
    /// from this process's own notifications and wake every 15 s for SSE's keep-alive.
    init(changes: JobStatusChanges, polling: (store: any JobStore, seconds: Double)? = nil) {
        changes.observeLogs { [weak self] jobID in self?.wake(jobID) }
        changes.observe { [weak self] jobID, status in self?.statusChanged(jobID, status) }
        let interval = polling?.seconds ?? Self.keepAliveSeconds
        let task = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(interval))
                guard let self else { return }
                if let store = polling?.store {
                    for jobID in followed() {
                        if let status = (try? store.job(jobID, project: nil))??.status, status.isTerminal { statusChanged(jobID, status) }
                    }
                }
                wakeAll()
            }
        }
        ticker.withLock { $0 = task }
    }

    /// Jobs with followers now.
    func followed() -> [String] { followers.withLock { Array($0.waiting.keys) } }

    deinit { ticker.withLock { $0?.cancel() } }

    /// Followers connected now.
    public var count: Int { followers.withLock { $0.waiting.values.reduce(0) { $0 + $1.count } } }

    func wake(_ jobID: String) {
        for continuation in followers.withLock({ $0.waiting[jobID].map { Array($0.values) } ?? [] }) { continuation.yield() }
    }

    func wakeAll() {
        for continuation in followers.withLock({ $0.waiting.values.flatMap(\.values) }) { continuation.yield() }
    }

    func statusChanged(_ jobID: String, _ status: JobStatus) {
        if status.isTerminal { followers.withLock { if $0.waiting[jobID] != nil { _ = $0.ended.insert(jobID) } } }
        wake(jobID)
    }

    func hasEnded(_ jobID: String) -> Bool { followers.withLock { $0.ended.contains(jobID) } }

    private func subscribe(_ jobID: String) -> (UUID, AsyncStream<Void>) {
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let token = UUID()
        followers.withLock { $0.waiting[jobID, default: [:]][token] = continuation }
        return (token, stream)
    }

    private func unsubscribe(_ jobID: String, _ token: UUID) {
        let continuation: AsyncStream<Void>.Continuation? = followers.withLock { followers in
            let removed = followers.waiting[jobID]?.removeValue(forKey: token)
            if followers.waiting[jobID]?.isEmpty == true {
                followers.waiting[jobID] = nil
                followers.ended.remove(jobID)
            }
            return removed
        }
        continuation?.finish()
    }

    /// The log from `start` on, then each new line as it is written, until the job ends
    /// (after its last line) or the client leaves.
    func follow(_ jobID: String, from start: LogReader, sse: Bool, store: any JobStore) -> AsyncStream<[UInt8]> {
        let (output, continuation) = AsyncStream<[UInt8]>.makeStream()
        // Subscribed before the status is read: an end between the two is not missed.
        let (token, wakes) = subscribe(jobID)
        let endedAlready = (try? store.job(jobID, project: nil))??.status.isTerminal ?? false
        let task = Task(executorPreference: preferredExecutor.withLock { $0 }) { [self] in
            var reader = start
            var lastSent = Date()
            var iterator = wakes.makeAsyncIterator()
            repeat {
                let finished = endedAlready || hasEnded(jobID)
                // A long backlog goes out a megabyte at a time.
                var sent = false, more = true
                while more, !Task.isCancelled {
                    let (lines, rest) = reader.readNewLines()
                    more = rest
                    guard !lines.isEmpty else { break }
                    let text = sse ? lines.map { "id: \($0.number)\ndata: \($0.text)\n\n" }.joined() : lines.map { $0.text + "\n" }.joined()
                    continuation.yield(Array(text.utf8))
                    sent = true
                }
                if sent {
                    lastSent = Date()
                } else if sse, Date().timeIntervalSince(lastSent) >= Self.keepAliveSeconds - 1 {
                    continuation.yield(Array(": keep-alive\n\n".utf8))
                    lastSent = Date()
                }
                if finished {
                    let status = (try? store.job(jobID, project: nil))??.status.rawValue ?? "unknown"
                    if sse { continuation.yield(Array("event: end\ndata: {\"status\":\"\(status)\"}\n\n".utf8)) }
                    break
                }
            } while await iterator.next() != nil
            continuation.finish()
        }
        continuation.onTermination = { [weak self] _ in
            task.cancel()
            self?.unsubscribe(jobID, token)
        }
        return output
    }
}
