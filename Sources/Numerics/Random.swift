import Foundation

/// Philox4x32-10 (Salmon et al., SC'11): a counter-based generator. The value at
/// a counter depends only on (seed, stream, counter), so a buffer filled from a
/// stream has the same bits whatever the thread count, and a stream's state is
/// three integers that a training state can save and restore exactly.
public struct Philox: Sendable, Equatable, Codable {
    public let seed: UInt64
    public let stream: UInt64
    /// Index of the next 128-bit block this stream will produce.
    public var counter: UInt64

    public init(seed: UInt64, stream: UInt64 = 0, counter: UInt64 = 0) {
        self.seed = seed
        self.stream = stream
        self.counter = counter
    }

    /// An independent stream of the same seed (e.g. one for data order, one for noise).
    public func substream(_ id: UInt64) -> Philox { Philox(seed: seed, stream: id) }

    /// The four 32-bit words of block `index` of this stream.
    @inline(__always)
    public func block(_ index: UInt64) -> SIMD4<UInt32> {
        var c0 = UInt32(truncatingIfNeeded: index), c1 = UInt32(truncatingIfNeeded: index >> 32)
        var c2 = UInt32(truncatingIfNeeded: stream), c3 = UInt32(truncatingIfNeeded: stream >> 32)
        var k0 = UInt32(truncatingIfNeeded: seed), k1 = UInt32(truncatingIfNeeded: seed >> 32)
        for _ in 0..<10 {
            let p0 = UInt64(0xD251_1F53) &* UInt64(c0)
            let p1 = UInt64(0xCD9E_8D57) &* UInt64(c2)
            let hi0 = UInt32(truncatingIfNeeded: p0 >> 32), lo0 = UInt32(truncatingIfNeeded: p0)
            let hi1 = UInt32(truncatingIfNeeded: p1 >> 32), lo1 = UInt32(truncatingIfNeeded: p1)
            (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
            k0 = k0 &+ 0x9E37_79B9
            k1 = k1 &+ 0xBB67_AE85
        }
        return SIMD4(c0, c1, c2, c3)
    }

    /// Uniform in [0, 1) with 24 random bits.
    @inline(__always)
    static func unit(_ word: UInt32) -> Float { Float(word >> 8) * 0x1p-24 }

    /// Uniform in (0, 1]: safe under a logarithm.
    @inline(__always)
    static func unitOpenZero(_ word: UInt32) -> Float { (Float(word >> 8) + 1) * 0x1p-24 }

    public mutating func nextUInt64() -> UInt64 {
        let words = block(counter)
        counter &+= 1
        return UInt64(words[0]) | (UInt64(words[1]) << 32)
    }

    /// Uniform integer in 0..<bound, without modulo bias.
    public mutating func nextInt(below bound: Int) -> Int {
        precondition(bound > 0, "nextInt: bound must be positive")
        let limit = UInt64.max - UInt64.max % UInt64(bound)
        while true {
            let value = nextUInt64()
            if value < limit { return Int(value % UInt64(bound)) }
        }
    }

    public mutating func nextUniform() -> Float { Self.unit(UInt32(truncatingIfNeeded: nextUInt64())) }

    /// Fills `count` values uniform in [low, high). Element i comes from word i%4 of block i/4.
    public mutating func fillUniform(_ out: UnsafeMutablePointer<Float>, count: Int, low: Float = 0, high: Float = 1) {
        let span = high - low
        for blockIndex in 0..<(count + 3) / 4 {
            let words = block(counter &+ UInt64(blockIndex))
            for lane in 0..<4 where blockIndex * 4 + lane < count {
                out[blockIndex * 4 + lane] = low + span * Self.unit(words[lane])
            }
        }
        counter &+= UInt64((count + 3) / 4)
    }

    /// Fills `count` standard normal values (Box–Muller; one block gives two values).
    public mutating func fillNormal(_ out: UnsafeMutablePointer<Float>, count: Int, mean: Float = 0, std: Float = 1) {
        let pairs = (count + 1) / 2
        for pair in 0..<pairs {
            let words = block(counter &+ UInt64(pair))
            let radius = (-2 * Foundation.log(Self.unitOpenZero(words[0]))).squareRoot()
            let angle = 2 * Float.pi * Self.unit(words[1])
            out[2 * pair] = mean + std * radius * Foundation.cos(angle)
            if 2 * pair + 1 < count { out[2 * pair + 1] = mean + std * radius * Foundation.sin(angle) }
        }
        counter &+= UInt64(pairs)
    }

    public mutating func normals(_ count: Int) -> [Float] {
        var values = [Float](repeating: 0, count: count)
        values.withUnsafeMutableBufferPointer { fillNormal($0.baseAddress!, count: count) }
        return values
    }
}

