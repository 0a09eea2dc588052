/// What one connection is doing, without its socket, files or tasks: the request being read,
/// the parsed requests waiting their turn, the responses in order, what is being sent, whether
/// to read at all, and when the connection ends. Every change is one of the methods below;
/// `EventLoop` does the IO each one calls for. Pure, so its rules are tested without sockets.
///
/// A request's life: `receivedHead` → `receivedBody`… → `receivedEnd` (or, streamed,
/// `answeredBeforeBody` when its handler answered first), then `responses` takes it from
/// dispatch to `sent`. A response's body leaves as bytes at once, or through `outgoing`:
/// a stream of chunks or a file in pieces, one at a time, which holds back the responses after it.
struct ConnectionState {
    /// A request whose head has arrived and whose body is still arriving.
    struct Incoming {
        let head: HTTPRequestHead
        /// Whether a consumer reads the body as it arrives (else it is gathered here).
        let streamed: Bool
        var body: [UInt8] = []
        /// Body bytes so far, streamed or not: the deadline grows with them.
        var bodyBytes = 0
    }

    /// The body of the response being written, when it does not leave in one piece.
    enum Outgoing: Equatable {
        case none
        /// Chunks from a handler's stream, until it ends.
        case stream(sequence: Int)
        /// A file, read in pieces into the output.
        case file(sequence: Int, remaining: Int)
    }

    /// When the connection is closed for being slow or idle.
    enum Timeout: Equatable {
        /// The request's head or body has not arrived in time: answer 408 and close.
        case request
        /// Nothing sent or asked for too long: close.
        case idle
    }

    struct Deadlines: Sendable {
        /// For a request's head, and the base for its body.
        var request: Double
        /// A body must arrive at least this fast, on top of `request`.
        var minBodyBytesPerSecond: Double
        /// For a connection with nothing in flight.
        var idle: Double
    }

    private(set) var phase = ConnectionPhase.open
    var responses = ResponseQueue()
    private(set) var incoming: Incoming?
    private(set) var outgoing = Outgoing.none
    /// Parsed but not yet handled: requests beyond the back-pressure bound wait here, and no
    /// more is read until they have been handled.
    private(set) var backlog: [HTTPRequestEvent] = []
    /// The streamed body's consumer is behind: nothing more is read until it catches up.
    private(set) var bodyConsumerBehind = false
    /// When the request being read began (its head may still be arriving); nil between requests.
    private(set) var requestStarted: Double?
    private(set) var lastActivity: Double

    init(now: Double) { lastActivity = now }

    // MARK: Reading

    /// Whether to read from the socket: not while the body's consumer is behind, parsed
    /// requests wait, or the responses are over their bound (`overBound`, from the loop's
    /// configuration), so a client that pipelines and never reads stops being read.
    func shouldRead(overBound: Bool) -> Bool {
        !phase.isLingering && !bodyConsumerBehind && backlog.isEmpty && !overBound
    }

    mutating func touched(now: Double) { lastActivity = now }

    /// Parsed events, handled in order by `nextEvent` while the connection is open.
    mutating func parsed(_ events: [HTTPRequestEvent]) {
        guard phase.isOpen else { return }
        backlog += events
    }

    /// The next parsed event to handle, if the connection is open and within its bound.
    mutating func nextEvent(overBound: Bool) -> HTTPRequestEvent? {
        guard phase.isOpen else {
            backlog = []
            return nil
        }
        guard !overBound, !backlog.isEmpty else { return nil }
        return backlog.removeFirst()
    }

    mutating func receivedHead(_ head: HTTPRequestHead, streamed: Bool, now: Double) {
        assert(incoming == nil, "a head while another request's body is being read")
        incoming = Incoming(head: head, streamed: streamed)
        requestStarted = now
    }

    /// A piece of the body. True when it is the loop's to hand to the stream's consumer.
    mutating func receivedBody(_ piece: [UInt8]) -> Bool {
        guard var request = incoming else { return false }
        incoming = nil  // keeps the body uniquely referenced while it grows
        request.bodyBytes += piece.count
        if !request.streamed { request.body += piece }
        incoming = request
        return request.streamed
    }

    /// The consumer of a streamed body fell behind, or caught up.
    mutating func consumerBehind(_ behind: Bool) { bodyConsumerBehind = behind }

    /// The request is complete: it is returned (with its body, unless streamed) and reading the next begins.
    mutating func receivedEnd() -> Incoming? {
        defer {
            incoming = nil
            requestStarted = nil
        }
        return incoming
    }

