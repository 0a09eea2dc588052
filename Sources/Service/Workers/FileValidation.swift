import CLinux
import Diffusion
import Dispatch
import Foundation
import Threads
import Jobs
import Numerics
import Store
import Synchronization
import Training

/// The pipeline's first stage: every job in `validating_files` has its files read
/// against its model (each line parsed, the memory budget and the step limit
/// checked), then goes on to `queued` or ends `failed` with the first bad line.
///
/// It takes its work from the store, not from whoever created the job: a job that a
/// stopped server left in `validating_files` is picked up when the stage starts, and a
/// stage in another process would find the same jobs. It wakes when a job is created
/// (a status change to `validating_files`) and looks again every second regardless.
/// Requests never wait for it: creating a job answers at once.
public final class FileValidation: Sendable {
    private let resources: Application.Resources
    private let changes: JobStatusChanges
    private let wakeups = DispatchSemaphore(value: 0)
    private let stopping = Atomic<Bool>(false)
    private let started = Atomic<Bool>(false)
    /// Reading a large file must not slow the event loops: below them (nice 2), as sampling is.
    private let thread = DedicatedThreads(threads: 1, name: "validation", nice: 2)
    static let pollSeconds = 1.0

    init(resources: Application.Resources, changes: JobStatusChanges) {
        self.resources = resources
        self.changes = changes
        changes.observe { [weak self] _, status in
            if status == .validatingFiles { self?.wake() }
        }
    }

    /// Starts the stage's thread (a file's validation holds it for as long as the file takes to read).
    func start() {
        guard !started.exchange(true, ordering: .relaxed) else { return }
        thread.run { [self] in
            while !stopping.load(ordering: .relaxed) {
                validatePending()
                _ = wakeups.wait(timeout: .now() + Self.pollSeconds)
            }
        }
    }

    /// Looks for jobs to validate now.
    public func wake() { wakeups.signal() }

    /// Stops after the validation in progress, if any.
    func stop() {
        guard !stopping.exchange(true, ordering: .relaxed) else { return }
        wake()
        thread.stop()
        thread.join()
    }

    /// Validates every job waiting, oldest first.
    func validatePending() {
        let pending: [JobRecord]
        do { pending = try resources.jobs.jobs(status: .validatingFiles) } catch {
            ServerLog.error("listing jobs to validate", error)
            return
        }
        for job in pending where !stopping.load(ordering: .relaxed) {
            if let status = validate(job) { changes.post(jobID: job.id, status: status) }
        }
    }

    /// One job: its stored settings and base model, then its files. Returns the new status.
    func validate(_ job: JobRecord) -> JobStatus? {
        let store = resources.jobs
        let artifacts = resources.data.artifacts
        let weights: Artifact = artifacts.exists(.startingWeights(job: job.id)) ? .startingWeights(job: job.id) : .model(job.model)
        guard let base = try? ModelFile.declaredConfig(artifacts.localPath(weights)),
              let settings = JobSettings(methodJSON: job.method, hyperparametersJSON: job.hyperparameters) else {
            let error = JobError(code: "model_unavailable", message: "cannot validate: the base model \(job.model) or the job's stored settings are unreadable",
                                 param: "model")
            let failed = (try? store.transition(job.id, from: [.validatingFiles], to: .failed, error: error, event: error.message, level: "error"))?.moved == true
            return failed ? .failed : nil
        }
        return validateFiles(job, config: base, method: settings.method, hyperparameters: settings.hyperparameters)
    }

    /// Reads every line of the training (and validation) file against the model;
    /// the job goes on to `queued`, or ends `failed` with the first bad line. Returns the new status.
    /// Store errors leave the job for the next look; anything wrong with the job itself ends it.
    /// What a job's files hold, once checked: examples in each, and the optimizer steps.
    struct CheckedFiles: Sendable {
        let examples: Int
        let validationExamples: Int?
        let steps: Int
    }

    /// Checks a job's files against its model and settings — the memory budget with every line
    /// an example (before anything is parsed), each line, the step limit — as the validation
    /// stage does and as a dry run does; the first problem is the job's error. Throws what is not the
    /// files' fault (a read failing midway), which a later look may not meet.
    static func check(training: String, validation: String?, config: ModelConfig, method: TrainingMethod, hyperparameters: Hyperparameters,
                      precision: MathPrecision, artifacts: any ArtifactStore, budget: MemoryBudget) throws -> Result<CheckedFiles, JobError> {
        func lines(_ file: String) -> Int? { try? Dataset.countLines(path: artifacts.localPath(.upload(file))) }
        guard let trainingLines = lines(training) else {
            return .failure(JobError(code: "training_file_unavailable", message: "the training file \(training) can no longer be read", param: "training_file"))
        }
        var validationLines: Int?
        if let validation {
            guard let count = lines(validation) else {
                return .failure(JobError(code: "validation_file_unavailable", message: "the validation file \(validation) can no longer be read",
                                         param: "validation_file"))
            }
            validationLines = count
        }
        if let refusal = budget.trainingRefusal(config: config, method: method, hyperparameters: hyperparameters,
                                                examples: trainingLines, validationExamples: validationLines, precision: precision) {
            return .failure(JobError(code: "over_memory_budget", message: refusal, param: "training_file"))
        }
        func load(_ file: String, _ field: String) throws -> Result<Int, JobError> {
            do { return .success(try Dataset.load(path: artifacts.localPath(.upload(file)), method: method, config: config).count) }
            catch let error as DatasetError { return .failure(JobError(code: "invalid_\(field)", message: "\(field.replacingOccurrences(of: "_", with: " ")) \(error)", param: field)) }
        }
        let examples: Int, validationExamples: Int?
        switch try load(training, "training_file") {
        case let .failure(error): return .failure(error)
        case let .success(count): examples = count
        }
        if let validation {
            switch try load(validation, "validation_file") {
            case let .failure(error): return .failure(error)
            case let .success(count): validationExamples = count
            }
        } else {
            validationExamples = nil
        }
        do {
            return .success(CheckedFiles(examples: examples, validationExamples: validationExamples,
                                         steps: try hyperparameters.checkedTotalSteps(datasetSize: examples)))
        } catch let error as HyperparameterError {
            return .failure(JobError(code: "invalid_hyperparameters", message: error.message, param: "hyperparameters.\(error.param)"))
        }
    }

    func validateFiles(_ job: JobRecord, config: ModelConfig, method: TrainingMethod, hyperparameters: Hyperparameters) -> JobStatus? {
        let store = resources.jobs
        do {
            switch try Self.check(training: job.trainingFile, validation: job.validationFile, config: config, method: method,
                              hyperparameters: hyperparameters, precision: job.mathPrecision ?? .fp32,
                              artifacts: resources.data.artifacts, budget: resources.settings.memoryBudget) {
            case let .failure(error):
                return try fail(job, code: error.code, param: error.param ?? "training_file", message: error.message, store: store)
            case let .success(files):
                try store.setTotalSteps(job.id, files.steps)
                let queued = try store.transition(job.id, from: [.validatingFiles], to: .queued, error: nil,
                                                  event: "Validated files: \(files.examples) examples; job queued", level: "info")
                return queued.moved ? .queued : nil
            }
        } catch {
            ServerLog.error("validating \(job.id)", error)
            return nil
        }
    }

    func fail(_ job: JobRecord, code: String, param: String, message: String, store: any JobStore) throws -> JobStatus? {
        let error = JobError(code: code, message: message, param: param)
        return try store.transition(job.id, from: [.validatingFiles], to: .failed, error: error, event: message, level: "error").moved ? .failed : nil
    }
}
