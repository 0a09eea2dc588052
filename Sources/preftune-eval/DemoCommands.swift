import DemoData
import Foundation
import Numerics

/// `preftune-eval demo-data --out DIR [--examples N]`: ShapeWorld files for a server —
/// `pretrain.jsonl`, `expert.jsonl`, `pairs.jsonl`, `labelled.jsonl`, the model's
/// `config.json` and `prompts.txt` (evaluation prompts, one per line).
/// `preftune-eval score SAMPLES.json`: the mean reward and prompt accuracy of a
/// `POST /v1/samples` answer.
enum DemoCommands {
    static let world = ShapeWorld(size: 8)

    static func value(_ name: String, in arguments: [String]) -> String? {
        guard let i = arguments.firstIndex(of: name), i + 1 < arguments.count else { return nil }
        return arguments[i + 1]
    }

    static func writeData(_ arguments: [String]) {
        guard let directory = value("--out", in: arguments) else { fatalUsage("preftune-eval demo-data --out DIR [--examples N] [--prompts N]") }
        let examples = Int(value("--examples", in: arguments) ?? "") ?? 4000
        let promptCount = Int(value("--prompts", in: arguments) ?? "") ?? 64
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            for kind in ShapeWorld.Kind.allCases {
                try world.dataset(kind, count: examples, seed: 7).write(toFile: "\(directory)/\(kind.rawValue).jsonl", atomically: true, encoding: .utf8)
            }
            try world.modelConfig().json.write(toFile: "\(directory)/config.json", atomically: true, encoding: .utf8)
            var random = Philox(seed: 2024, stream: 0xE7A1)
            let prompts = (0..<promptCount).map { _ in world.randomScene(&random).prompt }
            try (prompts.joined(separator: "\n") + "\n").write(toFile: "\(directory)/prompts.txt", atomically: true, encoding: .utf8)
        } catch {
            FileHandle.standardError.write(Data("preftune-eval: \(error)\n".utf8))
            exit(1)
        }
        print("wrote \(ShapeWorld.Kind.allCases.map { "\($0.rawValue).jsonl" }.joined(separator: ", ")), config.json and prompts.txt (\(examples) examples each) to \(directory)")
    }

    static func score(_ arguments: [String]) {
        guard arguments.count >= 2, let data = FileManager.default.contents(atPath: arguments[1]),
              let answer = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let rows = answer["data"] as? [[String: Any]] else {
            fatalUsage("preftune-eval score SAMPLES.json (the JSON answer of POST /v1/samples for a ShapeWorld model)")
        }
        var rewards: [Double] = [], followed = 0
        for row in rows {
            guard let prompt = row["prompt"] as? String, let sample = row["sample"] as? [Double], sample.count == world.sampleSize,
                  let scene = ShapeWorld.Scene(prompt: prompt) else { continue }
            let image = sample.map(Float.init)
            rewards.append(image.withUnsafeBufferPointer { world.reward($0.baseAddress!) })
            if image.withUnsafeBufferPointer({ world.followsPrompt($0.baseAddress!, scene: scene) }) { followed += 1 }
        }
        guard !rewards.isEmpty else { fatalUsage("no ShapeWorld samples with prompts in \(arguments[1])") }
        print(String(format: "samples %d  mean reward %.3f  prompt accuracy %.3f", rewards.count,
                     rewards.reduce(0, +) / Double(rewards.count), Double(followed) / Double(rewards.count)))
    }

    static func fatalUsage(_ message: String) -> Never {
        FileHandle.standardError.write(Data("usage: \(message)\n".utf8))
        exit(2)
    }
}
