@testable import HTTP
import TestSupport
import Testing

/// `ConnectionState` decides what a connection does next; `EventLoop` only does the IO. These
/// tests drive it with parsed requests, as the loop does, and check its rules without a socket.
@Suite(.ownThread) struct ConnectionStateTests {
    static let deadlines = ConnectionState.Deadlines(request: 10, minBodyBytesPerSecond: 100, idle: 60)

    /// The events a client's bytes parse into.
    static func events(_ text: String) throws -> [HTTPRequestEvent] {
        var parser = HTTPRequestParser()
        return try parser.feed(Array(text.utf8))
    }

    static func head(_ text: String) throws -> HTTPRequestHead {
        guard case let .head(head)? = try events(text).first else { throw ParseFailure() }
        return head
    }

    struct ParseFailure: Error {}

    static func response(_ status: Int) -> HTTPResponse { HTTPResponse(status: status, headers: [], body: .bytes([])) }

    @Test func aBufferedRequestIsGatheredThenAnsweredThenTheConnectionIsIdle() throws {
        var state = ConnectionState(now: 0)
        state.parsed(try Self.events("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"))
        var dispatched: [ConnectionState.Incoming] = []
        while let event = state.nextEvent(overBound: false) {
            switch event {
            case let .head(head): state.receivedHead(head, streamed: false, now: 1)
            case let .body(piece):
                let handedOver = state.receivedBody(piece)
                #expect(!handedOver, "a buffered body is gathered by the state")
            case .end: dispatched += state.receivedEnd().map { [$0] } ?? []
            }
        }
        #expect(dispatched.count == 1 && dispatched[0].body == Array("hello".utf8) && dispatched[0].bodyBytes == 5)
        #expect(state.requestStarted == nil && state.incoming == nil)
        let sequence = state.responses.enqueue(keepAlive: true)
        #expect(state.inFlight)
        state.responses.complete(sequence, with: Self.response(200))
        #expect(state.canSendNext && state.responses.takeNext(shuttingDown: false) != nil)
        state.finished(sequence, now: 2)
        #expect(!state.inFlight && state.phase.isOpen && state.lastActivity == 2)
        #expect(!state.isDone(outputEmpty: true), "an open connection waits for its next request")
    }

    @Test func readingStopsWhileAnythingWaits() throws {
        var state = ConnectionState(now: 0)
        #expect(state.shouldRead(overBound: false))
        #expect(!state.shouldRead(overBound: true), "too many responses queued or bytes unsent")
        state.parsed(try Self.events("GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n"))
        #expect(!state.shouldRead(overBound: false), "parsed requests wait: nothing more is read")
        #expect(state.nextEvent(overBound: true) == nil && state.backlog.count == 4, "over the bound, the backlog waits whole")
        while state.nextEvent(overBound: false) != nil {}
        #expect(state.shouldRead(overBound: false))

        state.receivedHead(try Self.head("POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\n"), streamed: true, now: 0)
        let handedOver = state.receivedBody([1, 2, 3])
        #expect(handedOver, "a streamed body goes to its consumer")
        state.consumerBehind(true)
        #expect(!state.shouldRead(overBound: false), "the consumer is behind")
        state.consumerBehind(false)
        #expect(state.shouldRead(overBound: false))
    }

    @Test func aHandlerThatAnswersBeforeItsStreamedBodyClosesTheConnectionAfterIt() throws {
        var state = ConnectionState(now: 0)
        state.receivedHead(try Self.head("POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\n"), streamed: true, now: 0)
        let sequence = state.responses.enqueue(keepAlive: true)
        let notBeingRead = state.answeredBeforeBody(sequence + 1), beingRead = state.answeredBeforeBody(sequence)
        #expect(!notBeingRead, "not the request being read")
        #expect(beingRead)
        #expect(state.incoming == nil && !state.phase.isOpen)
        state.responses.complete(sequence, with: Self.response(401))
        #expect(state.responses.takeNext(shuttingDown: false)?.keepAlive == false)

        var buffered = ConnectionState(now: 0)
        buffered.receivedHead(try Self.head("POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\n"), streamed: false, now: 0)
        let answered = buffered.responses.enqueue(keepAlive: true)
        let early = buffered.answeredBeforeBody(answered)
        #expect(!early, "a buffered body is only dispatched once whole")
    }

