import CLinux
import Foundation
import JSON
import Synchronization
import Threads
#if canImport(Glibc)
import Glibc
#endif

public typealias HTTPHandler = @Sendable (HTTPRequest) async -> HTTPResponse

/// How an application answers a request: at once, on the event loop (a quick read that waits
/// on nothing: no task, no hand-off), or later, from a task on the loop that may await.
public enum HTTPAnswer: Sendable {
    case now(HTTPResponse)
    case later(@Sendable () async -> HTTPResponse)
}

/// The project's own HTTP/1.1 server: one epoll event loop thread per core, each
/// owning its connections and running their handlers as tasks on itself (each loop
/// is a `TaskExecutor`), so a request is read, answered and written on one thread
/// with no hand-off. Work that must not hold a loop (sampling, model builds) runs
/// elsewhere and its awaiting handler resumes on its loop. Keep-alive, pipelined requests answered in
/// order, Content-Length and chunked bodies both ways, `Expect: 100-continue`,
/// streamed responses that hold no thread while idle, limits and timeouts, and
/// graceful shutdown (stop accepting, finish what is in flight, then stop).
public final class HTTPServer: Sendable {
    public struct Configuration: Sendable {
        public var host = "127.0.0.1"
        /// 0 picks a free port (see `port` after `start`).
        public var port = 8080
        public var limits = HTTPRequestParser.Limits()
        /// Open connections at most; `start` lowers it to what RLIMIT_NOFILE leaves room for.
        public var maxConnections = 10_000
        /// Open connections from one client address at most, so that one client's idle sockets
        /// cannot take every connection (health checks from elsewhere keep working).
        public var maxConnectionsPerAddress = 2_048
        /// A connection with no request in progress is closed after this long.
        public var idleTimeout: Double = 60
        /// A request's head must arrive within this long, and its body within this long plus
        /// its size at `minBodyBytesPerSecond`: else 408 and the connection closes. Each byte
        /// does not restart the clock, so a body trickled a byte at a time cannot hold a connection.
        public var requestTimeout: Double = 30
        public var minBodyBytesPerSecond: Double = 16 * 1024
        /// Back-pressure: a connection is not read while this many of its requests await
        /// their responses, or while this many response bytes wait to be sent.
        public var maxQueuedResponses = 32
        public var maxBufferedOutput = 1 << 20
        /// The body of an error the server answers itself (a malformed request, 408, 503);
        /// the application supplies its envelope. Nil: a minimal JSON envelope.
        public var errorBody: (@Sendable (_ status: Int, _ message: String, _ code: String?) -> [UInt8])?
        /// Event loop threads; each runs the handlers of its connections. Zero: one per core.
        public var eventLoops = 0
        /// Threads for work that belongs with the requests but outlives them (log followers),
        /// apart from Swift's global pool.
        public var handlerThreads = 2
        /// Requests whose body the handler reads as it arrives (`HTTPRequest.bodyStream`),
        /// e.g. uploads; the handler starts as soon as the head is in.
        public var streamsBody: (@Sendable (HTTPRequestHead) -> Bool)?
        public init() {}
    }

    enum Delivery: Sendable {
        /// A connection the accepting loop hands to this one.
        case adopt(connection: Int32, address: UInt32)
        case response(connection: Int32, generation: UInt64, sequence: Int, HTTPResponse)
        case resumeReading(connection: Int32, generation: UInt64)
        case chunk(connection: Int32, generation: UInt64, sequence: Int, [UInt8])
        case end(connection: Int32, generation: UInt64, sequence: Int)
    }

    struct Shared: Sendable {
        var port = 0
        var loops: [EventLoop] = []
        var stoppedLoops = 0
    }

    /// Open connections, counted across the loops for the caps.
    struct Admission {
        var total = 0
        var byAddress: [UInt32: Int] = [:]
    }

    let configuration: Configuration
    let answer: @Sendable (HTTPRequest) -> HTTPAnswer
    let shared = Mutex(Shared())
    let admission = Mutex(Admission())
    let shuttingDown = Atomic<Bool>(false)
    /// Signalled once, when every event loop has stopped.
    let stopped = DispatchSemaphore(value: 0)
    let executor: DedicatedThreads
    /// Threads for work that belongs with the requests and must not wait behind whatever
    /// else occupies Swift's global pool (log followers).
    public var taskExecutor: any TaskExecutor { executor }

