import Foundation
import Synchronization
import Threads
import Numerics
import Store
import Training

/// The workers inside `preftune serve`. Each claims the oldest queued job with a
/// lease in the store, renews it by heartbeats while training, and gives it back
/// when the job ends, pauses or the server stops. A job whose worker died (its
/// lease expired, or its process is gone) is claimed again and resumes from its
/// last training state.
public final class WorkerPool: Sendable {
    public struct Configuration: Sendable {
        /// Jobs trained at once.
        public var workers: Int
        /// BLAS threads of each job (OpenBLAS's pool is shared by the process).
        public var threadsPerJob: Int
        /// A job whose worker has not renewed its lease for this long is taken over.
        public var leaseSeconds = 30
        /// How often a running job renews its lease and looks for status changes made elsewhere.
        public var heartbeatSeconds = 2.0
        /// How often idle workers look for work another process queued.
        public var pollSeconds = 1.0
        /// OpenBLAS's threads, lowered to the workers' priority (`CPUPriority.threadsAtStartup`).
        public var blasThreads: [Int32] = []
        /// A running job may be preempted (fair share, priority) once it has run this long; nil: never.
        public var minimumRunSeconds: Int? = 60
        /// What one job may hold in memory; checked again before a job's buffers are allocated.
        public var memoryBudget = ServiceSettings.defaults().memoryBudget
        /// Where jobs' HTTP graders may be reached (as webhooks: `--webhook-allow`).
        public var egress = EgressPolicy()

        /// One job at a time using every core: on a small machine two jobs at once
        /// would each run at half speed and hold twice the memory.
        public static func defaults(cores: Int = ProcessInfo.processInfo.activeProcessorCount) -> Configuration {
            Configuration(workers: 1, threadsPerJob: max(1, cores))
        }

        public init(workers: Int, threadsPerJob: Int) {
            self.workers = workers
            self.threadsPerJob = threadsPerJob
        }
    }

    let data: DataDirectory
    let store: any JobStore
    let changes: JobStatusChanges
    let telemetry: (any TrainingObserver)?
    public let configuration: Configuration
    /// `host/pid/boot`: who holds a lease, so that a restarted server recognises its dead predecessor's jobs.
    let identity: String

    struct State {
        var stopping = false
        var controls: [String: JobControl] = [:]
        var threads: [DedicatedThreads] = []
    }
    private let state = Mutex(State())
    /// Wakes an idle worker when a job is queued (else it looks again after `pollSeconds`).
    private let workQueued = DispatchSemaphore(value: 0)

    public init(data: DataDirectory, store: any JobStore, changes: JobStatusChanges, configuration: Configuration,
                telemetry: (any TrainingObserver)? = nil) {
        self.data = data
        self.store = store
        self.changes = changes
        self.telemetry = telemetry
        self.configuration = configuration
        identity = "\(ProcessInfo.processInfo.hostName)/\(getpid())/\(APIKeys.randomHex(bytes: 3))"
        changes.observe { [weak self] jobID, status in self?.statusChanged(jobID, status) }
    }

    /// Jobs being trained now.
    public var busyWorkers: Int { state.withLock { $0.controls.count } }

    /// Recovers the jobs of a dead predecessor on this host, then starts the workers.
    public func start() {
        recoverOrphanedLeases()
        if configuration.workers > 0 {
            BLASRuntime.setThreadCount(configuration.threadsPerJob)
            CPUPriority.lower(configuration.blasThreads)
        }
        telemetry?.workersStarted(configuration.workers)
        guard configuration.workers > 0 else { return }
        // A thread each, named after its worker, below the request path from its first instruction.
        let threads = (0..<configuration.workers).map { DedicatedThreads(threads: 1, name: "worker-\($0)", nice: CPUPriority.trainingNice) }
        state.withLock { $0.threads = threads }
        for (index, thread) in threads.enumerated() {
            thread.run { [self] in work(name: "\(identity)/worker-\(index)") }
            thread.stop()
        }
    }

    /// Graceful stop: running jobs write a training state and go back to the queue;
    /// returns when every worker has finished.
    public func stop() {
        let threads = state.withLock { state -> [DedicatedThreads] in
            state.stopping = true
            for control in state.controls.values { control.request(.shutdown) }
            return state.threads
        }
        for _ in 0..<configuration.workers { workQueued.signal() }
        for thread in threads { thread.join() }
    }

    /// Leases held by a process of this host that no longer runs (killed, crashed,
    /// or an earlier life of this pid in a restarted container) end now, not when they expire.
    func recoverOrphanedLeases() {
        let host = ProcessInfo.processInfo.hostName
        guard let leases = try? store.leases() else { return }
        for (job, owner) in leases {
            let parts = owner.split(separator: "/")
            guard parts.count >= 3, parts[0] == host, let pid = Int32(parts[1]) else { continue }
            // Our own pid at start-up is an earlier life of it (a restarted container): its workers are gone too.
            let alive = pid != getpid() && (kill(pid, 0) == 0 || errno == EPERM)
            if !alive { try? store.expireLease(job, owner: owner) }
        }
    }

    func statusChanged(_ jobID: String, _ status: JobStatus) {
        if status == .queued { workQueued.signal() }
        state.withLock { $0.controls[jobID] }?.statusChanged(to: status)
    }