    @Test func aBrokenRequestIsAnsweredAfterTheOnesBeforeIt() throws {
        var state = ConnectionState(now: 0)
        let earlier = state.responses.enqueue(keepAlive: true)  // a slow handler, still running
        state.parsed(try Self.events("GET /b HTTP/1.1\r\nHost: h\r\n\r\n"))
        let failure = state.failed()
        #expect(failure == earlier + 1 && state.backlog.isEmpty && !state.phase.isOpen && state.incoming == nil)
        state.parsed(try Self.events("GET /c HTTP/1.1\r\nHost: h\r\n\r\n"))
        #expect(state.backlog.isEmpty, "after a broken request nothing more is handled")

        state.responses.complete(failure, with: Self.response(400))
        state.responses.complete(earlier, with: Self.response(200))
        #expect(state.responses.takeNext(shuttingDown: false)?.sequence == earlier)
        state.finished(earlier, now: 1)
        #expect(!state.isDone(outputEmpty: true), "the 400 still has to go out before the connection lingers")
        #expect(state.responses.takeNext(shuttingDown: false)?.sequence == failure)
        state.finished(failure, now: 1)
        #expect(state.isDone(outputEmpty: true))
        #expect(!state.isDone(outputEmpty: false), "not while bytes are unsent")
    }

    @Test func oneResponseBodyAtATime() {
        var state = ConnectionState(now: 0)
        let streamed = state.responses.enqueue(keepAlive: true), file = state.responses.enqueue(keepAlive: false)
        state.beginStream(streamed)
        #expect(!state.canSendNext && state.isStreaming(streamed) && !state.isStreaming(file))
        #expect(state.endOutgoing() == streamed && state.canSendNext)
        state.finished(streamed, now: 1)
        state.beginFile(file, size: 10)
        state.fileRead(4)
        #expect(state.outgoing == .file(sequence: file, remaining: 6))
        state.fileRead(6)
        #expect(state.outgoing == .file(sequence: file, remaining: 0) && state.inFlight)
        #expect(state.endOutgoing() == file && state.endOutgoing() == nil)
        state.finished(file, now: 2)
        #expect(!state.phase.isOpen && state.isDone(outputEmpty: true), "the file's request asked to close")
    }

    @Test func aStreamingResponseKeepsAClosingConnection() {
        var state = ConnectionState(now: 0)
        let sequence = state.failed()
        state.beginStream(sequence)
        #expect(!state.isDone(outputEmpty: true))
    }

