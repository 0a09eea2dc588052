import Foundation
import CLinux
import Numerics
import Store
import Training

/// The workers inside `preftune serve`. Each claims the oldest queued job with a
/// lease in the store, renews it by heartbeats while training, and gives it back
/// when the job ends, pauses or the server stops. A job whose worker died (its
/// lease expired, or its process is gone) is claimed again and resumes from its
/// last training state.
public final class WorkerPool: @unchecked Sendable {
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
        /// What one job may hold in memory; checked again before a job's buffers are allocated.
        public var memoryBudget = ServiceSettings.defaults().memoryBudget

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
    let telemetry: Telemetry?
    public let configuration: Configuration
    /// `host/pid/boot`: who holds a lease, so that a restarted server recognises its dead predecessor's jobs.
    let identity: String

    private let condition = NSCondition()
    private var stopping = false
    private var workAvailable = false
    private var liveWorkers = 0
    private var controls: [String: JobControl] = [:]

    public init(data: DataDirectory, store: any JobStore, changes: JobStatusChanges, configuration: Configuration,
                telemetry: Telemetry? = nil) {
        self.data = data
        self.store = store
        self.changes = changes
        self.telemetry = telemetry
        self.configuration = configuration
        identity = "\(ProcessInfo.processInfo.hostName)/\(getpid())/\(APIKeys.randomHex(bytes: 3))"
        changes.observe { [weak self] jobID, status in self?.statusChanged(jobID, status) }
    }

    /// Jobs being trained now.
    public var busyWorkers: Int { condition.withLock { controls.count } }

    /// Recovers the jobs of a dead predecessor on this host, then starts the workers.
    public func start() {
        recoverOrphanedLeases()
        if configuration.workers > 0 {
            BLASRuntime.setThreadCount(configuration.threadsPerJob)
            CPUPriority.lower(configuration.blasThreads)
        }
        condition.withLock { liveWorkers = configuration.workers }
        telemetry?.setWorkers(configuration.workers)
        for index in 0..<configuration.workers {
            Thread { [self] in
                _ = preftune_name_current_thread("worker-\(index)")
                work(name: "\(identity)/worker-\(index)")
            }.start()
        }
    }

    /// Graceful stop: running jobs write a training state and go back to the queue;
    /// returns when every worker has finished.
    public func stop() {
        condition.lock()
        stopping = true
        for control in controls.values { control.request(.shutdown) }
        condition.broadcast()
        while liveWorkers > 0 { condition.wait() }
        condition.unlock()
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
        condition.withLock {
            if status == .queued {
                workAvailable = true
                condition.signal()
            }
            controls[jobID]?.statusChanged(to: status)
        }
    }

    // MARK: - A worker

    private func work(name: String) {
        defer {
            condition.withLock {
                liveWorkers -= 1
                condition.broadcast()
            }
        }
        CPUPriority.lowerCurrentThread()
        while !condition.withLock({ stopping }) {
            let claimed: JobRecord?
            do {
                // A job whose workers keep dying fails here instead of taking this one down too.
                for failed in try store.failCrashLoopingJobs(maxClaims: SQLiteJobStore.maxClaimsWithoutProgress) {
                    changes.post(jobID: failed, status: .failed)
                }
                claimed = try store.claimNext(worker: name, leaseSeconds: configuration.leaseSeconds)
            } catch {
                ServerLog.error("\(name): cannot claim jobs", error)
                claimed = nil
            }
            guard let job = claimed else {
                condition.withLock {
                    if !workAvailable && !stopping { _ = condition.wait(until: Date(timeIntervalSinceNow: configuration.pollSeconds)) }
                    workAvailable = false
                }
                continue
            }
            let control = JobControl(jobID: job.id, worker: name, store: store)
            let proceed: Bool = condition.withLock {
                controls[job.id] = control
                return !stopping
            }
            if !proceed { control.request(.shutdown) }
            let heartbeat = Heartbeat(control: control, leaseSeconds: configuration.leaseSeconds, every: configuration.heartbeatSeconds)
            telemetry?.jobStarted(job.id)
            let runner = JobRunner(job: job, worker: name, data: data, memoryBudget: configuration.memoryBudget, store: store, control: control,
                                   changes: changes, telemetry: telemetry)
            let status = runner.run()
            // The job's buffers are freed; glibc keeps freed heap pages unless asked, so a server
            // that trained a large job would go on holding its memory while idle.
            _ = preftune_release_free_memory()
            heartbeat.stop()
            telemetry?.jobStopped(job.id)
            condition.withLock { controls[job.id] = nil }
            if let status { changes.post(jobID: job.id, status: status) }
        }
    }
}

/// What a running job has been asked to do, read by the trainer between steps.
final class JobControl: @unchecked Sendable {
    enum Request { case pause, cancel, shutdown, leaseLost }

    let jobID: String
    let worker: String
    let store: any JobStore
    private let lock = NSLock()
    private var pending: Request?

    init(jobID: String, worker: String, store: any JobStore) {
        self.jobID = jobID
        self.worker = worker
        self.store = store
    }

    var request: Request? { lock.withLock { pending } }

    /// The first request wins, except that losing the lease overrides everything: then nothing may be written.
    func request(_ request: Request) {
        lock.withLock { if pending == nil || request == .leaseLost { pending = request } }
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
final class Heartbeat: @unchecked Sendable {
    let timer: DispatchSourceTimer

    init(control: JobControl, leaseSeconds: Int, every interval: Double) {
        timer = DispatchSource.makeTimerSource(queue: DispatchQueue.global(qos: .utility))
        timer.schedule(deadline: .now() + interval, repeating: interval)
        timer.setEventHandler { control.renew(leaseSeconds: leaseSeconds) }
        timer.resume()
    }

    func stop() { timer.cancel() }
}
