import Diffusion
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import JSON
import Jobs
import Store
import Training

/// A grader endpoint a job names (`grader: {"type": "http", "url": …}`): each checkpoint's
/// samples are POSTed, and one score per sample comes back.
///
/// Request: `{"object": "grading_request", "job_id", "step", "shape", "samples": [{"index",
/// "sample", "prompt" | "condition"}]}` (step 0 is the base model). Response: 200 with
/// `{"scores": [number, …]}` in the same order. Requests are signed as webhooks are
/// (Standard Webhooks headers, the project's secret), go only where the egress rules allow
/// (checked after DNS at every attempt; redirects are refused), and time out after
/// `timeout_seconds`; a network error, 408, 429 or 5xx is tried again, up to `max_attempts`,
/// after 1, 2, 4 … s. Any other answer fails the grading of that checkpoint, not the job.
final class HTTPGrader: RewardScorer {
    let url: URL?
    let jobID: String
    let timeout: Double
    let attempts: Int
    let egress: EgressPolicy
    let secret: () -> String?
    let session: URLSession
    /// Answers larger than this are refused: 256 scores need a few kilobytes.
    static let maximumResponseBytes = 1 << 20

    var name: String { "grader \(url?.host ?? "?")" }

    init(settings: GraderSettings, jobID: String, egress: EgressPolicy, secret: @escaping () -> String?) {
        url = settings.url.flatMap(URL.init(string:))
        self.jobID = jobID
        timeout = settings.timeoutSeconds ?? 30
        attempts = settings.maxAttempts ?? 3
        self.egress = egress
        self.secret = secret
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = timeout
        configuration.timeoutIntervalForResource = timeout
        session = URLSession(configuration: configuration, delegate: RefuseRedirects(), delegateQueue: nil)
    }

    deinit { session.invalidateAndCancel() }

    struct Failure: Error, CustomStringConvertible {
        let description: String
        /// Worth another attempt: the network, a timeout, 408, 429 or a 5xx.
        let transient: Bool
    }

    struct GradingRequest: Encodable {
        let object = "grading_request"
        let jobID: String
        let step: Int
        let shape: [Int]
        let samples: [Item]

        struct Item: Encodable {
            let index: Int
            let sample: [Float]
            let label: GradingLabel

            func encode(to encoder: any Encoder) throws {
                var container = encoder.container(keyedBy: AnyKey.self)
                try container.encode(index, forKey: AnyKey("index"))
                try container.encode(sample, forKey: AnyKey("sample"))
                switch label {
                case let .prompt(text): try container.encode(text, forKey: AnyKey("prompt"))
                case let .vector(values): try container.encode(values, forKey: AnyKey("condition"))
                case .none: break
                }
            }
        }

        enum CodingKeys: String, CodingKey { case object, jobID = "job_id", step, shape, samples }
    }

    func body(samples: [[Float]], shape: [Int], labels: [GradingLabel], step: Int) -> [UInt8] {
        let items = samples.enumerated().map { GradingRequest.Item(index: $0.offset, sample: $0.element, label: labels[$0.offset]) }
        return Array(JSONBodyEncoder.string(GradingRequest(jobID: jobID, step: step, shape: shape, samples: items)).utf8)
    }

    func scores(samples: [[Float]], shape: [Int], conditions: Conditions, labels: [GradingLabel], step: Int,
                shouldStop: () -> Bool) throws -> [Double] {
        guard let url else { throw Failure(description: "the grader URL is not a URL", transient: false) }
        let payload = body(samples: samples, shape: shape, labels: labels, step: step)
        // The same id on every attempt, as a webhook's: the grader may drop repeats.
        let id = "grade_\(jobID.dropFirst("ftjob-".count))_\(step)_\(APIKeys.randomHex(bytes: 4))"
        var delay = 1.0
        for attempt in 1...max(1, attempts) {
            do {
                return try post(url: url, id: id, payload: payload, expecting: samples.count, shouldStop: shouldStop)
            } catch let failure as Failure where failure.transient && attempt < attempts {
                try wait(delay, shouldStop: shouldStop)
                delay *= 2
            }
        }
        throw Failure(description: "unreachable", transient: false)
    }

    static let stopped = Failure(description: "stopped: the job is pausing or ending", transient: false)

    /// Sleeps `seconds`, in slices, giving up when `shouldStop` says so.
    func wait(_ seconds: Double, shouldStop: () -> Bool) throws {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if shouldStop() { throw Self.stopped }
            Thread.sleep(forTimeInterval: min(0.05, end.timeIntervalSinceNow))
        }
    }

    func post(url: URL, id: String, payload: [UInt8], expecting count: Int, shouldStop: () -> Bool) throws -> [Double] {
        var request = URLRequest(url: url)
        request.httpMethod = "POST"
        request.httpBody = Data(payload)
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.setValue("preftune-grader", forHTTPHeaderField: "User-Agent")
        let timestamp = "\(Int(Date().timeIntervalSince1970))"
        request.setValue(id, forHTTPHeaderField: "webhook-id")
        request.setValue(timestamp, forHTTPHeaderField: "webhook-timestamp")
        if let secret = secret(), let signature = Webhooks.signature(id: id, timestamp: timestamp, body: payload, secret: secret) {
            request.setValue(signature, forHTTPHeaderField: "webhook-signature")
        }
        let pinned: URLRequest
        do { pinned = try egress.pinned(request) } catch { throw Failure(description: "\(error)", transient: false) }
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var outcome: (Data?, URLResponse?, Error?) = (nil, nil, nil)
        let task = session.dataTask(with: pinned) { data, response, error in
            outcome = (data, response, error)
            done.signal()
        }
        task.resume()
        // The session's own timeout ends the task; this deadline is only a backstop. The wait is
        // in slices so that a pause or cancel of the job does not wait for a slow grader.
        let deadline = Date().addingTimeInterval(timeout + 5)
        while done.wait(timeout: .now() + 0.05) == .timedOut {
            if shouldStop() {
                task.cancel()
                _ = done.wait(timeout: .now() + 5)
                throw Self.stopped
            }
            if Date() > deadline {
                task.cancel()
                _ = done.wait(timeout: .now() + 5)
                throw Failure(description: "no answer within \(Int(timeout)) s", transient: true)
            }
        }
        if let error = outcome.2 { throw Failure(description: error.localizedDescription, transient: true) }
        let status = (outcome.1 as? HTTPURLResponse)?.statusCode ?? 0
        guard (200..<300).contains(status) else {
            throw Failure(description: "HTTP \(status)", transient: status == 408 || status == 429 || status >= 500)
        }
        guard let data = outcome.0, data.count <= Self.maximumResponseBytes, let object = JSONValue.parse(String(decoding: data, as: UTF8.self)),
              let list = object["scores"]?.array, list.count == count else {
            throw Failure(description: "the answer must be {\"scores\": [\(count) numbers]}", transient: false)
        }
        let scores = list.compactMap(\.number)
        guard scores.count == count, scores.allSatisfy(\.isFinite) else {
            throw Failure(description: "every score must be a finite number", transient: false)
        }
        return scores
    }
}
