import Foundation
import JSON
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Store

/// POSTs a job's terminal status to its `webhook_url`, shaped as OpenAI's webhook
/// events (`{"id","object":"event","type":"fine_tuning.job.succeeded","data":{…}}`).
/// Delivery is retried with exponential back-off; every outcome is a job event, and
/// no failure reaches the job or the server. Destinations pass the `EgressPolicy` at
/// every attempt (after DNS resolution; plain-HTTP requests then go to the address that
/// was checked), and redirects are not followed: a 3xx is a failed attempt.
public final class Webhooks: Sendable {
    let store: any JobStore
    /// Waits before each attempt: the first at once, then doubling.
    let delays: [Double]
    let session: URLSession
    let egress: EgressPolicy
    /// A project's signing secret, when it has one.
    let secret: @Sendable (_ project: String) -> String?

    public init(store: any JobStore, egress: EgressPolicy = EgressPolicy(), delays: [Double] = [0, 1, 2, 4, 8, 16, 32], timeout: Double = 10,
                secret: @escaping @Sendable (_ project: String) -> String? = { _ in nil }) {
        self.store = store
        self.secret = secret
        self.delays = delays
        self.egress = egress
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = timeout
        session = URLSession(configuration: configuration, delegate: RefuseRedirects(), delegateQueue: nil)
    }

    /// Checks a `webhook_url` when a job is created: an http(s) URL whose host passes the egress rules.
    public func validate(_ text: String) throws(EgressError) -> URL {
        guard let url = URL(string: text), ["http", "https"].contains(url.scheme?.lowercased() ?? ""), let host = url.host, !host.isEmpty else {
            throw EgressError("webhook_url must be an http(s) URL")
        }
        // A name that does not resolve now may later (each delivery checks again); one that resolves
        // to a refused address is refused now.
        do { _ = try egress.check(host: host) } catch let error as EgressError { if !error.isUnresolved { throw error } } catch { throw EgressError("\(error)") }
        return url
    }

    /// Starts delivering the job's terminal status, if it has a webhook; returns at once.
    public func jobFinished(_ jobID: String) {
        guard let job = try? store.job(jobID, project: nil), let target = job.webhookURL, let url = URL(string: target),
              job.status.isTerminal else { return }
        // Every API node hears the status: the first to take the delivery sends it.
        guard (try? store.claimWebhook(jobID)) == true else { return }
        let eventID = "evt_" + APIKeys.randomHex(bytes: 12)
        let payload = WebhookEvent(id: eventID, createdAt: Int(Date().timeIntervalSince1970), type: "fine_tuning.job.\(job.status.rawValue)",
                                   data: FineTuningJob(job))
        var request = URLRequest(url: url)
        request.httpMethod = "POST"
        let body = JSONBodyEncoder.encode(payload)
        request.httpBody = Data(body)
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.setValue("preftune-webhooks", forHTTPHeaderField: "User-Agent")
        // The same id on every attempt lets a receiver drop repeats.
        let timestamp = "\(Int(Date().timeIntervalSince1970))"
        request.setValue(eventID, forHTTPHeaderField: "webhook-id")
        request.setValue(timestamp, forHTTPHeaderField: "webhook-timestamp")
        if let secret = secret(job.projectID), let signature = Self.signature(id: eventID, timestamp: timestamp, body: body, secret: secret) {
            request.setValue(signature, forHTTPHeaderField: "webhook-signature")
        }
        let sendable = UncheckedRequest(request: request)
        Task.detached { [self] in await deliver(sendable.request, jobID: jobID, host: url.host ?? target) }
    }

    /// Standard Webhooks' signature: `v1,` and base64 of HMAC-SHA256 over `id.timestamp.body`,
    /// keyed by the secret's bytes (the base64 after `whsec_`).
    static func signature(id: String, timestamp: String, body: [UInt8], secret: String) -> String? {
        guard secret.hasPrefix("whsec_"), let key = Data(base64Encoded: String(secret.dropFirst("whsec_".count))) else { return nil }
        let signed = Array("\(id).\(timestamp).".utf8) + body
        return "v1," + Data(SHA256.hmac(key: Array(key), message: signed)).base64EncodedString()
    }

    func deliver(_ request: URLRequest, jobID: String, host: String) async {
        var lastProblem = ""
        for (attempt, delay) in delays.enumerated() {
            if delay > 0 { try? await Task.sleep(nanoseconds: UInt64(delay * 1e9)) }
            do {
                let (_, response) = try await session.data(for: try pinned(request))
                let status = (response as? HTTPURLResponse)?.statusCode ?? 0
                if (200..<300).contains(status) {
                    try? store.appendEvent(jobID, level: "info", type: "message",
                                           message: "Webhook delivered to \(host) (HTTP \(status), attempt \(attempt + 1))", data: nil)
                    return
                }
                lastProblem = "HTTP \(status)"
            } catch {
                lastProblem = error.localizedDescription
            }
        }
        let message = "Webhook to \(host) failed after \(delays.count) attempts: \(lastProblem)"
        try? store.appendEvent(jobID, level: "warn", type: "message", message: message, data: nil)
        ServerLog.write("\(jobID): \(message)")
    }
}

extension Webhooks {
    /// The request to send for this attempt: its host checked again (DNS may have changed since
    /// the job was created), and for plain HTTP sent to the very address that was checked, with
    /// the name in the Host header, so that a second resolution cannot point it elsewhere.
    /// (HTTPS keeps the name for its certificate: a rebinding between check and connect remains possible.)
    func pinned(_ request: URLRequest) throws -> URLRequest {
        guard let url = request.url, let host = url.host else { throw EgressError("the webhook URL has no host") }
        let addresses = try egress.check(host: host)
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

/// Webhooks never follow a redirect: a 307 could send the job to an address the egress rules refuse.
final class RefuseRedirects: NSObject, URLSessionTaskDelegate, @unchecked Sendable {
    func urlSession(_ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
                    newRequest request: URLRequest, completionHandler: @escaping (URLRequest?) -> Void) {
        completionHandler(nil)
    }
}

/// URLRequest is a value type without mutable shared state; Foundation on Linux does not mark it Sendable.
struct UncheckedRequest: @unchecked Sendable { let request: URLRequest }

/// A webhook delivery's body: an `event` with the job as it is now.
struct WebhookEvent: Encodable {
    let id: String
    let object = "event"
    let createdAt: Int
    let type: String
    let data: FineTuningJob

    enum CodingKeys: String, CodingKey { case id, object, createdAt = "created_at", type, data }
}
