/// A type that writes its JSON object member by member, straight into `JSONBodyEncoder`'s
/// output: no keyed container, no per-member generic calls through Codable's type-erased
/// box. For the bodies the API writes most (a job, on every poll). Its `Encodable`
/// conformance comes from these members, so there is one definition of the object.
public protocol JSONMembers: Encodable {
    func writeMembers(to object: inout JSONObjectWriter)
}

extension JSONMembers {
    public func encode(to encoder: any Encoder) throws {
        if let writer = encoder as? JSONBodyEncoder.Writer {
            writer.writeObject(self)
            return
        }
        // Any other encoder gets the same members, as a value.
        let text = JSONBodyEncoder.string(self)
        guard let value = JSONValue.parse(text) else {
            // Only an embedded `RawJSON` that is not JSON can get here, as with `RawJSON` itself.
            throw EncodingError.invalidValue(text, .init(codingPath: encoder.codingPath, debugDescription: "not JSON"))
        }
        try value.encode(to: encoder)
    }
}

/// The members of one object being written. Keys are static: the API's member names, which
/// need no escaping. A nil is written as `null`, or left out when the encoder omits nils.
public struct JSONObjectWriter: ~Copyable {
    let writer: JSONBodyEncoder.Writer
    var hasMember = false

    init(writer: JSONBodyEncoder.Writer) { self.writer = writer }

    mutating func key(_ key: StaticString) {
        if hasMember { writer.bytes.append(UInt8(ascii: ",")) }
        hasMember = true
        writer.bytes.append(UInt8(ascii: "\""))
        key.withUTF8Buffer { writer.bytes.append($0) }
        writer.bytes.append(UInt8(ascii: "\""))
        writer.bytes.append(UInt8(ascii: ":"))
    }

    /// A nil member: `null`, unless nils are left out.
    mutating func absent(_ key: StaticString) {
        guard !writer.omitsNil else { return }
        self.key(key)
        writer.writeNull()
    }

    public mutating func member(_ key: StaticString, _ value: String) { self.key(key); writer.write(value) }
    public mutating func member(_ key: StaticString, _ value: Int) { self.key(key); writer.write(value) }
    public mutating func member(_ key: StaticString, _ value: Double) { self.key(key); writer.write(value) }
    public mutating func member(_ key: StaticString, _ value: Bool) { self.key(key); writer.write(value) }
    public mutating func member(_ key: StaticString, _ value: RawJSON) { self.key(key); writer.bytes += value.text }
    public mutating func member(_ key: StaticString, _ value: some JSONMembers) { self.key(key); writer.writeObject(value) }
    /// Anything else goes through its `Encodable` conformance.
    public mutating func member(_ key: StaticString, encoding value: some Encodable) { self.key(key); try? writer.value(value) }

    public mutating func member(_ key: StaticString, _ value: String?) {
        if let value { member(key, value) } else { absent(key) }
    }
    public mutating func member(_ key: StaticString, _ value: Int?) {
        if let value { member(key, value) } else { absent(key) }
    }
    public mutating func member(_ key: StaticString, _ value: Double?) {
        if let value { member(key, value) } else { absent(key) }
    }
    public mutating func member(_ key: StaticString, _ value: RawJSON?) {
        if let value { member(key, value) } else { absent(key) }
    }
    public mutating func member(_ key: StaticString, _ value: (some JSONMembers)?) {
        if let value { member(key, value) } else { absent(key) }
    }
}

extension JSONBodyEncoder.Writer {
    /// `{`, the value's members, `}`.
    func writeObject(_ value: some JSONMembers) {
        bytes.append(UInt8(ascii: "{"))
        var object = JSONObjectWriter(writer: self)
        value.writeMembers(to: &object)
        bytes.append(UInt8(ascii: "}"))
    }
}
