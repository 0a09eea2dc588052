import Diffusion
import Foundation
import JSON
import Numerics

/// The training methods, and the JSONL fields each expects (SPEC §8).
public enum TrainingMethod: String, Codable, Sendable, CaseIterable {
    case sft, dpo, kto, dro, rpo

    /// Fields holding samples: one for sft/dro/kto, a pair for dpo/rpo.
    var sampleFields: [String] {
        switch self {
        case .sft, .dro, .kto: ["sample"]
        case .dpo, .rpo: ["chosen", "rejected"]
        }
    }
}

public struct DatasetError: Error, CustomStringConvertible, Equatable {
    /// 1-based line number, or nil for errors about the whole file.
    public let line: Int?
    public let message: String
    public var description: String { line.map { "line \($0): \(message)" } ?? message }
}

/// A validated dataset in memory: samples as one Float32 array per field, the
/// prompts' conditions, and KTO labels. Nothing is kept of a file that failed.
public struct Dataset: Sendable {
    public let method: TrainingMethod
    public let count: Int
    public let sampleSize: Int
    /// [count, D] per sample field ("sample", or "chosen" and "rejected").
    public let samples: [String: [Float]]
    public let conditions: Conditions
    public let prompts: [String]
    public let desirable: [Bool]

    /// Default memory budget for one dataset: 1 GiB.
    public static let defaultMemoryBudget = 1 << 30

    /// Reads and validates a JSONL file. Every line is checked; the first error found
    /// is reported with its line number. Files larger than `memoryBudget` bytes are
    /// refused before reading (the parsed floats never exceed the file's size).
    public static func load(path: String, method: TrainingMethod, config: ModelConfig,
                            memoryBudget: Int = defaultMemoryBudget) throws -> Dataset {
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        guard let size = (attributes?[.size] as? NSNumber)?.intValue else {
            throw DatasetError(line: nil, message: "cannot read \(path)")
        }
        guard size <= memoryBudget else {
            throw DatasetError(line: nil, message: "the file is \(size) bytes, over the \(memoryBudget)-byte memory budget for one dataset; split it or raise the budget")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DatasetError(line: nil, message: "cannot read \(path)")
        }
        return try parse(data, method: method, config: config)
    }

    /// Lines in a file (a bound on its examples), read in pieces: what a memory estimate needs
    /// before the file is parsed (a short line can expand to a whole condition vector).
    public static func countLines(path: String) throws -> Int {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw DatasetError(line: nil, message: "cannot read \(path)") }
        defer { try? handle.close() }
        var lines = 0, last: UInt8 = 0x0A
        while let chunk = try? handle.read(upToCount: 1 << 20), !chunk.isEmpty {
            lines += chunk.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
            last = chunk.last ?? last
        }
        return lines + (last == 0x0A ? 0 : 1)
    }

    public static func parse(_ data: Data, method: TrainingMethod, config: ModelConfig) throws -> Dataset {
        let D = config.sampleSize
        var samples: [String: [Float]] = [:]
        for field in method.sampleFields { samples[field] = [] }
        var prompts: [String] = [], vectors: [Float] = [], isNull: [UInt8] = [], desirable: [Bool] = []
        var lineNumber = 0
        let shape = "[\(config.sampleShape.map(String.init).joined(separator: ", "))]"

        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            let bytes = raw.bindMemory(to: UInt8.self)
            var start = 0
            while start < bytes.count {
                var end = start
                while end < bytes.count && bytes[end] != 0x0A { end += 1 }
                lineNumber += 1
                let line = UnsafeBufferPointer(rebasing: bytes[start..<end])
                start = end + 1
                if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
                func fail(_ message: String) -> DatasetError { DatasetError(line: lineNumber, message: message) }

                let object: JSONObject
                do {
                    guard let parsed = try JSONParser.parse(line).object else { throw fail("expected a JSON object") }
                    object = parsed
                } catch let error as DatasetError {
                    throw error
                } catch {
                    let text = String(decoding: line, as: UTF8.self)
                    if text.contains("NaN") || text.contains("Infinity") {
                        throw fail("contains NaN or Infinity; every value must be a finite number")
                    }
                    throw fail("not valid JSON")
                }
                for field in method.sampleFields {
                    guard let value = object[field] else { throw fail("missing field \"\(field)\"") }
                    guard let numbers = value.array else { throw fail("\"\(field)\" must be an array of \(D) numbers (shape \(shape), C·H·W order)") }
                    guard numbers.count == D else {
                        throw fail("\"\(field)\" has \(numbers.count) values; the model expects \(D) (shape \(shape), C·H·W order)")
                    }
                    var row = [Float](repeating: 0, count: D)
                    for (i, number) in numbers.enumerated() {
                        guard let value = number.number else { throw fail("\"\(field)\"[\(i)] is not a number") }
                        guard value.isFinite, abs(value) <= Double(Float.greatestFiniteMagnitude) else {
                            throw fail("\"\(field)\"[\(i)] is not finite")
                        }
                        row[i] = Float(value)
                    }
                    samples[field]!.append(contentsOf: row)
                }
                switch config.condition {
                case .text:
                    guard let prompt = object["prompt"]?.string else {
                        throw fail(object["prompt"] == nil ? "missing field \"prompt\" (a string; the model is text-conditioned)" : "\"prompt\" must be a string")
                    }
                    prompts.append(prompt)
                case let .vector(dim):
                    let value = object["condition"]
                    if value == nil || value == .null {
                        vectors.append(contentsOf: [Float](repeating: 0, count: dim))
                        isNull.append(1)
                    } else {
                        guard let numbers = value?.array, numbers.count == dim else {
                            throw fail("\"condition\" must be null or an array of \(dim) numbers")
                        }
                        for (i, number) in numbers.enumerated() {
                            guard let n = number.number, n.isFinite else { throw fail("\"condition\"[\(i)] is not a finite number") }
                            vectors.append(Float(n))
                        }
                        isNull.append(0)
                    }
                    prompts.append("")
                case .none:
                    prompts.append(object["prompt"]?.string ?? "")
                }
                if method == .kto {
                    guard let label = object["desirable"] else { throw fail("missing field \"desirable\" (true or false)") }
                    // 1 and 0 must not pass for true and false.
                    guard let flag = label.bool else { throw fail("\"desirable\" must be true or false") }
                    desirable.append(flag)
                }
            }
        }
        let count = prompts.count
        guard count > 0 else { throw DatasetError(line: nil, message: "the file has no examples") }
        let conditions: Conditions
        switch config.condition {
        case .text: conditions = Conditions.prompts(prompts, config: config)
        case .vector: conditions = Conditions(count: count, vectors: vectors, isNull: isNull)
        case .none: conditions = Conditions(count: count)
        }
        return Dataset(method: method, count: count, sampleSize: D, samples: samples, conditions: conditions,
                       prompts: prompts, desirable: desirable)
    }
}
