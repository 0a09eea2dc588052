import Foundation
import JSON
import Testing

@Suite struct JSONBodyEncoderTests {
    struct Everything: Encodable {
        let text = "quote \" backslash \\ newline \n tab \t bell \u{7} snow ☃"
        let int = 42, negative = -7, double = 0.25, tiny = 1e-5, bool = true, `false` = false
        let null: String? = nil
        let array: [JSONValue] = [1, "two", [3]]
        let nested = SortedMembers(["b": 2, "a": 1])
        let raw = RawJSON(text: #"{"kept":[1,2]}"#)
        let nan = Double.nan
        let float: Float = 0.1
        let minimum = Int64.min
    }

    @Test func writesWhatJSONParsersReadBack() throws {
        let value = Everything()
        let bytes = JSONBodyEncoder.encode(value)
        let parsed = try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
        #expect(parsed["text"] as? String == value.text)
        #expect(parsed["int"] as? Int == 42 && parsed["negative"] as? Int == -7 && parsed["double"] as? Double == 0.25)
        #expect(parsed["tiny"] as? Double == 1e-5 && parsed["bool"] as? Bool == true && parsed["false"] as? Bool == false)
        #expect(parsed["null"] is NSNull && parsed["nan"] is NSNull)
        #expect((parsed["raw"] as? [String: Any])?["kept"] as? [Int] == [1, 2])
        #expect(parsed["minimum"] as? Int == Int.min)
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.hasPrefix(#"{"text":"#), "members in declaration order")
        #expect(text.contains(#""nested":{"a":1,"b":2}"#), "sorted members in byte order, so equal maps encode alike")
        #expect(text.contains(#""float":0.1,"#), "a Float in its own shortest form")
        #expect(text.contains(#""array":[1,"two",[3]]"#))
    }

    @Test func escapesEveryCharacterThatNeedsItWhereverItStands() throws {
        for special in ["\"", "\\", "\n", "\u{1}", "\u{1F}", "é", "☃", "\u{7F}"] {
            for position in 0..<20 {
                let text = String(repeating: "a", count: position) + special + String(repeating: "b", count: 19 - position)
                let parsed = try JSONParser.parse(JSONBodyEncoder.encode([text]))
                #expect(parsed == [.string(text)], "\(special.unicodeScalars.map(\.value)) at \(position)")
            }
        }
    }

    struct Optionals: Encodable {
        let present: Int? = 1
        let absent: Int? = nil
        let nested: [String: Int]? = nil
    }

    @Test func absentMembersAreNullUnlessOmitted() {
        #expect(JSONBodyEncoder.string(Optionals()) == #"{"present":1,"absent":null,"nested":null}"#)
        #expect(JSONBodyEncoder.string(Optionals(), nilMembers: .omitted) == #"{"present":1}"#)
    }

    @Test func valuesRoundTripThroughParsing() throws {
        let text = #"{"a":[1,2.5,"x",null,true,{"b":false}],"c":{"d":-3}}"#
        let value = try #require(JSONValue.parse(text))
        #expect(JSONBodyEncoder.string(value) == text)
        #expect(value.object?["c"] == .object(["d": -3]))
        #expect(JSONValue.parse("{") == nil)
        // Another encoder gets a RawJSON's parsed value.
        let foundation = try JSONEncoder().encode(RawJSON(text: #"{"k":[1]}"#))
        #expect(try JSONDecoder().decode(JSONValue.self, from: foundation) == ["k": [1]])
    }
}

@Suite struct JSONParserTests {
    @Test func parsesWhatJSONSerializationWrites() throws {
        let text = #"{"s":"a\"b\\c\/d\n\u00e9\ud83d\ude00","i":-12,"big":9223372036854775807,"f":2.5e-3,"z":0,"t":true,"n":null,"a":[[],{}]}"#
        let value = try JSONParser.parse(Array(text.utf8))
        let object = try #require(value.object)
        #expect(object["s"]?.string == "a\"b\\c/d\né😀")
        #expect(object["i"] == .integer(-12) && object["big"] == .integer(Int64.max) && object["f"] == .number(0.0025))
        #expect(object["z"]?.exactInteger == 0 && object["t"] == true && object["n"] == .null)
        #expect(object["a"] == [[], .object(JSONObject())])
        #expect(object.keys == ["s", "i", "big", "f", "z", "t", "n", "a"], "members keep their order")
        // What Foundation reads, this reads alike.
        let foundation = try JSONSerialization.jsonObject(with: Data(JSONBodyEncoder.encode(value))) as? [String: Any]
        #expect(foundation?["s"] as? String == "a\"b\\c/d\né😀")
    }

    @Test(arguments: ["", "{", "[1,]", "{\"a\":}", "01", "1.", "-", "\"\u{01}\"", "\"\\x\"", "\"\\ud800\"", "tru", "[1] 2", "1e999", "{\"a\" 1}"])
    func refusesMalformedText(_ text: String) {
        #expect(throws: JSONParser.Failure.self) { try JSONParser.parse(Array(text.utf8)) }
    }

    @Test func aRepeatedNameKeepsItsPlaceAndTakesTheLastValue() throws {
        for count in [3, 40] {
            let names = (0..<count).map { "k\($0)" }
            let text = "{" + (names + ["k1", "k\(count - 1)"]).enumerated().map { "\"\($1)\":\($0)" }.joined(separator: ",") + "}"
            let object = try #require(try JSONParser.parse(Array(text.utf8)).object)
            #expect(object.keys == names, "\(count) members")
            #expect(object["k1"] == .integer(Int64(count)) && object["k\(count - 1)"] == .integer(Int64(count + 1)))
            #expect(object["k0"] == .integer(0))
        }
    }

    @Test func boundsNesting() throws {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(throws: JSONParser.Failure.self) { try JSONParser.parse(Array(deep.utf8)) }
        let fine = String(repeating: "[", count: 200) + String(repeating: "]", count: 200)
        #expect(try JSONParser.parse(Array(fine.utf8)).array?.count == 1)
    }

    @Test func canonicalFormSortsMembersAtEveryDepth() throws {
        let a = try JSONParser.parse(Array(#"{"b":1,"a":{"d":[{"y":1,"x":2}],"c":3}}"#.utf8))
        let b = try JSONParser.parse(Array(#"{"a":{"c":3,"d":[{"x":2,"y":1}]},"b":1}"#.utf8))
        #expect(a != b && a.canonical == b.canonical)
        #expect(JSONBodyEncoder.string(a.canonical) == #"{"a":{"c":3,"d":[{"x":2,"y":1}]},"b":1}"#)
    }
}
