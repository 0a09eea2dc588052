import CLinux
import Foundation

/// Training runs at a lower CPU priority than the API, so that requests stay fast
/// while jobs train: each worker thread runs at `nice` 10 (set as it starts), and so do
/// OpenBLAS's threads, which do most of a training step's arithmetic. The request
/// path — the HTTP loop (`preftune-http`) and the handler threads (`http-handler-N`),
/// where log followers run too — keeps its priority.
public enum CPUPriority {
    static let trainingNice: Int32 = 10

    /// OpenBLAS starts its threads when the library loads, before `main`: called first
    /// thing in `main`, every thread but the main one is OpenBLAS's.
    public static func threadsAtStartup() -> [Int32] {
        let main = getpid()
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return tasks.compactMap { Int32($0) }.filter { $0 != main }
    }

    static func lower(_ threads: [Int32]) {
        for thread in threads { _ = preftune_set_thread_nice(thread, trainingNice) }
    }
}