    // MARK: - A worker

    private func work(name: String) {
        var failing = false
        while !state.withLock({ $0.stopping }) {
            let claimed: JobRecord?
            do {
                // A job whose workers keep dying fails here instead of taking this one down too.
                for failed in try store.failCrashLoopingJobs(maxClaims: SQLJobStore.maxClaimsWithoutProgress) {
                    changes.post(jobID: failed, status: .failed)
                }
                claimed = try store.claimNext(worker: name, leaseSeconds: configuration.leaseSeconds)
                if failing { ServerLog.write("\(name): the store answers again; claiming jobs") }
                failing = false
            } catch {
                // An unreachable database pauses the worker: it says so once, and tries again each poll.
                if !failing { ServerLog.error("\(name): cannot claim jobs (trying again every \(configuration.pollSeconds) s)", error) }
                failing = true
                claimed = nil
            }
            guard let job = claimed else {
                _ = workQueued.wait(timeout: .now() + configuration.pollSeconds)
                continue
            }
            let control = JobControl(jobID: job.id, worker: name, store: store, maxDuration: job.maxDuration)
            let proceed: Bool = state.withLock {
                $0.controls[job.id] = control
                return !$0.stopping
            }
            if !proceed { control.request(.shutdown) }
            let heartbeat = Heartbeat(control: control, leaseSeconds: configuration.leaseSeconds, every: configuration.heartbeatSeconds,
                                      preemptAfter: configuration.minimumRunSeconds, waitingSeconds: Int(configuration.pollSeconds * 2) + 1)
            telemetry?.jobStarted(job.id)
            var runner = JobRunner(job: job, worker: name, data: data, memoryBudget: configuration.memoryBudget, store: store, control: control,
                                   changes: changes, telemetry: telemetry)
            runner.egress = configuration.egress
            let status = runner.run()
            heartbeat.stop()
            telemetry?.jobStopped(job.id)
            state.withLock { $0.controls[job.id] = nil }
            if let status { changes.post(jobID: job.id, status: status) }
        }
    }
}

/// What a running job has been asked to do, read by the trainer between steps.
final class JobControl: Sendable {
    enum Request { case pause, cancel, shutdown, leaseLost, preempt, deadline }

    let jobID: String
    let worker: String
    let store: any JobStore
    /// The job's `max_duration`, in seconds of training.
    let maxDuration: Int?
    private let pending = Mutex<Request?>(nil)
    /// Why the job was preempted, when it was.
    private let preemptionReason = Mutex<String?>(nil)

    init(jobID: String, worker: String, store: any JobStore, maxDuration: Int? = nil) {
        self.jobID = jobID
        self.worker = worker
        self.store = store
        self.maxDuration = maxDuration
    }

    var request: Request? { pending.withLock { $0 } }
    var whyPreempted: String? { preemptionReason.withLock { $0 } }

    /// Gives the worker up to a waiting job: the trainer saves its state as for a pause, and the job is queued again.
    func preempt(because reason: String) {
        preemptionReason.withLock { $0 = reason }
        request(.preempt)
    }

    /// The first request wins, except that losing the lease overrides everything: then nothing may be written.
    func request(_ request: Request) {
        pending.withLock { if $0 == nil || request == .leaseLost { $0 = request } }
    }

    func statusChanged(to status: JobStatus) {
        if status.isTerminal { request(.cancel) } else if status == .paused { request(.pause) }
    }

    /// Renews the lease; when that fails, the job's status says why.
    func renew(leaseSeconds: Int) {
        guard let renewed = try? store.heartbeat(jobID, worker: worker, leaseSeconds: leaseSeconds), !renewed else { return }
        guard let job = try? store.job(jobID, project: nil) else { return request(.leaseLost) }
        // Paused or ended here, or another worker's now.
        if job.status == .paused || job.status.isTerminal { statusChanged(to: job.status) } else { request(.leaseLost) }
    }
}

/// Renews a running job's lease on a timer, apart from the training thread, so a long
/// step or checkpoint cannot let it lapse.
final class Heartbeat: Sendable {
    private let stopped = DispatchSemaphore(value: 0)

    /// With `preemptAfter`, each beat also asks whether this job should give its worker to a waiting one.
    init(control: JobControl, leaseSeconds: Int, every interval: Double, preemptAfter: Int? = nil, waitingSeconds: Int = 3) {
        let thread = DedicatedThreads(threads: 1, name: "heartbeat")
        thread.run { [stopped] in
            while stopped.wait(timeout: .now() + interval) == .timedOut {
                control.renew(leaseSeconds: leaseSeconds)
                if let limit = control.maxDuration, control.request == nil, let ran = try? control.store.runSeconds(control.jobID), ran >= limit {
                    control.request(.deadline)
                }
                if let preemptAfter, control.request == nil,
                   let preemption = try? control.store.preemption(minimumRunSeconds: preemptAfter, waitingSeconds: waitingSeconds),
                   preemption.victim == control.jobID {
                    control.preempt(because: preemption.reason)
                }
            }
        }
        thread.stop()
    }

    func stop() { stopped.signal() }
}