    /// A server whose handler always runs as a task.
    public convenience init(configuration: Configuration, handler: @escaping HTTPHandler) {
        self.init(configuration: configuration, answer: { request in .later { await handler(request) } })
    }

    /// A server that asks `answer`, on the loop, whether a request is answered at once or needs a task.
    public init(configuration: Configuration, answer: @escaping @Sendable (HTTPRequest) -> HTTPAnswer) {
        self.configuration = configuration
        self.answer = answer
        executor = DedicatedThreads(threads: configuration.handlerThreads, name: "http-handler")
    }

    deinit {
        executor.stop()
    }

    /// The bound port, once started.
    public var port: Int { shared.withLock { $0.port } }

    var isShuttingDown: Bool { shuttingDown.load(ordering: .relaxed) }

    /// The connection cap in force: the configured one, or fewer when the process's descriptor
    /// limit leaves room for fewer (each connection is a descriptor; files, the database and
    /// sent files need some too).
    public var effectiveMaxConnections: Int {
        var files = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &files) == 0, files.rlim_cur != rlim_t.max else { return configuration.maxConnections }
        let room = Int(files.rlim_cur) - max(32, Int(files.rlim_cur) / 10)
        return max(1, min(configuration.maxConnections, room))
    }

    /// A JSON error body, from the application's envelope when it gives one.
    func errorBody(status: Int, message: String, code: String?) -> [UInt8] {
        if let errorBody = configuration.errorBody { return errorBody(status, message, code) }
        let envelope: JSONValue = ["error": ["message": .string(message), "type": status >= 500 ? "server_error" : "invalid_request_error",
                                             "param": nil, "code": code.map(JSONValue.string) ?? nil]]
        return JSONBodyEncoder.encode(envelope)
    }

    /// Binds and starts the event loops, each on its own thread; returns the bound port.
    /// The first loop accepts and deals new connections to the loops in turn.
    @discardableResult
    public func start() throws -> Int {
        let listener = try Self.listen(host: configuration.host, port: configuration.port)
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        let port = Int(UInt16(bigEndian: address.sin_port))
        let count = configuration.eventLoops > 0 ? configuration.eventLoops : max(1, ProcessInfo.processInfo.activeProcessorCount)
        let loops = (0..<count).map { EventLoop(server: self, index: $0, listener: $0 == 0 ? listener : -1) }
        shared.withLock { $0.port = port; $0.loops = loops }
        for loop in loops {
            let thread = DedicatedThreads(threads: 1, name: loop.index == 0 ? "preftune-http" : "preftune-http-\(loop.index)")
            thread.run { loop.run() }
            thread.stop()
        }
        return port
    }

    var loops: [EventLoop] { shared.withLock { $0.loops } }

    /// Stops accepting, lets in-flight requests and streams finish, then stops the loops.
    public func shutdown() {
        shuttingDown.store(true, ordering: .relaxed)
        for loop in loops { loop.wake() }
    }

    /// Blocks until the loops have stopped (callable more than once).
    public func wait() {
        stopped.wait()
        stopped.signal()
    }

    /// A loop has stopped; the last one signals `stopped`.
    func loopStopped() {
        let all = shared.withLock { shared -> Bool in
            shared.stoppedLoops += 1
            guard shared.stoppedLoops == shared.loops.count else { return false }
            // The loops refer to the server: letting go of them lets both be freed.
            shared.loops = []
            return true
        }
        if all { stopped.signal() }
    }

    /// Counts a new connection from `address` in, unless a cap refuses it: then the reason.
    func admit(_ address: UInt32, maxConnections: Int) -> String? {
        admission.withLock { admission in
            if admission.total >= maxConnections { return "the server has too many connections; retry shortly" }
            let fromAddress = admission.byAddress[address, default: 0]
            if fromAddress >= configuration.maxConnectionsPerAddress {
                return "too many connections from your address (at most \(configuration.maxConnectionsPerAddress)); close some and retry"
            }
            admission.total += 1
            admission.byAddress[address] = fromAddress + 1
            return nil
        }
    }

    func release(_ address: UInt32) {
        admission.withLock { admission in
            admission.total -= 1
            if let count = admission.byAddress[address] { admission.byAddress[address] = count > 1 ? count - 1 : nil }
        }
    }

    static func listen(host: String, port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw HTTPServerError("socket: \(String(cString: strerror(errno)))") }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
            close(fd)
            throw HTTPServerError("\(host) is not an IPv4 address")
        }
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, Glibc.listen(fd, 1024) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw HTTPServerError("cannot listen on \(host):\(port): \(reason)")
        }
        return fd
    }
}

