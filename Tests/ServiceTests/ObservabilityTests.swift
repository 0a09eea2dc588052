import Diffusion
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Numerics
import Service
import Testing

extension LiveService {
    func get(_ path: String, headers: [String: String] = [:]) async throws -> (status: Int, body: Data, headers: [AnyHashable: Any]) {
        var request = URLRequest(url: URL(string: base + path)!)
        request.setValue("Bearer \(adminKey)", forHTTPHeaderField: "Authorization")
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as! HTTPURLResponse
        return (http.statusCode, data, http.allHeaderFields)
    }

    /// curl, for what URLSession hides: a streamed body as it arrives, cut off after `seconds`.
    func curl(_ path: String, _ options: [String] = [], seconds: Double = 60) async throws -> String {
        try await runToolAsync(["curl", "-sN", "--max-time", "\(seconds)", "-H", "Authorization: Bearer \(adminKey)"] + options + [base + path]).output
    }
}

@Suite struct ObservabilityTests {
    static func longDRO(_ steps: Int, log: Int = 100) -> [String: Any] {
        ["n_steps": steps, "batch_size": 4, "log_every": log, "checkpoint_every": steps / 2, "policy_steps": 4]
    }

    @Test func followingALogStreamsItToTheEndOfTheJob() async throws {
        let service = try LiveService(workers: 1)
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let id = try await service.createJob(model: model, file: file, method: "dro", Self.longDRO(20_000, log: 500))
        let followed = try await service.curl("/v1/fine_tuning/jobs/\(id)/logs?follow=true")
        let lines = followed.split(separator: "\n")
        #expect(lines.contains { $0.hasSuffix("step 20000/20000 " + ($0.split(separator: " ").dropFirst(3).joined(separator: " "))) })
        #expect(lines.last?.contains("finished: 20000 steps") == true || lines.last?.contains("succeeded") == true, "\(lines.suffix(3))")
        #expect(try await service.job(id)["status"] as? String == "succeeded", "the stream ended with the job")
        #expect(lines.filter { $0.contains(" step ") && $0.contains(" loss ") }.count == 40)

        let tail = try await service.get("/v1/fine_tuning/jobs/\(id)/logs?tail=2")
        #expect(String(decoding: tail.body, as: UTF8.self).split(separator: "\n").count == 2)
        #expect(try await service.get("/v1/fine_tuning/jobs/\(id)/logs?tail=x").status == 400)
        #expect(service.application.logFollowers.count == 0)
    }

    /// SSE ids are line numbers: a client cut off mid-job reconnects with Last-Event-ID and
    /// gets the rest, with no line missing and none twice.
    @Test func serverSentEventsResumeWithoutGapsOrRepeats() async throws {
        let service = try LiveService(workers: 1)
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let id = try await service.createJob(model: model, file: file, method: "dro", Self.longDRO(60_000, log: 250))
        try await service.waitForStep(id, atLeast: 500)
        let first = try await service.curl("/v1/fine_tuning/jobs/\(id)/logs", ["-H", "Accept: text/event-stream"], seconds: 1)
        func events(_ text: String) -> [(id: Int, data: String)] {
            text.components(separatedBy: "\n\n").compactMap { block in
                let fields = block.split(separator: "\n")
                guard let id = fields.first(where: { $0.hasPrefix("id: ") }).flatMap({ Int($0.dropFirst(4)) }),
                      let data = fields.first(where: { $0.hasPrefix("data: ") }) else { return nil }
                return (id, String(data.dropFirst(6)))
            }
        }
        let before = events(first)
        let last = try #require(before.last?.id, "\(first)")
        #expect(try await service.job(id)["status"] as? String == "running", "cut off while the job runs")
        // The rest runs to the job's end: on two busy cores that can take more than a minute.
        let rest = try await service.curl("/v1/fine_tuning/jobs/\(id)/logs", ["-H", "Accept: text/event-stream", "-H", "Last-Event-ID: \(last)"],
                                          seconds: 300)
        let after = events(rest)
        #expect(rest.contains("event: end\ndata: {\"status\":\"succeeded\"}"))
        let ids = (before + after).map(\.id)
        #expect(ids == Array(1...ids.count), "contiguous from the first line, none twice")
        let log = try String(contentsOfFile: service.data.logPath(id), encoding: .utf8).split(separator: "\n").map(String.init)
        #expect((before + after).map(\.data) == log)
    }

