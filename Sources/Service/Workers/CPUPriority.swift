import CLinux
import Foundation

/// Training runs at a lower CPU priority than the API, so that requests stay fast
/// while jobs train. The threads that serve requests are the HTTP loop and the
/// handler threads (named `preftune-http`, `preftune-handler-N`) and the main
/// thread; everything else — worker threads, OpenBLAS's pool, Dispatch's threads
/// that split element-wise work — does training and gets `nice` 10.
enum CPUPriority {
    static let trainingNice: Int32 = 10

    /// Lowers every thread of the process but the request path. Threads started later
    /// by a lowered thread inherit its priority; workers call this again at each job start
    /// and heartbeat to catch the others.
    static func lowerTrainingThreads() {
        let pid = getpid()
        guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") else { return }
        for task in tasks {
            guard let tid = Int32(task), tid != pid else { continue }
            // The kernel keeps 15 characters of a thread's name: "preftune-handle".
            let name = (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)) ?? ""
            if name.hasPrefix("preftune-h") { continue }
            _ = preftune_set_thread_nice(tid, trainingNice)
        }
    }
}
