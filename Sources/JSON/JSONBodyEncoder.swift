import Foundation

extension JSONValue {
    /// The value of a JSON text, or nil when it is not JSON.
    public static func parse(_ text: some StringProtocol) -> JSONValue? {
        try? JSONParser.parse(text.utf8)
    }
}

/// The one encoder of response bodies, webhook payloads and stored JSON columns.
///
/// It writes bytes as the value encodes itself, with no intermediate tree:
/// members in declaration order, `nil` as `null` (OpenAI's representations show
/// absent values as null, where Foundation's encoder would drop the key),
/// non-finite numbers as null, `RawJSON` embedded as it is. Synthesized and
/// hand-written `encode(to:)` alike finish a nested value before the next
/// member, so a container is closed when the value that opened it returns.
public enum JSONBodyEncoder {
    /// How a member whose value is absent (`encodeIfPresent` with nil) is written.
    public enum NilMembers: Sendable {
        /// `"key": null`, as the API's representations show absent values.
        case null
        /// Left out, as stored settings keep only what is set.
        case omitted
    }

    public static func encode<Value: Encodable>(_ value: Value, nilMembers: NilMembers = .null) -> [UInt8] {
        let writer = Writer(nilMembers: nilMembers)
        // Encoding into bytes cannot fail: every value has a JSON form here.
        try? writer.value(value)
        return writer.bytes.array
    }

    public static func string<Value: Encodable>(_ value: Value, nilMembers: NilMembers = .null) -> String {
        String(decoding: encode(value, nilMembers: nilMembers), as: UTF8.self)
    }

    /// The output, and the containers open in it (innermost last).
    final class Writer: Encoder {
        var bytes = Output()
        /// Each open container's closing bracket, and whether it has a member yet.
        var open: [(closer: UInt8, hasMember: Bool)] = []
        /// How many containers were open when the value being written began: a second
        /// `container(...)` call from the same `encode(to:)` reuses its container.
        var valueBase = 0
        let omitsNil: Bool

        init(nilMembers: NilMembers) { omitsNil = nilMembers == .omitted }

        var codingPath: [any CodingKey] { [] }
        var userInfo: [CodingUserInfoKey: Any] { [:] }

        /// Writes one value, then closes what it opened.
        func value<Value: Encodable>(_ value: Value) throws {
            if Value.self == RawJSON.self {
                // The type is known equal: a bit cast, where `as!` would run the dynamic cast machinery.
                bytes += unsafeBitCast(value, to: RawJSON.self).text
                return
            }
            let outer = valueBase, start = bytes.count, depth = open.count
            valueBase = depth
            defer { valueBase = outer }
            try value.encode(to: self)
            while open.count > depth { bytes.append(open.removeLast().closer) }
            // A type that encodes nothing at all is an empty object, as with Foundation's encoder.
            if bytes.count == start { bytes += "{}" }
        }

        /// Opens a container for the value being written, unless it has one already.
        func openContainer(_ opener: UInt8, _ closer: UInt8) {
            guard open.count == valueBase else { return }
            bytes.append(opener)
            open.append((closer, false))
        }

        /// The separator before a container's next member.
        func beginMember() {
            if open[open.count - 1].hasMember { bytes.append(UInt8(ascii: ",")) }
            open[open.count - 1].hasMember = true
        }

        func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
            openContainer(UInt8(ascii: "{"), UInt8(ascii: "}"))
            return KeyedEncodingContainer(KeyedWriter<Key>(writer: self))
        }

        func unkeyedContainer() -> any UnkeyedEncodingContainer {
            openContainer(UInt8(ascii: "["), UInt8(ascii: "]"))
            return UnkeyedWriter(writer: self)
        }

        func singleValueContainer() -> any SingleValueEncodingContainer { SingleWriter(writer: self) }

        // MARK: Scalars

        func writeNull() { bytes += "null" }
        func write(_ value: Bool) { bytes += value ? "true" : "false" }

