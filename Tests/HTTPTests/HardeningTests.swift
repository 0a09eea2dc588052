import Foundation
import HTTP
import Synchronization
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// What no client can do to the HTTP layer: grow it without bound, hold it with a trickle,
/// take every connection, or get a reply that is not JSON.
@Suite(.serialized, .ownThread) struct HTTPHardeningTests {
    /// A client that pipelines requests and never reads the answers is no longer read once
    /// its answers queue up, instead of having every request handled and buffered.
    @Test func pipelinedRequestsThatAreNeverReadStopBeingRead() throws {
        let handled = Atomic<Int>(0)
        let answer = [UInt8](repeating: UInt8(ascii: "a"), count: 64 * 1024)
        let server = try ServerTests.server { _ in
            handled.add(1, ordering: .relaxed)
            return HTTPResponse(status: 200, headers: [("Content-Type", "text/plain")], body: .bytes(answer))
        }
        defer { server.shutdown() }
        let client = try RawClient(port: server.port)
        let requests = 3000
        let pipeline = String(repeating: "GET / HTTP/1.1\r\nHost: x\r\n\r\n", count: requests)
        // Sent from a thread of its own (once the server stops reading, the send blocks), which ends
        // before the socket is closed: a descriptor number written to after its close may be another test's.
        let fd = client.fd, sent = DispatchSemaphore(value: 0)
        let sender = Thread {
            _ = Array(pipeline.utf8).withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            sent.signal()
        }
        sender.start()
        defer { sent.wait() }
        Thread.sleep(forTimeInterval: 1.5)
        let whileUnread = handled.load(ordering: .relaxed)
        // What the socket buffers hold, plus the server's bound (32 responses, 1 MiB): not all 3000 (192 MB).
        #expect(whileUnread < 1000, "requests handled while their answers went unread: \(whileUnread) of \(requests)")
        // Reading the answers lets the rest through: every one of them (each is the same head and body).
        var buffer = [UInt8](repeating: 0, count: 1 << 20), received: [UInt8] = [], total = 0, expected = Int.max
        while total < expected {
            let n = recv(client.fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            total += n
            if expected == Int.max {
                received += buffer[0..<n]
                if let end = String(decoding: received.prefix(4096), as: UTF8.self).range(of: "\r\n\r\n") {
                    let head = String(decoding: received.prefix(4096), as: UTF8.self)[..<end.upperBound].utf8.count
                    expected = requests * (head + answer.count)
                }
            }
        }
        #expect(total == expected)
        #expect(handled.load(ordering: .relaxed) == requests)
    }

    /// A request whose `Expect: 100-continue` arrives with its body in one read is handled once:
    /// writing the 100 must not handle the events after it first.
    @Test func expectContinueWithItsBodyInOneReadIsAnsweredOnce() throws {
        let handled = Atomic<Int>(0)
        let server = try ServerTests.server({ $0.streamsBody = { $0.target == "/a" } }) { request in
            handled.add(1, ordering: .relaxed)
            var body: [UInt8] = []
            if let stream = request.bodyStream { while let piece = try? await stream.next() { body += piece } }
            return HTTPResponse(status: 200, headers: [("Content-Type", "text/plain")], body: .bytes(Array("got \(request.path) \(body.count)".utf8)))
        }
        defer { server.shutdown() }
        let client = try RawClient(port: server.port)
        client.send("POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(client.read { $0.contains("got /b") })
        #expect(client.text.contains("got /a 5"), "the streamed body arrives whole: \(client.text)")
        Thread.sleep(forTimeInterval: 0.2)
        #expect(handled.load(ordering: .relaxed) == 2)
        #expect(count("HTTP/1.1 200", in: client.text) == 2 && count("100 Continue", in: client.text) == 1, "\(client.text)")
    }

    /// A body trickled a byte at a time gets 408 at its deadline: bytes do not restart the clock.
    @Test func aTrickledBodyTimesOut() throws {
        let server = try ServerTests.server({ $0.requestTimeout = 1; $0.minBodyBytesPerSecond = 1000 }) { request in
            HTTPResponse(status: 200, headers: [("Content-Type", "text/plain")], body: .bytes(request.body))
        }
        defer { server.shutdown() }
        let client = try RawClient(port: server.port)
        client.send("POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        let started = Date()
        // The trickle stops, and its thread ends, before the socket is closed (see above).
        let fd = client.fd, stop = Atomic<Bool>(false), stopped = DispatchSemaphore(value: 0)
        let trickle = Thread {
            for _ in 0..<40 where !stop.load(ordering: .relaxed) {
                _ = Glibc.send(fd, "x", 1, Int32(MSG_NOSIGNAL))
                Thread.sleep(forTimeInterval: 0.1)
            }
            stopped.signal()
        }
        trickle.start()
        defer {
            stop.store(true, ordering: .relaxed)
            stopped.wait()
        }
        #expect(client.read { $0.contains("408") })
        #expect(Date().timeIntervalSince(started) < 3.5, "the deadline is absolute, not per byte")
        #expect(client.text.contains("request_timeout"))
    }

    /// One address's sockets are capped; another address still gets through.
    @Test func oneClientCannotTakeEveryConnection() throws {
        let server = try ServerTests.server({ $0.maxConnectionsPerAddress = 20 }) { _ in
            HTTPResponse(status: 200, headers: [("Content-Type", "text/plain")], body: .bytes(Array("ok".utf8)))
        }
        defer { server.shutdown() }
        var idle: [RawClient] = []
        for _ in 0..<30 { idle.append(try RawClient(port: server.port)) }
        Thread.sleep(forTimeInterval: 0.3)
        var short = timeval(tv_sec: 0, tv_usec: 200_000)
        for client in idle { setsockopt(client.fd, SOL_SOCKET, SO_RCVTIMEO, &short, socklen_t(MemoryLayout<timeval>.size)) }
        let refused = idle.filter { $0.read { $0.contains("503") } }
        #expect(refused.count == 10, "the 10 over the cap get 503")
        #expect(refused.first?.text.contains("too_many_connections") == true)
        let other = try RawClient(port: server.port, from: "127.0.0.2")
        other.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(other.read { $0.contains("200 OK") }, "another client is served")
    }

    @Test func theConnectionCapFollowsTheDescriptorLimit() throws {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let server = HTTPServer(configuration: { var c = HTTPServer.Configuration(); c.maxConnections = Int.max; return c }()) { _ in
            HTTPResponse(status: 200, headers: [], body: .bytes([]))
        }
        #expect(server.effectiveMaxConnections < Int(limit.rlim_cur), "room is left for files and the database")
    }

    /// Error bodies the server writes itself are JSON, whatever the request held.
    @Test func malformedRequestsGetJSONErrors() throws {
        let server = try ServerTests.server { _ in HTTPResponse(status: 200, headers: [], body: .bytes([])) }
        defer { server.shutdown() }
        for request in ["GET / HTTP/2.\"\\0\r\nHost: x\r\n\r\n", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \"gz\\ip\"\r\n\r\n",
                        "GET / HTTP/1.1\r\n\r\n", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0 2\r\n\r\n"] {
            let client = try RawClient(port: server.port)
            client.send(request)
            client.read { $0.contains("\r\n\r\n{") && $0.hasSuffix("}") }
            let body = client.text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
            let json = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
            #expect(json?["error"] != nil, "\(request.debugDescription): \(client.text.debugDescription)")
            #expect(client.text.hasPrefix("HTTP/1.1 4") || client.text.hasPrefix("HTTP/1.1 5"))
        }
    }
}

@Suite(.ownThread) struct StrictParsingTests {
    static func status(_ text: String) -> Int? {
        var parser = HTTPRequestParser()
        do { _ = try parser.feed(bytes(text)); return nil } catch let error as HTTPParseError { return error.status } catch { return -1 }
    }

    @Test func aChunkSizeIsHexDigitsOnly() {
        #expect(Self.status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0 2\r\n\r\n") == 400)
        #expect(Self.status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1 0\r\nx\r\n0\r\n\r\n") == 400)
        #expect(Self.status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2 ;ext\r\nab\r\n0\r\n\r\n") == nil,
                "whitespace before an extension is allowed")
    }

    @Test func anHTTP11RequestHasExactlyOneHost() {
        #expect(Self.status("GET / HTTP/1.1\r\n\r\n") == 400)
        #expect(Self.status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n") == 400)
        #expect(Self.status("GET / HTTP/1.1\r\nHost: a\r\n\r\n") == nil)
        #expect(Self.status("GET / HTTP/1.0\r\n\r\n") == nil, "HTTP/1.0 may leave it out")
    }

    @Test func aQueryThatIsNotUTF8IsFound() {
        let head = HTTPRequestHead(method: "GET", target: "/v1/fine_tuning/jobs?after=%ff%fe", minorVersion: 1, headers: [])
        #expect(HTTPRequest(head: head, body: []).malformedQueryPart == "%ff%fe")
        let fine = HTTPRequestHead(method: "GET", target: "/v1/x?after=ftjob-1&limit=2&q=caf%C3%A9", minorVersion: 1, headers: [])
        #expect(HTTPRequest(head: fine, body: []).malformedQueryPart == nil)
    }
}
