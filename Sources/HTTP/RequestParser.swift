import Foundation

/// An HTTP/1.1 request head: the request line and the header fields.
public struct HTTPRequestHead: Sendable, Equatable {
    public var method: String
    /// The request target as sent (origin form: path and query).
    public var target: String
    /// Minor version of HTTP/1.x (0 or 1).
    public var minorVersion: Int
    /// Header fields in the order received; names as sent.
    public var headers: [(name: String, value: String)]

    public init(method: String, target: String, minorVersion: Int, headers: [(name: String, value: String)]) {
        self.method = method
        self.target = target
        self.minorVersion = minorVersion
        self.headers = headers
    }

    public static func == (a: HTTPRequestHead, b: HTTPRequestHead) -> Bool {
        a.method == b.method && a.target == b.target && a.minorVersion == b.minorVersion
            && a.headers.elementsEqual(b.headers) { $0.name == $1.name && $0.value == $1.value }
    }

    /// The first value of a header field, matched case-insensitively.
    public func header(_ name: String) -> String? {
        headers.first { Self.sameName($0.name, name) }?.value
    }

    /// Header names compare case-insensitively (ASCII), without allocating lowercased copies.
    static func sameName(_ a: String, _ b: String) -> Bool {
        a.utf8.count == b.utf8.count && zip(a.utf8, b.utf8).allSatisfy { x, y in
            x == y || (x ^ y == 0x20 && (x | 0x20) >= UInt8(ascii: "a") && (x | 0x20) <= UInt8(ascii: "z"))
        }
    }

    /// Whether the connection stays open after this request (HTTP/1.1 default; HTTP/1.0 only with keep-alive).
    public var keepAlive: Bool {
        let tokens = header("connection").map(Self.tokens) ?? []
        return minorVersion >= 1 ? !tokens.contains { Self.sameName($0, "close") } : tokens.contains { Self.sameName($0, "keep-alive") }
    }

    /// Whether the client waits for `100 Continue` before sending the body.
    public var expectsContinue: Bool { header("expect").map { Self.sameName($0, "100-continue") } ?? false }

    /// The comma-separated tokens of a list-valued field, without their surrounding whitespace.
    static func tokens(_ value: String) -> [String] {
        value.utf8.split(separator: UInt8(ascii: ",")).map { token in
            var token = token
            while let first = token.first, first == 0x20 || first == 0x09 { token = token.dropFirst() }
            while let last = token.last, last == 0x20 || last == 0x09 { token = token.dropLast() }
            return String(decoding: token, as: UTF8.self)
        }
    }
}

/// What the parser found in the bytes it was fed, in order.
public enum HTTPRequestEvent: Sendable, Equatable {
    case head(HTTPRequestHead)
    /// A piece of the body, de-chunked.
    case body([UInt8])
    /// The request is complete; the next bytes belong to the next (pipelined) request.
    case end
}

/// Why a request cannot be parsed; each maps to the status a server answers with.
public struct HTTPParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public let status: Int
    public let message: String
    public var description: String { "\(status): \(message)" }

    static func badRequest(_ message: String) -> HTTPParseError { HTTPParseError(status: 400, message: message) }
}

/// An incremental HTTP/1.1 request parser: a pure state machine over bytes,
/// separate from sockets and routing. Feed it whatever arrived — any split of
/// the stream gives the same events — and it reports heads, body pieces and
/// request ends, for any number of pipelined requests. Limits are enforced as
/// bytes arrive, so a hostile client never makes it buffer more than them.
public struct HTTPRequestParser: Sendable {
    public struct Limits: Sendable {
        /// Request line plus header fields (431 when exceeded).
        public var headerBytes = 16 * 1024
        /// Header fields per request (431).
        public var headerCount = 100
        /// Default body limit (413).
        public var bodyBytes = 1 << 20
        /// A body limit per request, decided from its head as soon as the head is parsed
        /// (e.g. larger for uploads); `bodyBytes` when nil.
        public var bodyBytesForHead: (@Sendable (HTTPRequestHead) -> Int)?
        public init(headerBytes: Int = 16 * 1024, headerCount: Int = 100, bodyBytes: Int = 1 << 20,
                    bodyBytesForHead: (@Sendable (HTTPRequestHead) -> Int)? = nil) {
            self.headerBytes = headerBytes
            self.headerCount = headerCount
            self.bodyBytes = bodyBytes
            self.bodyBytesForHead = bodyBytesForHead
        }
    }

