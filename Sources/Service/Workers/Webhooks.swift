import Foundation
import JSON
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Store
import Synchronization

/// Sends the webhooks the stores queue (`WebhookOutbox`): a job's end, shaped as OpenAI's
/// webhook events (`{"id","object":"event","type":"fine_tuning.job.succeeded","data":{…}}`),
/// and preftune's own (`fine_tuning.checkpoint.saved`, `fine_tuning.job.preempted`,
/// `fine_tuning.job.resumed`, `fine_tuning.validation.completed`).
///
/// Every API node runs a sender: it takes due deliveries from the database (one node per
/// delivery), posts each, and records the outcome; a failed attempt is tried again after the
/// next of `delays`, and every final outcome is a job event. No failure reaches the job or the
/// server. Destinations pass the `EgressPolicy` at every attempt (after DNS resolution;
/// plain-HTTP requests then go to the address that was checked), and redirects are not
/// followed: a 3xx is a failed attempt.
public final class Webhooks: Sendable {
    let store: any JobStore & WebhookOutbox
    /// Waits before each attempt: the first at once, then doubling.
    let delays: [Double]
    let session: URLSession
    let egress: EgressPolicy
    /// A project's signing secret, when it has one.
    let secret: @Sendable (_ project: String) -> String?
    /// Wakes the sender before its next poll.
    private let wakeUp = DispatchSemaphore(value: 0)
    private let running = Mutex(false)
    /// Deliveries being attempted now, at most `maxInFlight`: a burst to an endpoint that never
    /// answers waits in the database, not in tasks each holding a connection for the timeout.
    private let inFlight = Mutex(0)
    public static let maxInFlight = 16
    /// How long a taken delivery is this node's: longer than an attempt can take.
    static let holdSeconds = 60

    public init(store: any JobStore & WebhookOutbox, egress: EgressPolicy = EgressPolicy(), delays: [Double] = [0, 1, 2, 4, 8, 16, 32],
                timeout: Double = 10, secret: @escaping @Sendable (_ project: String) -> String? = { _ in nil }) {
        self.store = store
        self.secret = secret
        self.delays = delays.isEmpty ? [0] : delays
        self.egress = egress
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = timeout
        // The bound on deliveries in flight is ours (maxInFlight), not the session's six per host:
        // the session allows more, so that it never hides ours.
        configuration.httpMaximumConnectionsPerHost = Self.maxInFlight * 2
        session = URLSession(configuration: configuration, delegate: RefuseRedirects(), delegateQueue: nil)
    }

    /// Checks a URL the server will call for a job (`webhook_url`, a grader's `url`, named by
    /// `field`) when the job is created: http(s), with a host that passes the egress rules.
    public func validate(_ text: String, field: String = "webhook_url") throws(EgressError) -> URL {
        guard let url = URL(string: text), ["http", "https"].contains(url.scheme?.lowercased() ?? ""), let host = url.host, !host.isEmpty else {
            throw EgressError("\(field) must be an http(s) URL")
        }
        // A name that does not resolve now may later (each delivery checks again); one that resolves
        // to a refused address is refused now.
        do { _ = try egress.check(host: host) } catch let error as EgressError { if !error.isUnresolved { throw error } } catch { throw EgressError("\(error)") }
        return url
    }

    /// Queues the job's terminal-status webhook, if it has one (every node that hears the end
    /// asks; the first queues it), and sends it now.
    public func jobFinished(_ jobID: String) {
        if (try? store.enqueueFinished(jobID)) == true { wake() }
    }

    public func wake() { wakeUp.signal() }

    /// Starts the sender: it polls every `pollSeconds` (deliveries queued by workers in other
    /// processes, retries coming due) and whenever woken; and prunes settled history hourly.
    public func start(pollSeconds: Double = 1) {
        guard running.withLock({ let was = $0; $0 = true; return !was }) else { return }
        let thread = Thread { [self] in
            var lastPrune = Date.distantPast
            while running.withLock({ $0 }) {
                let room = Self.maxInFlight - inFlight.withLock { $0 }
                if room > 0, let due = try? store.takeDueWebhooks(limit: room, holdSeconds: Self.holdSeconds) {
                    inFlight.withLock { $0 += due.count }
                    for delivery in due {
                        Task.detached { [self] in
                            await attempt(delivery)
                            inFlight.withLock { $0 -= 1 }
                            wake()
                        }
                    }
                }
                if Date().timeIntervalSince(lastPrune) > 3600 {
                    lastPrune = Date()
                    _ = try? store.pruneHistory(deliveriesDays: 7, leasesDays: 30)
                }
                _ = wakeUp.wait(timeout: .now() + pollSeconds)
            }
        }
        thread.name = "webhooks"
        thread.start()
    }

    public func stop() {
        running.withLock { $0 = false }
        wakeUp.signal()
    }

