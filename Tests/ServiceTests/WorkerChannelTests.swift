import Foundation
import Jobs
@testable import Service
import Testing

/// The line protocol between `serve` and its worker processes.
@Suite struct WorkerChannelTests {
    @Test(arguments: [
        WorkerMessage.status(jobID: "ftjob-1", .cancelled),
        .status(jobID: "ftjob-1", .queued),
        .logAppended(jobID: "ftjob-2"),
        .jobStarted(jobID: "ftjob-3"),
        .jobStopped(jobID: "ftjob-3"),
        .progress(jobID: "ftjob-4", step: 500, loss: 0.125, samples: 2000),
        .progress(jobID: "ftjob-4", step: 1, loss: nil, samples: 0),
    ])
    func everyMessageIsOneLineThatReadsBackTheSame(message: WorkerMessage) throws {
        let line = message.line
        #expect(line.last == 0x0A && line.dropLast().allSatisfy { $0 != 0x0A }, "one line")
        #expect(try WorkerMessage(line: line.dropLast()) == message)
    }

    @Test(arguments: [
        "", "not json", "[]", #"{"kind": "status", "job": "j"}"#, #"{"kind": "reboot", "job": "j"}"#,
        #"{"kind": "status", "job": "j", "status": "exploded"}"#, #"{"kind": "log", "job": "j", "extra": 1}"#,
        #"{"kind": "progress", "job": "j", "step": 1.5}"#,
    ])
    func aBrokenLineIsAnErrorNotACrash(text: String) {
        #expect(throws: (any Error).self) { try WorkerMessage(line: Array(text.utf8)) }
    }

    @Test func linesAreReadWholeAndOverlongOnesAreCut() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let text = "first\n" + String(repeating: "x", count: 10_000) + "\nlast without newline"
        let writeEnd = fds[1]
        let writer = Thread {
            _ = Array(text.utf8).withUnsafeBytes { write(writeEnd, $0.baseAddress, $0.count) }
            close(writeEnd)
        }
        writer.start()
        var lines: [String] = []
        LineReader(fd: fds[0], maximumLineBytes: 100).forEachLine { lines.append(String(decoding: $0, as: UTF8.self)) }
        close(fds[0])
        #expect(lines == ["first", String(repeating: "x", count: 100), "last without newline"])
    }
}
