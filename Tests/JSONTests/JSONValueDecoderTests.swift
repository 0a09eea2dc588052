import JSON
import Testing

/// `JSONValueDecoder` is the API's request decoder: every mistake must come back as a
/// `JSONFieldError` naming the field's path, never as a crash or a silent default.
@Suite struct JSONValueDecoderTests {
    struct Order: Decodable, Equatable {
        var name: String
        var count: Int?
        var ratio: Double?
        var tags: [String]?
        var shipping: Shipping?
        var extra: JSONValue?
        enum CodingKeys: String, CodingKey, CaseIterable { case name, count, ratio, tags, shipping, extra }
    }

    struct Shipping: Decodable, Equatable {
        var lines: [Line]
        var express: Bool
        enum CodingKeys: String, CodingKey, CaseIterable { case lines, express }
    }

    struct Line: Decodable, Equatable {
        var sku: String
        var quantity: UInt8
        enum CodingKeys: String, CodingKey, CaseIterable { case sku, quantity }
    }

    /// Takes any member: its CodingKeys are not CaseIterable.
    struct Lenient: Decodable { var name: String }

    func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
        try JSONValueDecoder.decode(T.self, from: try JSONParser.parse(Array(text.utf8)))
    }

    func mistake<T: Decodable>(_ type: T.Type, _ text: String) -> JSONFieldError? {
        do { _ = try decode(T.self, text); return nil } catch { return error as? JSONFieldError }
    }

    @Test func decodesNestedValues() throws {
        let order = try decode(Order.self, #"""
            {"name": "a", "count": 3.0, "ratio": 2, "tags": ["x", "y"], "extra": {"k": [1, null]},
             "shipping": {"lines": [{"sku": "s1", "quantity": 255}], "express": false}}
            """#)
        #expect(order == Order(name: "a", count: 3, ratio: 2, tags: ["x", "y"],
                               shipping: Shipping(lines: [Line(sku: "s1", quantity: 255)], express: false),
                               extra: ["k": [1, nil]]))
    }

    @Test func nullIsAbsent() throws {
        #expect(try decode(Order.self, #"{"name": "a", "count": null, "tags": null}"#) == Order(name: "a"))
        #expect(mistake(Order.self, #"{"name": null}"#) == JSONFieldError("name is required", path: "name"))
    }

    @Test(arguments: [
        (#"{}"#, "name", "name is required"),
        (#"{"name": 1}"#, "name", "name must be a string"),
        (#"{"name": "a", "count": 2.5}"#, "count", "count must be an integer in"),
        (#"{"name": "a", "count": "2"}"#, "count", "count must be an integer in"),
        (#"{"name": "a", "ratio": true}"#, "ratio", "ratio must be a number"),
        (#"{"name": "a", "tags": "x"}"#, "tags", "tags must be an array"),
        (#"{"name": "a", "tags": ["x", 2]}"#, "tags.1", "tags.1 must be a string"),
        (#"{"name": "a", "colour": "red"}"#, "colour", "unknown field colour; expected count, extra, name, ratio, shipping, tags"),
        (#"{"name": "a", "shipping": []}"#, "shipping", "shipping must be an object"),
        (#"{"name": "a", "shipping": {"lines": [], "express": 1}}"#, "shipping.express", "shipping.express must be true or false"),
        (#"{"name": "a", "shipping": {"express": true}}"#, "shipping.lines", "shipping.lines is required"),
        (#"{"name": "a", "shipping": {"lines": [{"sku": "s", "quantity": 256}], "express": true}}"#,
         "shipping.lines.0.quantity", "shipping.lines.0.quantity must be an integer in 0...255"),
        (#"{"name": "a", "shipping": {"lines": [{"sku": "s", "quantity": 1, "gift": true}], "express": true}}"#,
         "shipping.lines.0.gift", "unknown field shipping.lines.0.gift; expected quantity, sku"),
    ])
    func mistakesNameTheirPath(text: String, path: String, message: String) {
        let error = mistake(Order.self, text)
        #expect(error?.path == path, "\(text): \(String(describing: error))")
        #expect(error?.message.hasPrefix(message) == true, "\(text): \(String(describing: error))")
    }

    @Test func theTopLevelMustBeAnObject() {
        #expect(mistake(Order.self, "[1]") == JSONFieldError("the value must be an object", path: ""))
    }

    @Test func keysThatAreNotCaseIterableTakeAnyMember() throws {
        #expect(try decode(Lenient.self, #"{"name": "a", "other": 1}"#).name == "a")
    }

    @Test func dictionariesAndOptionalElements() throws {
        #expect(try decode([String: String].self, #"{"b": "2", "a": "1"}"#) == ["a": "1", "b": "2"])
        #expect(try decode([[Double]?].self, #"[[1, 2.5], null]"#) == [[1, 2.5], nil])
        #expect(mistake([String: String].self, #"{"a": 1}"#)?.path == "a")
    }

    struct Ranged: Decodable {
        var n: Int?
        var label: String?
        enum CodingKeys: String, CodingKey, CaseIterable { case n, label }
        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            n = try container.decodeIfPresent(Int.self, forKey: .n, in: 1...10)
            label = try container.decodeIfPresent(String.self, forKey: .label, explaining: "label must be a short name")
        }
    }

    @Test func helpersKeepTheirOwnMessages() throws {
        #expect(try decode(Ranged.self, #"{"n": null}"#).n == nil)
        #expect(try decode(Ranged.self, #"{"n": 10}"#).n == 10)
        #expect(mistake(Ranged.self, #"{"n": 11}"#) == JSONFieldError("n must be an integer in 1...10", path: "n"))
        #expect(mistake(Ranged.self, #"{"n": "1"}"#) == JSONFieldError("n must be an integer in 1...10", path: "n"))
        #expect(mistake(Ranged.self, #"{"label": 3}"#) == JSONFieldError("label must be a short name", path: "label"))
    }
}