    /// A handler answered while its streamed body was still arriving (a 401 mid-upload). The
    /// rest cannot be skipped reliably, so the connection closes after this response. True
    /// when that was the case: the loop then ends the body's stream with an error.
    mutating func answeredBeforeBody(_ sequence: Int) -> Bool {
        guard let request = incoming, request.streamed, sequence == responses.newest else { return false }
        incoming = nil
        requestStarted = nil
        responses.closeAfter(sequence)
        phase.closeAfterResponses()
        return true
    }

    /// A broken request (malformed, too slow): nothing more is read or handled; the answer
    /// is queued, closing the connection, under the sequence returned.
    mutating func failed() -> Int {
        backlog = []
        incoming = nil
        requestStarted = nil
        phase.closeAfterResponses()
        return responses.enqueue(keepAlive: false)
    }

    // MARK: Writing

    /// Whether the next ready response may be written: none is streaming or sending a file.
    var canSendNext: Bool { outgoing == .none }

    mutating func beginStream(_ sequence: Int) {
        assert(outgoing == .none, "one response body at a time")
        outgoing = .stream(sequence: sequence)
    }

    /// True when `sequence` was streaming (chunks and ends of an older stream are dropped).
    func isStreaming(_ sequence: Int) -> Bool { outgoing == .stream(sequence: sequence) }

    mutating func beginFile(_ sequence: Int, size: Int) {
        assert(outgoing == .none, "one response body at a time")
        outgoing = .file(sequence: sequence, remaining: size)
    }

    /// `count` more bytes of the file were read into the output.
    mutating func fileRead(_ count: Int) {
        guard case let .file(sequence, remaining) = outgoing else { return assertionFailure("no file is being sent") }
        outgoing = .file(sequence: sequence, remaining: remaining - count)
    }

    /// The stream or the file is done (or abandoned): its sequence, if one was going.
    @discardableResult
    mutating func endOutgoing() -> Int? {
        defer { outgoing = .none }
        switch outgoing {
        case .none: return nil
        case let .stream(sequence), let .file(sequence, _): return sequence
        }
    }

    /// Response `sequence` is written; the connection closes after it if its request said so.
    mutating func finished(_ sequence: Int, now: Double) {
        lastActivity = now
        if !responses.sent(sequence) { phase.closeAfterResponses() }
    }

    /// Whether the connection is done and may linger: closing, nothing left to send (the
    /// loop knows whether its output is empty) and no stream running.
    func isDone(outputEmpty: Bool) -> Bool {
        !phase.isOpen && outputEmpty && !isStreamingAny && responses.pending == 0
    }

    private var isStreamingAny: Bool { if case .stream = outgoing { true } else { false } }

    // MARK: Ending

    /// Something is being read, handled or sent.
    var inFlight: Bool {
        responses.pending > 0 || incoming != nil || outgoing != .none
    }

    /// Stop reading and answering: shut the write side, drop what arrives until the client
    /// closes or `deadline`. False when it was lingering already.
    mutating func linger(until deadline: Double) -> Bool {
        guard phase.linger(until: deadline) else { return false }
        backlog = []
        incoming = nil
        bodyConsumerBehind = false
        return true
    }

    /// Whether the connection has run out of time at `now`. `heldBack` is time since the
    /// last check during which the server itself held the body back (its consumer was
    /// behind): that time is not the client's. `parserIdle`: no part of a request has arrived.
    mutating func timeout(now: Double, heldBack: Double, parserIdle: Bool, outputEmpty: Bool, _ deadlines: Deadlines) -> Timeout? {
        if case .lingering = phase { return nil }
        if bodyConsumerBehind, let started = requestStarted { requestStarted = started + heldBack }
        let allowed = deadlines.request + Double(incoming?.bodyBytes ?? 0) / deadlines.minBodyBytesPerSecond
        if let started = requestStarted, now - started > allowed { return .request }
        if !inFlight, outputEmpty, parserIdle, now - lastActivity > deadlines.idle { return .idle }
        // The first bytes of a head arrived since the last check: its deadline starts now.
        if !parserIdle, requestStarted == nil { requestStarted = now }
        return nil
    }

    /// Whether a lingering connection's time is up.
    func lingerExpired(now: Double) -> Bool {
        if case let .lingering(deadline) = phase { now > deadline } else { false }
    }
}
