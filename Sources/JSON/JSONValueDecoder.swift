/// A field of a decoded value that is missing, of the wrong type or out of range, named by
/// its path (`method.dro.hyperparameters.beta`, `noise.3`), so an API can say which field to fix.
public struct JSONFieldError: Error, Equatable, Sendable, CustomStringConvertible {
    public let message: String
    /// Member names and array indices joined by dots; empty for the value itself.
    public let path: String

    public init(_ message: String, path: String) {
        self.message = message
        self.path = path
    }

    public var description: String { message }

    /// A member the type does not take, and those it does.
    static func unknownField(_ name: String, at codingPath: [any CodingKey], expected: some Collection<String>) -> JSONFieldError {
        let path = (codingPath + [AnyKey(name)]).dotted
        return JSONFieldError("unknown field \(path); expected \(expected.sorted().joined(separator: ", "))", path: path)
    }
}

/// `Decodable` over a parsed `JSONValue`, strict where Foundation's `JSONDecoder` is lenient:
/// - a type whose `CodingKeys` are `CaseIterable` takes no member it does not name;
/// - an integer field takes only an integral number (JSON does not tell 2 from 2.0);
/// - null counts as absent, for optional and required fields alike;
/// - every error is a `JSONFieldError` with the field's path and a message a user can act on.
public enum JSONValueDecoder {
    public static func decode<T: Decodable>(_ type: T.Type, from value: JSONValue) throws -> T {
        try ValueDecoder(value, codingPath: []).decodeValue(T.self)
    }
}

extension [any CodingKey] {
    /// The path as a request's `param` names it: `method.dro.hyperparameters`, `noise.0`.
    public var dotted: String { map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".") }
}

extension KeyedDecodingContainer {
    /// The path of a member, for a message about it.
    public func path(_ key: Key) -> String { (codingPath + [key]).dotted }

    /// An error about a member, named by its path.
    public func mistake(_ key: Key, _ message: String) -> JSONFieldError { JSONFieldError(message, path: path(key)) }

    /// An optional integer member (null is absent) within `range`.
    public func decodeIfPresent(_ type: Int.Type, forKey key: Key, in range: ClosedRange<Int>) throws -> Int? {
        guard try !isAbsent(key) else { return nil }
        guard let value = try? decode(Int.self, forKey: key), range.contains(value) else { throw integerMistake(key, range) }
        return value
    }

    /// An optional member (null is absent) whose every mistake is explained by one message,
    /// where a field-by-field one would say less (`prompts must be a non-empty array of strings`).
    public func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key, explaining message: String) throws -> T? {
        do { return try decodeIfPresent(T.self, forKey: key) } catch { throw mistake(key, message) }
    }

    /// Absent or null.
    public func isAbsent(_ key: Key) throws -> Bool { try !contains(key) || decodeNil(forKey: key) }

    /// Refuses any member outside `allowed` (for containers whose keys are only known at run time).
    public func rejectMembers(except allowed: [String]) throws {
        if let unknown = allKeys.map(\.stringValue).sorted().first(where: { !allowed.contains($0) }) {
            throw JSONFieldError.unknownField(unknown, at: codingPath, expected: allowed)
        }
    }

    private func integerMistake(_ key: Key, _ range: ClosedRange<Int>) -> JSONFieldError {
        mistake(key, "\(path(key)) must be an integer in \(range.lowerBound)...\(range.upperBound)")
    }
}

// MARK: - The decoder

private struct ValueDecoder: Decoder {
    let value: JSONValue
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    init(_ value: JSONValue, codingPath: [any CodingKey]) {
        self.value = value
        self.codingPath = codingPath
    }

    var path: String { codingPath.dotted }
    /// What the value is called in a message: its path, or "the value" at the top.
    var subject: String { codingPath.isEmpty ? "the value" : path }

