/// A connection's responses in request order. HTTP/1.1 pipelining lets a client send
/// requests before earlier ones are answered; their handlers may finish in any order,
/// but the answers must leave in the order the requests came. Pure state: the event
/// loop asks it what to send and tells it what was sent.
///
/// A request's life: `enqueue` (dispatched, numbered) → `complete` (its handler
/// answered) → `takeNext` (it is the oldest unsent and ready: being written) → `sent`.
struct ResponseQueue {
    /// The number the next request gets.
    private(set) var nextSequence = 0
    /// The number of the response that goes out next.
    private(set) var nextToSend = 0
    private var ready: [Int: HTTPResponse] = [:]
    /// Whether the connection stays open after each response, as far as its request asked.
    private var keepAlive: [Int: Bool] = [:]

    /// Requests dispatched whose responses are not yet written.
    var pending: Int { nextSequence - nextToSend }
    /// The request dispatched last, if any.
    var newest: Int? { nextSequence > 0 ? nextSequence - 1 : nil }

    /// A new request: its sequence number.
    mutating func enqueue(keepAlive: Bool) -> Int {
        let sequence = nextSequence
        nextSequence += 1
        self.keepAlive[sequence] = keepAlive
        return sequence
    }

    /// A handler's response. Only a dispatched request, answered once.
    mutating func complete(_ sequence: Int, with response: HTTPResponse) {
        assert((nextToSend..<nextSequence).contains(sequence), "response \(sequence) for no pending request")
        assert(ready[sequence] == nil, "request \(sequence) answered twice")
        ready[sequence] = response
    }

    /// The connection closes after this response (e.g. its request's body was not read).
    mutating func closeAfter(_ sequence: Int) { keepAlive[sequence] = false }

    /// The oldest unsent response, if its handler has answered; whether the connection stays
    /// open after it (never once the server is shutting down).
    mutating func takeNext(shuttingDown: Bool) -> (sequence: Int, response: HTTPResponse, keepAlive: Bool)? {
        guard let response = ready.removeValue(forKey: nextToSend) else { return nil }
        let sequence = nextToSend
        let keep = (keepAlive[sequence] ?? false) && !shuttingDown
        keepAlive[sequence] = keep
        return (sequence, response, keep)
    }

    /// Response `sequence` has been written; returns whether the connection stays open.
    mutating func sent(_ sequence: Int) -> Bool {
        assert(sequence == nextToSend, "responses leave in order")
        nextToSend = sequence + 1
        return keepAlive.removeValue(forKey: sequence) != false
    }
}
