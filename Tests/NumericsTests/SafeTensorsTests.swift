import Foundation
import Numerics
import TestSupport
import Testing

@Suite(.ownThread) struct SafeTensorsTests {
    static func sampleFile() -> [UInt8] {
        var writer = SafeTensorsWriter(metadata: ["config": "{\"k\": \"v\\\"q\"}", "line": "a\nb"])
        writer.add("weights", shape: [2, 3], floats: [1, 2, 3, 4, 5, 6])
        writer.add("steps", shape: [2], int64s: [-3, 1 << 40])
        writer.add("wide", shape: [1], doubles: [0.1])
        writer.add("mask", shape: [3], uint8s: [1, 0, 1])
        return writer.serialized()
    }

    @Test func roundTripKeepsValuesShapesAndMetadata() throws {
        let file = try SafeTensorsFile(bytes: Self.sampleFile())
        #expect(file.metadata == ["config": "{\"k\": \"v\\\"q\"}", "line": "a\nb"])
        #expect(try file.floats("weights", shape: [2, 3]) == [1, 2, 3, 4, 5, 6])
        #expect(try file.integers("steps") == [-3, 1 << 40])
        #expect(try file.doubles("wide") == [0.1])
        #expect(try file.integers("mask") == [1, 0, 1])
        #expect(file.names == ["weights", "steps", "wide", "mask"])
    }

    @Test func headerIsPaddedToEightBytes() {
        let bytes = Self.sampleFile()
        let headerLength = bytes[0..<8].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        #expect(headerLength % 8 == 0)
    }

