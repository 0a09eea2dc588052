import HTTP
import TestSupport
import Testing

/// Feeds `bytes` in pieces split at `cuts`, merging consecutive body pieces so
/// that events can be compared whatever the split.
func parse(_ bytes: [UInt8], cuts: [Int] = [], limits: HTTPRequestParser.Limits = .init()) throws -> [HTTPRequestEvent] {
    var parser = HTTPRequestParser(limits: limits)
    var events: [HTTPRequestEvent] = []
    var start = 0
    for cut in cuts.sorted() + [bytes.count] where cut >= start {
        events += try parser.feed(bytes[start..<cut])
        start = cut
    }
    var merged: [HTTPRequestEvent] = []
    for event in events {
        if case let .body(piece) = event, case let .body(previous)? = merged.last {
            merged[merged.count - 1] = .body(previous + piece)
        } else if case let .body(piece) = event, piece.isEmpty {
            continue
        } else {
            merged.append(event)
        }
    }
    return merged
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

@Suite(.ownThread) struct RequestParserTests {
    static let pipeline = bytes(
        "GET /v1/fine_tuning/jobs?limit=2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n\r\n"
        + "POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\nhello world"
        + "PUT /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nB\r\n, pipelined\r\n0\r\nX-Trailer: yes\r\n\r\n"
        + "DELETE /v1/files/file-1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")

    static var expected: [HTTPRequestEvent] {
        [
            .head(HTTPRequestHead(method: "GET", target: "/v1/fine_tuning/jobs?limit=2", minorVersion: 1,
                                  headers: [("Host", "x"), ("Authorization", "Bearer k")])), .end,
            .head(HTTPRequestHead(method: "POST", target: "/v1/files", minorVersion: 1,
                                  headers: [("Host", "x"), ("Content-Length", "11"), ("Content-Type", "text/plain")])), .body(bytes("hello world")), .end,
            .head(HTTPRequestHead(method: "PUT", target: "/chunked", minorVersion: 1, headers: [("Host", "x"), ("Transfer-Encoding", "chunked")])),
            .body(bytes("hello, pipelined")), .end,
            .head(HTTPRequestHead(method: "DELETE", target: "/v1/files/file-1", minorVersion: 0, headers: [("Connection", "keep-alive")])), .end,
        ]
    }

    @Test func headerNamesMatchIgnoringASCIICaseOnly() throws {
        let head = HTTPRequestHead(method: "GET", target: "/", minorVersion: 1,
                                   headers: [("CONTENT-length", "0"), ("X-@", "at"), ("Authorization", "Bearer k")])
        #expect(head.header("content-length") == "0" && head.header("Content-Length") == "0")
        #expect(head.header("x-@") == "at")
        #expect(head.header("x-`") == nil, "@ and ` differ by the case bit but are not letters")
        #expect(head.header("authorizatio") == nil && head.header("authorization") == "Bearer k")
    }

    @Test func pipelinedRequestsInOneRead() throws {
        #expect(try parse(Self.pipeline) == Self.expected)
    }

    @Test func everySplitPointGivesTheSameEvents() throws {
        for cut in 0...Self.pipeline.count {
            #expect(try parse(Self.pipeline, cuts: [cut]) == Self.expected, "split at \(cut)")
        }
    }

    @Test func byteAtATime() throws {
        #expect(try parse(Self.pipeline, cuts: Array(0..<Self.pipeline.count)) == Self.expected)
    }

    @Test func connectionSemantics() throws {
        let events = try parse(bytes("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nExpect: 100-continue\r\n\r\nGET / HTTP/1.0\r\n\r\n"))
        guard case let .head(first) = events[0], case let .head(second) = events[2] else { Issue.record("no heads"); return }
        #expect(!first.keepAlive && first.expectsContinue)
        #expect(!second.keepAlive)
        #expect(first.header("CONNECTION") == "close")
    }

    static func status(_ text: String, limits: HTTPRequestParser.Limits = .init()) -> Int? {
        do {
            _ = try parse(bytes(text), limits: limits)
            return nil
        } catch let error as HTTPParseError {
            return error.status
        } catch {
            return -1
        }
    }

    @Test func errorsCarryTheRightStatus() {
        let small = HTTPRequestParser.Limits(headerBytes: 64, headerCount: 3, bodyBytes: 10)
        #expect(Self.status("GET / HTTP/1.1\r\nHost: x\r\nX-Long: \(String(repeating: "a", count: 100))\r\n\r\n", limits: small) == 431)
        #expect(Self.status("GET / HTTP/1.1\r\nHost: x\r\nX-Long: \(String(repeating: "a", count: 100))", limits: small) == 431, "without the end of the head")
        #expect(Self.status("GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", limits: small) == 431)
        #expect(Self.status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n", limits: small) == 413)
        #expect(Self.status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n", limits: small) == 413)
        #expect(Self.status("GET / HTTP/2.0\r\n\r\n") == 505)
        #expect(Self.status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n") == 501)
        #expect(Self.status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n") == 400)
        #expect(Self.status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n") == 400)
        #expect(Self.status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n") == 400)
        #expect(Self.status("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n") == 400)
        #expect(Self.status("GET / HTTP/1.1\r\nHost: x\r\nBad Name: a\r\n\r\n") == 400)
        #expect(Self.status("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n") == 400)
        #expect(Self.status("G(T / HTTP/1.1\r\nHost: x\r\n\r\n") == 400)
        #expect(Self.status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n") == 400)
        #expect(Self.status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n") == 400)
        #expect(Self.status("GET / HTTP/1.1\r\nHost: x\r\nX: a\u{1}b\r\n\r\n") == 400)
    }

    @Test func theBodyLimitCanDependOnTheRequest() throws {
        let limits = HTTPRequestParser.Limits(bodyBytes: 4, bodyBytesForHead: { $0.target == "/v1/files" ? 100 : 4 })
        let upload = "POST /v1/files HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n"
        #expect(try parse(bytes(upload), limits: limits).dropFirst() == [.body(bytes("0123456789")), .end])
        #expect(Self.status("POST /v1/other HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789", limits: limits) == 413)
    }

    @Test func afterAnErrorNothingMoreIsParsed() {
        var parser = HTTPRequestParser()
        #expect(throws: HTTPParseError.self) { try parser.feed(bytes("BAD\r\n\r\n")) }
        #expect(throws: HTTPParseError.self) { try parser.feed(bytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n")) }
    }

    /// Deterministic fuzzing: mutations of valid requests, fed in random pieces, never
    /// crash, never report more body than the limits allow, and (when they parse)
    /// give the same events whatever the split.
    @Test func randomInputsNeverCrash() throws {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next(_ bound: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(bound))
        }
        let alphabet = bytes("GETPOST /:\r\n0123456789abcdefABCDEF-;chunkedContent-LengthTransfer-Encoding HTTP/1.1\t")
        let limits = HTTPRequestParser.Limits(headerBytes: 256, headerCount: 8, bodyBytes: 64)
        var parsed = 0
        for _ in 0..<4000 {
            var input = Self.pipeline
            for _ in 0..<(1 + next(6)) {
                switch next(4) {
                case 0: input[next(input.count)] = alphabet[next(alphabet.count)]
                case 1: input.insert(alphabet[next(alphabet.count)], at: next(input.count))
                case 2: if input.count > 1 { input.remove(at: next(input.count)) }
                default: input[next(input.count)] = UInt8(next(256))
                }
            }
            let cuts = (0..<next(5)).map { _ in next(input.count + 1) }
            let whole = try? parse(input, limits: limits)
            let split = try? parse(input, cuts: cuts, limits: limits)
            #expect(whole == split, "the split changed the outcome")
            if let whole {
                parsed += 1
                for case let .body(piece) in whole { #expect(piece.count <= limits.bodyBytes) }
            }
        }
        #expect(parsed > 0)
    }
}