    func mismatch(_ expected: String) -> JSONFieldError { JSONFieldError("\(subject) must be \(expected)", path: path) }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case let .object(object) = value else { throw mismatch("an object") }
        if let names = declaredNames(Key.self), let unknown = object.keys.first(where: { !names.contains($0) }) {
            throw JSONFieldError.unknownField(unknown, at: codingPath, expected: names)
        }
        return KeyedDecodingContainer(ObjectContainer<Key>(object: object, codingPath: codingPath))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case let .array(elements) = value else { throw mismatch("an array") }
        return ArrayContainer(elements: elements, codingPath: codingPath)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer { self }

    /// Values the JSON model has directly are read here; anything else decodes itself.
    func decodeValue<T: Decodable>(_ type: T.Type) throws -> T {
        if T.self == JSONValue.self { return value as! T }
        if T.self == JSONObject.self {
            guard case let .object(object) = value else { throw mismatch("an object") }
            return object as! T
        }
        if T.self == String.self {
            guard case let .string(text) = value else { throw mismatch("a string") }
            return text as! T
        }
        if T.self == Bool.self {
            guard case let .bool(flag) = value else { throw mismatch("true or false") }
            return flag as! T
        }
        if T.self == Double.self {
            guard let number = value.number else { throw mismatch("a number") }
            return number as! T
        }
        if T.self == Float.self {
            guard let number = value.number, let single = Float(exactly: Float(number)), single.isFinite else { throw mismatch("a number") }
            return single as! T
        }
        if let integer = T.self as? any FixedWidthInteger.Type {
            return try decodeInteger(integer) as! T
        }
        return try T(from: self)
    }

    private func decodeInteger<I: FixedWidthInteger>(_ type: I.Type) throws -> I {
        let exact: I? = switch value {
        case let .integer(integer): I(exactly: integer)
        case let .number(number): I(exactly: number)
        default: nil
        }
        guard let exact else { throw mismatch("an integer in \(I.min)...\(I.max)") }
        return exact
    }
}

/// The member names a `CaseIterable` key type declares; nil for key types that take any name.
private func declaredNames<Key: CodingKey>(_ type: Key.Type) -> Set<String>? {
    guard let iterable = type as? any CaseIterable.Type else { return nil }
    return names(of: iterable)
}

private func names<Keys: CaseIterable>(of type: Keys.Type) -> Set<String> {
    Set(type.allCases.compactMap { ($0 as? any CodingKey)?.stringValue })
}

extension ValueDecoder: SingleValueDecodingContainer {
    func decodeNil() -> Bool { value == .null }
    func decode(_ type: Bool.Type) throws -> Bool { try decodeValue(type) }
    func decode(_ type: String.Type) throws -> String { try decodeValue(type) }
    func decode(_ type: Double.Type) throws -> Double { try decodeValue(type) }
    func decode(_ type: Float.Type) throws -> Float { try decodeValue(type) }
    func decode(_ type: Int.Type) throws -> Int { try decodeValue(type) }
    func decode(_ type: Int8.Type) throws -> Int8 { try decodeValue(type) }
    func decode(_ type: Int16.Type) throws -> Int16 { try decodeValue(type) }
    func decode(_ type: Int32.Type) throws -> Int32 { try decodeValue(type) }
    func decode(_ type: Int64.Type) throws -> Int64 { try decodeValue(type) }
    func decode(_ type: UInt.Type) throws -> UInt { try decodeValue(type) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try decodeValue(type) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try decodeValue(type) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try decodeValue(type) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try decodeValue(type) }
    func decode<T: Decodable>(_ type: T.Type) throws -> T { try decodeValue(type) }
}

