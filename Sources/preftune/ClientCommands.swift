import Foundation
import JSON
import Store

/// `preftune files|models|jobs|sample …`: the API from the command line.
enum ClientCommands {
    static func printJSON(_ value: JSONValue) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(value) else { return }
        print(String(decoding: data, as: UTF8.self))
    }

    /// The positional argument after the subcommand, e.g. the id in `jobs get ID`.
    static func positional(_ arguments: [String], _ usage: String) -> String {
        guard arguments.count >= 2, !arguments[1].hasPrefix("-") else { fail("usage: preftune \(usage)", status: 2) }
        return arguments[1]
    }

    /// JSON given inline or as `@file`.
    static func jsonArgument(_ text: String, name: String) -> JSONValue {
        let data = text.hasPrefix("@") ? FileManager.default.contents(atPath: String(text.dropFirst())) : Data(text.utf8)
        guard let data, let value = try? JSONParser.parse(data) else { fail("\(name) must be JSON (or @file with JSON)", status: 2) }
        return value
    }

    /// A file's line in a listing.
    static func fileLine(_ file: JSONValue) -> String {
        "\(file["id"]?.string ?? "?")  \(file["bytes"]?.exactInteger ?? 0) bytes  \(file["filename"]?.string ?? "")"
    }

    /// A page's `data`.
    static func items(_ page: JSONValue) -> [JSONValue] { page["data"]?.array ?? [] }

    /// A whole-number flag as the API should see it: not a number is sent as -1, which the API refuses by name.
    static func integer(_ text: String) -> JSONValue { JSONValue(Int(text) ?? -1) }

    /// POSTs a job (a new one or a fork), prints its id, and follows it with `--follow`.
    static func createJob(_ path: String, _ body: JSONObject, client: APIClient, arguments: [String]) {
        let job = client.expect(client.send("POST", path, json: .object(body)))
        let id = job["id"]?.string ?? "?"
        print(id)
        if arguments.contains("--follow") || arguments.contains("-f") { exit(follow(id, client: client)) }
    }

    /// `--hyperparameters JSON|@file`, then each `--set key=value` over it.
    static func hyperparametersArgument(_ arguments: [String]) -> JSONObject {
        var hyperparameters = JSONObject()
        if let given = option("--hyperparameters", in: arguments) {
            guard let object = jsonArgument(given, name: "--hyperparameters").object else { fail("--hyperparameters must be a JSON object", status: 2) }
            hyperparameters = object
        }
        for (index, argument) in arguments.enumerated() where argument == "--set" && index + 1 < arguments.count {
            let pair = arguments[index + 1].split(separator: "=", maxSplits: 1).map(String.init)
            guard pair.count == 2 else { fail("--set takes key=value", status: 2) }
            // A JSON value (3, 1e-4, true, "text"), else the text itself.
            hyperparameters[pair[0]] = (try? JSONParser.parse(Array(pair[1].utf8))) ?? .string(pair[1])
        }
        return hyperparameters
    }

    static func files(_ arguments: [String]) {
        let client = APIClient(arguments: arguments)
        switch arguments.first {
        case "upload":
            let path = positional(arguments, "files upload PATH [--purpose fine-tune]")
            let file = client.expect(client.upload(path, purpose: option("--purpose", in: arguments) ?? "fine-tune"))
            print(fileLine(file))
        case "list":
            for file in items(client.expect(client.send("GET", "/v1/files?limit=100"))) { print(fileLine(file)) }
        default:
            fail("files takes upload or list", status: 2)
        }
    }

    static func models(_ arguments: [String]) {
        let client = APIClient(arguments: arguments)
        switch arguments.first {
        case "create":
            let id = positional(arguments, "models create ID (--config JSON|@file | --file FILE_ID) [--seed N]")
            var body: JSONObject = ["id": .string(id)]
            if let config = option("--config", in: arguments) { body["config"] = jsonArgument(config, name: "--config") }
            if let file = option("--file", in: arguments) { body["file"] = .string(file) }
            if let seed = option("--seed", in: arguments) { body["seed"] = integer(seed) }
            let model = client.expect(client.send("POST", "/v1/models", json: .object(body)))
            print(model["id"]?.string ?? "?")
        case "list":
            for model in items(client.expect(client.send("GET", "/v1/models"))) {
                print("\(model["id"]?.string ?? "?")  \(model["owned_by"]?.string ?? "")")
            }
        case "get":
            printJSON(client.expect(client.send("GET", "/v1/models/\(positional(arguments, "models get ID"))")))
        default:
            fail("models takes create, list or get", status: 2)
        }
    }

    static func jobs(_ arguments: [String]) {
        let client = APIClient(arguments: arguments)
        switch arguments.first {
        case "create":
            guard let model = option("--model", in: arguments), let file = option("--training-file", in: arguments),
                  let method = option("--method", in: arguments) else {
                fail("usage: preftune jobs create --model ID --training-file FILE_ID --method sft|dpo|kto|dro|rpo [--hyperparameters JSON] [--set key=value]… [--validation-file ID] [--suffix S] [--seed N] [--priority N] [--webhook-url URL] [--early-stopping JSON] [--grader JSON] [--result best|last] [--precision fp32|bf16] [--follow]", status: 2)
            }
            let hyperparameters = hyperparametersArgument(arguments)
            var body: JSONObject = ["model": .string(model), "training_file": .string(file),
                                    "method": ["type": .string(method), method: ["hyperparameters": .object(hyperparameters)]]]
            for (flag, field) in [("--validation-file", "validation_file"), ("--suffix", "suffix"), ("--webhook-url", "webhook_url")] {
                if let value = option(flag, in: arguments) { body[field] = .string(value) }
            }
            if let seed = option("--seed", in: arguments) { body["seed"] = integer(seed) }
            if let priority = option("--priority", in: arguments) { body["priority"] = integer(priority) }
            for (flag, field) in [("--early-stopping", "early_stopping"), ("--grader", "grader")] {
                if let value = option(flag, in: arguments) { body[field] = jsonArgument(value, name: flag) }
            }
            for (flag, field) in [("--result", "result"), ("--precision", "precision")] {
                if let value = option(flag, in: arguments) { body[field] = .string(value) }
            }
            createJob("/v1/fine_tuning/jobs", body, client: client, arguments: arguments)
        case "fork":
            let usage = "jobs fork ID --from-step N [--hyperparameters JSON] [--set key=value]… [--suffix S] [--precision fp32|bf16] [--follow]"
            let parent = positional(arguments, usage)
            guard let step = option("--from-step", in: arguments) else { fail("usage: preftune \(usage)", status: 2) }
            var body: JSONObject = ["from_step": integer(step), "hyperparameters": .object(hyperparametersArgument(arguments))]
            for (flag, field) in [("--suffix", "suffix"), ("--precision", "precision")] {
                if let value = option(flag, in: arguments) { body[field] = .string(value) }
            }
            createJob("/v1/fine_tuning/jobs/\(parent)/fork", body, client: client, arguments: arguments)
        case "checkpoints":
            let id = positional(arguments, "jobs checkpoints ID")
            let job = client.expect(client.send("GET", "/v1/fine_tuning/jobs/\(id)"))
            let best = job["best_checkpoint"]?["step_number"]?.exactInteger
            for checkpoint in items(client.expect(client.send("GET", "/v1/fine_tuning/jobs/\(id)/checkpoints?limit=100"))) {
                let step = checkpoint["step_number"]?.exactInteger ?? 0
                let metrics = (checkpoint["metrics"]?.object).map { object in
                    object.keys.sorted().compactMap { key in object[key]?.number.map { "\(key) \(String(format: "%.4g", $0))" } }.joined(separator: "  ")
                } ?? ""
                print("\(step == best ? "*" : " ") step \(step)  \(checkpoint["fine_tuned_model_checkpoint"]?.string ?? "")  \(metrics)")
            }
        case "list":
            for job in items(client.expect(client.send("GET", "/v1/fine_tuning/jobs?limit=100"))) { print(summary(job)) }
        case "get":
            printJSON(client.expect(client.send("GET", "/v1/fine_tuning/jobs/\(positional(arguments, "jobs get ID"))")))
        case "cancel", "pause", "resume":
            let action = arguments[0]
            let job = client.expect(client.send("POST", "/v1/fine_tuning/jobs/\(positional(arguments, "jobs \(action) ID"))/\(action)", json: [:] as JSONValue))
            print(summary(job))
        case "logs":
            let id = positional(arguments, "jobs logs ID [-f]")
            if arguments.contains("-f") || arguments.contains("--follow") { exit(follow(id, client: client)) }
            for event in events(id, client: client, after: 0) { print(line(event)) }
        case "events":
            for event in events(positional(arguments, "jobs events ID"), client: client, after: 0) { print(line(event)) }
        default:
            fail("jobs takes create, fork, list, get, checkpoints, cancel, pause, resume, events or logs", status: 2)
        }
    }

    static func summary(_ job: JSONValue) -> String {
        let steps = "\(job["progress"]?["step"]?.exactInteger ?? 0)/\(job["progress"]?["total_steps"]?.exactInteger ?? 0)"
        let method = job["method"]?["type"]?.string ?? "?"
        var text = "\(job["id"]?.string ?? "?")  \(job["status"]?.string ?? "?")  \(method)  step \(steps)  \(job["model"]?.string ?? "")"
        if let result = job["fine_tuned_model"]?.string { text += " → \(result)" }
        if let error = job["error"], error.object != nil {
            text += "\n  error \(error["code"]?.string ?? ""): \(error["message"]?.string ?? "")"
        }
        return text
    }

    static func sequence(_ event: JSONValue) -> Int { Int(event["id"]?.string?.split(separator: "-").last ?? "") ?? 0 }

    /// The job's events after sequence `after`, oldest first.
    static func events(_ id: String, client: APIClient, after: Int) -> [JSONValue] {
        let page = items(client.expect(client.send("GET", "/v1/fine_tuning/jobs/\(id)/events?limit=1000")))
        return page.reversed().filter { sequence($0) > after }
    }

    static func line(_ event: JSONValue) -> String {
        let time = event["created_at"]?.exactInteger.map { Date(timeIntervalSince1970: Double($0)) }.map { "\($0)".prefix(19) } ?? ""
        return "\(time) \(event["level"]?.string ?? "info") \(event["message"]?.string ?? "")"
    }

    /// Prints the job's events as they come, with a progress line on a terminal, until the
    /// job ends (exit status 0 when it succeeded) — like `kubectl logs -f`.
    static func follow(_ id: String, client: APIClient) -> Int32 {
        let terminal = isatty(STDERR_FILENO) == 1
        var last = 0
        while true {
            let fresh = events(id, client: client, after: last)
            if terminal, !fresh.isEmpty { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
            for event in fresh { print(line(event)) }
            fflush(nil)
            last = fresh.last.map(sequence) ?? last
            let job = client.expect(client.send("GET", "/v1/fine_tuning/jobs/\(id)"))
            let status = job["status"]?.string ?? "?"
            if JobStatus(rawValue: status)?.isTerminal == true {
                for event in events(id, client: client, after: last) { print(line(event)) }
                print(summary(job))
                return status == JobStatus.succeeded.rawValue ? 0 : 1
            }
            if terminal { FileHandle.standardError.write(Data("\r\u{1B}[K\(progressLine(job))".utf8)) }
            Thread.sleep(forTimeInterval: 0.5)
        }
    }

    static func progressLine(_ job: JSONValue) -> String {
        let progress = job["progress"]
        let step = progress?["step"]?.exactInteger ?? 0, total = progress?["total_steps"]?.exactInteger ?? 0
        var text = "\(job["status"]?.string ?? "?") step \(step)/\(total)"
        if total > 0 { text += String(format: " (%.0f%%)", 100 * Double(step) / Double(total)) }
        if let rate = progress?["samples_per_s"]?.number { text += String(format: " · %.0f samples/s", rate) }
        if let finish = job["estimated_finish"]?.exactInteger { text += " · about \(max(0, finish - Int(Date().timeIntervalSince1970))) s left" }
        return text
    }

    static func sample(_ arguments: [String]) {
        let client = APIClient(arguments: arguments)
        guard let model = option("--model", in: arguments) else {
            fail("usage: preftune sample --model ID --prompt TEXT [--prompt TEXT]… [--n 4] [--steps 20] [--guidance 1] [--sampler dpmpp2m] [--seed 0] [--png FILE] [--precision fp32|bf16]", status: 2)
        }
        let prompts = arguments.enumerated().filter { $0.element == "--prompt" && $0.offset + 1 < arguments.count }.map { arguments[$0.offset + 1] }
        var body: JSONObject = ["model": .string(model)]
        if !prompts.isEmpty { body["prompts"] = .array(prompts.map(JSONValue.string)) }
        for (flag, field) in [("--n", "n"), ("--steps", "steps"), ("--seed", "seed")] {
            if let value = option(flag, in: arguments) { body[field] = integer(value) }
        }
        if let guidance = option("--guidance", in: arguments) { body["guidance_scale"] = JSONValue(Double(guidance) ?? -1) }
        for (flag, field) in [("--sampler", "sampler"), ("--precision", "precision")] {
            if let value = option(flag, in: arguments) { body[field] = .string(value) }
        }
        if let path = option("--png", in: arguments) {
            body["format"] = "png"
            let response = client.send("POST", "/v1/samples", json: .object(body))
            _ = client.expect(response.status == 200 ? APIClient.Response(status: 200, body: Data("{}".utf8)) : response)
            guard FileManager.default.createFile(atPath: path, contents: response.body) else { fail("cannot write \(path)") }
            print("wrote \(path)")
        } else {
            printJSON(client.expect(client.send("POST", "/v1/samples", json: .object(body))))
        }
    }
}
