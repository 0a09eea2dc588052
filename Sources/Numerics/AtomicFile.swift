import Foundation

/// Writes that a reader may see are atomic: write a temporary file beside the
/// target, fsync it, rename it over the target, fsync the directory. A crash
/// leaves either the old file or the new one, never half of one.
public enum AtomicFile {
    public static func write(_ bytes: [UInt8], to path: String) throws {
        try write(to: path) { fd in try bytes.withUnsafeBytes { try writeAll(fd, $0) } }
    }

    /// Writes what `body` writes to the descriptor it is given, atomically.
    public static func write(to path: String, _ body: (Int32) throws -> Void) throws {
        let directory = (path as NSString).deletingLastPathComponent
        let temporary = "\(directory.isEmpty ? "." : directory)/.\((path as NSString).lastPathComponent).tmp-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FileWriteError("cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var failure: String?
        do {
            try body(fd)
            if fsync(fd) != 0 { failure = String(cString: strerror(errno)) }
        } catch let error as FileWriteError {
            failure = error.description
        }
        close(fd)
        if let failure {
            unlink(temporary)
            throw FileWriteError("cannot write \(path): \(failure)")
        }
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw FileWriteError("cannot move \(temporary) to \(path): \(reason)")
        }
        let directoryFD = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 { fsync(directoryFD); close(directoryFD) }
    }
}

extension AtomicFile {
    /// Writes every byte, retrying short writes and EINTR.
    public static func writeAll(_ fd: Int32, _ bytes: some Collection<UInt8>) throws {
        try Array(bytes).withUnsafeBytes { try writeAll(fd, $0) }
    }

    public static func writeAll(_ fd: Int32, _ raw: UnsafeRawBufferPointer) throws {
        var written = 0
        while written < raw.count {
            let n = Foundation.write(fd, raw.baseAddress! + written, raw.count - written)
            if n < 0 {
                if errno == EINTR { continue }
                throw FileWriteError(String(cString: strerror(errno)))
            }
            written += n
        }
    }
}

public struct FileWriteError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
