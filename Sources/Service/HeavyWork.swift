import Foundation
import Threads
import Synchronization

/// Request work too heavy for the request threads — sampling, initialising or loading a
/// model — runs here: a few threads of its own at nice 2 (below the request path, above
/// training), a bounded queue (past it, 429), and cancellation when the client leaves or
/// the server stops. The work polls `isCancelled` between steps.
public final class HeavyWork: Sendable {
    /// A cancellation flag the work reads between its steps.
    public final class Cancellation: Sendable {
        private let flag = Atomic<Bool>(false)
        public var isCancelled: Bool { flag.load(ordering: .relaxed) }
        public func cancel() { flag.store(true, ordering: .relaxed) }
    }

    struct State: Sendable {
        /// Accepted and not yet started: bounded by the capacity.
        var waiting = 0
        /// Accepted and not yet finished: what `stop` cancels.
        var unfinished: [Cancellation] = []
        var stopping = false
    }

    let capacity: Int
    let state = Mutex(State())
    /// Below the event loops (nice 2): a sample must not slow the API's answers.
    let threads: DedicatedThreads

    public init(threads: Int, queueCapacity: Int) {
        capacity = queueCapacity
        self.threads = DedicatedThreads(threads: threads, name: "heavy-work", nice: 2)
    }

    deinit { stop() }

    /// Work waiting or running.
    public var load: Int { state.withLock { $0.unfinished.count } }

    /// Runs `body` on a heavy-work thread and returns its result. Throws 429 when the queue is
    /// full, and `CancellationError` when the calling task is cancelled (its client left) or
    /// the server stops: `body` sees `isCancelled` become true and should return soon.
    public func run<T: Sendable>(_ body: @escaping @Sendable (Cancellation) throws -> T) async throws -> T {
        let cancellation = Cancellation()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                let accepted = state.withLock { state -> Bool in
                    guard !state.stopping, state.waiting < capacity else { return false }
                    state.waiting += 1
                    state.unfinished.append(cancellation)
                    return true
                }
                guard accepted else {
                    return continuation.resume(throwing: APIError(status: 429, message: "the server is busy with other samples and model builds; retry shortly",
                                                                  type: "rate_limit_error", code: "server_busy"))
                }
                threads.run { [self] in
                    state.withLock { $0.waiting -= 1 }
                    defer { state.withLock { $0.unfinished.removeAll { $0 === cancellation } } }
                    if cancellation.isCancelled { return continuation.resume(throwing: CancellationError()) }
                    do {
                        let value = try body(cancellation)
                        if cancellation.isCancelled { continuation.resume(throwing: CancellationError()) } else { continuation.resume(returning: value) }
                    } catch {
                        continuation.resume(throwing: error)
                    }
                }
            }
        } onCancel: {
            cancellation.cancel()
        }
    }

    /// Cancels everything queued or running (the server is stopping); the threads end once
    /// what was queued has seen its cancellation.
    public func stop() {
        let cancelled = state.withLock { state -> [Cancellation] in
            state.stopping = true
            return state.unfinished
        }
        for item in cancelled { item.cancel() }
        threads.stop()
    }
}