public struct HTTPServerError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Everything the loop knows about one connection. Confined to the loop thread.
final class Connection {
    let fd: Int32
    /// Distinguishes this connection from a later one that reuses the fd.
    let generation: UInt64
    /// The client's IPv4 address (network order), for the per-address cap.
    let address: UInt32
    var parser: HTTPRequestParser
    /// What the connection is doing; the fields below are the handles its IO needs.
    var state: ConnectionState
    /// The streamed body of the request being read, if its route streams.
    var bodyStream: RequestBody?
    /// Handlers running for this connection, by sequence: cancelled when the client leaves.
    var handlers: [Int: Task<Void, Never>] = [:]
    /// The task forwarding a streamed response's chunks (`state.outgoing` is `.stream`).
    var streamTask: Task<Void, Never>?
    /// The file being sent (`state.outgoing` is `.file`).
    var file: Int32 = -1
    var output = OutputBuffer()
    /// The epoll interest as last set: reading (`state.shouldRead`) and writing (output the socket would not take).
    var reading = true
    var wantsWrite = false
    /// The backlog is being handled further up the stack: handling an event can write (100
    /// Continue), which flushes, which must not handle the next event before this one is done.
    var handlingBacklog = false

    init(fd: Int32, generation: UInt64, address: UInt32, limits: HTTPRequestParser.Limits, now: Double) {
        self.fd = fd
        self.generation = generation
        self.address = address
        parser = HTTPRequestParser(limits: limits)
        state = ConnectionState(now: now)
    }
}

/// One event loop: its connections, their handlers' tasks (it is their executor), and an
/// inbox for what other threads hand it (responses of handlers that ran elsewhere, stream
/// chunks, connections dealt by the accepting loop), with an eventfd to wake it.
/// Everything but the inbox, the run queue and the wake is confined to the loop's thread.
final class EventLoop: TaskExecutor, @unchecked Sendable {
    let server: HTTPServer
    let index: Int
    /// The listening socket, on the accepting loop only (-1 elsewhere).
    var listener: Int32
    let epoll: Int32
    let wakeFD: Int32
    var connections: [Int32: Connection] = [:]
    var generation: UInt64 = 0
    let maxConnections: Int
    /// Accepting stops for a moment when the process is out of descriptors (EMFILE): the
    /// listener would stay readable and spin the loop otherwise.
    var acceptPausedUntil: Double?
    /// One receive buffer for every read.
    var readBuffer = [UInt8](repeating: 0, count: 65536)
    /// The loop that gets the next accepted connection.
    var nextLoop = 0
    private let inbox = Mutex<[HTTPServer.Delivery]>([])
    /// Jobs of tasks that run on this loop, in order.
    private let runQueue = Mutex<[UnownedJob]>([])
    /// The loop's side of the run queue and the inbox: swapped with them each turn.
    private var runnable: [UnownedJob] = []
    private var delivered: [HTTPServer.Delivery] = []
    /// The loop's thread while it runs (0 before and after): work from it needs no wake-up.
    private let thread = Atomic<UInt>(0)
    private let finished = Atomic<Bool>(false)

    init(server: HTTPServer, index: Int, listener: Int32) {
        self.server = server
        self.index = index
        self.listener = listener
        maxConnections = server.effectiveMaxConnections
        epoll = preftune_epoll_create()
        wakeFD = preftune_eventfd()
        if listener >= 0 { add(listener, events: UInt32(PREFTUNE_EPOLLIN)) }
        add(wakeFD, events: UInt32(PREFTUNE_EPOLLIN))
    }

