import Foundation
import HTTP

/// A file on disk as a response, sent as the socket drains; a `Range: bytes=…`
/// request (one range) gets 206 with that part, an unsatisfiable one 416.
enum FileResponse {
    static func make(path: String, contentType: String, request: HTTPRequest, filename: String? = nil) throws -> HTTPResponse {
        guard let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber else {
            throw APIError.notFound("the file", param: nil)
        }
        let total = size.intValue
        var headers: [(String, String)] = [("Content-Type", contentType), ("Accept-Ranges", "bytes")]
        if let filename { headers.append(("Content-Disposition", "attachment; filename=\"\(filename)\"")) }
        // A Range header that is not one well-formed byte range is ignored, as RFC 9110 allows: the whole file.
        guard let header = request.head.header("range"), let requested = parse(header, size: total) else {
            return HTTPResponse(status: 200, headers: headers, body: .file(path: path, size: total))
        }
        guard case let .satisfiable(range) = requested else {
            var response = APIError(status: 416, message: "the range \(header) is not within the file's \(total) bytes", param: "Range",
                                    code: "range_not_satisfiable").response
            response.headers.append(("Content-Range", "bytes */\(total)"))
            return response
        }
        headers.append(("Content-Range", "bytes \(range.lowerBound)-\(range.upperBound - 1)/\(total)"))
        return HTTPResponse(status: 206, headers: headers, body: .file(path: path, offset: range.lowerBound, size: range.count))
    }

    enum Requested: Equatable { case satisfiable(Range<Int>), unsatisfiable }

    /// `bytes=a-b`, `bytes=a-` or `bytes=-n` against a file of `size` bytes; nil when the
    /// header is not one well-formed byte range.
    static func parse(_ header: String, size: Int) -> Requested? {
        let value = header.trimmingCharacters(in: .whitespaces)
        guard value.hasPrefix("bytes="), !value.contains(",") else { return nil }
        let parts = value.dropFirst(6).split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2, parts.allSatisfy({ $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }) else { return nil }
        if parts[0].isEmpty {
            guard let suffix = Int(parts[1]) else { return nil }
            return suffix > 0 && size > 0 ? .satisfiable(max(0, size - suffix)..<size) : .unsatisfiable
        }
        guard let start = Int(parts[0]) else { return nil }
        if parts[1].isEmpty { return start < size ? .satisfiable(start..<size) : .unsatisfiable }
        guard let end = Int(parts[1]), end >= start else { return nil }
        return start < size ? .satisfiable(start..<(min(end, size - 1) + 1)) : .unsatisfiable
    }
}
