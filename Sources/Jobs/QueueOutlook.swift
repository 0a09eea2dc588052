import Training

/// When each queued job can expect a worker: `estimated_start`.
///
/// The queue is played forward as the workers would take it: the running jobs hold one worker
/// each until their `estimated_finish`, and the queued jobs, in `queue_position` order, each take
/// the worker that frees first and keep it for their remaining steps at a measured rate. It is an
/// estimate, and says so: fair share may reorder jobs of equal priority, a project at its
/// concurrency limit waits longer, and workers that are idle now are not counted (a queued job is
/// claimed within a second while any worker is idle). Where a duration is unknown (no job of that
/// base model and method has measured a rate yet) the jobs behind it get no estimate.
public struct QueueOutlook: Sendable {
    /// A job that holds or wants a worker, as the planner needs it.
    public struct Entry: Sendable {
        public let id: String
        public let model: String
        public let method: String
        public let hyperparameters: String
        public let step: Int
        public let totalSteps: Int?
        /// The job's own measured rate, when it has run before (a preempted or resumed job).
        public let samplesPerSecond: Double?
        public let estimatedFinish: Int?

        public init(id: String, model: String, method: String, hyperparameters: String, step: Int, totalSteps: Int?,
                    samplesPerSecond: Double?, estimatedFinish: Int?) {
            self.id = id
            self.model = model
            self.method = method
            self.hyperparameters = hyperparameters
            self.step = step
            self.totalSteps = totalSteps
            self.samplesPerSecond = samplesPerSecond
            self.estimatedFinish = estimatedFinish
        }
    }

    /// A rate some job measured: samples per second for a base model and method type.
    public struct MeasuredRate: Sendable {
        public let model: String
        public let methodType: String
        public let samplesPerSecond: Double
        public init(model: String, methodType: String, samplesPerSecond: Double) {
            self.model = model
            self.methodType = methodType
            self.samplesPerSecond = samplesPerSecond
        }
    }

    public let running: [Entry]
    /// In queue order: priority, then age.
    public let queued: [Entry]
    /// Newest first: the first match is the rate used.
    public let rates: [MeasuredRate]

    public init(running: [Entry], queued: [Entry], rates: [MeasuredRate]) {
        self.running = running
        self.queued = queued
        self.rates = rates
    }

    /// Seconds the job still needs: its remaining steps at its own rate, else at the newest rate
    /// measured for its base model and method.
    func remainingSeconds(_ job: Entry) -> Double? {
        guard let settings = JobSettings(methodJSON: job.method, hyperparametersJSON: job.hyperparameters), let total = job.totalSteps else { return nil }
        let rate = job.samplesPerSecond ?? rates.first { $0.model == job.model && $0.methodType == settings.method.rawValue }?.samplesPerSecond
        return rate.flatMap { Self.seconds(steps: max(0, total - job.step), hyperparameters: settings.hyperparameters, samplesPerSecond: $0) }
    }

    /// How long `steps` optimizer steps take at a measured rate (samples per second): each step
    /// trains batch × accumulation samples. Nil without a positive rate. The dry run's estimate too.
    public static func seconds(steps: Int, hyperparameters: Hyperparameters, samplesPerSecond rate: Double) -> Double? {
        guard rate > 0 else { return nil }
        return Double(steps * hyperparameters.batchSize * hyperparameters.gradientAccumulationSteps) / rate
    }

    /// Unix seconds at which each queued job should start; a job without an estimate is absent.
    public func estimatedStarts(now: Int) -> [String: Int] {
        // When each worker frees: nil when not known.
        var frees: [Double?] = running.map { job in
            if let finish = job.estimatedFinish { return Double(max(now, finish)) }
            return remainingSeconds(job).map { Double(now) + $0 }
        }
        if frees.isEmpty { frees = [Double(now)] }
        var starts: [String: Int] = [:]
        for job in queued {
            // The earliest worker is only known when every worker's free time is.
            guard frees.allSatisfy({ $0 != nil }), let index = frees.indices.min(by: { frees[$0]! < frees[$1]! }) else { break }
            let start = frees[index]!
            starts[job.id] = Int(start.rounded(.up))
            frees[index] = remainingSeconds(job).map { start + $0 }
        }
        return starts
    }
}
