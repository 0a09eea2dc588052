import Foundation

/// Time this thread spends inside matrix products while the clock runs, and the work they do:
/// how a bench splits a training step or a sampling into products and everything else, and
/// what rate the products ran at there. Off, it costs a product nothing beyond the relaxed
/// load every product already makes (`ThreadMath.anyOverrides`).
///
/// Time is counted in the cores' terms: a product counts its elapsed time, but one of the two run
/// side by side, a core each (the job's thread and its companion running the reference's and
/// θ's forward passes, `CompanionThread.sideBySide`), half of it, since the other core works
/// meanwhile. The companion's products count in the tally of the thread that handed it the work
/// (`CompanionThread.together`). So a step's products add up to the wall time they filled, and
/// their rate compares with a product's on all the cores.
public enum ProductClock {
    /// What this thread's products took while the clock ran.
    public struct Tally: Sendable {
        /// Nanoseconds inside products, a product run side by side with another counting half.
        public var nanoseconds: UInt64 = 0
        /// Floating-point operations: 2·m·n·k for each product.
        public var flops: Double = 0
        public var seconds: Double { Double(nanoseconds) / 1e9 }
        /// GFLOP/s inside the products (0 when none ran).
        public var rate: Double { nanoseconds == 0 ? 0 : flops / Double(nanoseconds) }

        public init() {}

        /// Adds another run's time and work to these.
        public mutating func add(_ other: Tally) {
            nanoseconds += other.nanoseconds
            flops += other.flops
        }

        /// Items a second in a run of `seconds` that held these products, had they run at
        /// `rate` GFLOP/s and everything else taken what it took: the bound the bench puts on a
        /// pass from the best rate its products reach at the same shapes.
        public func itemsPerSecond(_ items: Int, inRunOf seconds: Double, productsAt rate: Double) -> Double {
            Double(items) / (seconds - self.seconds + flops / (rate * 1e9))
        }

        /// The mean of `runs` runs these add up.
        public func perRun(_ runs: Int) -> Tally {
            var mean = Tally()
            mean.nanoseconds = nanoseconds / UInt64(runs)
            mean.flops = flops / Double(runs)
            return mean
        }
    }

    /// Whether this thread's clock is running (a companion given work then runs its own).
    static var isRunning: Bool { ThreadMath.anyOverrides && ThreadMath.context.productTally != nil }

    /// Adds another thread's tally to this thread's, when its clock is running.
    static func add(_ other: Tally) {
        ThreadMath.context.productTally?.add(other)
    }

    /// Runs `body` with this thread's clock on; returns its result and what its products took.
    public static func measuring<T>(_ body: () throws -> T) rethrows -> (T, Tally) {
        var tally = Tally()
        let result = try ThreadMath.with(\.productTally, Tally()) {
            defer { tally = ThreadMath.context.productTally ?? Tally() }
            return try body()
        }
        return (result, tally)
    }

    @inline(__always)
    static func start() -> UInt64 {
        guard ThreadMath.anyOverrides, ThreadMath.context.productTally != nil else { return 0 }
        return DispatchTime.now().uptimeNanoseconds
    }

    /// Ends a product of m·n·k multiply-adds that `start` began.
    @inline(__always)
    static func stop(_ started: UInt64, m: Int, n: Int, k: Int) {
        guard started != 0 else { return }
        let elapsed = DispatchTime.now().uptimeNanoseconds - started
        let context = ThreadMath.context
        context.productTally?.nanoseconds += elapsed / UInt64(context.threadsSharingTheCores)
        context.productTally?.flops += 2 * Double(m) * Double(n) * Double(k)
    }
}