    /// One attempt at a delivery, and its outcome recorded: delivered, due again after the
    /// next delay, or given up with a warning in the job's events.
    func attempt(_ delivery: WebhookDelivery) async {
        guard let url = URL(string: delivery.url) else {
            try? store.webhookFailed(delivery.id, retryAtMilliseconds: nil)
            return
        }
        let host = url.host ?? delivery.url
        var request = URLRequest(url: url)
        request.httpMethod = "POST"
        let body = Array(delivery.body.utf8)
        request.httpBody = Data(body)
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.setValue("preftune-webhooks", forHTTPHeaderField: "User-Agent")
        // The same id on every attempt lets a receiver drop repeats; the timestamp is this attempt's.
        let timestamp = "\(Int(Date().timeIntervalSince1970))"
        request.setValue(delivery.id, forHTTPHeaderField: "webhook-id")
        request.setValue(timestamp, forHTTPHeaderField: "webhook-timestamp")
        if let secret = secret(delivery.projectID), let signature = Self.signature(id: delivery.id, timestamp: timestamp, body: body, secret: secret) {
            request.setValue(signature, forHTTPHeaderField: "webhook-signature")
        }
        let attempt = delivery.attempts + 1
        let problem: String
        do {
            let (_, response) = try await session.data(for: try pinned(request))
            let status = (response as? HTTPURLResponse)?.statusCode ?? 0
            if (200..<300).contains(status) {
                try? store.webhookDelivered(delivery.id)
                try? store.appendEvent(delivery.jobID, level: "info", type: "message",
                                       message: "Webhook \(delivery.type) delivered to \(host) (HTTP \(status), attempt \(attempt))", data: nil)
                return
            }
            problem = "HTTP \(status)"
        } catch {
            problem = error.localizedDescription
        }
        if attempt < delays.count {
            let delay = delays[attempt]
            try? store.webhookFailed(delivery.id, retryAtMilliseconds: Int64((Date().timeIntervalSince1970 + delay) * 1000))
            // Sooner than the next poll: wake the sender when it is due.
            if delay < 1 { DispatchQueue.global().asyncAfter(deadline: .now() + delay) { [self] in wake() } }
            return
        }
        try? store.webhookFailed(delivery.id, retryAtMilliseconds: nil)
        let message = "Webhook \(delivery.type) to \(host) failed after \(attempt) attempts: \(problem)"
        try? store.appendEvent(delivery.jobID, level: "warn", type: "message", message: message, data: nil)
        ServerLog.write("\(delivery.jobID): \(message)")
    }

    /// Standard Webhooks' signature: `v1,` and base64 of HMAC-SHA256 over `id.timestamp.body`,
    /// keyed by the secret's bytes (the base64 after `whsec_`).
    static func signature(id: String, timestamp: String, body: [UInt8], secret: String) -> String? {
        guard secret.hasPrefix("whsec_"), let key = Data(base64Encoded: String(secret.dropFirst("whsec_".count))) else { return nil }
        let signed = Array("\(id).\(timestamp).".utf8) + body
        return "v1," + Data(SHA256.hmac(key: Array(key), message: signed)).base64EncodedString()
    }
}

extension Webhooks {
    func pinned(_ request: URLRequest) throws -> URLRequest { try egress.pinned(request) }
}

extension EgressPolicy {
    /// The request to send for this attempt: its host checked again (DNS may have changed since
    /// the job was created), and for plain HTTP sent to the very address that was checked, with
    /// the name in the Host header, so that a second resolution cannot point it elsewhere.
    /// (HTTPS keeps the name for its certificate: a rebinding between check and connect remains possible.)
    func pinned(_ request: URLRequest) throws -> URLRequest {
        guard let url = request.url, let host = url.host else { throw EgressError("the URL has no host") }
        let addresses = try check(host: host)
        guard url.scheme?.lowercased() == "http", IPNetwork.parseAddress(host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))) == nil,
              var components = URLComponents(url: url, resolvingAgainstBaseURL: false) else { return request }
        let address = IPNetwork.format(addresses[0])
        components.host = addresses[0].count == 16 ? "[\(address)]" : address
        guard let direct = components.url else { return request }
        var pinned = request
        pinned.url = direct
        pinned.setValue(url.port.map { "\(host):\($0)" } ?? host, forHTTPHeaderField: "Host")
        return pinned
    }
}

/// Webhooks and graders never follow a redirect: a 307 could send the request to an address the egress rules refuse.
final class RefuseRedirects: NSObject, URLSessionTaskDelegate, @unchecked Sendable {
    func urlSession(_ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
                    newRequest request: URLRequest, completionHandler: @escaping (URLRequest?) -> Void) {
        completionHandler(nil)
    }
}

/// URLRequest is a value type without mutable shared state; Foundation on Linux does not mark it Sendable.
struct UncheckedRequest: @unchecked Sendable { let request: URLRequest }