    @Test func requestsHaveADeadlineThatGrowsWithTheirBody() throws {
        var state = ConnectionState(now: 0)
        #expect(state.timeout(now: 5, heldBack: 0, parserIdle: false, outputEmpty: true, Self.deadlines) == nil)
        #expect(state.requestStarted == 5, "the head's first bytes start its clock")
        #expect(state.timeout(now: 15.5, heldBack: 0, parserIdle: false, outputEmpty: true, Self.deadlines) == .request)

        var uploading = ConnectionState(now: 0)
        uploading.receivedHead(try Self.head("POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n"), streamed: true, now: 0)
        _ = uploading.receivedBody([UInt8](repeating: 0, count: 1000))
        #expect(uploading.timeout(now: 19, heldBack: 0, parserIdle: false, outputEmpty: true, Self.deadlines) == nil,
                "10 s and 10 s for 1000 bytes at 100 bytes/s")
        uploading.consumerBehind(true)
        #expect(uploading.timeout(now: 21, heldBack: 2, parserIdle: false, outputEmpty: true, Self.deadlines) == nil,
                "time the server held the body back is not the client's")
        uploading.consumerBehind(false)
        #expect(uploading.timeout(now: 22.5, heldBack: 1.5, parserIdle: false, outputEmpty: true, Self.deadlines) == .request)
    }

    @Test func onlyAnIdleConnectionTimesOutForIdleness() {
        var state = ConnectionState(now: 0)
        let sequence = state.responses.enqueue(keepAlive: true)
        #expect(state.timeout(now: 100, heldBack: 0, parserIdle: true, outputEmpty: true, Self.deadlines) == nil, "a handler is running")
        state.responses.complete(sequence, with: Self.response(200))
        _ = state.responses.takeNext(shuttingDown: false)
        state.finished(sequence, now: 100)
        #expect(state.timeout(now: 150, heldBack: 0, parserIdle: true, outputEmpty: false, Self.deadlines) == nil, "bytes still unsent")
        #expect(state.timeout(now: 150, heldBack: 0, parserIdle: true, outputEmpty: true, Self.deadlines) == nil)
        #expect(state.timeout(now: 161, heldBack: 0, parserIdle: true, outputEmpty: true, Self.deadlines) == .idle)
    }

    @Test func aLingeringConnectionReadsNothingAndTimesOutOnlyByItsDeadline() throws {
        var state = ConnectionState(now: 0)
        state.parsed(try Self.events("GET /a HTTP/1.1\r\nHost: h\r\n\r\n"))
        state.receivedHead(try Self.head("POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n"), streamed: true, now: 0)
        state.consumerBehind(true)
        let first = state.linger(until: 2), second = state.linger(until: 9)
        #expect(first)
        #expect(!second, "lingering starts once")
        #expect(state.backlog.isEmpty && state.incoming == nil && !state.bodyConsumerBehind)
        #expect(!state.shouldRead(overBound: false), "the loop drains a lingering socket itself, ignoring what it reads")
        #expect(state.timeout(now: 1000, heldBack: 0, parserIdle: false, outputEmpty: true, Self.deadlines) == nil)
        #expect(!state.lingerExpired(now: 2) && state.lingerExpired(now: 2.1))
    }

    /// Random walks over every transition the loop makes: the rules hold whatever the order.
    @Test(arguments: 1...40)
    func theRulesHoldOnAnyPath(seed: Int) throws {
        var generator = SeededGenerator(seed: UInt64(seed))
        var state = ConnectionState(now: 0)
        // Whole requests, as the parser hands them over (a head never follows an unfinished request).
        let get = try Self.events("GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
        let post = try Self.events("POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
        var wasOpen = true, now = 0.0
        for _ in 0..<200 {
            now += 0.1
            switch Int.random(in: 0..<10, using: &generator) {
            case 0: state.parsed(Bool.random(using: &generator) ? get : post)
            case 1...4:
                // The loop handles events only as `nextEvent` hands them out.
                switch state.nextEvent(overBound: Int.random(in: 0..<4, using: &generator) == 0) {
                case let .head(head)?: state.receivedHead(head, streamed: Bool.random(using: &generator), now: now)
                case let .body(piece)?: _ = state.receivedBody(piece)
                case .end?:
                    if let incoming = state.receivedEnd(), !incoming.streamed { _ = state.responses.enqueue(keepAlive: Bool.random(using: &generator)) }
                case nil: break
                }
            case 5: if Int.random(in: 0..<8, using: &generator) == 0 { _ = state.failed() }
            case 6: if let newest = state.responses.newest { _ = state.answeredBeforeBody(newest) }
            case 7: state.consumerBehind(Bool.random(using: &generator))
            case 8:
                // Answer and send what is pending, in order, one body at a time.
                let sequences = state.responses.nextToSend..<state.responses.nextSequence
                for sequence in sequences { state.responses.complete(sequence, with: Self.response(200)) }
                while state.canSendNext, let next = state.responses.takeNext(shuttingDown: false) {
                    if Bool.random(using: &generator) { state.beginFile(next.sequence, size: 1); state.fileRead(1) }
                    #expect(state.endOutgoing() == nil || state.canSendNext)
                    state.finished(next.sequence, now: now)
                }
            default:
                if Int.random(in: 0..<20, using: &generator) == 0 { _ = state.linger(until: now + 2) }
            }
            // The phase only moves forward; nothing is handled or read once it is not open.
            #expect(wasOpen || !state.phase.isOpen)
            wasOpen = state.phase.isOpen
            if !state.phase.isOpen { #expect(state.nextEvent(overBound: false) == nil && state.backlog.isEmpty) }
            if state.phase.isLingering { #expect(!state.shouldRead(overBound: false) && state.incoming == nil) }
            if !state.backlog.isEmpty || state.bodyConsumerBehind { #expect(!state.shouldRead(overBound: false)) }
            #expect(state.isDone(outputEmpty: true) == (!state.phase.isOpen && state.responses.pending == 0 && !state.isStreaming(state.responses.nextToSend)))
        }
    }
}
