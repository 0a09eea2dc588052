import HTTP
import TestSupport
import Testing

func multipart(_ body: [UInt8], boundary: String, cuts: [Int] = []) throws -> [MultipartEvent] {
    var parser = MultipartParser(boundary: boundary)
    var events: [MultipartEvent] = []
    var start = 0
    for cut in cuts.sorted() + [body.count] where cut >= start {
        events += try parser.feed(body[start..<cut])
        start = cut
    }
    var merged: [MultipartEvent] = []
    for event in events {
        if case let .data(piece) = event, case let .data(previous)? = merged.last { merged[merged.count - 1] = .data(previous + piece) }
        else { merged.append(event) }
    }
    return merged
}

@Suite(.ownThread) struct MultipartParserTests {
    // As Python's httpx (the openai SDK's client) sends an upload.
    static let boundary = "a3f1c9e2b7d64f0c8e5a9b1d2c3e4f50"
    static let body = Array("""
        --\(boundary)\r
        Content-Disposition: form-data; name="purpose"\r
        \r
        fine-tune\r
        --\(boundary)\r
        Content-Disposition: form-data; name="file"; filename="train.jsonl"\r
        Content-Type: application/octet-stream\r
        \r
        {"prompt": "a", "sample": [0.5]}\r
        {"prompt": "--\(boundary.prefix(8))", "sample": [1]}\r
        --\(boundary)--\r

        """.utf8)

    static let expected: [MultipartEvent] = [
        .partStart(name: "purpose", filename: nil, contentType: nil), .data(Array("fine-tune".utf8)), .partEnd,
        .partStart(name: "file", filename: "train.jsonl", contentType: "application/octet-stream"),
        .data(Array("{\"prompt\": \"a\", \"sample\": [0.5]}\r\n{\"prompt\": \"--\(boundary.prefix(8))\", \"sample\": [1]}".utf8)),
        .partEnd, .end,
    ]

    @Test func partsAndDataAtEverySplit() throws {
        #expect(try multipart(Self.body, boundary: Self.boundary) == Self.expected)
        for cut in 0...Self.body.count {
            #expect(try multipart(Self.body, boundary: Self.boundary, cuts: [cut]) == Self.expected, "split at \(cut)")
        }
        #expect(try multipart(Self.body, boundary: Self.boundary, cuts: Array(0..<Self.body.count)) == Self.expected)
    }

    @Test func boundaryFromTheContentType() {
        #expect(MultipartParser.boundary(contentType: "multipart/form-data; boundary=abc") == "abc")
        #expect(MultipartParser.boundary(contentType: "Multipart/Form-Data; charset=utf-8; boundary=\"q r\"") == "q r")
        #expect(MultipartParser.boundary(contentType: "application/json") == nil)
        #expect(MultipartParser.boundary(contentType: "multipart/form-data") == nil)
    }

    @Test func malformedBodiesAreErrors() {
        #expect(throws: MultipartError.self) {
            try multipart(Array("--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--".utf8), boundary: "b")
        }
        #expect(throws: MultipartError.self) { try multipart(Array("--bXYZ\r\n".utf8), boundary: "b") }
        var parser = MultipartParser(boundary: "b", maxHeaderBytes: 32)
        #expect(throws: MultipartError.self) {
            try parser.feed(Array("--b\r\nContent-Disposition: form-data; name=\"\(String(repeating: "x", count: 64))\"".utf8))
        }
    }
}