    enum State: Sendable, Equatable {
        case head
        case fixedBody(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers
        /// After an error nothing more is parsed: the connection must close.
        case failed
    }

    public let limits: Limits
    var state = State.head
    /// Bytes of the current head (or chunk-size line / trailer line) not yet complete.
    var pending: [UInt8] = []
    var bodyLimit: Int
    var bodyReceived = 0
    var trailerBytes = 0

    public init(limits: Limits = Limits()) {
        self.limits = limits
        bodyLimit = limits.bodyBytes
    }

    /// True between requests: no partial head or body is buffered.
    public var isIdle: Bool { state == .head && pending.isEmpty }

    /// Parses `bytes`, returning the events they complete. After an error, the
    /// connection should be answered with `error.status` and closed.
    public mutating func feed(_ bytes: some Collection<UInt8>) throws -> [HTTPRequestEvent] {
        var events: [HTTPRequestEvent] = []
        try feed(bytes, into: &events)
        return events
    }

    /// Parses `bytes`, appending the events they complete; on an error, `events` keeps those
    /// completed before it, so the requests ahead of a broken one are still answered.
    public mutating func feed(_ bytes: some Collection<UInt8>, into events: inout [HTTPRequestEvent]) throws {
        var input = Array(bytes)[...]
        do {
            while !input.isEmpty {
                switch state {
                case .failed:
                    throw HTTPParseError.badRequest("the connection already failed")
                case .head:
                    guard let head = try takeHead(&input) else { return }
                    events.append(.head(head))
                    try startBody(for: head, events: &events)
                case let .fixedBody(remaining):
                    let piece = input.prefix(remaining)
                    input = input.dropFirst(piece.count)
                    events.append(.body(Array(piece)))
                    if remaining == piece.count {
                        state = .head
                        events.append(.end)
                    } else {
                        state = .fixedBody(remaining: remaining - piece.count)
                    }
                case .chunkSize:
                    guard let line = try takeLine(&input, limit: 1024, what: "chunk size line") else { return }
                    guard let size = Self.chunkSize(line) else { throw HTTPParseError.badRequest("invalid chunk size line") }
                    if size == 0 {
                        state = .trailers
                        trailerBytes = 0
                    } else {
                        bodyReceived += size
                        guard bodyReceived <= bodyLimit else {
                            throw HTTPParseError(status: 413, message: "request body is over the \(bodyLimit)-byte limit")
                        }
                        state = .chunkData(remaining: size)
                    }
                case let .chunkData(remaining):
                    let piece = input.prefix(remaining)
                    input = input.dropFirst(piece.count)
                    events.append(.body(Array(piece)))
                    state = remaining == piece.count ? .chunkDataEnd : .chunkData(remaining: remaining - piece.count)
                case .chunkDataEnd:
                    guard let line = try takeLine(&input, limit: 2, what: "chunk end") else { return }
                    guard line.isEmpty else { throw HTTPParseError.badRequest("chunk data is longer than its size") }
                    state = .chunkSize
                case .trailers:
                    guard let line = try takeLine(&input, limit: limits.headerBytes, what: "trailer") else { return }
                    trailerBytes += line.count + 2
                    guard trailerBytes <= limits.headerBytes else {
                        throw HTTPParseError(status: 431, message: "trailer fields are over the \(limits.headerBytes)-byte limit")
                    }
                    if line.isEmpty {
                        state = .head
                        events.append(.end)
                    }
                }
            }
        } catch let error as HTTPParseError {
            state = .failed
            pending = []
            throw error
        }
    }

    // MARK: - Head

    /// Takes a complete head (up to and including the blank line) or buffers what there is.
    mutating func takeHead(_ input: inout ArraySlice<UInt8>) throws -> HTTPRequestHead? {
        // Tolerate blank lines before a request line (RFC 9112 §2.2).
        if pending.isEmpty {
            while let first = input.first, first == 0x0D || first == 0x0A { input = input.dropFirst() }
            if input.isEmpty { return nil }
        }
        let searchStart = max(0, pending.count - 3)
        pending.append(contentsOf: input)
        guard let end = Self.headEnd(in: pending, from: searchStart) else {
            guard pending.count <= limits.headerBytes else {
                throw HTTPParseError(status: 431, message: "request head is over the \(limits.headerBytes)-byte limit")
            }
            input = input.dropFirst(input.count)
            return nil
        }
        guard end <= limits.headerBytes else {
            throw HTTPParseError(status: 431, message: "request head is over the \(limits.headerBytes)-byte limit")
        }
        let consumedFromInput = end - (pending.count - input.count)
        input = input.dropFirst(consumedFromInput)
        let head = try Self.parseHead(pending[0..<end], limits: limits)
        pending = []
        return head
    }

