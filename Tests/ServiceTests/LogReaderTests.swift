import Foundation
@testable import Service
import TestSupport
import Testing

/// Where a log read starts (tail, Last-Event-ID) and how a growing file is read in whole lines.
@Suite struct LogReaderTests {
    static func file(_ text: String) throws -> String {
        let path = temporaryPath("preftune-log", suffix: ".txt")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static func rest(_ start: LogReader) -> [String] {
        var reader = start
        return reader.readNewLines().lines.map { "\($0.number):\($0.text)" }
    }

    @Test func tailsAndResumePointsStartAtWholeLines() throws {
        let path = try Self.file("a\nb\nc\npartial")
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(Self.rest(LogReader.start(path: path, afterLine: nil, tail: nil)) == ["1:a", "2:b", "3:c"], "a line still being written waits")
        #expect(Self.rest(LogReader.start(path: path, afterLine: nil, tail: 2)) == ["2:b", "3:c"])
        #expect(Self.rest(LogReader.start(path: path, afterLine: nil, tail: 0)) == [])
        #expect(Self.rest(LogReader.start(path: path, afterLine: nil, tail: 10)) == ["1:a", "2:b", "3:c"])
        #expect(Self.rest(LogReader.start(path: path, afterLine: 0, tail: nil)) == ["1:a", "2:b", "3:c"])
        #expect(Self.rest(LogReader.start(path: path, afterLine: 2, tail: nil)) == ["3:c"])
        #expect(Self.rest(LogReader.start(path: path, afterLine: 9, tail: nil)) == [], "after the end: only what comes next")
        #expect(LogReader.start(path: path, afterLine: 9, tail: nil).lineNumber == 3)
        #expect(Self.rest(LogReader.start(path: path + ".missing", afterLine: nil, tail: 5)) == [])
    }

    @Test func aGrowingFileIsReadInPiecesWithoutLosingOrRepeatingLines() throws {
        let lines = (1...5000).map { "line \($0) " + String(repeating: "x", count: $0 % 50) }
        let path = try Self.file(lines.joined(separator: "\n") + "\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        var reader = LogReader.start(path: path, afterLine: nil, tail: 4000)
        var seen: [String] = []
        var (piece, more) = reader.readNewLines(limit: 4096)
        seen += piece.map(\.text)
        while more {
            (piece, more) = reader.readNewLines(limit: 4096)
            seen += piece.map(\.text)
        }
        #expect(seen == Array(lines.suffix(4000)))
        let handle = try #require(FileHandle(forWritingAtPath: path))
        handle.seekToEndOfFile()
        handle.write(Data("one more\nhalf".utf8))
        try handle.close()
        #expect(reader.readNewLines().lines.map { "\($0.number):\($0.text)" } == ["5001:one more"])
    }
}
