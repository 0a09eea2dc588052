import Foundation
import HTTP
import Synchronization
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized, .ownThread) struct ServerTests {
    static func server(_ configure: (inout HTTPServer.Configuration) -> Void = { _ in },
                       handler: @escaping HTTPHandler) throws -> HTTPServer {
        var configuration = HTTPServer.Configuration()
        configuration.port = 0
        configure(&configuration)
        let server = HTTPServer(configuration: configuration, handler: handler)
        try server.start()
        return server
    }

    static let echo: HTTPHandler = { request in
        if request.path == "/slow" { try? await Task.sleep(for: .milliseconds(200)) }
        return HTTPResponse(status: 200, contentType: "text/plain",
                            body: "\(request.method) \(request.path) q=\(request.query["q"] ?? "") body=\(String(decoding: request.body, as: UTF8.self))")
    }

    @Test func keepAliveServesSeveralRequestsOnOneConnection() throws {
        let server = try Self.server(handler: Self.echo)
        defer { server.shutdown(); server.wait() }
        let client = try RawClient(port: server.port)
        client.send("GET /a?q=x%20y HTTP/1.1\r\nHost: t\r\n\r\n")
        #expect(client.read { $0.contains("q=x y body=") })
        client.send("POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        #expect(client.read { $0.contains("POST /b q= body=hello") })
        #expect(count("HTTP/1.1 200 OK", in: client.text) == 2)
        #expect(!client.text.contains("Connection: close"))
    }

    /// A handler's task runs on its connection's loop; one that keeps yielding must still let
    /// the loop read and answer other connections between its turns.
    @Test func aTaskThatKeepsYieldingDoesNotHoldItsLoop() throws {
        let released = Atomic<Bool>(false)
        let server = try Self.server({ $0.eventLoops = 1 }) { request in
            if request.path == "/spin" {
                let deadline = ContinuousClock.now + .seconds(10)
                while !released.load(ordering: .relaxed), ContinuousClock.now < deadline { await Task.yield() }
                return HTTPResponse(status: 200, contentType: "text/plain", body: released.load(ordering: .relaxed) ? "released" : "timed out")
            }
            released.store(true, ordering: .relaxed)
            return HTTPResponse(status: 200, contentType: "text/plain", body: "fast")
        }
        defer { server.shutdown(); server.wait() }
        let spinning = try RawClient(port: server.port)
        spinning.send("GET /spin HTTP/1.1\r\nHost: t\r\n\r\n")
        usleep(100_000)  // the spinning task is running before the other request arrives
        let other = try RawClient(port: server.port)
        other.send("GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
        #expect(other.read { $0.contains("fast") })
        #expect(spinning.read { $0.contains("released") || $0.contains("timed out") })
        #expect(spinning.text.contains("released"))
    }

    @Test func pipelinedResponsesComeBackInRequestOrder() throws {
        let server = try Self.server(handler: Self.echo)
        defer { server.shutdown(); server.wait() }
        let client = try RawClient(port: server.port)
        client.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /fast1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        #expect(client.read { count("HTTP/1.1 200", in: $0) == 3 && $0.hasSuffix("body=abcde") })
        let order = ["GET /slow", "GET /fast1", "POST /chunked"].map { client.text.range(of: $0)!.lowerBound }
        #expect(order == order.sorted(), "responses out of order:\n\(client.text)")
    }

    /// A malformed request behind a slow one: the slow one is answered, then the 400, then the
    /// connection closes. (The connection used to linger as soon as the slow answer was out,
    /// and the 400 was never sent.)
    @Test func aBrokenRequestBehindASlowOneIsStillAnswered() throws {
        let server = try Self.server(handler: Self.echo)
        defer { server.shutdown(); server.wait() }
        let client = try RawClient(port: server.port)
        client.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /bad HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        #expect(client.read { $0.contains("HTTP/1.1 400") })
        #expect(client.text.range(of: "GET /slow")!.lowerBound < client.text.range(of: "HTTP/1.1 400")!.lowerBound, "\(client.text)")
        #expect(client.isClosedByPeer())
    }

    /// Answers given at once on the loop (`HTTPAnswer.now`) and answers from tasks share one
    /// order: a quick answer waits behind a slow one that was asked first.
    @Test func immediateAndLaterAnswersKeepRequestOrder() throws {
        var configuration = HTTPServer.Configuration()
        configuration.port = 0
        let server = HTTPServer(configuration: configuration) { request in
            guard request.path == "/slow" else { return .now(HTTPResponse(status: 200, contentType: "text/plain", body: "now \(request.path)")) }
            return .later {
                try? await Task.sleep(for: .milliseconds(200))
                return HTTPResponse(status: 200, contentType: "text/plain", body: "later /slow")
            }
        }
        try server.start()
        defer { server.shutdown(); server.wait() }
        let client = try RawClient(port: server.port)
        client.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(client.read { count("HTTP/1.1 200", in: $0) == 3 && $0.hasSuffix("now /b") })
        let order = ["now /a", "later /slow", "now /b"].map { client.text.range(of: $0)!.lowerBound }
        #expect(order == order.sorted(), "responses out of order:\n\(client.text)")
    }

    /// An answer given at once to a request whose body is still arriving (a refused upload)
    /// is sent, and the connection then closes: the rest of the body cannot be skipped reliably.
    @Test func anImmediateAnswerBeforeAStreamedBodyClosesTheConnection() throws {
        var configuration = HTTPServer.Configuration()
        configuration.port = 0
        configuration.streamsBody = { _ in true }
        let server = HTTPServer(configuration: configuration) { _ in
            .now(HTTPResponse(status: 401, contentType: "application/json", body: "{}"))
        }
        try server.start()
        defer { server.shutdown(); server.wait() }
        let client = try RawClient(port: server.port)
        client.send("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + String(repeating: "a", count: 1000))
        #expect(client.read { $0.contains("HTTP/1.1 401") && $0.contains("Connection: close") })
        #expect(client.isClosedByPeer(), "the connection closes after the answer")
    }

    @Test func streamedResponsesAreChunkedAsPiecesArrive() throws {
        let server = try Self.server { _ in
            // The producer runs on Dispatch, like a tailer fed by file events: not on Swift's global pool.
            HTTPResponse(status: 200, headers: [("Content-Type", "text/plain")], body: .stream(AsyncStream { continuation in
                let queue = DispatchQueue(label: "producer")
                @Sendable func emit(_ lines: ArraySlice<String>) {
                    guard let line = lines.first else { return continuation.finish() }
                    continuation.yield(Array(line.utf8))
                    queue.asyncAfter(deadline: .now() + .milliseconds(30)) { emit(lines.dropFirst()) }
                }
                queue.async { emit(["one\n", "two\n", "three\n"]) }
            }))
        }
        defer { server.shutdown(); server.wait() }
        let client = try RawClient(port: server.port)
        client.send("GET /logs HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(client.read { $0.hasSuffix("0\r\n\r\n") })
        #expect(client.text.contains("Transfer-Encoding: chunked"))
        #expect(client.text.contains("4\r\none\n\r\n4\r\ntwo\n\r\n6\r\nthree\n\r\n0\r\n\r\n"))
    }

    @Test func expectContinueIsAnsweredBeforeTheBody() throws {
        let server = try Self.server(handler: Self.echo)
        defer { server.shutdown(); server.wait() }
        let client = try RawClient(port: server.port)
        client.send("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        #expect(client.read { $0.contains("100 Continue\r\n\r\n") })
        client.send("data")
        #expect(client.read { $0.contains("body=data") })
    }

    @Test func limitsAnswerWithTheRightStatusAndClose() throws {
        let server = try Self.server({ $0.limits = .init(headerBytes: 256, headerCount: 10, bodyBytes: 8,
                                                         bodyBytesForHead: { $0.target == "/upload" ? 64 : 8 }) }, handler: Self.echo)
        defer { server.shutdown(); server.wait() }
        let big = try RawClient(port: server.port)
        big.send("GET / HTTP/1.1\r\nHost: x\r\nX: \(String(repeating: "a", count: 400))\r\n\r\n")
        #expect(big.read { $0.contains("\r\n\r\n") })
        #expect(big.text.hasPrefix("HTTP/1.1 431"))
        #expect(big.text.contains("Connection: close"))
        let body = try RawClient(port: server.port)
        body.send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n")
        #expect(body.read { $0.contains("\r\n\r\n") } && body.text.hasPrefix("HTTP/1.1 413"))
        let upload = try RawClient(port: server.port)
        upload.send("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n01234567890123456789")
        #expect(upload.read { $0.contains("body=01234567890123456789") })
        let broken = try RawClient(port: server.port)
        broken.send("NOT HTTP\r\n\r\n")
        #expect(broken.read { $0.contains("\r\n\r\n") } && broken.text.hasPrefix("HTTP/1.1 400"))
        #expect(broken.read { _ in false } == false, "closed after the error")
    }

    @Test func tooManyConnectionsGet503() throws {
        let server = try Self.server({ $0.maxConnections = 2 }, handler: Self.echo)
        defer { server.shutdown(); server.wait() }
        let first = try RawClient(port: server.port), second = try RawClient(port: server.port)
        first.send("GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
        second.send("GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(first.read { $0.contains("GET /1") } && second.read { $0.contains("GET /2") })
        let third = try RawClient(port: server.port)
        #expect(third.read { $0.contains("\r\n\r\n") })
        #expect(third.text.hasPrefix("HTTP/1.1 503"))
    }

    @Test func idleAndStalledConnectionsAreClosed() throws {
        let server = try Self.server({ $0.idleTimeout = 0.5; $0.requestTimeout = 0.5 }, handler: Self.echo)
        defer { server.shutdown(); server.wait() }
        let idle = try RawClient(port: server.port)
        #expect(idle.isClosedByPeer())
        let stalled = try RawClient(port: server.port)
        stalled.send("GET / HTTP/1.1\r\nHost: half")
        #expect(stalled.read { $0.contains("\r\n\r\n") } && stalled.text.hasPrefix("HTTP/1.1 408"))
    }

    @Test func gracefulShutdownFinishesInFlightRequests() throws {
        let server = try Self.server(handler: Self.echo)
        let client = try RawClient(port: server.port)
        client.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        usleep(50_000)
        server.shutdown()
        #expect(client.read { $0.contains("GET /slow") }, "the in-flight request is answered")
        #expect(client.text.contains("Connection: close"))
        server.wait()
        #expect(throws: HTTPTestError.self) { try RawClient(port: server.port) }
    }

    @Test func manyConcurrentClients() throws {
        let server = try Self.server(handler: Self.echo)
        defer { server.shutdown(); server.wait() }
        let clients = try (0..<200).map { _ in try RawClient(port: server.port) }
        for (i, client) in clients.enumerated() { client.send("GET /c\(i) HTTP/1.1\r\nHost: x\r\n\r\n") }
        for (i, client) in clients.enumerated() { #expect(client.read { $0.contains("GET /c\(i) ") }) }
    }
}
