#if canImport(Glibc)
import Glibc
#endif

/// The server's own diagnostics, for operators: one line per event on standard error,
/// `preftune: <what>: <why>`. Jobs' own logs go to their log files (JobSink), not here.
/// Each line is one write(2), so lines from concurrent threads do not interleave.
enum ServerLog {
    static func error(_ context: String, _ error: any Error) { write("\(context): \(error)") }

    static func write(_ message: String) {
        var line = "preftune: \(message)\n"
        line.withUTF8 { bytes in _ = Glibc.write(2, bytes.baseAddress, bytes.count) }
    }
}
