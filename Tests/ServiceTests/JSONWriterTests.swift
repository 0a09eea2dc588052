import Foundation
@testable import Service
import Testing

@Suite struct JSONWriterTests {
    @Test func writesWhatJSONParsersReadBack() throws {
        let value: [String: Any] = [
            "text": "quote \" backslash \\ newline \n tab \t bell \u{7} snow ☃", "int": 42, "negative": -7, "double": 0.25,
            "tiny": 1e-5, "bool": true, "false": false, "null": NSNull(), "array": [1, "two", [3]] as [Any],
            "nested": ["b": 2, "a": 1] as [String: Any], "raw": RawJSON(text: #"{"kept":[1,2]}"#), "nan": Double.nan,
        ]
        let bytes = JSONWriter.encode(value)
        let parsed = try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
        #expect(parsed["text"] as? String == value["text"] as? String)
        #expect(parsed["int"] as? Int == 42 && parsed["negative"] as? Int == -7 && parsed["double"] as? Double == 0.25)
        #expect(parsed["tiny"] as? Double == 1e-5 && parsed["bool"] as? Bool == true && parsed["false"] as? Bool == false)
        #expect(parsed["null"] is NSNull && parsed["nan"] is NSNull)
        #expect((parsed["raw"] as? [String: Any])?["kept"] as? [Int] == [1, 2])
        #expect(String(decoding: JSONWriter.encode(["b": 1, "a": ["d": 2, "c": 3] as [String: Any]] as [String: Any]), as: UTF8.self)
                == #"{"a":{"c":3,"d":2},"b":1}"#, "keys in byte order, so equal values encode alike")
        let parsedNumbers = try JSONSerialization.jsonObject(with: Data(#"{"flag":true,"n":3,"x":2.5}"#.utf8))
        #expect(String(decoding: JSONWriter.encode(parsedNumbers), as: UTF8.self) == #"{"flag":true,"n":3,"x":2.5}"#)
    }
}
