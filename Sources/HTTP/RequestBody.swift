import Foundation

/// A request body handed to the handler as it arrives, for routes that stream
/// (uploads). The event loop stops reading the socket while more than
/// `highWater` bytes wait here, and resumes once the handler has taken them:
/// a slow consumer slows the client down instead of filling memory.
public final class RequestBody: @unchecked Sendable {
    public static let highWater = 1 << 20

    private let condition = NSCondition()
    private var pieces: [[UInt8]] = []
    private var buffered = 0
    private var finished = false
    private var failed: String?
    private var waiter: CheckedContinuation<Void, Never>?
    /// Called (off the loop) when the buffer drains below the high-water mark after a pause.
    let resumeReading: @Sendable () -> Void
    private var paused = false
    /// The most bytes ever waiting here (back-pressure keeps it near `highWater`).
    private(set) var peakBuffered = 0

    init(resumeReading: @escaping @Sendable () -> Void) { self.resumeReading = resumeReading }

    /// Loop side: appends a piece; returns true when the loop should stop reading.
    func append(_ piece: [UInt8]) -> Bool {
        condition.lock()
        pieces.append(piece)
        buffered += piece.count
        peakBuffered = max(peakBuffered, buffered)
        let shouldPause = buffered > Self.highWater
        if shouldPause { paused = true }
        let waiting = waiter
        waiter = nil
        condition.unlock()
        waiting?.resume()
        return shouldPause
    }

    /// Loop side: the body is complete (or the connection broke, with a reason).
    func finish(error: String? = nil) {
        condition.lock()
        finished = true
        failed = error
        let waiting = waiter
        waiter = nil
        condition.unlock()
        waiting?.resume()
    }

    private enum Take { case piece([UInt8], resume: Bool), end, failure(String), empty }

    /// Takes the next piece under the lock (locks are for synchronous code only).
    private func take() -> Take {
        condition.lock()
        defer { condition.unlock() }
        if !pieces.isEmpty {
            let piece = pieces.removeFirst()
            buffered -= piece.count
            let resume = paused && buffered <= Self.highWater / 2
            if resume { paused = false }
            return .piece(piece, resume: resume)
        }
        guard finished else { return .empty }
        return failed.map(Take.failure) ?? .end
    }

    /// Parks the consumer until the loop appends or finishes; false when that already happened.
    private func park(_ continuation: CheckedContinuation<Void, Never>) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard pieces.isEmpty && !finished else { return false }
        waiter = continuation
        return true
    }

    /// The next piece, or nil at the end. Throws when the client went away mid-body.
    public func next() async throws -> [UInt8]? {
        while true {
            switch take() {
            case let .piece(piece, resume):
                if resume { resumeReading() }
                return piece
            case .end:
                return nil
            case let .failure(reason):
                throw HTTPServerError(reason)
            case .empty:
                await withCheckedContinuation { continuation in
                    if !park(continuation) { continuation.resume() }
                }
            }
        }
    }
}
