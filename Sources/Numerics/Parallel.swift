import Dispatch

/// Splits element-wise work over the cores. Chunks have a fixed size, so any
/// reduction combined chunk by chunk in order gives the same bits whatever the
/// number of threads that ran them.
public enum Parallel {
    /// Elements per chunk: large enough to amortise dispatch, small enough to balance two cores.
    public static let chunkSize = 1 << 16

    /// Runs `body(range)` for consecutive chunks of 0..<count, concurrently.
    public static func forEachChunk(count: Int, chunkSize: Int = Parallel.chunkSize,
                                    _ body: (Range<Int>) -> Void) {
        let chunks = (count + chunkSize - 1) / chunkSize
        if chunks <= 1 {
            if count > 0 { body(0..<count) }
            return
        }
        withoutActuallyEscaping(body) { body in
            let work = UncheckedSendable(body)
            DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
                let start = chunk * chunkSize
                work.value(start..<min(count, start + chunkSize))
            }
        }
    }
}

/// Carries a value the compiler cannot prove thread-safe across a concurrency
/// boundary. Used only where each thread touches a disjoint range of memory.
public struct UncheckedSendable<Value>: @unchecked Sendable {
    public let value: Value
    public init(_ value: Value) { self.value = value }
}