private struct ObjectContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let object: JSONObject
    let codingPath: [any CodingKey]

    var allKeys: [Key] { object.keys.compactMap(Key.init(stringValue:)) }
    func contains(_ key: Key) -> Bool { object[key.stringValue] != nil }
    func decodeNil(forKey key: Key) throws -> Bool { (object[key.stringValue] ?? .null) == .null }

    /// The member's decoder; absent and null are both "required" here (optional members go through `decodeIfPresent`).
    func member(_ key: Key) throws -> ValueDecoder {
        guard let value = object[key.stringValue], value != .null else {
            throw JSONFieldError("\((codingPath + [key]).dotted) is required", path: (codingPath + [key]).dotted)
        }
        return ValueDecoder(value, codingPath: codingPath + [key])
    }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T { try member(key).decodeValue(type) }
    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        try decodeNil(forKey: key) ? nil : decode(type, forKey: key)
    }
    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try member(key).decodeValue(type) }
    func decode(_ type: String.Type, forKey key: Key) throws -> String { try member(key).decodeValue(type) }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try member(key).decodeValue(type) }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float { try member(key).decodeValue(type) }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try member(key).decodeValue(type) }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try member(key).decodeValue(type) }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try member(key).decodeValue(type) }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try member(key).decodeValue(type) }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try member(key).decodeValue(type) }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try member(key).decodeValue(type) }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try member(key).decodeValue(type) }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try member(key).decodeValue(type) }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try member(key).decodeValue(type) }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try member(key).decodeValue(type) }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        try member(key).container(keyedBy: type)
    }
    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer { try member(key).unkeyedContainer() }
    func superDecoder() throws -> any Decoder { ValueDecoder(.object(object), codingPath: codingPath) }
    func superDecoder(forKey key: Key) throws -> any Decoder { try member(key) }
}

/// An array element's place in a coding path.
private struct IndexKey: CodingKey {
    let intValue: Int?
    var stringValue: String { String(intValue!) }
    init(intValue: Int) { self.intValue = intValue }
    init?(stringValue: String) { nil }
}

private struct ArrayContainer: UnkeyedDecodingContainer {
    let elements: [JSONValue]
    let codingPath: [any CodingKey]
    private(set) var currentIndex = 0

    init(elements: [JSONValue], codingPath: [any CodingKey]) {
        self.elements = elements
        self.codingPath = codingPath
    }

    var count: Int? { elements.count }
    var isAtEnd: Bool { currentIndex >= elements.count }

    /// The next element's decoder, moving past it.
    mutating func next() throws -> ValueDecoder {
        guard !isAtEnd else { throw JSONFieldError("\(codingPath.dotted) has too few elements", path: codingPath.dotted) }
        defer { currentIndex += 1 }
        return ValueDecoder(elements[currentIndex], codingPath: codingPath + [IndexKey(intValue: currentIndex)])
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd, elements[currentIndex] == .null else { return false }
        currentIndex += 1
        return true
    }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try next().decodeValue(type) }
    mutating func decode(_ type: Bool.Type) throws -> Bool { try next().decodeValue(type) }
    mutating func decode(_ type: String.Type) throws -> String { try next().decodeValue(type) }
    mutating func decode(_ type: Double.Type) throws -> Double { try next().decodeValue(type) }
    mutating func decode(_ type: Float.Type) throws -> Float { try next().decodeValue(type) }
    mutating func decode(_ type: Int.Type) throws -> Int { try next().decodeValue(type) }
    mutating func decode(_ type: Int8.Type) throws -> Int8 { try next().decodeValue(type) }
    mutating func decode(_ type: Int16.Type) throws -> Int16 { try next().decodeValue(type) }
    mutating func decode(_ type: Int32.Type) throws -> Int32 { try next().decodeValue(type) }
    mutating func decode(_ type: Int64.Type) throws -> Int64 { try next().decodeValue(type) }
    mutating func decode(_ type: UInt.Type) throws -> UInt { try next().decodeValue(type) }
    mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try next().decodeValue(type) }
    mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try next().decodeValue(type) }
    mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try next().decodeValue(type) }
    mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try next().decodeValue(type) }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        try next().container(keyedBy: type)
    }
    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer { try next().unkeyedContainer() }
    mutating func superDecoder() throws -> any Decoder { try next() }
}
