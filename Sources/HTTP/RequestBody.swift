import Foundation
import Synchronization

/// A request body handed to the handler as it arrives, for routes that stream
/// (uploads). The event loop stops reading the socket while more than
/// `highWater` bytes wait here, and resumes once the handler has taken them:
/// a slow consumer slows the client down instead of filling memory.
public final class RequestBody: Sendable {
    public static let highWater = 1 << 20

    struct State {
        var pieces: [[UInt8]] = []
        var buffered = 0
        var finished = false
        var failed: String?
        var waiter: CheckedContinuation<Void, Never>?
        var paused = false
        /// The most bytes ever waiting here (back-pressure keeps it near `highWater`).
        var peakBuffered = 0
    }
    private let state = Mutex(State())
    /// Called (off the loop) when the buffer drains below the high-water mark after a pause.
    let resumeReading: @Sendable () -> Void

    init(resumeReading: @escaping @Sendable () -> Void) { self.resumeReading = resumeReading }

    var peakBuffered: Int { state.withLock { $0.peakBuffered } }

    /// Loop side: appends a piece; returns true when the loop should stop reading.
    func append(_ piece: [UInt8]) -> Bool {
        let (shouldPause, waiting) = state.withLock { state in
            state.pieces.append(piece)
            state.buffered += piece.count
            state.peakBuffered = max(state.peakBuffered, state.buffered)
            let shouldPause = state.buffered > Self.highWater
            if shouldPause { state.paused = true }
            defer { state.waiter = nil }
            return (shouldPause, state.waiter)
        }
        waiting?.resume()
        return shouldPause
    }

    /// Loop side: the body is complete (or the connection broke, with a reason).
    func finish(error: String? = nil) {
        let waiting = state.withLock { state in
            state.finished = true
            state.failed = error
            defer { state.waiter = nil }
            return state.waiter
        }
        waiting?.resume()
    }

    private enum Take { case piece([UInt8], resume: Bool), end, failure(String), empty }

    /// Takes the next piece.
    private func take() -> Take {
        state.withLock { state in
            if !state.pieces.isEmpty {
                let piece = state.pieces.removeFirst()
                state.buffered -= piece.count
                let resume = state.paused && state.buffered <= Self.highWater / 2
                if resume { state.paused = false }
                return .piece(piece, resume: resume)
            }
            guard state.finished else { return .empty }
            return state.failed.map(Take.failure) ?? .end
        }
    }

    /// Parks the consumer until the loop appends or finishes; false when that already happened.
    private func park(_ continuation: CheckedContinuation<Void, Never>) -> Bool {
        state.withLock { state in
            guard state.pieces.isEmpty && !state.finished else { return false }
            state.waiter = continuation
            return true
        }
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
