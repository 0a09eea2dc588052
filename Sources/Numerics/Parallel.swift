import Dispatch

/// Splits element-wise work over the cores. Chunks have a fixed size, so any
/// reduction combined chunk by chunk in order gives the same bits whatever the
/// number of threads that ran them.
public enum Parallel {
    /// Elements per chunk: large enough to amortise dispatch, small enough to balance two cores.
    public static let chunkSize = 1 << 16

    /// Runs `body(range)` for consecutive chunks of 0..<count, concurrently: the first
    /// half of the chunks on `companion` and the rest here when a job gives its
    /// companion, otherwise over Dispatch's threads.
    public static func forEachChunk(count: Int, chunkSize: Int = Parallel.chunkSize, sharingWith companion: CompanionThread? = nil,
                                    _ body: (Range<Int>) -> Void) {
        let chunks = (count + chunkSize - 1) / chunkSize
        if chunks <= 1 {
            if count > 0 { body(0..<count) }
            return
        }
        @Sendable func range(_ chunk: Int) -> Range<Int> { chunk * chunkSize..<min(count, (chunk + 1) * chunkSize) }
        withoutActuallyEscaping(body) { body in
            let work = UncheckedSendable(body)
            if let companion {
                let half = chunks / 2
                companion.together({ for chunk in half..<chunks { work.value(range(chunk)) } },
                                   { for chunk in 0..<half { work.value(range(chunk)) } })
            } else {
                DispatchQueue.concurrentPerform(iterations: chunks) { chunk in work.value(range(chunk)) }
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
