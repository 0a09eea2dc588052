/// Every command's flags, checked before it runs: an unknown flag, a flag without its value,
/// or a stray argument is a usage error (exit 2), never silently ignored — `serve --wrokers 4`
/// must not start with the defaults.
enum Flags {
    struct Command {
        var valued: Set<String>
        var switches: Set<String> = []
        /// How many arguments that are not flags it takes.
        var positionals: ClosedRange<Int> = 0...0
    }

    static let dataDir: Set<String> = ["--data-dir"]

    static let commands: [String: Command] = [
        "serve": Command(valued: ["--listen", "--data-dir", "--workers", "--threads-per-job", "--max-job-memory", "--max-sample-flops",
                                  "--quota-storage", "--quota-files", "--quota-models", "--quota-jobs", "--webhook-allow",
                                  "--metrics-token", "--shutdown-grace", "--database", "--database-connections", "--min-run-seconds",
                                  "--fair-share-window", "--math"]),
        "worker": Command(valued: ["--data-dir", "--threads-per-job", "--max-job-memory", "--database", "--lease-seconds", "--min-run-seconds",
                                   "--fair-share-window", "--webhook-allow", "--math"],
                          switches: ["--supervised"]),
        "keys create": Command(valued: ["--project", "--data-dir", "--database"], switches: ["--admin"]),
        "keys list": Command(valued: ["--data-dir", "--database"]),
        "keys revoke": Command(valued: ["--data-dir", "--database"], positionals: 1...1),
        "projects list": Command(valued: ["--data-dir", "--database"]),
        "projects set": Command(valued: ["--max-priority", "--max-running", "--weight", "--data-dir", "--database"], positionals: 1...1),
        "backup": Command(valued: ["--to", "--data-dir", "--database"]),
        "inspect-model": Command(valued: [], positionals: 1...1),
        "files upload": Command(valued: ["--purpose", "--data-dir"], positionals: 1...1),
        "files list": Command(valued: dataDir),
        "models create": Command(valued: ["--config", "--file", "--seed", "--data-dir"], positionals: 1...1),
        "models list": Command(valued: dataDir),
        "models get": Command(valued: dataDir, positionals: 1...1),
        "jobs create": Command(valued: ["--model", "--training-file", "--method", "--hyperparameters", "--set", "--validation-file",
                                        "--suffix", "--seed", "--priority", "--webhook-url", "--early-stopping", "--grader", "--result", "--precision", "--data-dir"],
                               switches: ["--follow", "-f"]),
        "jobs fork": Command(valued: ["--from-step", "--hyperparameters", "--set", "--suffix", "--precision", "--data-dir"], switches: ["--follow", "-f"], positionals: 1...1),
        "jobs checkpoints": Command(valued: dataDir, positionals: 1...1),
        "jobs list": Command(valued: dataDir),
        "jobs get": Command(valued: dataDir, positionals: 1...1),
        "jobs cancel": Command(valued: dataDir, positionals: 1...1),
        "jobs pause": Command(valued: dataDir, positionals: 1...1),
        "jobs resume": Command(valued: dataDir, positionals: 1...1),
        "jobs events": Command(valued: dataDir, positionals: 1...1),
        "jobs logs": Command(valued: dataDir, switches: ["-f", "--follow"], positionals: 1...1),
        "sample": Command(valued: ["--model", "--prompt", "--n", "--steps", "--guidance", "--sampler", "--seed", "--png", "--precision", "--data-dir"]),
    ]

    /// Checks the whole command line (without the program name); exits 2 with a usage message on a mistake.
    static func check(_ arguments: [String]) {
        guard let first = arguments.first else { return }
        let name: String, rest: ArraySlice<String>
        if ["keys", "projects", "files", "models", "jobs"].contains(first), arguments.count >= 2, commands["\(first) \(arguments[1])"] != nil {
            name = "\(first) \(arguments[1])"
            rest = arguments.dropFirst(2)
        } else if commands[first] != nil {
            name = first
            rest = arguments.dropFirst()
        } else {
            return  // an unknown command or subcommand: the command's own message says which exist
        }
        let command = commands[name]!
        var positionals = 0
        var index = rest.startIndex
        while index < rest.endIndex {
            let argument = rest[index]
            if argument.hasPrefix("-"), argument.count > 1 {
                if command.valued.contains(argument) {
                    guard index + 1 < rest.endIndex else { usageError("\(argument) needs a value", command: name) }
                    index += 2
                    continue
                }
                guard command.switches.contains(argument) else {
                    let known = command.valued.union(command.switches)
                    let hint = known.min { distance(argument, $0) < distance(argument, $1) }.flatMap { distance(argument, $0) <= 3 ? " (did you mean \($0)?)" : nil } ?? ""
                    usageError("unknown flag \(argument) for \(name)\(hint)", command: name)
                }
            } else {
                positionals += 1
            }
            index += 1
        }
        guard command.positionals.contains(positionals) else {
            usageError(command.positionals.upperBound == 0 ? "\(name) takes no arguments besides its flags"
                       : "\(name) takes \(command.positionals.upperBound) argument(s), got \(positionals)", command: name)
        }
    }

    static func usageError(_ message: String, command: String) -> Never {
        let flags = commands[command].map { ($0.valued.map { "\($0) VALUE" } + $0.switches).sorted().joined(separator: " ") } ?? ""
        fail("\(message)\nusage: preftune \(command) \(flags)\n(preftune help lists every command)", status: 2)
    }

    /// Edit distance, for suggesting the flag that was meant.
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var previous = Array(0...b.count)
        for i in 1...max(1, a.count) where !a.isEmpty {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...max(1, b.count) where !b.isEmpty {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}