    /// Index just past the first CRLFCRLF (or LFLF) at or after `start`.
    static func headEnd(in bytes: [UInt8], from start: Int) -> Int? {
        var i = start
        while i < bytes.count {
            if bytes[i] == 0x0A {
                if i + 1 < bytes.count, bytes[i + 1] == 0x0A { return i + 2 }
                if i + 2 < bytes.count, bytes[i + 1] == 0x0D, bytes[i + 2] == 0x0A { return i + 3 }
            }
            i += 1
        }
        return nil
    }

    static func parseHead(_ bytes: ArraySlice<UInt8>, limits: Limits) throws -> HTTPRequestHead {
        // Lines in place, without an array of them: this runs on every request. A line ends
        // at LF, with an optional CR before it; the first blank line ends the head.
        var next = bytes.startIndex
        func nextLine() -> ArraySlice<UInt8>? {
            guard next < bytes.endIndex else { return nil }
            let end = bytes[next...].firstIndex(of: 0x0A) ?? bytes.endIndex
            var line = bytes[next..<end]
            next = end < bytes.endIndex ? end + 1 : end
            if line.last == 0x0D { line = line.dropLast() }
            return line.isEmpty ? nil : line
        }
        guard let requestLine = nextLine() else { throw HTTPParseError.badRequest("empty request") }
        // Exactly two spaces: method, target, version.
        guard let firstSpace = requestLine.firstIndex(of: 0x20),
              let secondSpace = requestLine[(firstSpace + 1)...].firstIndex(of: 0x20),
              !requestLine[(secondSpace + 1)...].contains(0x20) else {
            throw HTTPParseError.badRequest("malformed request line")
        }
        let method = requestLine[..<firstSpace], target = requestLine[(firstSpace + 1)..<secondSpace]
        let versionBytes = requestLine[(secondSpace + 1)...]
        guard !method.isEmpty, !target.isEmpty else { throw HTTPParseError.badRequest("malformed request line") }
        guard method.allSatisfy(isTokenByte) else { throw HTTPParseError.badRequest("invalid method") }
        guard target.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { throw HTTPParseError.badRequest("invalid request target") }
        let minor: Int
        if versionBytes.elementsEqual("HTTP/1.1".utf8) {
            minor = 1
        } else if versionBytes.elementsEqual("HTTP/1.0".utf8) {
            minor = 0
        } else {
            let version = String(decoding: versionBytes, as: UTF8.self)
            guard version.hasPrefix("HTTP/") else { throw HTTPParseError.badRequest("malformed HTTP version") }
            throw HTTPParseError(status: 505, message: "\(version) is not supported; use HTTP/1.1")
        }
        var headers: [(name: String, value: String)] = []
        while let line = nextLine() {
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { throw HTTPParseError.badRequest("header line without a colon") }
            let name = line[line.startIndex..<colon]
            guard !name.isEmpty, name.allSatisfy(isTokenByte) else {
                throw HTTPParseError.badRequest("invalid header name (whitespace before the colon, or an obsolete line fold)")
            }
            let rawValue = line[(colon + 1)...]
            guard rawValue.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else {
                throw HTTPParseError.badRequest("control character in header \(String(decoding: name, as: UTF8.self))")
            }
            // Optional whitespace around a field value is not part of it (RFC 9110 §5.5).
            var value = rawValue[...]
            while let first = value.first, first == 0x20 || first == 0x09 { value = value.dropFirst() }
            while let last = value.last, last == 0x20 || last == 0x09 { value = value.dropLast() }
            headers.append((String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self)))
            guard headers.count <= limits.headerCount else {
                throw HTTPParseError(status: 431, message: "more than \(limits.headerCount) header fields")
            }
        }
        // RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host; none, or two, is a 400.
        let hosts = headers.count { HTTPRequestHead.sameName($0.name, "host") }
        guard hosts == 1 || (minor == 0 && hosts == 0) else {
            throw HTTPParseError.badRequest(hosts == 0 ? "missing Host header" : "more than one Host header")
        }
        return HTTPRequestHead(method: String(decoding: method, as: UTF8.self), target: String(decoding: target, as: UTF8.self),
                               minorVersion: minor, headers: headers)
    }

