import CLinux
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

    struct Item: Sendable {
        let run: @Sendable () -> Void
        let cancellation: Cancellation
    }

    struct State: Sendable {
        var queue: [Item] = []
        var running: [Cancellation] = []
        var stopping = false
    }

    /// What the threads share with this object; they end when it is released.
    final class Core: Sendable {
        let state = Mutex(State())
        let available = DispatchSemaphore(value: 0)
    }

    let capacity: Int
    let threads: Int
    let core = Core()

    public init(threads: Int, queueCapacity: Int) {
        capacity = queueCapacity
        self.threads = max(1, threads)
        // Below the event loops (nice 2): a sample must not slow the API's answers.
        let threads = DedicatedThreads(threads: self.threads, name: "heavy-work", nice: 2)
        for _ in 0..<self.threads { threads.run { [core] in Self.work(core) } }
        threads.stop()
    }

    deinit {
        stop()
        for _ in 0..<threads { core.available.signal() }
    }

    /// Work waiting or running.
    public var load: Int { core.state.withLock { $0.queue.count + $0.running.count } }

    /// Runs `body` on a heavy-work thread and returns its result. Throws 429 when the queue is
    /// full, and `CancellationError` when the calling task is cancelled (its client left) or
    /// the server stops: `body` sees `isCancelled` become true and should return soon.
    public func run<T: Sendable>(_ body: @escaping @Sendable (Cancellation) throws -> T) async throws -> T {
        let cancellation = Cancellation()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                let item = Item(run: {
                    if cancellation.isCancelled { return continuation.resume(throwing: CancellationError()) }
                    do {
                        let value = try body(cancellation)
                        if cancellation.isCancelled { continuation.resume(throwing: CancellationError()) } else { continuation.resume(returning: value) }
                    } catch {
                        continuation.resume(throwing: error)
                    }
                }, cancellation: cancellation)
                let accepted = core.state.withLock { state -> Bool in
                    guard !state.stopping, state.queue.count < capacity else { return false }
                    state.queue.append(item)
                    return true
                }
                if accepted {
                    core.available.signal()
                } else {
                    continuation.resume(throwing: APIError(status: 429, message: "the server is busy with other samples and model builds; retry shortly",
                                                           type: "rate_limit_error", code: "server_busy"))
                }
            }
        } onCancel: {
            cancellation.cancel()
        }
    }

    /// Cancels everything queued or running (the server is stopping).
    public func stop() {
        let cancelled = core.state.withLock { state -> [Cancellation] in
            state.stopping = true
            return state.queue.map(\.cancellation) + state.running
        }
        for item in cancelled { item.cancel() }
    }

    private static func work(_ core: Core) {
        while true {
            core.available.wait()
            let next = core.state.withLock { state -> (item: Item?, exit: Bool) in
                guard !state.queue.isEmpty else { return (nil, state.stopping) }
                let item = state.queue.removeFirst()
                state.running.append(item.cancellation)
                return (item, false)
            }
            if next.exit { return }
            guard let item = next.item else { continue }
            item.run()
            core.state.withLock { state in state.running.removeAll { $0 === item.cancellation } }
        }
    }
}
