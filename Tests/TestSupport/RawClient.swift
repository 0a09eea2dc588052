import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A blocking loopback client that speaks raw bytes, so tests see exactly what the server sends.
public final class RawClient {
    public let fd: Int32
    public var received: [UInt8] = []

    /// `source`: the local address to connect from (another loopback address is another client).
    public init(port: Int, from source: String? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            inet_pton(AF_INET, source, &local.sin_addr)
            _ = withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        let status = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard status == 0 else { throw HTTPTestError("connect failed") }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { if open { Glibc.close(fd) } }

    private var open = true

    /// Closes the socket now (a client leaving mid-request).
    public func close() {
        guard open else { return }
        open = false
        Glibc.close(fd)
    }

    public func send(_ text: String) { _ = Array(text.utf8).withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }

    /// Reads until `predicate` holds for what arrived, the peer closes, or 5 s pass. Returns false on close/timeout.
    @discardableResult
    public func read(until predicate: (String) -> Bool) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !predicate(text) {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { return false }
            received += buffer[0..<n]
        }
        return true
    }

    public var text: String { String(decoding: received, as: UTF8.self) }

    /// True when the server has closed the connection (recv returns 0).
    public func isClosedByPeer() -> Bool {
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, 0) == 0
    }
}

public struct HTTPTestError: Error { public let message: String; public init(_ m: String) { message = m } }

public func count(_ needle: String, in haystack: String) -> Int { haystack.components(separatedBy: needle).count - 1 }
