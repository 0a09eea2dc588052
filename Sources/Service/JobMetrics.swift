import Foundation
import JSON
import HTTP
import Store

/// `GET /v1/fine_tuning/jobs/{id}/metrics?names=&since_step=&max_points=&format=json|csv`:
/// a job's metric series, steps strictly increasing. `since_step` returns only newer
/// points (for polling); `max_points` downsamples each series keeping its shape: the
/// first and last points, and the lowest and highest of every bucket between them, so
/// spikes and dips survive — not the first N points.
enum JobMetricsAPI {
    static func add(to router: inout Router, store: any JobStore) {
        router.addRead("GET", "/v1/fine_tuning/jobs/{id}/metrics") { context in
            let job = try JobsAPI.find(context, store: store)
            let query = context.request.query
            let names = query["names"].map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
            if let names, names.count > 100 { throw APIError.invalid("names takes at most 100 series names", param: "names") }
            let since = try Query.integer(query["since_step"], param: "since_step", range: 0...Int(Int32.max))
            let maximum = try Query.integer(query["max_points"], param: "max_points", range: 2...1_000_000)
            let format = query["format"] ?? "json"
            guard format == "json" || format == "csv" else { throw APIError.invalid("format must be json or csv", param: "format") }
            var series = try store.metrics(job.id, names: names, sinceStep: since)
            if let maximum { series = series.mapValues { downsample($0, to: maximum) } }
            let lastStep = series.values.compactMap { $0.last?.step }.max() ?? since ?? 0
            if format == "csv" {
                var text = "name,step,value\n"
                for name in series.keys.sorted() {
                    for point in series[name]! { text += "\(name),\(point.step),\(point.value)\n" }
                }
                return HTTPResponse(status: 200, headers: [("Content-Type", "text/csv; charset=utf-8")], body: .bytes(Array(text.utf8)))
            }
            return .json(MetricSeries(jobID: job.id, status: job.status, lastStep: lastStep,
                                      series: SortedMembers(series.mapValues { Series(steps: $0.map(\.step), values: $0.map(\.value)) })))
        }
    }

    /// At most `maximum` points: the first, the last, and each bucket's minimum and maximum in step order.
    static func downsample(_ points: [(step: Int, value: Double)], to maximum: Int) -> [(step: Int, value: Double)] {
        guard points.count > maximum else { return points }
        let interior = points.dropFirst().dropLast()
        let buckets = max(1, (maximum - 2) / 2)
        var result = [points[0]]
        for bucket in 0..<buckets {
            let lower = interior.startIndex + bucket * interior.count / buckets
            let upper = interior.startIndex + (bucket + 1) * interior.count / buckets
            guard lower < upper else { continue }
            var low = lower, high = lower
            for i in lower..<upper {
                if points[i].value < points[low].value { low = i }
                if points[i].value > points[high].value { high = i }
            }
            for i in Set([low, high]).sorted() { result.append(points[i]) }
        }
        result.append(points[points.count - 1])
        return result
    }

    /// A job's metric series (`fine_tuning.job.metrics`), by name.
    struct MetricSeries: Encodable {
        let object = "fine_tuning.job.metrics"
        let jobID: String
        let status: JobStatus
        let lastStep: Int
        let series: SortedMembers<Series>

        enum CodingKeys: String, CodingKey { case object, jobID = "job_id", status, lastStep = "last_step", series }
    }

    struct Series: Encodable {
        let steps: [Int]
        let values: [Double]
    }
}
