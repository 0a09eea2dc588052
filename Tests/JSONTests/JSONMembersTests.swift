import Foundation
import JSON
import Testing

/// `JSONMembers` writes objects without Codable's keyed containers: it must write exactly
/// what the Codable path writes, and any other encoder must see the same members.
@Suite struct JSONMembersTests {
    struct Inner: JSONMembers, Equatable {
        let flag: Bool
        let note: String?
        func writeMembers(to object: inout JSONObjectWriter) {
            object.member("flag", flag)
            object.member("note", note)
        }
    }

    struct Written: JSONMembers {
        let id = "ftjob-1 \"quoted\""
        let count = -3
        let rate: Double? = 0.5
        let missing: Int? = nil
        let raw = RawJSON(text: #"{"kept":[1,2]}"#)
        let absentRaw: RawJSON? = nil
        let inner = Inner(flag: true, note: nil)
        let absentInner: Inner? = nil
        let list = ["a", "b"]
        func writeMembers(to object: inout JSONObjectWriter) {
            object.member("id", id)
            object.member("count", count)
            object.member("rate", rate)
            object.member("missing", missing)
            object.member("raw", raw)
            object.member("absent_raw", absentRaw)
            object.member("inner", inner)
            object.member("absent_inner", absentInner)
            object.member("list", encoding: list)
        }
    }

    /// The same object through synthesized Codable, with the same member names.
    struct Synthesized: Encodable {
        struct Inner: Encodable { let flag: Bool; let note: String? }
        let id = "ftjob-1 \"quoted\""
        let count = -3
        let rate: Double? = 0.5
        let missing: Int? = nil
        let raw = RawJSON(text: #"{"kept":[1,2]}"#)
        let absentRaw: RawJSON? = nil
        let inner = Inner(flag: true, note: nil)
        let absentInner: Inner? = nil
        let list = ["a", "b"]
        enum CodingKeys: String, CodingKey {
            case id, count, rate, missing, raw, absentRaw = "absent_raw", inner, absentInner = "absent_inner", list
        }
    }

    @Test func writesWhatTheCodablePathWrites() {
        #expect(JSONBodyEncoder.string(Written()) == JSONBodyEncoder.string(Synthesized()))
        #expect(JSONBodyEncoder.string(Written(), nilMembers: .omitted) == JSONBodyEncoder.string(Synthesized(), nilMembers: .omitted))
        #expect(JSONBodyEncoder.string(Written()) ==
                #"{"id":"ftjob-1 \"quoted\"","count":-3,"rate":0.5,"missing":null,"raw":{"kept":[1,2]},"absent_raw":null,"inner":{"flag":true,"note":null},"absent_inner":null,"list":["a","b"]}"#)
    }

    @Test func nestedInsideCodableValuesAndListsToo() {
        #expect(JSONBodyEncoder.string([Inner(flag: false, note: "x")]) == #"[{"flag":false,"note":"x"}]"#)
        #expect(JSONBodyEncoder.string(["k": Inner(flag: true, note: nil)]) == #"{"k":{"flag":true,"note":null}}"#)
    }

    @Test func otherEncodersSeeTheSameMembers() throws {
        let data = try JSONEncoder().encode(Written())
        let viaFoundation = try JSONParser.parse(Array(data))
        let viaOurs = try JSONParser.parse(JSONBodyEncoder.encode(Written()))
        #expect(viaFoundation.canonical == viaOurs.canonical)
    }
}
