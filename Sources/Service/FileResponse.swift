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
        guard let header = request.head.header("range") else {
            return HTTPResponse(status: 200, headers: headers, body: .file(path: path, size: total))
        }
        guard let range = parse(header, size: total) else {
            var response = APIError(status: 416, message: "the range \(header) is not within the file's \(total) bytes", param: "Range",
                                    code: "range_not_satisfiable").response
            response.headers.append(("Content-Range", "bytes */\(total)"))
            return response
        }
        headers.append(("Content-Range", "bytes \(range.lowerBound)-\(range.upperBound - 1)/\(total)"))
        return HTTPResponse(status: 206, headers: headers, body: .file(path: path, offset: range.lowerBound, size: range.count))
    }

    /// `bytes=a-b`, `bytes=a-` or `bytes=-n` within `size`; nil when unsatisfiable or not one byte range.
    static func parse(_ header: String, size: Int) -> Range<Int>? {
        let value = header.trimmingCharacters(in: .whitespaces)
        guard value.hasPrefix("bytes="), !value.contains(",") else { return nil }
        let parts = value.dropFirst(6).split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2 else { return nil }
        if parts[0].isEmpty {
            guard let suffix = Int(parts[1]), suffix > 0, size > 0 else { return nil }
            return max(0, size - suffix)..<size
        }
        guard let start = Int(parts[0]), start >= 0, start < size else { return nil }
        if parts[1].isEmpty { return start..<size }
        guard let end = Int(parts[1]), end >= start else { return nil }
        return start..<(min(end, size - 1) + 1)
    }
}
