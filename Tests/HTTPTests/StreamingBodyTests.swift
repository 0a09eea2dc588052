import Foundation
@testable import HTTP
import Synchronization
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized, .ownThread) struct StreamingBodyTests {
    @Test func aSlowHandlerSlowsTheUploadInsteadOfBufferingIt() throws {
        let peak = Mutex(0)
        var configuration = HTTPServer.Configuration()
        configuration.port = 0
        configuration.limits.bodyBytes = 64 << 20
        configuration.streamsBody = { $0.target == "/upload" }
        let server = HTTPServer(configuration: configuration) { request in
            guard let body = request.bodyStream else { return HTTPResponse(status: 500) }
            var total = 0, checksum: UInt64 = 0
            do {
                while let piece = try await body.next() {
                    total += piece.count
                    for byte in piece { checksum = checksum &* 31 &+ UInt64(byte) }
                    if total % (1 << 20) < piece.count { try? await Task.sleep(for: .milliseconds(20)) }
                }
            } catch {
                return HTTPResponse(status: 400, contentType: "text/plain", body: "broken: \(error)")
            }
            peak.withLock { $0 = max($0, body.peakBuffered) }
            return HTTPResponse(status: 200, contentType: "text/plain", body: "got \(total) bytes, checksum \(checksum)")
        }
        try server.start()
        defer { server.shutdown(); server.wait() }

        let size = 8 << 20
        var payload = [UInt8](repeating: 0, count: size)
        var expected: UInt64 = 0
        for i in 0..<size { payload[i] = UInt8(truncatingIfNeeded: i &* 7 &+ i >> 9); expected = expected &* 31 &+ UInt64(payload[i]) }
        let client = try RawClient(port: server.port)
        client.send("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: \(size)\r\n\r\n")
        var sent = 0
        while sent < size {
            let n = payload[sent...].withUnsafeBytes { Glibc.send(client.fd, $0.baseAddress, min($0.count, 1 << 16), Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { break }
            sent += n
        }
        #expect(client.read { $0.contains("checksum") })
        #expect(client.text.contains("got \(size) bytes, checksum \(expected)"))
        #expect(peak.withLock { $0 } <= RequestBody.highWater + (1 << 16), "the server kept reading past the high-water mark")
    }

    @Test func aClientLeavingMidBodyIsAnErrorForTheHandler() throws {
        let outcome = Mutex("")
        var configuration = HTTPServer.Configuration()
        configuration.port = 0
        configuration.streamsBody = { _ in true }
        let server = HTTPServer(configuration: configuration) { request in
            do {
                while try await request.bodyStream?.next() != nil {}
                outcome.withLock { $0 = "complete" }
            } catch {
                outcome.withLock { $0 = "error" }
            }
            return HTTPResponse(status: 200)
        }
        try server.start()
        defer { server.shutdown(); server.wait() }
        do {
            let client = try RawClient(port: server.port)
            client.send("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part")
            usleep(100_000)
        }
        for _ in 0..<100 where outcome.withLock({ $0 }).isEmpty { usleep(20_000) }
        #expect(outcome.withLock { $0 } == "error")
    }
}
