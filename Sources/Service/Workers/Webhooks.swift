import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Store

/// POSTs a job's terminal status to its `webhook_url`, shaped as OpenAI's webhook
/// events (`{"id","object":"event","type":"fine_tuning.job.succeeded","data":{…}}`).
/// Delivery is retried with exponential back-off; every outcome is a job event, and
/// no failure reaches the job or the server.
public final class Webhooks: Sendable {
    let store: any JobStore
    /// Waits before each attempt: the first at once, then doubling.
    let delays: [Double]
    let session: URLSession

    public init(store: any JobStore, delays: [Double] = [0, 1, 2, 4, 8, 16, 32], timeout: Double = 10) {
        self.store = store
        self.delays = delays
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = timeout
        session = URLSession(configuration: configuration)
    }

    /// Starts delivering the job's terminal status, if it has a webhook; returns at once.
    public func jobFinished(_ jobID: String) {
        guard let job = try? store.job(jobID, project: nil), let target = job.webhookURL, let url = URL(string: target),
              JobStatus.terminal.contains(job.status) else { return }
        let eventID = "evt_" + APIKeys.randomHex(bytes: 12)
        let payload: [String: Any] = ["id": eventID, "object": "event", "created_at": Int(Date().timeIntervalSince1970),
                                      "type": "fine_tuning.job.\(job.status)", "data": JobsAPI.object(job)]
        var request = URLRequest(url: url)
        request.httpMethod = "POST"
        request.httpBody = Data(JSONWriter.encode(payload))
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.setValue("preftune-webhooks", forHTTPHeaderField: "User-Agent")
        // The same id on every attempt lets a receiver drop repeats.
        request.setValue(eventID, forHTTPHeaderField: "webhook-id")
        request.setValue("\(Int(Date().timeIntervalSince1970))", forHTTPHeaderField: "webhook-timestamp")
        let sendable = UncheckedRequest(request: request)
        Task.detached { [self] in await deliver(sendable.request, jobID: jobID, host: url.host ?? target) }
    }

    func deliver(_ request: URLRequest, jobID: String, host: String) async {
        var lastProblem = ""
        for (attempt, delay) in delays.enumerated() {
            if delay > 0 { try? await Task.sleep(nanoseconds: UInt64(delay * 1e9)) }
            do {
                let (_, response) = try await session.data(for: request)
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
        FileHandle.standardError.write(Data("preftune: \(jobID): \(message)\n".utf8))
    }
}

/// URLRequest is a value type without mutable shared state; Foundation on Linux does not mark it Sendable.
struct UncheckedRequest: @unchecked Sendable { let request: URLRequest }
