@testable import HTTP
import TestSupport
import Testing

@Suite(.ownThread) struct ResponseQueueTests {
    static func response(_ status: Int) -> HTTPResponse { HTTPResponse(status: status, headers: [], body: .bytes([])) }

    @Test func pipelinedResponsesLeaveInRequestOrderWhateverOrderTheyComplete() {
        var queue = ResponseQueue()
        let first = queue.enqueue(keepAlive: true), second = queue.enqueue(keepAlive: true), third = queue.enqueue(keepAlive: true)
        #expect([first, second, third] == [0, 1, 2] && queue.pending == 3 && queue.newest == 2)
        queue.complete(third, with: Self.response(203))
        queue.complete(second, with: Self.response(202))
        #expect(queue.takeNext(shuttingDown: false) == nil, "the first is not answered yet: nothing may leave")
        queue.complete(first, with: Self.response(201))
        var statuses: [Int] = []
        while let next = queue.takeNext(shuttingDown: false) {
            statuses.append(next.response.status)
            #expect(next.keepAlive && queue.sent(next.sequence))
        }
        #expect(statuses == [201, 202, 203] && queue.pending == 0)
    }

    @Test func aResponseThatClosesTheConnectionSaysSo() {
        var queue = ResponseQueue()
        let closing = queue.enqueue(keepAlive: false)
        queue.complete(closing, with: Self.response(400))
        let next = queue.takeNext(shuttingDown: false)
        #expect(next?.keepAlive == false && queue.sent(closing) == false)

        let unread = queue.enqueue(keepAlive: true)
        queue.closeAfter(unread)
        queue.complete(unread, with: Self.response(401))
        #expect(queue.takeNext(shuttingDown: false)?.keepAlive == false && queue.sent(unread) == false)
    }

    @Test func shuttingDownEndsKeepAlive() {
        var queue = ResponseQueue()
        let sequence = queue.enqueue(keepAlive: true)
        queue.complete(sequence, with: Self.response(200))
        #expect(queue.takeNext(shuttingDown: true)?.keepAlive == false)
        #expect(queue.sent(sequence) == false, "what was decided when the head was written holds")
    }

    @Test(arguments: 1...50)
    func randomCompletionOrdersKeepRequestOrder(seed: Int) {
        var generator = SeededGenerator(seed: UInt64(seed))
        var queue = ResponseQueue()
        let count = Int.random(in: 1...20, using: &generator)
        let sequences = (0..<count).map { _ in queue.enqueue(keepAlive: Bool.random(using: &generator)) }
        var sent: [Int] = []
        for sequence in sequences.shuffled(using: &generator) {
            queue.complete(sequence, with: Self.response(200 + sequence))
            while let next = queue.takeNext(shuttingDown: false) {
                sent.append(next.response.status - 200)
                _ = queue.sent(next.sequence)
            }
        }
        #expect(sent == sequences && queue.pending == 0)
    }
}

/// SplitMix64: reproducible shuffles.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite(.ownThread) struct ConnectionPhaseTests {
    @Test func aConnectionOnlyMovesForward() {
        var phase = ConnectionPhase.open
        #expect(phase.isOpen && !phase.isLingering)
        phase.closeAfterResponses()
        #expect(phase == .closingAfterResponses)
        #expect(phase.linger(until: 10) && phase == .lingering(until: 10))
        #expect(!phase.linger(until: 20) && phase == .lingering(until: 10), "lingering starts once; its deadline does not move")
        phase.closeAfterResponses()
        #expect(phase == .lingering(until: 10), "a lingering connection does not go back to closing")

        var open = ConnectionPhase.open
        #expect(open.linger(until: 5) && open.isLingering, "an open connection may linger at once (its last response sent)")
    }
}