    @Test func metricSeriesPollAndDownsampleKeepingTheirShape() async throws {
        let service = try LiveService(workers: 1)
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let id = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 2000, "batch_size": 4, "log_every": 1])
        _ = try await service.waitFor(id, ["succeeded"])
        func series(_ query: String) async throws -> [String: Any] {
            let answer = try await service.get("/v1/fine_tuning/jobs/\(id)/metrics?\(query)")
            return (try JSONSerialization.jsonObject(with: answer.body) as? [String: Any]) ?? [:]
        }
        let all = try await series("names=loss,lr")
        let loss = try #require((all["series"] as? [String: Any])?["loss"] as? [String: Any])
        let steps = loss["steps"] as? [Int] ?? [], values = loss["values"] as? [Double] ?? []
        #expect(steps == Array(1...2000) && all["last_step"] as? Int == 2000)
        #expect(Set(((all["series"] as? [String: Any]) ?? [:]).keys) == ["loss", "lr"])

        let newer = try await series("names=loss&since_step=1990")
        #expect(((newer["series"] as? [String: Any])?["loss"] as? [String: Any])?["steps"] as? [Int] == Array(1991...2000))

        let small = try await series("names=loss&max_points=50")
        let kept = try #require(((small["series"] as? [String: Any])?["loss"] as? [String: Any]))
        let keptSteps = kept["steps"] as? [Int] ?? [], keptValues = kept["values"] as? [Double] ?? []
        #expect(keptSteps.count <= 50 && keptSteps.count >= 40 && keptSteps == keptSteps.sorted() && Set(keptSteps).count == keptSteps.count)
        #expect(keptSteps.first == 1 && keptSteps.last == 2000)
        #expect(keptValues.max() == values.max() && keptValues.min() == values.min(), "the extremes survive downsampling")

        let csv = String(decoding: try await service.get("/v1/fine_tuning/jobs/\(id)/metrics?names=lr&format=csv").body, as: UTF8.self)
        #expect(csv.hasPrefix("name,step,value\nlr,1,") && csv.split(separator: "\n").count == 2001)
        #expect(try await service.get("/v1/fine_tuning/jobs/\(id)/metrics?max_points=1").status == 400)
    }

    @Test func checkpointsDownloadWithRangesAndCarryASampleGrid() async throws {
        let service = try LiveService(workers: 1)
        let config: [String: Any] = ["arch": "resmlp", "sample_shape": [3, 4, 4], "hidden": 48, "depth": 1, "mlp_ratio": 2,
                                     "time_freq_dim": 8, "cond": ["kind": "text", "vocab": 32, "max_tokens": 4]]
        let model = try await service.post("/v1/models", ["id": "rgb", "config": config]).json["id"] as! String
        let lines = (0..<8).map { i in #"{"prompt": "shape \#(i % 3)", "sample": [\#((0..<48).map { _ in String(format: "%.2f", Double(i) / 8 - 0.5) }.joined(separator: ","))]}"# }
        let file = try await WorkerFixtures.upload(service, Array(lines.joined(separator: "\n").utf8))
        let id = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 20, "batch_size": 4, "checkpoint_every": 10])
        _ = try await service.waitFor(id, ["succeeded"])
        let checkpoints = try await service.request("GET", "/v1/fine_tuning/jobs/\(id)/checkpoints", key: service.adminKey).json["data"] as? [[String: Any]] ?? []
        let newest = try #require(checkpoints.first)
        let content = try #require(newest["content_url"] as? String)
        let downloaded = try await service.get(content)
        #expect(downloaded.status == 200)
        let path = service.directory + "/checkpoint.safetensors"
        try downloaded.body.write(to: URL(fileURLWithPath: path))
        let names = try runTool(["python3", "-c", "from safetensors.numpy import load_file; import sys; t = load_file(sys.argv[1]); print(sorted(t)[:3], t['out_proj.weight'].shape)", path])
        #expect(names.status == 0 && names.output.contains("blocks.0.fc1.weight") && names.output.contains("(48, 48)"), "\(names.output)")

        let part = try await service.get(content, headers: ["Range": "bytes=10-19"])
        #expect(part.status == 206 && part.body == downloaded.body.subdata(in: 10..<20))
        #expect(try await service.get(content, headers: ["Range": "bytes=999999999-"]).status == 416)

        let grid = try #require(newest["sample_grid_url"] as? String, "\(newest)")
        let png = try await service.get(grid)
        #expect(png.status == 200 && png.body.prefix(4) == Data([0x89, 0x50, 0x4E, 0x47]))
        #expect(try await service.get("/v1/fine_tuning/jobs/\(id)/checkpoints/nope/content").status == 404)
    }

    /// `GET /metrics` in the Prometheus text format, read by the reference parser (prometheus_client).
    @Test func prometheusMetricsParseAndDescribeTheRunningJob() async throws {
        var settings = LiveService.testSettings
        settings.metricsToken = "scraper"
        let service = try LiveService(workers: 1, settings: settings)
        let model = try await WorkerFixtures.baseModel(service)
        let file = try await WorkerFixtures.upload(service, WorkerFixtures.samples)
        let id = try await service.createJob(model: model, file: file, method: "sft", ["n_steps": 10_000_000, "batch_size": 4, "log_every": 10])
        try await service.waitForStep(id, atLeast: 20)
        _ = try await service.get("/v1/fine_tuning/jobs/nope")
        // Per-job series are for the operator's scraper, which presents the metrics token.
        var scrape = URLRequest(url: URL(string: service.base + "/metrics")!)
        scrape.setValue("Bearer scraper", forHTTPHeaderField: "Authorization")
        let (data, response) = try await URLSession.shared.data(for: scrape)
        #expect((response as? HTTPURLResponse)?.value(forHTTPHeaderField: "Content-Type")?.hasPrefix("text/plain; version=0.0.4") == true)
        let path = service.directory + "/metrics.txt"
        try data.write(to: URL(fileURLWithPath: path))
        let parsed = try await runToolAsync(["python3", "-c", """
            import json, sys
            from prometheus_client.parser import text_string_to_metric_families
            samples = {}
            for family in text_string_to_metric_families(open(sys.argv[1]).read()):
                for s in family.samples:
                    samples[s.name + json.dumps(s.labels, sort_keys=True)] = s.value
            print(json.dumps(samples))
            """, path])
        let samples = try #require(try JSONSerialization.jsonObject(with: Data(parsed.output.utf8)) as? [String: Double], "\(parsed.output)")
        #expect(samples[#"preftune_jobs{"status": "running"}"#] == 1)
        #expect(samples["preftune_queue_depth{}"] == 0 && samples["preftune_workers_busy{}"] == 1 && samples["preftune_workers{}"] == 1)
        #expect((samples["preftune_job_step{\"job\": \"\(id)\"}"] ?? 0) >= 20)
        #expect(samples["preftune_job_loss{\"job\": \"\(id)\"}"] != nil)
        #expect((samples["preftune_samples_trained_total{}"] ?? 0) >= 80)
        let route = #"{"code": "200", "method": "GET", "route": "/v1/fine_tuning/jobs/{id}"}"#
        #expect((samples["preftune_http_requests_total" + route] ?? 0) >= 1)
        #expect(samples[#"preftune_http_requests_total{"code": "404", "method": "GET", "route": "/v1/fine_tuning/jobs/{id}"}"#] == 1)
        #expect(samples["preftune_http_request_duration_seconds_count" + route] == samples["preftune_http_requests_total" + route])
        _ = try await service.post("/v1/fine_tuning/jobs/\(id)/cancel", [:])
    }
}
