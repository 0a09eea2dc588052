import Foundation

/// Time this thread spends inside matrix products while the clock runs: how a bench splits a
/// training step into products and everything else. Off, it costs a product nothing beyond
/// the relaxed load every product already makes (`ThreadMath.anyOverrides`).
public enum ProductClock {
    /// Runs `body` with this thread's clock on; returns its result and the seconds its products took.
    public static func measuring<T>(_ body: () throws -> T) rethrows -> (T, seconds: Double) {
        var nanoseconds: UInt64 = 0
        let result = try ThreadMath.with(\.productNanoseconds, 0) {
            defer { nanoseconds = ThreadMath.context.productNanoseconds ?? 0 }
            return try body()
        }
        return (result, Double(nanoseconds) / 1e9)
    }

    @inline(__always)
    static func start() -> UInt64 {
        guard ThreadMath.anyOverrides, ThreadMath.context.productNanoseconds != nil else { return 0 }
        return DispatchTime.now().uptimeNanoseconds
    }

    @inline(__always)
    static func stop(_ started: UInt64) {
        guard started != 0 else { return }
        ThreadMath.context.productNanoseconds? += DispatchTime.now().uptimeNanoseconds - started
    }
}