    /// Decides how the body is framed (RFC 9112 §6): chunked, a Content-Length, or none.
    mutating func startBody(for head: HTTPRequestHead, events: inout [HTTPRequestEvent]) throws {
        bodyReceived = 0
        let encodings = head.headers.filter { HTTPRequestHead.sameName($0.name, "transfer-encoding") }
        let lengths = head.headers.filter { HTTPRequestHead.sameName($0.name, "content-length") }.map(\.value)
        // Only a request with a body asks its route for the limit: most requests (GETs) have none.
        // Field values arrive without their surrounding whitespace (`parseHead`).
        let hasBody = !encodings.isEmpty || lengths.contains { $0 != "0" }
        bodyLimit = hasBody ? (limits.bodyBytesForHead?(head) ?? limits.bodyBytes) : limits.bodyBytes
        if !encodings.isEmpty {
            // Both framings at once is how request smuggling starts: refuse it.
            guard lengths.isEmpty else { throw HTTPParseError.badRequest("both Transfer-Encoding and Content-Length") }
            let codings = encodings.flatMap { HTTPRequestHead.tokens($0.value) }
            guard codings.count == 1, HTTPRequestHead.sameName(codings[0], "chunked") else {
                throw HTTPParseError(status: 501, message: "transfer coding \(codings.joined(separator: ", ")) is not supported; send chunked or Content-Length")
            }
            state = .chunkSize
            return
        }
        guard let length = lengths.first else {
            state = .head
            events.append(.end)
            return
        }
        guard lengths.allSatisfy({ $0 == length }), !length.isEmpty, length.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
              length.utf8.count <= 18, let size = Int(length)
        else { throw HTTPParseError.badRequest("invalid Content-Length") }
        guard size <= bodyLimit else {
            throw HTTPParseError(status: 413, message: "request body of \(size) bytes is over the \(bodyLimit)-byte limit")
        }
        if size == 0 {
            state = .head
            events.append(.end)
        } else {
            state = .fixedBody(remaining: size)
        }
    }

    // MARK: - Lines and bytes

    /// Takes one CRLF- (or LF-) terminated line without its terminator, buffering partial lines.
    mutating func takeLine(_ input: inout ArraySlice<UInt8>, limit: Int, what: String) throws -> ArraySlice<UInt8>? {
        guard let newline = input.firstIndex(of: 0x0A) else {
            pending.append(contentsOf: input)
            input = input.dropFirst(input.count)
            guard pending.count <= limit + 1 else { throw HTTPParseError.badRequest("\(what) is too long") }
            return nil
        }
        var line = pending + input[input.startIndex..<newline]
        input = input[(newline + 1)...]
        pending = []
        if line.last == 0x0D { line.removeLast() }
        guard line.count <= limit else { throw HTTPParseError.badRequest("\(what) is too long") }
        return line[...]
    }

    /// `chunk-size [BWS ";" chunk-ext]` (RFC 9112 §7.1): hex digits with nothing inside them,
    /// so that `0 2` is an error rather than a 2 (or a 0) that another parser would read otherwise.
    static func chunkSize(_ line: ArraySlice<UInt8>) -> Int? {
        var digits = line.prefix { $0 != UInt8(ascii: ";") }
        let hasExtension = digits.count < line.count
        if hasExtension { while let last = digits.last, last == 0x20 || last == 0x09 { digits = digits.dropLast() } }
        return hexValue(digits)
    }

    static func hexValue(_ digits: some Collection<UInt8>) -> Int? {
        guard !digits.isEmpty, digits.count <= 15 else { return nil }
        var value = 0
        for byte in digits {
            switch byte {
            case 0x30...0x39: value = value * 16 + Int(byte - 0x30)
            case 0x41...0x46: value = value * 16 + Int(byte - 0x41 + 10)
            case 0x61...0x66: value = value * 16 + Int(byte - 0x61 + 10)
            default: return nil
            }
        }
        return value
    }

    /// RFC 9110 token characters (method and header names).
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
             UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
             UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"): true
        default: false
        }
    }
}