    deinit {
        close(epoll)
        close(wakeFD)
    }

    var onLoopThread: Bool { thread.load(ordering: .relaxed) == UInt(pthread_self()) }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        guard !finished.load(ordering: .acquiring) else {
            // A task resumed after the loop stopped (its server is gone) still runs to its end.
            let executor = asUnownedTaskExecutor()
            DispatchQueue.global().async { job.runSynchronously(on: executor) }
            return
        }
        runQueue.withLock { $0.append(job) }
        if !onLoopThread { wake() }
    }

    func deliver(_ delivery: HTTPServer.Delivery) {
        if finished.load(ordering: .acquiring) {
            // The loop has stopped: a connection dealt to it now is closed, not leaked.
            if case let .adopt(fd, address) = delivery {
                server.release(address)
                close(fd)
            }
            return
        }
        inbox.withLock { $0.append(delivery) }
        if !onLoopThread { wake() }
    }

    func wake() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, 8)
    }

    /// Runs the jobs queued now and handles the inbox, a few rounds at most: what they queue
    /// in turn waits for the next turn of the loop, so tasks that keep re-queueing themselves
    /// cannot keep the loop from its sockets. Returns whether work is left.
    @discardableResult
    func runPending(rounds: Int = 4) -> Bool {
        for _ in 0..<rounds {
            // Swapped with a spare whose capacity is kept: no allocation per turn.
            runQueue.withLock { swap(&$0, &runnable) }
            let ran = !runnable.isEmpty
            for job in runnable { job.runSynchronously(on: asUnownedTaskExecutor()) }
            runnable.removeAll(keepingCapacity: true)
            let handled = drainInbox()
            if !ran && !handled { return false }
        }
        return hasPending
    }

    var hasPending: Bool { runQueue.withLock { !$0.isEmpty } || inbox.withLock { !$0.isEmpty } }

    static func now() -> Double { Date().timeIntervalSince1970 }

    static let readable = UInt32(PREFTUNE_EPOLLIN | PREFTUNE_EPOLLRDHUP)

    func add(_ fd: Int32, events: UInt32) { _ = preftune_epoll_ctl(epoll, Int32(PREFTUNE_EPOLL_ADD), fd, events) }

    func setWriteInterest(_ connection: Connection, _ on: Bool) {
        guard connection.wantsWrite != on else { return }
        connection.wantsWrite = on
        updateInterest(connection)
    }

    /// Whether this connection has more work queued than it may: its requests then wait.
    func overBound(_ connection: Connection) -> Bool {
        connection.state.responses.pending >= server.configuration.maxQueuedResponses
            || connection.output.count >= server.configuration.maxBufferedOutput
    }

    /// Reads a connection unless its body's consumer is behind, it has parsed requests waiting,
    /// or it is over its bound of queued responses or unsent bytes (a client that pipelines
    /// requests and never reads the answers stops being read, instead of growing the server).
    func updateReading(_ connection: Connection) {
        guard connections[connection.fd] === connection, !connection.state.phase.isLingering else { return }
        let reading = connection.state.shouldRead(overBound: overBound(connection))
        guard connection.reading != reading else { return }
        connection.reading = reading
        updateInterest(connection)
        if reading { read(connection) }
    }

    /// Handles parsed events, in order, while the connection is within its bound.
    func processBacklog(_ connection: Connection) {
        guard !connection.handlingBacklog else { return }
        connection.handlingBacklog = true
        while connections[connection.fd] === connection, let event = connection.state.nextEvent(overBound: overBound(connection)) {
            handle(event, on: connection)
        }
        connection.handlingBacklog = false
        updateReading(connection)
    }

    func updateInterest(_ connection: Connection) {
        let events = (connection.reading ? Self.readable : 0) | (connection.wantsWrite ? UInt32(PREFTUNE_EPOLLOUT) : 0)
        _ = preftune_epoll_ctl(epoll, Int32(PREFTUNE_EPOLL_MODIFY), connection.fd, events)
    }

    func run() {
        thread.store(UInt(pthread_self()), ordering: .relaxed)
        var fds = [Int32](repeating: 0, count: 256), events = [UInt32](repeating: 0, count: 256)
        var lastSweep = Self.now()
        var workLeft = false
        while true {
            // Work left from the last turn: look at the sockets without waiting, then do it.
            let count = preftune_epoll_wait(epoll, &fds, &events, 256, workLeft ? 0 : 250)
            for i in 0..<max(0, Int(count)) {
                let fd = fds[i], flags = events[i]
                if fd == listener { accept() }
                else if fd == wakeFD { drainWakeups() }
                else if let connection = connections[fd] {
                    if flags & UInt32(PREFTUNE_EPOLLIN | PREFTUNE_EPOLLRDHUP | PREFTUNE_EPOLLHUP | PREFTUNE_EPOLLERR) != 0 { read(connection) }
                    if flags & UInt32(PREFTUNE_EPOLLOUT) != 0, connections[fd] === connection { flush(connection) }
                }
            }
            workLeft = runPending()
            let now = Self.now()
            if now - lastSweep >= 0.25 {
                sweepTimeouts(now: now, since: lastSweep)
                lastSweep = now
                if let until = acceptPausedUntil, now >= until, listener >= 0 {
                    acceptPausedUntil = nil
                    add(listener, events: UInt32(PREFTUNE_EPOLLIN))
                }
            }
            if server.isShuttingDown {
                if listener >= 0 {
                    _ = preftune_epoll_ctl(epoll, Int32(PREFTUNE_EPOLL_DELETE), listener, 0)
                    close(listener)
                    listener = -1
                }
                for connection in connections.values where (!connection.state.inFlight && connection.output.isEmpty) || connection.state.phase.isLingering {
                    closeConnection(connection)
                }
                if connections.isEmpty { break }
            }
        }
        finished.store(true, ordering: .releasing)
        thread.store(0, ordering: .relaxed)
        // What was queued before `finished` was seen still runs.
        while runPending() {}
        server.loopStopped()
    }

    func drainWakeups() {
        var value: UInt64 = 0
        _ = Glibc.read(wakeFD, &value, 8)
    }

    func accept() {
        while acceptPausedUntil == nil {
            var address: UInt32 = 0
            let fd = preftune_accept_from(listener, &address)
            guard fd >= 0 else {
                if errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM {
                    // Out of descriptors: stop watching the listener for a moment instead of spinning on it.
                    _ = preftune_epoll_ctl(epoll, Int32(PREFTUNE_EPOLL_DELETE), listener, 0)
                    acceptPausedUntil = Self.now() + 0.1
                }
                return
            }
            var yes: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &yes, socklen_t(MemoryLayout<Int32>.size))
            if let message = server.admit(address, maxConnections: maxConnections) {
                let body = server.errorBody(status: 503, message: message, code: "too_many_connections")
                let response = HTTPResponse(status: 503, headers: [("Content-Type", "application/json"), ("Retry-After", "1")], body: .bytes(body))
                let bytes = response.head(keepAlive: false, contentLength: body.count) + body
                _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                close(fd)
                continue
            }
            // Dealt in turn, so that the loops share the connections (and the cores) evenly.
            let loops = server.loops
            let target = loops[nextLoop % loops.count]
            nextLoop &+= 1
            if target === self { adopt(fd, address: address) } else { target.deliver(.adopt(connection: fd, address: address)) }
        }
    }

    func adopt(_ fd: Int32, address: UInt32) {
        generation &+= 1
        let connection = Connection(fd: fd, generation: generation, address: address, limits: server.configuration.limits, now: Self.now())
        connections[fd] = connection
        add(fd, events: Self.readable)
    }

    func read(_ connection: Connection) {
        while connections[connection.fd] === connection, connection.reading {
            let n = readBuffer.withUnsafeMutableBytes { recv(connection.fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { closeConnection(connection); return }
            if n < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK { return }
                if errno == EINTR { continue }
                closeConnection(connection)
                return
            }
            connection.state.touched(now: Self.now())
            // A short read emptied the socket: epoll reports more when it comes (level-triggered),
            // which saves the recv that would only say EAGAIN.
            let drained = n < readBuffer.count
            if !connection.state.phase.isOpen { if drained { return }; continue }  // after an error, ignore what follows
            var events: [HTTPRequestEvent] = []
            do {
                try connection.parser.feed(readBuffer[0..<n], into: &events)
                connection.state.parsed(events)
                processBacklog(connection)
                // Handled further up the stack: leave the rest in the socket until then.
                if connection.handlingBacklog || drained { return }
            } catch {
                // What was parsed before the error is answered first, in order.
                connection.state.parsed(events)
                processBacklog(connection)
                let failure = error as? HTTPParseError ?? .badRequest("\(error)")
                fail(connection, status: failure.status, message: failure.message)
            }
        }
    }

    func handle(_ event: HTTPRequestEvent, on connection: Connection) {
        switch event {
        case let .head(head):
            let hasBody = head.header("content-length").map { $0 != "0" } ?? (head.header("transfer-encoding") != nil)
            let streamed = hasBody && server.configuration.streamsBody?(head) == true
            connection.state.receivedHead(head, streamed: streamed, now: Self.now())
            if head.expectsContinue && hasBody && head.minorVersion >= 1 {
                write(Array("HTTP/1.1 100 Continue\r\n\r\n".utf8), to: connection)
            }
            if streamed {
                let (loop, fd, generation) = (self, connection.fd, connection.generation)
                let body = RequestBody { loop.deliver(.resumeReading(connection: fd, generation: generation)) }
                connection.bodyStream = body
                dispatch(HTTPRequest(head: head, body: [], bodyStream: body), on: connection)
            }
        case let .body(piece):
            if connection.state.receivedBody(piece), let stream = connection.bodyStream, stream.append(piece) {
                connection.state.consumerBehind(true)
                updateReading(connection)
            }
        case .end:
            guard let request = connection.state.receivedEnd() else { return }
            if let stream = connection.bodyStream {
                stream.finish()
                connection.bodyStream = nil
                return
            }
            dispatch(HTTPRequest(head: request.head, body: request.body), on: connection)
        }
    }

    /// Answers at once when the application can; else runs its work as a task on this loop,
    /// whose response comes back through the inbox.
    func dispatch(_ request: HTTPRequest, on connection: Connection) {
        let sequence = connection.state.responses.enqueue(keepAlive: request.head.keepAlive && !server.isShuttingDown)
        switch server.answer(request) {
        case let .now(response):
            receive(response, sequence: sequence, on: connection)
        case let .later(work):
            let (fd, generation) = (connection.fd, connection.generation)
            connection.handlers[sequence] = Task(executorPreference: self) { [self] in
                let response = await work()
                deliver(.response(connection: fd, generation: generation, sequence: sequence, response))
            }
        }
    }

    /// A handler's response: queued in request order, and sent as far as the order allows.
    func receive(_ response: HTTPResponse, sequence: Int, on connection: Connection) {
        connection.handlers[sequence] = nil
        if connection.state.answeredBeforeBody(sequence) {
            connection.bodyStream?.finish(error: "the response was sent before the body was read")
            connection.bodyStream = nil
        }
        connection.state.responses.complete(sequence, with: response)
        sendReady(connection)
    }

    /// Answers a broken request and closes the connection once the answer is out.
    func fail(_ connection: Connection, status: Int, message: String) {
        connection.bodyStream?.finish(error: message)
        connection.bodyStream = nil
        let body = server.errorBody(status: status, message: message, code: status == 408 ? "request_timeout" : nil)
        let sequence = connection.state.failed()
        connection.state.responses.complete(sequence, with: HTTPResponse(status: status, headers: [("Content-Type", "application/json")], body: .bytes(body)))
        sendReady(connection)
    }

    /// Handles what other threads (and finished tasks) delivered; false when there was nothing.
    func drainInbox() -> Bool {
        inbox.withLock { swap(&$0, &delivered) }
        guard !delivered.isEmpty else { return false }
        defer { delivered.removeAll(keepingCapacity: true) }
        for delivery in delivered {
            switch delivery {
            case let .adopt(fd, address):
                if server.isShuttingDown {
                    server.release(address)
                    close(fd)
                } else {
                    adopt(fd, address: address)
                }
            case let .response(fd, generation, sequence, response):
                guard let connection = live(fd, generation) else { continue }
                receive(response, sequence: sequence, on: connection)
            case let .resumeReading(fd, generation):
                guard let connection = live(fd, generation) else { continue }
                connection.state.consumerBehind(false)
                updateReading(connection)
            case let .chunk(fd, generation, sequence, bytes):
                guard let connection = live(fd, generation), connection.state.isStreaming(sequence), !bytes.isEmpty else { continue }
                write(Array(String(bytes.count, radix: 16).utf8) + [13, 10] + bytes + [13, 10], to: connection)
            case let .end(fd, generation, sequence):
                guard let connection = live(fd, generation), connection.state.isStreaming(sequence) else { continue }
                connection.state.endOutgoing()
                connection.streamTask = nil
                write(Array("0\r\n\r\n".utf8), to: connection)
                finishResponse(connection, sequence: sequence)
            }
        }
        return true
    }

    func live(_ fd: Int32, _ generation: UInt64) -> Connection? {
        guard let connection = connections[fd], connection.generation == generation else { return nil }
        return connection
    }

    /// Writes responses in request order, as far as they are ready.
    func sendReady(_ connection: Connection) {
        // Once shutting down, every response tells the client to go elsewhere next time.
        while connection.state.canSendNext, connections[connection.fd] === connection,
              let (sequence, response, keepAlive) = connection.state.responses.takeNext(shuttingDown: server.isShuttingDown) {
            switch response.body {
            case let .bytes(body):
                connection.output.append(response.head(keepAlive: keepAlive, contentLength: body.count))
                write(body, to: connection)
                finishResponse(connection, sequence: sequence)
            case let .file(path, offset, size):
                let fd = open(path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0, lseek(fd, off_t(offset), SEEK_SET) == off_t(offset) else {
                    if fd >= 0 { close(fd) }
                    let body = server.errorBody(status: 404, message: "the file is no longer on disk", code: "not_found")
                    let missing = HTTPResponse(status: 404, headers: [("Content-Type", "application/json")], body: .bytes(body))
                    write(missing.head(keepAlive: keepAlive, contentLength: body.count) + body, to: connection)
                    finishResponse(connection, sequence: sequence)
                    continue
                }
                connection.file = fd
                connection.state.beginFile(sequence, size: size)
                write(response.head(keepAlive: keepAlive, contentLength: size), to: connection)
            case let .stream(stream):
                write(response.head(keepAlive: keepAlive, contentLength: nil), to: connection)
                let (fd, generation) = (connection.fd, connection.generation)
                connection.state.beginStream(sequence)
                connection.streamTask = Task(executorPreference: self) { [self] in
                    for await piece in stream {
                        deliver(.chunk(connection: fd, generation: generation, sequence: sequence, piece))
                    }
                    deliver(.end(connection: fd, generation: generation, sequence: sequence))
                }
            }
        }
    }

    func finishResponse(_ connection: Connection, sequence: Int) {
        connection.state.finished(sequence, now: Self.now())
        if connection.state.isDone(outputEmpty: connection.output.isEmpty) { lingerThenClose(connection); return }
        sendReady(connection)
        processBacklog(connection)
    }

    func write(_ bytes: [UInt8], to connection: Connection) {
        connection.output.append(bytes)
        flush(connection)
    }

    func flush(_ connection: Connection) {
        while true {
            if connection.output.isEmpty, !refillFromFile(connection) { break }
            let n = connection.output.withUnsentBytes { send(connection.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { setWriteInterest(connection, true); return }
                closeConnection(connection)
                return
            }
            connection.output.consume(n)
        }
        guard connections[connection.fd] === connection else { return }
        setWriteInterest(connection, false)
        if !connection.reading { processBacklog(connection) }
        if connection.state.isDone(outputEmpty: connection.output.isEmpty) { lingerThenClose(connection) }
    }

    /// Reads the next piece of a file being sent into the output; false when there is none.
    func refillFromFile(_ connection: Connection) -> Bool {
        guard case let .file(sequence, remaining) = connection.state.outgoing else { return false }
        if remaining == 0 {
            closeFile(connection)
            finishResponse(connection, sequence: sequence)
            return !connection.output.isEmpty
        }
        var chunk = [UInt8](repeating: 0, count: min(remaining, 256 * 1024))
        let n = chunk.withUnsafeMutableBytes { Glibc.read(connection.file, $0.baseAddress, $0.count) }
        guard n > 0 else {
            // The file shrank under us: the promised length cannot be honoured; end the connection.
            closeConnection(connection)
            return false
        }
        connection.output.append(chunk[0..<n])
        connection.state.fileRead(n)
        return true
    }

    func closeFile(_ connection: Connection) {
        if connection.file >= 0 { close(connection.file) }
        connection.file = -1
        connection.state.endOutgoing()
    }

    /// Closing a socket that still has unread input makes the kernel send a reset,
    /// which can destroy the response before the client reads it (a 401 or 413
    /// answered mid-upload). So: shut the write side, drop what still arrives, and
    /// close when the client does, or after two seconds.
    func lingerThenClose(_ connection: Connection) {
        guard connection.state.linger(until: Self.now() + 2) else { return }
        connection.bodyStream?.finish(error: "the connection is closing")
        connection.bodyStream = nil
        shutdown(connection.fd, Int32(SHUT_WR))
        connection.reading = true
        connection.wantsWrite = false
        updateInterest(connection)
    }

    func sweepTimeouts(now: Double, since lastSweep: Double) {
        let configuration = server.configuration
        let deadlines = ConnectionState.Deadlines(request: configuration.requestTimeout, minBodyBytesPerSecond: configuration.minBodyBytesPerSecond,
                                                  idle: configuration.idleTimeout)
        for connection in Array(connections.values) {
            if connection.state.lingerExpired(now: now) { closeConnection(connection); continue }
            switch connection.state.timeout(now: now, heldBack: now - lastSweep, parserIdle: connection.parser.isIdle,
                                            outputEmpty: connection.output.isEmpty, deadlines) {
            case .request:
                fail(connection, status: 408, message: "the request was not received in time: \(Int(configuration.requestTimeout)) s for the head, and the body at \(Int(configuration.minBodyBytesPerSecond)) bytes/s or faster")
            case .idle:
                closeConnection(connection)
            case nil:
                break
            }
        }
    }

    func closeConnection(_ connection: Connection) {
        guard connections[connection.fd] === connection else { return }
        connection.streamTask?.cancel()
        connection.streamTask = nil
        // The client is gone: its handlers' work (a long sample) is cancelled.
        for task in connection.handlers.values { task.cancel() }
        connection.handlers = [:]
        server.release(connection.address)
        connection.bodyStream?.finish(error: "the client closed the connection before the body was complete")
        connection.bodyStream = nil
        closeFile(connection)
        connections[connection.fd] = nil
        _ = preftune_epoll_ctl(epoll, Int32(PREFTUNE_EPOLL_DELETE), connection.fd, 0)
        close(connection.fd)
    }
}

/// Bytes waiting to be sent, with a read index: sending part of them does not shift the rest
/// (`removeFirst` moved the whole remainder at every partial send).
struct OutputBuffer {
    private var bytes: [UInt8] = []
    private var start = 0

    var isEmpty: Bool { start == bytes.count }
    /// Bytes not yet sent.
    var count: Int { bytes.count - start }

    mutating func append(_ more: some Collection<UInt8>) {
        if isEmpty {
            bytes.removeAll(keepingCapacity: true)
            start = 0
        }
        bytes.append(contentsOf: more)
    }

    func withUnsentBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        bytes.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[start...])) }
    }

    /// Marks `n` bytes sent; compacts once the sent part dominates a large buffer.
    mutating func consume(_ n: Int) {
        start += n
        if isEmpty {
            bytes.removeAll(keepingCapacity: bytes.capacity <= 1 << 20)
            start = 0
        } else if start >= 1 << 16, start >= bytes.count / 2 {
            bytes.removeFirst(start)
            start = 0
        }
    }
}
