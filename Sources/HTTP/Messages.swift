import Foundation

/// A complete request as handlers see it.
public struct HTTPRequest: Sendable {
    public let head: HTTPRequestHead
    /// The whole body, for routes that do not stream.
    public let body: [UInt8]
    /// The body as it arrives, for routes the server streams (`Configuration.streamsBody`).
    public let bodyStream: RequestBody?

    /// The path without the query string (found once: routing, auth and telemetry all read it).
    public let path: String
    /// What follows `?` in the target, if anything.
    let rawQuery: Substring?

    public init(head: HTTPRequestHead, body: [UInt8], bodyStream: RequestBody? = nil) {
        self.head = head
        self.body = body
        self.bodyStream = bodyStream
        if let mark = head.target.utf8.firstIndex(of: UInt8(ascii: "?")) {
            path = String(head.target[..<mark])
            rawQuery = head.target[head.target.index(after: mark)...]
        } else {
            path = head.target
            rawQuery = nil
        }
    }

    public var method: String { head.method }
    /// The first query name or value that is not valid percent-encoded UTF-8, if any: such a
    /// request is answered 400 before it reaches a handler.
    public var malformedQueryPart: String? {
        guard let query = rawQuery else { return nil }
        for piece in query.split(separator: "&").flatMap({ $0.split(separator: "=", maxSplits: 1) })
            where piece.replacingOccurrences(of: "+", with: " ").removingPercentEncoding == nil {
            return String(piece)
        }
        return nil
    }

    /// Every query parameter's name, percent-decoded, repeats included, in order.
    public var queryNames: [String] {
        guard let query = rawQuery else { return [] }
        return query.split(separator: "&").compactMap { pair in
            pair.split(separator: "=", maxSplits: 1).first.map { $0.replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String($0) }
        }
    }

    /// Query parameters, percent-decoded; the first value of a repeated name wins.
    public var query: [String: String] {
        guard let query = rawQuery else { return [:] }
        var result: [String: String] = [:]
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            func decode(_ s: Substring) -> String { s.replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(s) }
            guard let name = parts.first.map(decode), result[name] == nil else { continue }
            result[name] = parts.count > 1 ? decode(parts[1]) : ""
        }
        return result
    }
}

public struct HTTPResponse: Sendable {
    public enum Body: Sendable {
        case bytes([UInt8])
        /// Sent chunked as pieces arrive; the connection holds no thread while waiting.
        case stream(AsyncStream<[UInt8]>)
        /// A file sent from disk as the socket drains, never held in memory whole.
        /// `size` bytes from `offset` (a Range request's part).
        case file(path: String, offset: Int = 0, size: Int)
    }

    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: Body

    public init(status: Int, headers: [(name: String, value: String)] = [], body: Body = .bytes([])) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public init(status: Int, contentType: String, body: String) {
        self.init(status: status, headers: [("Content-Type", contentType)], body: .bytes(Array(body.utf8)))
    }

    static let reasons: [Int: String] = [
        100: "Continue", 200: "OK", 201: "Created", 204: "No Content", 206: "Partial Content", 400: "Bad Request",
        401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
        409: "Conflict", 413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
        429: "Too Many Requests", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
        501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported",
    ]

    /// Each known status's line, built once.
    static let statusLines = Dictionary(uniqueKeysWithValues: reasons.map { ($0.key, Array("HTTP/1.1 \($0.key) \($0.value)\r\n".utf8)) })

    /// Set here, from the body, whatever a handler says.
    static let framingHeaders = ["content-length", "transfer-encoding", "connection"]

    /// Status line and headers; framing (Content-Length or chunked) and Connection are added here.
    func head(keepAlive: Bool, contentLength: Int?) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(160)
        if let line = Self.statusLines[status] { out += line } else { out += "HTTP/1.1 \(status) Status\r\n".utf8 }
        for (name, value) in headers
        where !Self.framingHeaders.contains(where: { HTTPRequestHead.sameName($0, name) }) {
            out += name.utf8
            out += ": ".utf8
            out += value.utf8
            out += "\r\n".utf8
        }
        if let contentLength {
            out += "Content-Length: ".utf8
            Self.appendDecimal(contentLength, to: &out)
            out += "\r\n".utf8
        } else { out += "Transfer-Encoding: chunked\r\n".utf8 }
        if !keepAlive { out += "Connection: close\r\n".utf8 }
        out += "\r\n".utf8
        return out
    }

    static func appendDecimal(_ value: Int, to out: inout [UInt8]) {
        if value >= 10 { appendDecimal(value / 10, to: &out) }
        out.append(UInt8(ascii: "0") + UInt8(value % 10))
    }
}