    @Test func wrongShapeOrDtypeOrNameIsAClearError() throws {
        let file = try SafeTensorsFile(bytes: Self.sampleFile(), source: "m.safetensors")
        #expect(throws: SafeTensorsError("m.safetensors: tensor 'weights' has shape [2, 3], expected [3, 2]")) {
            try file.floats("weights", shape: [3, 2])
        }
        #expect(throws: SafeTensorsError("m.safetensors: tensor 'steps' is I64, expected F32")) { try file.floats("steps") }
        #expect(throws: SafeTensorsError("m.safetensors: missing tensor 'bias'")) { try file.floats("bias") }
    }

    /// Builds a file from a raw header and data section.
    static func file(header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) -> [UInt8] {
        let headerBytes = Array(header.utf8)
        var length = declaredLength ?? UInt64(headerBytes.count)
        var out: [UInt8] = []
        for _ in 0..<8 { out.append(UInt8(length & 0xFF)); length >>= 8 }
        return out + headerBytes + data
    }

    static let hostile: [(String, [UInt8], String)] = [
        ("empty file", [], "too short"),
        ("header length past the end", file(header: "{}", declaredLength: 1000), "runs past the end"),
        ("huge header length", file(header: "{}", declaredLength: UInt64.max), "exceeds"),
        ("header not JSON", file(header: "{not json"), "not valid JSON"),
        ("header not an object", file(header: "[1,2]"), "not a JSON object"),
        ("unknown dtype", file(header: #"{"a":{"dtype":"F8","shape":[1],"data_offsets":[0,1]}}"#, data: [0]), "unsupported dtype F8"),
        ("offsets past the data", file(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: [0, 0, 0, 0]), "run past"),
        ("size disagrees with shape", file(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]), "needs 8 bytes"),
        ("negative dimension", file(header: #"{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}}"#), "non-negative"),
        ("overflowing shape", file(header: #"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#), "larger than the file"),
        ("overlapping tensors", file(header: #"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}"#, data: [1, 2, 3]), "overlaps"),
        ("gap in the data", file(header: #"{"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#, data: [1, 2]), "gap"),
        ("trailing bytes", file(header: #"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, data: [1, 2]), "cover 1"),
        ("fractional offset", file(header: #"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0.5,1]}}"#, data: [1]), "data_offsets"),
        ("metadata not strings", file(header: #"{"__metadata__":{"a":1}}"#), "not a string"),
    ]

    @Test("hostile files are clear errors", arguments: hostile.indices)
    func hostileFile(index: Int) {
        let (name, bytes, fragment) = Self.hostile[index]
        do {
            _ = try SafeTensorsFile(bytes: bytes, source: "x")
            Issue.record("\(name): accepted")
        } catch {
            #expect("\(error)".contains(fragment), "\(name): \(error)")
        }
    }

    @Test func everyTruncationIsAnErrorNotACrash() {
        let bytes = Self.sampleFile()
        for length in 0..<bytes.count {
            #expect(throws: SafeTensorsError.self) { try SafeTensorsFile(bytes: Array(bytes.prefix(length))) }
        }
    }

    @Test func randomCorruptionNeverCrashes() {
        let original = Self.sampleFile()
        var random = Philox(seed: 42)
        var rejected = 0
        for _ in 0..<3000 {
            var bytes = original
            for _ in 0...random.nextInt(below: 4) {
                bytes[random.nextInt(below: bytes.count)] = UInt8(random.nextInt(below: 256))
            }
            guard let file = try? SafeTensorsFile(bytes: bytes) else { rejected += 1; continue }
            for name in file.names { _ = try? file.floats(name); _ = try? file.integers(name) }
        }
        #expect(rejected > 0)
    }

    @Test func atomicWriteReplacesTheFileWhole() throws {
        let directory = temporaryPath("preftune")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/m.safetensors"
        try AtomicFile.write([1, 2, 3], to: path)
        try AtomicFile.write(Self.sampleFile(), to: path)
        #expect(try SafeTensorsFile(contentsOf: path).names.count == 4)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["m.safetensors"])
        #expect(throws: FileWriteError.self) { try AtomicFile.write([1], to: "\(directory)/missing/m.safetensors") }
    }
}

/// Files cross between preftune and the Python `safetensors` package in both
/// directions. `make test` installs the package; without it this test fails and says so.
@Suite(.ownThread) struct PythonInteropTests {
    static var script: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/interop/safetensors_interop.py").path
    }

    static func python(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script] + arguments
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.runWithSignalsUnblocked()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        let errorText = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw SafeTensorsError("python3 \(arguments.joined(separator: " ")) failed (install with `pip install safetensors numpy`, as `make test` does): \(errorText)")
        }
        return String(decoding: data, as: UTF8.self)
    }

    @Test func readsAFileWrittenByPython() throws {
        let path = temporaryPath("py", suffix: ".safetensors")
        defer { try? FileManager.default.removeItem(atPath: path) }
        _ = try Self.python(["write", path])
        let file = try SafeTensorsFile(contentsOf: path)
        #expect(file.metadata["note"] == "written by python")
        #expect(file.metadata["config"] == #"{"a": [1, 2]}"#)
        #expect(try file.floats("f32", shape: [2, 3]) == [0, 0.25, 0.5, 0.75, 1, 1.25])
        #expect(try file.doubles("f64") == [1.5, -2.25, 1e-300])
        #expect(try file.integers("i64", shape: [1, 2]) == [-(1 << 40), 7])
        #expect(try file.integers("i32") == [-5, 0, Int(Int32.max)])
        #expect(try file.integers("u8") == [0, 255, 17])
        #expect(file.info("flags")?.dtype == .bool)
        #expect(try file.integers("flags") == [1, 0, 1])
        #expect(try file.floats("empty", shape: [0, 4]) == [])
    }

    @Test func pythonReadsAFileWrittenByPreftune() throws {
        let path = temporaryPath("sw", suffix: ".safetensors")
        defer { try? FileManager.default.removeItem(atPath: path) }
        var writer = SafeTensorsWriter(metadata: ["config": #"{"hidden":4}"#])
        writer.add("blocks.0.fc1.weight", shape: [2, 2], floats: [1, 2, 3, 4.5])
        writer.add("t", shape: [3], int64s: [1, 2, 999])
        writer.add("mask", shape: [2], uint8s: [1, 1])
        try writer.write(to: path)
        let summary = try JSONSerialization.jsonObject(with: Data(Self.python(["check-model", path]).utf8)) as! [String: Any]
        #expect((summary["metadata_config"] as! [String: Int]) == ["hidden": 4])
        let tensors = summary["tensors"] as! [String: [String: Any]]
        #expect(tensors["blocks.0.fc1.weight"]?["shape"] as? [Int] == [2, 2])
        #expect(tensors["blocks.0.fc1.weight"]?["dtype"] as? String == "float32")
        #expect(tensors["blocks.0.fc1.weight"]?["sum"] as? Double == 10.5)
        #expect(tensors["t"]?["dtype"] as? String == "int64")
        #expect(tensors["t"]?["sum"] as? Double == 1002)
        #expect(tensors["mask"]?["sum"] as? Double == 2)
    }
}
