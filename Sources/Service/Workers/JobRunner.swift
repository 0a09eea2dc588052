import Diffusion
import Foundation
import Jobs
import Numerics
import Store
import Training

/// Runs one claimed job to its end, a pause, or a hand-back: loads the base model
/// and datasets, trains (resuming from the job's training state when there is one),
/// and records the outcome. Every failure ends the job with an error, never the server.
struct JobRunner {
    let job: JobRecord
    let worker: String
    let data: DataDirectory
    let memoryBudget: MemoryBudget
    let store: any JobStore
    let control: JobControl
    let changes: JobStatusChanges
    let telemetry: (any TrainingObserver)?
    /// Where an HTTP grader may be reached: the webhooks' rules (the operator's `--webhook-allow`).
    var egress = EgressPolicy()

    /// A failure that ends the job, shown to the user as its `error`.
    typealias Failure = JobError

    /// Runs the job; returns the status it ended in, when this worker changed it.
    func run() -> JobStatus? {
        let directory = data.artifacts.workingDirectory(job: job.id)
        let sink: JobSink
        do {
            try FileManager.default.createDirectory(atPath: directory.path, withIntermediateDirectories: true)
            sink = try JobSink(jobID: job.id, worker: worker, logPath: directory.log, store: store, totalSteps: job.totalSteps ?? 0, changes: changes,
                               telemetry: telemetry)
        } catch {
            return finish(failed: Failure(code: "storage_unavailable", message: "cannot write the job's files under \(directory.path): \(error)"))
        }
        do {
            let trainer = try makeTrainer(directory: directory, sink: sink)
            // Its own state first: a fork that has trained resumes as any job does.
            let start: StartingPoint = FileManager.default.fileExists(atPath: directory.state) ? .resume
                : FileManager.default.fileExists(atPath: directory.forkState) ? .fork(statePath: directory.forkState) : .fresh
            let command = { () -> TrainingCommand in
                if sink.storeError != nil { return .cancel }
                switch control.request {
                case nil: return .proceed
                case .pause, .shutdown, .preempt: return .pause
                case .cancel, .leaseLost, .deadline: return .cancel
                }
            }
            // Asked inside steps too: a cancel or pause takes effect within a sampling step, not after a whole rollout.
            let outcome = try trainer.run(from: start, control: command, interrupt: command)
            // A refused write means another worker holds the job, unless the job ended (a cancel clears its lease).
            if sink.storeError is LeaseLost, (try? store.job(job.id, project: nil))??.status.isTerminal != true { control.request(.leaseLost) }
            if let error = sink.storeError, !(error is LeaseLost) {
                throw Failure(code: "store_unavailable", message: "cannot record the job's progress: \(error)")
            }
            return conclude(outcome, trainer: trainer, sink: sink)
        } catch let failure as Failure {
            return finish(failed: failure)
        } catch let failure as TrainingFailure {
            return finish(failed: Failure(code: failure.code, message: failure.message))
        } catch {
            return finish(failed: Failure(code: "internal_error", message: "training stopped: \(error)"))
        }
    }

