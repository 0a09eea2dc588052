import Foundation
import JSON
import Jobs
import Store
import Training

/// Where a running job's trainer reports: each log line goes to `jobs/<id>/log.txt`
/// and the job's events; each step's metrics to the metric points, a `metrics` event
/// and the job's progress; each checkpoint to a checkpoint record.
///
/// After a resume the trainer replays the steps between its training state and the
/// interruption with the same values; those are in the store already and are skipped,
/// so metric and event steps stay strictly increasing without duplicates.
final class JobSink: TrainingSink {
    let jobID: String
    /// The lease holder: every store write is fenced by it.
    let worker: String
    let store: any JobStore
    let log: FileHandle?
    let changes: JobStatusChanges?
    let telemetry: (any TrainingObserver)?
    /// Examples in one optimizer step (batch × accumulation), for the samples-trained counter.
    var examplesPerStep = 0
    /// Steps between metric records, for the first record of a run (a resumed one starts mid-way).
    var logEvery = 1
    private var lastReportedStep: Int?
    let totalSteps: Int
    /// The last step whose metrics the store holds from an earlier run of this job.
    let replayedThrough: Int
    /// Draws the sample grid of a checkpoint (image-shaped models), before its record appears.
    var sampleGrid: ((CheckpointRecord) -> Bool)?
    /// Set when a store write failed: the job must stop, as its record would have gaps.
    private(set) var storeError: Error?
    /// For the estimated finish: the first step reported in this run and when.
    private var firstReport: (step: Int, time: Date)?

    init(jobID: String, worker: String, logPath: String, store: any JobStore, totalSteps: Int, changes: JobStatusChanges? = nil,
         telemetry: (any TrainingObserver)? = nil, unavailableFor: Double = 600) throws {
        self.jobID = jobID
        self.worker = worker
        patience = unavailableFor
        self.store = store
        self.changes = changes
        self.telemetry = telemetry
        self.totalSteps = totalSteps
        replayedThrough = try store.lastMetricStep(jobID) ?? 0
        let descriptor = open(logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        log = descriptor >= 0 ? FileHandle(fileDescriptor: descriptor, closeOnDealloc: true) : nil
    }

    /// UTC, to the second: `2026-11-23T16:50:01Z`.
    static func timestamp(_ date: Date = Date()) -> String {
        var seconds = time_t(date.timeIntervalSince1970)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
                      parts.tm_hour, parts.tm_min, parts.tm_sec)
    }

    /// Messages as log lines, each stamped.
    static func stamped(_ messages: [String]) -> Data {
        let now = timestamp()
        return Data(messages.map { "\(now) \($0)\n" }.joined().utf8)
    }

    /// Appends stamped lines to a job's log from outside its sink (a failure before training,
    /// a dead worker's last words), in one write; a log that cannot be written loses the lines.
    static func append(_ messages: [String], to jobID: String, in artifacts: any ArtifactStore) {
        try? artifacts.append(stamped(messages), to: .jobLog(jobID))
    }

    /// One line in the log file, stamped; a log that cannot be written loses the line, not the job.
    func appendToFile(_ message: String) {
        try? log?.write(contentsOf: Self.stamped([message]))
        changes?.logAppended(jobID: jobID)
    }

    func log(_ message: String) {
        appendToFile(message)
        attempt { try store.appendEvent(jobID, fencedBy: worker, level: "info", type: "message", message: message, data: nil) }
    }

    func record(step: Int, metrics: [String: Double], summary: String) {
        telemetry?.jobProgress(jobID, step: step, loss: metrics["loss"], samples: (step - (lastReportedStep ?? max(0, step - logEvery))) * examplesPerStep)
        lastReportedStep = step
        guard step > replayedThrough else { return }
        let now = Date()
        if firstReport == nil { firstReport = (step, now) }
        var estimatedFinish: Int?
        if let first = firstReport, step > first.step {
            let secondsPerStep = now.timeIntervalSince(first.time) / Double(step - first.step)
            estimatedFinish = Int(now.timeIntervalSince1970 + secondsPerStep * Double(totalSteps - step))
        }
        appendToFile(summary)
        attempt {
            try store.recordStep(jobID, worker: worker, step: step, values: metrics, summary: summary, samplesPerSecond: metrics["samples_per_s"],
                                 estimatedFinish: estimatedFinish)
        }
    }

    /// Deletes the checkpoints past the job's `keep_checkpoints` after each new one, never the best.
    var retain: ((_ best: Int?) throws -> Void)?

    /// A validation or grading result: a line in the log and an event, once (not again when a
    /// resumed run replays the step).
    func note(step: Int, _ message: String) {
        guard step > replayedThrough else { return }
        log(message)
    }

    func checkpointSaved(_ checkpoint: CheckpointRecord) {
        let metrics = JSONBodyEncoder.string(SortedMembers(checkpoint.metrics.filter { $0.value.isFinite }))
        let message = "Checkpoint saved at step \(checkpoint.step)"
        let drawn = sampleGrid?(checkpoint) ?? false
        if checkpoint.step > replayedThrough { appendToFile(message) }
        attempt {
            try store.addCheckpoint(jobID, worker: worker, id: FineTuningCheckpoint.id(job: jobID, step: checkpoint.step), step: checkpoint.step,
                                    metrics: metrics, event: message, sampleGrid: drawn, best: checkpoint.best)
        }
        attempt { try retain?(checkpoint.best?.step) }
    }

    /// How long a write waits out an unreachable database before the job stops.
    let patience: Double

    /// A write that fails stops the job (`storeError`), except while the database is
    /// unreachable: then training waits, trying again with back-off, and carries on when it
    /// is back (its lease, if taken over meanwhile, then refuses the write).
    private func attempt(_ write: () throws -> Void) {
        guard storeError == nil else { return }
        var delay = 0.25, waited = 0.0
        while true {
            do {
                try write()
                if waited > 0 { appendToFile("the database is reachable again after \(Int(waited)) s; training continues") }
                return
            } catch is DatabaseUnavailable where waited < patience {
                if waited == 0 { appendToFile("the database is unreachable; training waits for it") }
                Thread.sleep(forTimeInterval: delay)
                waited += delay
                delay = min(delay * 2, 5)
            } catch {
                storeError = error
                return
            }
        }
    }
}
