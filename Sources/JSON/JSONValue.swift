/// Free-form JSON, where the API takes or returns a value whose shape it does not fix
/// (metadata, an unknown request body before it is checked). Objects keep their
/// members' order, so a value encodes back as it was written.
public enum JSONValue: Sendable, Equatable, Codable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    public init(from decoder: any Decoder) throws {
        if let keyed = try? decoder.container(keyedBy: AnyKey.self) {
            var members: [(String, JSONValue)] = []
            // Foundation's decoder does not keep the text's order; sorted keys keep the result deterministic.
            for key in keyed.allKeys.sorted(by: { $0.stringValue < $1.stringValue }) {
                members.append((key.stringValue, try keyed.decode(JSONValue.self, forKey: key)))
            }
            self = .object(JSONObject(members))
            return
        }
        if var unkeyed = try? decoder.unkeyedContainer() {
            var elements: [JSONValue] = []
            while !unkeyed.isAtEnd { elements.append(try unkeyed.decode(JSONValue.self)) }
            self = .array(elements)
            return
        }
        let single = try decoder.singleValueContainer()
        if single.decodeNil() { self = .null }
        else if let value = try? single.decode(Bool.self) { self = .bool(value) }
        else if let value = try? single.decode(Int64.self) { self = .integer(value) }
        else if let value = try? single.decode(Double.self) { self = .number(value) }
        else { self = .string(try single.decode(String.self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .null:
            var single = encoder.singleValueContainer()
            try single.encodeNil()
        case let .bool(value):
            var single = encoder.singleValueContainer()
            try single.encode(value)
        case let .integer(value):
            var single = encoder.singleValueContainer()
            try single.encode(value)
        case let .number(value):
            var single = encoder.singleValueContainer()
            try single.encode(value)
        case let .string(value):
            var single = encoder.singleValueContainer()
            try single.encode(value)
        case let .array(elements):
            var unkeyed = encoder.unkeyedContainer()
            for element in elements { try unkeyed.encode(element) }
        case let .object(object):
            var keyed = encoder.container(keyedBy: AnyKey.self)
            for (key, value) in object.members { try keyed.encode(value, forKey: AnyKey(key)) }
        }
    }

    public var string: String? { if case let .string(value) = self { value } else { nil } }
    public var object: JSONObject? { if case let .object(value) = self { value } else { nil } }
    public var isNull: Bool { self == .null }
}

/// A JSON object's members in order; lookups by key are linear, as objects here are small.
public struct JSONObject: Sendable, Equatable, Codable, ExpressibleByDictionaryLiteral {
    public private(set) var members: [(String, JSONValue)]

    public init(_ members: [(String, JSONValue)] = []) { self.members = members }
    public init(dictionaryLiteral elements: (String, JSONValue)...) { members = elements }

    public subscript(key: String) -> JSONValue? {
        get { members.first(where: { $0.0 == key })?.1 }
        set {
            if let index = members.firstIndex(where: { $0.0 == key }) {
                if let newValue { members[index].1 = newValue } else { members.remove(at: index) }
            } else if let newValue {
                members.append((key, newValue))
            }
        }
    }

    public var keys: [String] { members.map(\.0) }
    public var count: Int { members.count }

    public static func == (a: JSONObject, b: JSONObject) -> Bool {
        a.members.count == b.members.count && zip(a.members, b.members).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
    }

    public init(from decoder: any Decoder) throws {
        guard case let .object(object) = try JSONValue(from: decoder) else {
            throw DecodingError.typeMismatch(JSONObject.self, .init(codingPath: decoder.codingPath, debugDescription: "expected an object"))
        }
        self = object
    }

    public func encode(to encoder: any Encoder) throws { try JSONValue.object(self).encode(to: encoder) }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral, ExpressibleByNilLiteral,
    ExpressibleByFloatLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .integer(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(nilLiteral: ()) { self = .null }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) { self = .object(JSONObject(elements)) }
}

/// JSON text already known to be valid (a JSON column this service wrote), embedded
/// as it is by `JSONBodyEncoder` instead of being parsed and written again per request.
public struct RawJSON: Sendable, Equatable, Encodable {
    public let text: String
    public init(text: String) { self.text = text }

    /// Other encoders get the parsed value.
    public func encode(to encoder: any Encoder) throws {
        guard let value = JSONValue.parse(text) else {
            throw EncodingError.invalidValue(text, .init(codingPath: encoder.codingPath, debugDescription: "not JSON"))
        }
        try value.encode(to: encoder)
    }
}

/// A string-keyed map written with its keys in byte order, so equal maps encode alike.
public struct SortedMembers<Value: Encodable>: Encodable {
    public let members: [String: Value]
    public init(_ members: [String: Value]) { self.members = members }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: AnyKey.self)
        for key in members.keys.sorted() { try container.encode(members[key]!, forKey: AnyKey(key)) }
    }
}

/// A coding key for any member name.
public struct AnyKey: CodingKey, Sendable {
    public let stringValue: String
    public var intValue: Int? { nil }
    public init(_ name: String) { stringValue = name }
    public init?(stringValue: String) { self.stringValue = stringValue }
    public init?(intValue: Int) { stringValue = String(intValue) }
}

extension SortedMembers: Sendable where Value: Sendable {}

extension JSONValue {
    /// An exact integer: JSON does not tell 2 from 2.0, so an integral number counts.
    public var exactInteger: Int? {
        switch self {
        case let .integer(value): Int(exactly: value)
        case let .number(value): Int(exactly: value)
        default: nil
        }
    }

    /// A number (integer or not); nil for anything else, Booleans included.
    public var number: Double? {
        switch self {
        case let .integer(value): Double(value)
        case let .number(value): value
        default: nil
        }
    }

    public var bool: Bool? { if case let .bool(value) = self { value } else { nil } }
    public var array: [JSONValue]? { if case let .array(value) = self { value } else { nil } }

    /// An object's member; nil when absent or when this is not an object.
    public subscript(key: String) -> JSONValue? { object?[key] }

    /// The value as JSON text, for error messages.
    public var text: String { JSONBodyEncoder.string(self) }
}

extension JSONObject {
    /// The member `key`, with null read as absent (as a request's optional fields are).
    public func present(_ key: String) -> JSONValue? {
        guard let value = self[key], value != .null else { return nil }
        return value
    }
}

extension JSONValue {
    public init(_ value: Int) { self = .integer(Int64(value)) }
    public init(_ value: Double) { self = .number(value) }
}

extension JSONValue {
    /// The value with every object's members in byte order of their names, so equal values
    /// have equal text whatever order they were written in.
    public var canonical: JSONValue {
        switch self {
        case let .array(elements): .array(elements.map(\.canonical))
        case let .object(object): .object(JSONObject(object.members.sorted { $0.0 < $1.0 }.map { ($0.0, $0.1.canonical) }))
        default: self
        }
    }
}
