import Foundation

/// What the multipart parser found, in order.
public enum MultipartEvent: Sendable, Equatable {
    /// A part begins: its form field name, filename (for file fields) and content type.
    case partStart(name: String, filename: String?, contentType: String?)
    case data([UInt8])
    case partEnd
    /// The closing delimiter was seen; nothing after it matters.
    case end
}

/// An incremental multipart/form-data parser (RFC 7578), a pure state machine
/// like `HTTPRequestParser`: feed it the body in any pieces and it reports parts
/// and their data as they arrive, so a file part of gigabytes streams to disk.
public struct MultipartParser: Sendable {
    enum State: Sendable { case preamble, headers, body, afterDelimiter, done }

    let delimiter: [UInt8]        // "\r\n--" + boundary
    var state = State.preamble
    var buffer: [UInt8] = []
    public let maxHeaderBytes: Int
    public let maxParts: Int
    var parts = 0

    /// The boundary of a `multipart/form-data; boundary=…` content type, or nil.
    public static func boundary(contentType: String) -> String? {
        let pieces = contentType.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
        guard pieces.first?.lowercased() == "multipart/form-data" else { return nil }
        for piece in pieces.dropFirst() where piece.lowercased().hasPrefix("boundary=") {
            var value = String(piece.dropFirst("boundary=".count))
            if value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 { value = String(value.dropFirst().dropLast()) }
            return (1...70).contains(value.utf8.count) ? value : nil
        }
        return nil
    }

    public init(boundary: String, maxHeaderBytes: Int = 16 * 1024, maxParts: Int = 100) {
        delimiter = Array("\r\n--\(boundary)".utf8)
        self.maxHeaderBytes = maxHeaderBytes
        self.maxParts = maxParts
        // The first delimiter may start the body directly, without the leading CRLF.
        buffer = [0x0D, 0x0A]
    }

    public var isComplete: Bool { state == .done }

    public mutating func feed(_ bytes: some Collection<UInt8>) throws -> [MultipartEvent] {
        buffer.append(contentsOf: bytes)
        var events: [MultipartEvent] = []
        while true {
            switch state {
            case .done:
                buffer = []
                return events
            case .preamble:
                guard let index = find(delimiter, in: buffer) else {
                    buffer = Array(buffer.suffix(delimiter.count - 1))
                    return events
                }
                buffer.removeFirst(index + delimiter.count)
                state = .afterDelimiter
            case .afterDelimiter:
                guard buffer.count >= 2 else { return events }
                if buffer[0] == 0x2D, buffer[1] == 0x2D {  // "--": the closing delimiter
                    state = .done
                    events.append(.end)
                    continue
                }
                // Transport padding (spaces, tabs) may precede the CRLF after a delimiter.
                guard let lineEnd = find([0x0D, 0x0A], in: buffer) else {
                    guard buffer.count < 1024 else { throw MultipartError("malformed delimiter line") }
                    return events
                }
                guard buffer[0..<lineEnd].allSatisfy({ $0 == 0x20 || $0 == 0x09 }) else { throw MultipartError("malformed delimiter line") }
                buffer.removeFirst(lineEnd + 2)
                parts += 1
                guard parts <= maxParts else { throw MultipartError("more than \(maxParts) parts") }
                state = .headers
            case .headers:
                guard let end = find([0x0D, 0x0A, 0x0D, 0x0A], in: buffer) ?? (buffer.starts(with: [0x0D, 0x0A]) ? -2 : nil) else {
                    guard buffer.count <= maxHeaderBytes else { throw MultipartError("part headers over \(maxHeaderBytes) bytes") }
                    return events
                }
                guard end <= maxHeaderBytes else { throw MultipartError("part headers over \(maxHeaderBytes) bytes") }
                let text = end >= 0 ? String(decoding: buffer[0..<end], as: UTF8.self) : ""
                buffer.removeFirst(end + 4)
                events.append(try Self.partStart(headers: text))
                state = .body
            case .body:
                if let index = find(delimiter, in: buffer) {
                    if index > 0 { events.append(.data(Array(buffer[0..<index]))) }
                    buffer.removeFirst(index + delimiter.count)
                    events.append(.partEnd)
                    state = .afterDelimiter
                } else {
                    // Everything except a tail that might begin the delimiter is part data.
                    let safe = buffer.count - (delimiter.count - 1)
                    if safe > 0 {
                        events.append(.data(Array(buffer[0..<safe])))
                        buffer.removeFirst(safe)
                    }
                    return events
                }
            }
        }
    }

    static func partStart(headers: String) throws -> MultipartEvent {
        var name: String?, filename: String?, contentType: String?
        for line in headers.components(separatedBy: "\r\n") where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { throw MultipartError("malformed part header") }
            let field = line[..<colon].lowercased(), value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            if field == "content-type" { contentType = value }
            guard field == "content-disposition" else { continue }
            for parameter in value.split(separator: ";").dropFirst() {
                let pair = parameter.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                guard pair.count == 2 else { continue }
                var text = pair[1]
                if text.hasPrefix("\""), text.hasSuffix("\""), text.count >= 2 { text = String(text.dropFirst().dropLast()) }
                text = text.replacingOccurrences(of: "\\\"", with: "\"")
                switch pair[0].lowercased() {
                case "name": name = text
                case "filename": filename = text
                default: break
                }
            }
        }
        guard let name else { throw MultipartError("a part has no Content-Disposition name") }
        return .partStart(name: name, filename: filename, contentType: contentType)
    }

    func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count, let first = needle.first else { return nil }
        var i = 0
        let last = haystack.count - needle.count
        while i <= last {
            if haystack[i] == first {
                var j = 1
                while j < needle.count && haystack[i + j] == needle[j] { j += 1 }
                if j == needle.count { return i }
            }
            i += 1
        }
        return nil
    }
}

public struct MultipartError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