    func makeTrainer(directory: JobDirectory, sink: JobSink) throws -> Trainer {
        guard let settings = JobSettings(methodJSON: job.method, hyperparametersJSON: job.hyperparameters) else {
            throw Failure(code: "internal_error", message: "the job's stored method or hyperparameters are not readable")
        }
        let (method, hyperparameters) = (settings.method, settings.hyperparameters)
        let base: ModelFile
        // A job started from a checkpoint trains from the copy of its weights made with the job.
        let basePath = data.artifacts.exists(.startingWeights(job: job.id)) ? data.artifacts.localPath(.startingWeights(job: job.id))
            : data.artifacts.localPath(.model(job.model))
        do { base = try ModelFile.load(basePath) } catch {
            throw Failure(code: "model_unavailable", message: "cannot load the base model \(job.model): \(error)", param: "model")
        }
        func dataset(_ id: String, field: String) throws -> Dataset {
            let path = data.artifacts.localPath(.upload(id))
            guard data.artifacts.exists(.upload(id)) else {
                throw Failure(code: "\(field)_unavailable", message: "the \(field.replacingOccurrences(of: "_", with: " ")) \(id) is gone (deleted after the job was created)", param: field)
            }
            do { return try Dataset.load(path: path, method: method, config: base.config) } catch {
                throw Failure(code: "invalid_\(field)", message: "\(field.replacingOccurrences(of: "_", with: " ")) \(id): \(error)", param: field)
            }
        }
        // The budget again, as this worker's operator sets it, before the datasets are expanded in memory.
        let lines = (try? Dataset.countLines(path: data.artifacts.localPath(.upload(job.trainingFile)))) ?? 0
        let validationLines = job.validationFile.map { (try? Dataset.countLines(path: data.artifacts.localPath(.upload($0)))) ?? 0 }
        let evaluation = try job.evaluation.map { text in
            guard let evaluation = EvaluationSettings(json: text) else {
                throw Failure(code: "internal_error", message: "the job's stored early_stopping, grader or result is not readable")
            }
            return evaluation
        }
        // The API node checked its own CPU; in a fleet this worker's may differ.
        guard let precision = job.mathPrecision else {
            throw Failure(code: "internal_error", message: "the job's stored precision \(job.precision) is not readable")
        }
        if precision == .bf16, let refusal = MathPrecision.bf16Refusal {
            throw Failure(code: "unsupported_precision", message: "this worker cannot train in bf16: \(refusal)", param: "precision")
        }
        if let refusal = memoryBudget.trainingRefusal(config: base.config, method: method, hyperparameters: hyperparameters, examples: lines,
                                                      validationExamples: validationLines, gradingSamples: evaluation?.grader?.rows ?? 0,
                                                      precision: precision) {
            throw Failure(code: "over_memory_budget", message: refusal, param: "hyperparameters")
        }
        let training = try dataset(job.trainingFile, field: "training_file")
        let validation = try job.validationFile.map { try dataset($0, field: "validation_file") }
        var trainingJob = TrainingJob(method: method, hyperparameters: hyperparameters, seed: UInt64(job.seed), config: base.config,
                                      base: base.parameters, training: training, validation: validation)
        trainingJob.precision = precision
        if let evaluation {
            trainingJob.selection = evaluation.selection(hasValidation: validation != nil)
            trainingJob.result = evaluation.result
            if let grader = evaluation.grader {
                trainingJob.grading = CheckpointGrading(plan: grader.plan(defaultLabels: Self.gradingLabels(validation ?? training, config: base.config)),
                                                        scorer: try scorer(grader, config: base.config), config: base.config)
            }
        }
        sink.examplesPerStep = hyperparameters.batchSize * hyperparameters.gradientAccumulationSteps
        sink.logEvery = hyperparameters.logEvery
        let keep = hyperparameters.keepCheckpoints ?? 5, jobStore = store, jobID = job.id, worker = worker
        let artifacts = data.artifacts
        sink.retain = { best in try Self.removeCheckpoints(of: jobID, worker: worker, in: artifacts, keeping: keep, best: best, store: jobStore) }
        if SampleDrawing.isImage(base.config.sampleShape) {
            sink.sampleGrid = Self.sampleGridWriter(conditions: Self.gridConditions(training, config: base.config), job: job.id, artifacts: artifacts)
        }
        do { return try Trainer(job: trainingJob, directory: directory, sink: sink) } catch {
            throw Failure(code: "out_of_memory", message: "the job's buffers cannot be allocated: \(error); lower batch_size or buffer_size")
        }
    }

    /// Deletes all but the newest `keep` checkpoints and the best one: their weights, training
    /// states, sample grids and records.
    static func removeCheckpoints(of jobID: String, worker: String, in artifacts: any ArtifactStore, keeping keep: Int, best: Int?,
                                  store: any JobStore) throws {
        for row in try store.checkpoints(jobID, limit: Int(Int32.max)).dropFirst(keep) where row.step != best {
            // The record first, fenced by the lease: a worker that lost the job deletes nothing.
            try store.removeCheckpoint(jobID, worker: worker, step: row.step)
            artifacts.remove(.checkpoint(job: jobID, step: row.step))
            artifacts.remove(.trainingState(job: jobID, step: row.step))
            artifacts.remove(.sampleGrid(job: jobID, step: row.step))
        }
    }

    /// What a grader samples when the job names no prompts: the first 8 distinct prompts of the
    /// validation set (else the training set); for vector models its first 8 rows' conditions.
    static func gradingLabels(_ data: Dataset, config: ModelConfig) -> [GradingLabel] {
        let count = GraderSettings.defaultLabels
        switch config.condition {
        case .text:
            var seen: Set<String> = [], labels: [GradingLabel] = []
            for prompt in data.prompts where labels.count < count && seen.insert(prompt).inserted { labels.append(.prompt(prompt)) }
            return labels
        case let .vector(dim):
            return (0..<min(count, data.count)).map { row in
                data.conditions.isNull[row] != 0 ? .none : .vector(Array(data.conditions.vectors[row * dim..<(row + 1) * dim]))
            }
        case .none:
            return Array(repeating: .none, count: count)
        }
    }