        func write<Integer: BinaryInteger>(_ value: Integer) {
            if value == 0 { bytes.append(UInt8(ascii: "0")); return }
            var magnitude = value.magnitude
            if value < 0 { bytes.append(UInt8(ascii: "-")) }
            // Digits into a small stack buffer, most significant first.
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 40) { buffer in
                var index = 40
                while magnitude > 0 {
                    index -= 1
                    buffer[index] = UInt8(ascii: "0") + UInt8(truncatingIfNeeded: magnitude % 10)
                    magnitude /= 10
                }
                bytes.append(UnsafeBufferPointer(rebasing: buffer[index..<40]))
            }
        }

        func write(_ value: Double) {
            guard value.isFinite else { return writeNull() }
            // Integral values as integers ("3", not "3.0"), as JSONSerialization and Python write them.
            if value == value.rounded(), abs(value) < 1e15 { return write(Int64(value)) }
            bytes += value.description
        }

        func write(_ value: Float) {
            guard value.isFinite else { return writeNull() }
            // A Float's own shortest form ("0.1"), not its widening to Double ("0.10000000149011612").
            if value == value.rounded(), abs(value) < 1e7 { return write(Int64(value)) }
            bytes += value.description
        }

        func write(_ text: String) {
            bytes.append(UInt8(ascii: "\""))
            // Most strings (ids, names, statuses) need no escape: copy them whole.
            if Output.needsNoEscape(text) {
                bytes += text
            } else {
                for byte in text.utf8 {
                    switch byte {
                    case UInt8(ascii: "\""): bytes += [0x5C, 0x22]
                    case UInt8(ascii: "\\"): bytes += [0x5C, 0x5C]
                    case 0x0A: bytes += [0x5C, UInt8(ascii: "n")]
                    case 0x0D: bytes += [0x5C, UInt8(ascii: "r")]
                    case 0x09: bytes += [0x5C, UInt8(ascii: "t")]
                    case 0..<0x20:
                        let hex = Array("0123456789abcdef".utf8)
                        bytes += [0x5C, UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(byte >> 4)], hex[Int(byte & 15)]]
                    default: bytes.append(byte)
                    }
                }
            }
            bytes.append(UInt8(ascii: "\""))
        }
    }

    /// A growable byte buffer without copy-on-write checks on every append.
    struct Output: ~Copyable {
        private var base = UnsafeMutablePointer<UInt8>.allocate(capacity: 1024)
        private var capacity = 1024
        private(set) var count = 0

        deinit { base.deallocate() }

        var array: [UInt8] { Array(UnsafeBufferPointer(start: base, count: count)) }

        @inline(__always)
        mutating func reserve(_ more: Int) {
            if count + more > capacity { grow(more) }
        }

        private mutating func grow(_ more: Int) {
            let grown = max(capacity * 2, count + more)
            let new = UnsafeMutablePointer<UInt8>.allocate(capacity: grown)
            new.update(from: base, count: count)
            base.deallocate()
            base = new
            capacity = grown
        }

        @inline(__always)
        mutating func append(_ byte: UInt8) {
            reserve(1)
            base[count] = byte
            count += 1
        }

        mutating func append(_ bytes: UnsafeBufferPointer<UInt8>) {
            guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
            reserve(bytes.count)
            (base + count).update(from: source, count: bytes.count)
            count += bytes.count
        }

        static func += (output: inout Output, bytes: [UInt8]) { bytes.withUnsafeBufferPointer { output.append($0) } }

        static func += (output: inout Output, text: String) {
            var text = text
            text.withUTF8 { output.append($0) }
        }

        /// Whether no byte of `text` is a control character, `"` or `\`: eight bytes at a time.
        static func needsNoEscape(_ text: String) -> Bool {
            var text = text
            return text.withUTF8 { utf8 in
                guard let base = utf8.baseAddress else { return true }
                let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
                // A byte of x is zero exactly when its high bit is set in (x - ones) & ~x & highs.
                func hasZeroByte(_ x: UInt64) -> Bool { (x &- ones) & ~x & highs != 0 }
                var index = 0
                while index + 8 <= utf8.count {
                    let word = UnsafeRawPointer(base + index).loadUnaligned(as: UInt64.self)
                    // Bytes below 0x20 (ASCII only: bytes of 0x80 and up never need escaping) ...
                    let control = (word &- ones &* 0x20) & ~word & highs
                    if control != 0 || hasZeroByte(word ^ (ones &* 0x22)) || hasZeroByte(word ^ (ones &* 0x5C)) { return false }
                    index += 8
                }
                while index < utf8.count {
                    let byte = utf8[index]
                    if byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { return false }
                    index += 1
                }
                return true
            }
        }
    }

    struct KeyedWriter<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let writer: Writer
        var codingPath: [any CodingKey] { [] }

        func key(_ key: Key) {
            writer.beginMember()
            writer.write(key.stringValue)
            writer.bytes.append(UInt8(ascii: ":"))
        }

        mutating func encodeNil(forKey key: Key) throws { self.key(key); writer.writeNull() }
        mutating func encode(_ value: Bool, forKey key: Key) throws { self.key(key); writer.write(value) }
        mutating func encode(_ value: String, forKey key: Key) throws { self.key(key); writer.write(value) }
        mutating func encode(_ value: Double, forKey key: Key) throws { self.key(key); writer.write(value) }
        mutating func encode(_ value: Float, forKey key: Key) throws { self.key(key); writer.write(value) }
        mutating func encode(_ value: Int, forKey key: Key) throws { self.key(key); writer.write(value) }
        mutating func encode(_ value: Int64, forKey key: Key) throws { self.key(key); writer.write(value) }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws { self.key(key); try writer.value(value) }

        // Absent values are null members, unless the encoder leaves them out.
        mutating func encodeIfPresent(_ value: Bool?, forKey key: Key) throws {
            if let value { self.key(key); writer.write(value) } else { absent(key) }
        }
        mutating func encodeIfPresent(_ value: String?, forKey key: Key) throws {
            if let value { self.key(key); writer.write(value) } else { absent(key) }
        }
        mutating func encodeIfPresent(_ value: Double?, forKey key: Key) throws {
            if let value { self.key(key); writer.write(value) } else { absent(key) }
        }
        mutating func encodeIfPresent(_ value: Int?, forKey key: Key) throws {
            if let value { self.key(key); writer.write(value) } else { absent(key) }
        }
        mutating func encodeIfPresent<T: Encodable>(_ value: T?, forKey key: Key) throws {
            if let value { self.key(key); try writer.value(value) } else { absent(key) }
        }

        func absent(_ key: Key) {
            guard !writer.omitsNil else { return }
            self.key(key)
            writer.writeNull()
        }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
            preconditionFailure("JSONBodyEncoder writes as it goes: encode a nested value instead of a nested container")
        }
        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            preconditionFailure("JSONBodyEncoder writes as it goes: encode a nested value instead of a nested container")
        }
        mutating func superEncoder() -> any Encoder { writer }
        mutating func superEncoder(forKey key: Key) -> any Encoder { self.key(key); return writer }
    }

    struct UnkeyedWriter: UnkeyedEncodingContainer {
        let writer: Writer
        var codingPath: [any CodingKey] { [] }
        private(set) var count = 0

        init(writer: Writer) { self.writer = writer }

        mutating func encodeNil() throws { writer.beginMember(); writer.writeNull(); count += 1 }
        mutating func encode(_ value: Bool) throws { writer.beginMember(); writer.write(value); count += 1 }
        mutating func encode(_ value: String) throws { writer.beginMember(); writer.write(value); count += 1 }
        mutating func encode(_ value: Double) throws { writer.beginMember(); writer.write(value); count += 1 }
        mutating func encode(_ value: Float) throws { writer.beginMember(); writer.write(value); count += 1 }
        mutating func encode(_ value: Int) throws { writer.beginMember(); writer.write(value); count += 1 }
        mutating func encode<T: Encodable>(_ value: T) throws { writer.beginMember(); try writer.value(value); count += 1 }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            preconditionFailure("JSONBodyEncoder writes as it goes: encode a nested value instead of a nested container")
        }
        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            preconditionFailure("JSONBodyEncoder writes as it goes: encode a nested value instead of a nested container")
        }
        mutating func superEncoder() -> any Encoder { writer.beginMember(); return writer }
    }

    struct SingleWriter: SingleValueEncodingContainer {
        let writer: Writer
        var codingPath: [any CodingKey] { [] }

        mutating func encodeNil() throws { writer.writeNull() }
        mutating func encode(_ value: Bool) throws { writer.write(value) }
        mutating func encode(_ value: String) throws { writer.write(value) }
        mutating func encode(_ value: Double) throws { writer.write(value) }
        mutating func encode(_ value: Float) throws { writer.write(value) }
        mutating func encode(_ value: Int) throws { writer.write(value) }
        mutating func encode(_ value: Int64) throws { writer.write(value) }
        mutating func encode<T: Encodable>(_ value: T) throws { try writer.value(value) }
    }
}
