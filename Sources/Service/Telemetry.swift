import Foundation
import HTTP
import Store
import Synchronization

/// What `GET /metrics` reports of this process besides the database's figures: HTTP
/// requests and their latency by route, method and status, and the training side —
/// its workers, how many are busy, and the samples trained since the process started.
/// Each node of a fleet exports its own; per-job series come from the database.
public final class Telemetry: Sendable {
    /// Histogram buckets of request latency, in seconds.
    static let buckets: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    struct RequestKey: Hashable { let route: String, method: String, code: Int }
    struct Latency {
        var counts = [Int](repeating: 0, count: Telemetry.buckets.count)
        var count = 0
        var sum = 0.0

        mutating func record(bucket: Int?, seconds: Double) {
            if let bucket { counts[bucket] += 1 }
            count += 1
            sum += seconds
        }
    }
    struct Counters {
        var requests: [RequestKey: Latency] = [:]
        var running: Set<String> = []
        var samplesTrained = 0
        var workers = 0
    }
    private let counters = Mutex(Counters())

    public init() {}

    func recordRequest(route: String, method: String, code: Int, seconds: Double) {
        let bucket = Self.buckets.firstIndex { seconds <= $0 }
        let key = RequestKey(route: route, method: method, code: code)
        counters.withLock {
            // In place: a copy out of the dictionary would copy its bucket array on every request.
            $0.requests[key, default: Latency()].record(bucket: bucket, seconds: seconds)
        }
    }

    public func workersStarted(_ count: Int) { counters.withLock { $0.workers = count } }
    public func jobStarted(_ id: String) { counters.withLock { _ = $0.running.insert(id) } }
    public func jobStopped(_ id: String) { counters.withLock { _ = $0.running.remove(id) } }

    public func jobProgress(_ id: String, step: Int, loss: Double?, samples: Int) {
        counters.withLock { $0.samplesTrained += samples }
    }

    /// The Prometheus text exposition format (version 0.0.4).
    /// `perJob`: series labelled by job id (step, loss), for a scraper holding the metrics token only:
    /// every running job's, from the database, whichever worker (on whichever machine) trains it.
    func render(jobsByStatus: [JobStatus: Int], followers: Int, perJob: [(id: String, step: Int, loss: Double?)]?) -> String {
        let (requests, running, samplesTrained, workers) = counters.withLock { ($0.requests, $0.running, $0.samplesTrained, $0.workers) }
        var out = ""
        func family(_ name: String, _ type: String, _ help: String) { out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n" }
        func label(_ value: String) -> String {
            value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
        }
        func number(_ value: Double) -> String { value.isFinite ? "\(value)" : (value.isNaN ? "NaN" : (value > 0 ? "+Inf" : "-Inf")) }

        family("preftune_jobs", "gauge", "Fine-tuning jobs by status.")
        for status in JobStatus.allCases {
            out += "preftune_jobs{status=\"\(status.rawValue)\"} \(jobsByStatus[status] ?? 0)\n"
        }
        family("preftune_queue_depth", "gauge", "Jobs waiting for a worker.")
        out += "preftune_queue_depth \(jobsByStatus[.queued] ?? 0)\n"
        family("preftune_workers", "gauge", "Workers in this process.")
        out += "preftune_workers \(workers)\n"
        family("preftune_workers_busy", "gauge", "Workers training a job now.")
        out += "preftune_workers_busy \(running.count)\n"
        family("preftune_samples_trained_total", "counter", "Training examples processed since the process started.")
        out += "preftune_samples_trained_total \(samplesTrained)\n"
        if let perJob {
            family("preftune_job_step", "gauge", "Last recorded optimizer step of each running job.")
            for job in perJob { out += "preftune_job_step{job=\"\(label(job.id))\"} \(job.step)\n" }
            family("preftune_job_loss", "gauge", "Last recorded training loss of each running job.")
            for job in perJob {
                if let loss = job.loss { out += "preftune_job_loss{job=\"\(label(job.id))\"} \(number(loss))\n" }
            }
        }
        family("preftune_log_followers", "gauge", "Clients following a job's log.")
        out += "preftune_log_followers \(followers)\n"

        let keys = requests.keys.sorted { ($0.route, $0.method, $0.code) < ($1.route, $1.method, $1.code) }
        family("preftune_http_requests_total", "counter", "HTTP requests answered, by route, method and status code.")
        for key in keys {
            out += "preftune_http_requests_total{route=\"\(label(key.route))\",method=\"\(key.method)\",code=\"\(key.code)\"} \(requests[key]!.count)\n"
        }
        family("preftune_http_request_duration_seconds", "histogram", "Time to answer a request (to the response head for streams).")
        for key in keys {
            let latency = requests[key]!
            let labels = "route=\"\(label(key.route))\",method=\"\(key.method)\",code=\"\(key.code)\""
            var cumulative = 0
            for (i, bound) in Self.buckets.enumerated() {
                cumulative += latency.counts[i]
                out += "preftune_http_request_duration_seconds_bucket{\(labels),le=\"\(bound)\"} \(cumulative)\n"
            }
            out += "preftune_http_request_duration_seconds_bucket{\(labels),le=\"+Inf\"} \(latency.count)\n"
            out += "preftune_http_request_duration_seconds_sum{\(labels)} \(latency.sum)\n"
            out += "preftune_http_request_duration_seconds_count{\(labels)} \(latency.count)\n"
        }
        return out
    }
}

/// What workers report of the jobs they train: to `Telemetry` in the process that serves
/// /metrics, or through a `WorkerChannel` to it from a worker process.
public protocol TrainingObserver: Sendable {
    func workersStarted(_ count: Int)
    func jobStarted(_ id: String)
    func jobStopped(_ id: String)
    func jobProgress(_ id: String, step: Int, loss: Double?, samples: Int)
}

extension Telemetry: TrainingObserver {}