    /// The job's grader: its reward model, read and checked against the base model, or its HTTP endpoint.
    func scorer(_ grader: GraderSettings, config: ModelConfig) throws -> any RewardScorer {
        switch grader.type {
        case .rewardModel:
            let file = grader.file ?? ""
            guard data.artifacts.exists(.upload(file)) else {
                throw Failure(code: "grader_unavailable", message: "the grader's reward model \(file) is gone (deleted after the job was created)", param: "grader.file")
            }
            do { return try RewardMLP(path: data.artifacts.localPath(.upload(file)), config: config, name: "reward model \(file)") } catch {
                throw Failure(code: "invalid_grader", message: "grader.file \(file): \(error)", param: "grader.file")
            }
        case .http:
            let projects = SQLProjectStore(database: data.database), project = job.projectID
            return HTTPGrader(settings: grader, jobID: job.id, egress: egress, secret: { (try? projects.webhookSecret(project: project)) ?? nil })
        }
    }

    /// The fixed conditions of a job's sample grids: the first four distinct prompts of its training set.
    static func gridConditions(_ training: Dataset, config: ModelConfig) -> Conditions {
        var seen: Set<String> = [], rows: [Int] = []
        for (row, prompt) in training.prompts.enumerated() where rows.count < 4 && seen.insert(prompt).inserted { rows.append(row) }
        if rows.isEmpty { rows = Array(0..<min(4, training.count)) }
        return training.conditions.selecting(rows, config: config)
    }

    /// Writes `samples/step-N.png` from each checkpoint's weights: a row of 4 samples per grid prompt,
    /// from the same noise every time, so grids of successive checkpoints compare.
    static func sampleGridWriter(conditions: Conditions, job: String, artifacts: any ArtifactStore) -> (CheckpointRecord) -> Bool {
        { checkpoint in
            guard let model = try? ModelFile.load(checkpoint.modelPath),
                  let png = SampleDrawing.grid(model: model, conditions: conditions, columns: 4) else { return false }
            let grid = Artifact.sampleGrid(job: job, step: checkpoint.step)
            guard let staged = try? artifacts.stagingPath(for: grid) else { return false }
            if (try? Data(png).write(to: URL(fileURLWithPath: staged))) == nil || (try? artifacts.publish(staged: staged, as: grid)) == nil {
                unlink(staged)
                return false
            }
            return true
        }
    }

    func conclude(_ outcome: TrainingOutcome, trainer: Trainer, sink: JobSink) -> JobStatus? {
        switch outcome {
        case let .succeeded(modelPath):
            let id = job.resultModelID
            let registered: Bool
            do {
                registered = try store.succeed(job.id, worker: worker, model: id, config: trainer.job.config.json, parent: job.model,
                                               event: "Fine-tuning job succeeded: \(id)") {
                    try data.artifacts.publish(copyOf: modelPath, as: .model(id))
                }
            } catch {
                // Not retried by a later claim: a disk that cannot take the model now would fail it again.
                return finish(failed: Failure(code: "storage_unavailable", message: "training finished but the result model \(id) cannot be stored: \(error)"))
            }
            // False: cancelled at the last moment, or another worker holds the job now.
            if registered { sink.appendToFile("succeeded: model \(id)") }
            return registered ? .succeeded : nil
        case let .paused(step):
            if control.request == .preempt {
                let reason = control.whyPreempted ?? "another job takes this worker"
                sink.appendToFile("preempted at step \(step): \(reason)")
                _ = try? store.release(job.id, worker: worker, status: .queued, error: nil,
                                       event: "Preempted at step \(step): \(reason); training state saved, the job is queued again and resumes where it stopped",
                                       level: "info", webhook: .preempted)
                return .queued
            }
            if control.request == .shutdown {
                _ = try? store.release(job.id, worker: worker, status: .queued, error: nil,
                                       event: "Server stopping: training state saved at step \(step); the job is queued again", level: "info")
                return .queued
            }
            _ = try? store.release(job.id, worker: worker, status: nil, error: nil,
                                   event: "Paused at step \(step): training state saved; resume to continue", level: "info")
            return nil
        case let .cancelled(step):
            if control.request == .deadline {
                return finish(failed: Failure(code: "deadline_exceeded", message: "the job trained past its max_duration of \(job.maxDuration ?? 0) s; it stopped at step \(step), and its checkpoints are kept"))
            }
            if control.request == .leaseLost {
                sink.appendToFile("stopped at step \(step): another worker holds this job now")
            } else {
                // The cancel already ended the job and its lease: an event, not a write of the worker's.
                sink.appendToFile("Stopped at step \(step)")
                try? store.appendEvent(job.id, level: "info", type: "message", message: "Stopped at step \(step)", data: nil)
            }
            return nil
        }
    }

    func finish(failed failure: Failure) -> JobStatus? {
        JobSink.append(["failed: \(failure.message)"], to: job.id, in: data.artifacts)
        changes.logAppended(jobID: job.id)
        let released = (try? store.release(job.id, worker: worker, status: .failed, error: failure, event: failure.message, level: "error")) ?? false
        return released ? .failed : nil
    }


}
