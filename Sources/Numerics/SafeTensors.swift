import Foundation

/// The safetensors format (huggingface/safetensors): an 8-byte little-endian
/// header length N, N bytes of JSON `{name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}`,
/// then the tensor bytes, which the offsets must cover exactly and without overlap.
public enum SafeTensors {
    public enum DType: String, Sendable, CaseIterable {
        case f32 = "F32", f64 = "F64", i64 = "I64", i32 = "I32", u8 = "U8", bool = "BOOL"

        public var size: Int {
            switch self {
            case .f64, .i64: 8
            case .f32, .i32: 4
            case .u8, .bool: 1
            }
        }
    }

    public struct TensorInfo: Sendable, Equatable {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
        /// Byte range inside the data section.
        public let byteRange: Range<Int>
        public var elementCount: Int { shape.reduce(1, *) }
    }

    /// Largest header accepted, as the Python library (100 MB).
    public static let maximumHeaderSize = 100_000_000
}

public struct SafeTensorsError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A parsed safetensors file held in memory. Every offset and size in the
/// header is checked before any tensor is read, so a hostile file is an error, never a crash.
public struct SafeTensorsFile: Sendable {
    public let source: String
    public let metadata: [String: String]
    /// Tensors in the order of their data offsets.
    public let tensors: [SafeTensors.TensorInfo]
    private let index: [String: Int]
    private let bytes: [UInt8]
    private let dataStart: Int

    public init(contentsOf path: String) throws {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path), options: .mappedIfSafe)
        } catch {
            throw SafeTensorsError("\(path): cannot read file: \(error.localizedDescription)")
        }
        try self.init(bytes: [UInt8](data), source: path)
    }

    public init(bytes: [UInt8], source: String = "safetensors data") throws {
        func fail(_ message: String) -> SafeTensorsError { SafeTensorsError("\(source): \(message)") }
        self.source = source
        self.bytes = bytes
        guard bytes.count >= 8 else {
            throw fail("file is \(bytes.count) bytes, too short for the 8-byte header length (truncated?)")
        }
        var headerLength: UInt64 = 0
        for i in 0..<8 { headerLength |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        guard headerLength <= UInt64(SafeTensors.maximumHeaderSize) else {
            throw fail("header length \(headerLength) exceeds the \(SafeTensors.maximumHeaderSize)-byte limit")
        }
        guard Int(headerLength) <= bytes.count - 8 else {
            throw fail("header length \(headerLength) runs past the end of the \(bytes.count)-byte file (truncated?)")
        }
        dataStart = 8 + Int(headerLength)
        let header = try Self.parseHeader(bytes[8..<dataStart], dataLength: bytes.count - dataStart, source: source)
        self.metadata = header.metadata
        self.tensors = header.tensors
        var index: [String: Int] = [:]
        for (i, tensor) in tensors.enumerated() { index[tensor.name] = i }
        self.index = index
    }

    /// The metadata and tensor table of a file, read without its data section: a service can
    /// check what a file declares (its model config) before it reads or allocates anything for it.
    public static func readHeader(path: String) throws -> (metadata: [String: String], tensors: [SafeTensors.TensorInfo], fileSize: Int) {
        func fail(_ message: String) -> SafeTensorsError { SafeTensorsError("\(path): \(message)") }
        guard let handle = FileHandle(forReadingAtPath: path) else { throw fail("cannot read file") }
        defer { try? handle.close() }
        let fileSize = Int((try? handle.seekToEnd()) ?? 0)
        try? handle.seek(toOffset: 0)
        let prefix = [UInt8]((try? handle.read(upToCount: 8)) ?? Data())
        guard prefix.count == 8 else { throw fail("file is \(fileSize) bytes, too short for the 8-byte header length (truncated?)") }
        var headerLength: UInt64 = 0
        for i in 0..<8 { headerLength |= UInt64(prefix[i]) << (8 * UInt64(i)) }
        guard headerLength <= UInt64(SafeTensors.maximumHeaderSize) else {
            throw fail("header length \(headerLength) exceeds the \(SafeTensors.maximumHeaderSize)-byte limit")
        }
        guard Int(headerLength) <= fileSize - 8 else {
            throw fail("header length \(headerLength) runs past the end of the \(fileSize)-byte file (truncated?)")
        }
        let header = [UInt8]((try? handle.read(upToCount: Int(headerLength))) ?? Data())
        guard header.count == Int(headerLength) else { throw fail("cannot read the header") }
        let parsed = try parseHeader(header[...], dataLength: fileSize - 8 - Int(headerLength), source: path)
        return (parsed.metadata, parsed.tensors, fileSize)
    }

    /// Parses and checks the JSON header against a data section of `dataLength` bytes.
    static func parseHeader(_ headerBytes: ArraySlice<UInt8>, dataLength: Int, source: String) throws
        -> (metadata: [String: String], tensors: [SafeTensors.TensorInfo]) {
        func fail(_ message: String) -> SafeTensorsError { SafeTensorsError("\(source): \(message)") }
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: Data(headerBytes), options: [])
        } catch {
            throw fail("header is not valid JSON")
        }
        guard let header = json as? [String: Any] else { throw fail("header is not a JSON object") }

        var metadata: [String: String] = [:]
        var tensors: [SafeTensors.TensorInfo] = []
        for (name, value) in header {
            if name == "__metadata__" {
                guard let entries = value as? [String: Any] else { throw fail("__metadata__ is not an object") }
                for (key, entry) in entries {
                    guard let text = entry as? String else { throw fail("__metadata__.\(key) is not a string") }
                    metadata[key] = text
                }
                continue
            }
            guard let entry = value as? [String: Any] else { throw fail("tensor '\(name)': entry is not an object") }
            guard let dtypeName = entry["dtype"] as? String else { throw fail("tensor '\(name)': missing dtype") }
            guard let dtype = SafeTensors.DType(rawValue: dtypeName) else {
                throw fail("tensor '\(name)': unsupported dtype \(dtypeName) (supported: \(SafeTensors.DType.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            guard let shapeValues = entry["shape"] as? [Any] else { throw fail("tensor '\(name)': missing shape") }
            var shape: [Int] = []
            var elements = 1
            for dimension in shapeValues {
                guard let size = Self.nonNegativeInteger(dimension) else {
                    throw fail("tensor '\(name)': shape entries must be non-negative integers")
                }
                let (product, overflow) = elements.multipliedReportingOverflow(by: size)
                guard !overflow, product <= dataLength else {
                    throw fail("tensor '\(name)': shape \(shapeValues) is larger than the file")
                }
                shape.append(size)
                elements = product
            }
            guard let offsets = entry["data_offsets"] as? [Any], offsets.count == 2,
                  let begin = Self.nonNegativeInteger(offsets[0]), let end = Self.nonNegativeInteger(offsets[1]),
                  begin <= end
            else { throw fail("tensor '\(name)': data_offsets must be two non-negative integers [begin, end]") }
            guard end <= dataLength else {
                throw fail("tensor '\(name)': data_offsets [\(begin), \(end)] run past the \(dataLength) data bytes (truncated?)")
            }
            guard end - begin == elements * dtype.size else {
                throw fail("tensor '\(name)': shape \(shape) of \(dtype.rawValue) needs \(elements * dtype.size) bytes but data_offsets give \(end - begin)")
            }
            tensors.append(.init(name: name, dtype: dtype, shape: shape, byteRange: begin..<end))
        }
        tensors.sort { ($0.byteRange.lowerBound, $0.byteRange.upperBound) < ($1.byteRange.lowerBound, $1.byteRange.upperBound) }
        var position = 0
        for tensor in tensors {
            guard tensor.byteRange.lowerBound == position else {
                throw fail(tensor.byteRange.lowerBound < position
                    ? "tensor '\(tensor.name)' overlaps the tensor before it"
                    : "tensor '\(tensor.name)' leaves a gap in the data section at byte \(position)")
            }
            position = tensor.byteRange.upperBound
        }
        guard position == dataLength else {
            throw fail("data section has \(dataLength) bytes but the tensors cover \(position)")
        }
        return (metadata, tensors)
    }


    /// JSON numbers arrive as NSNumber; only exact non-negative integers are sizes.
    private static func nonNegativeInteger(_ value: Any) -> Int? {
        if let integer = value as? Int { return integer >= 0 ? integer : nil }
        guard let number = value as? NSNumber else { return nil }
        let double = number.doubleValue
        guard double >= 0, double < 9.0e15, double.rounded() == double else { return nil }
        return Int(double)
    }

    public func info(_ name: String) -> SafeTensors.TensorInfo? { index[name].map { tensors[$0] } }
    public var names: [String] { tensors.map(\.name) }

    private func require(_ name: String, shape: [Int]?) throws -> SafeTensors.TensorInfo {
        guard let info = info(name) else { throw SafeTensorsError("\(source): missing tensor '\(name)'") }
        if let shape, info.shape != shape {
            throw SafeTensorsError("\(source): tensor '\(name)' has shape \(info.shape), expected \(shape)")
        }
        return info
    }

    private func load<T>(_ info: SafeTensors.TensorInfo, as type: T.Type) -> [T] {
        let start = dataStart + info.byteRange.lowerBound
        return [T](unsafeUninitializedCapacity: info.elementCount) { buffer, count in
            bytes.withUnsafeBytes { raw in
                UnsafeMutableRawPointer(buffer.baseAddress!)
                    .copyMemory(from: raw.baseAddress! + start, byteCount: info.byteRange.count)
            }
            count = info.elementCount
        }
    }

    /// A floating-point tensor as Float32 (F64 is rounded), checked against `shape` when given.
    public func floats(_ name: String, shape: [Int]? = nil) throws -> [Float] {
        let info = try require(name, shape: shape)
        switch info.dtype {
        case .f32: return load(info, as: Float.self)
        case .f64: return load(info, as: Double.self).map(Float.init)
        default: throw SafeTensorsError("\(source): tensor '\(name)' is \(info.dtype.rawValue), expected F32")
        }
    }

    public func doubles(_ name: String, shape: [Int]? = nil) throws -> [Double] {
        let info = try require(name, shape: shape)
        switch info.dtype {
        case .f64: return load(info, as: Double.self)
        case .f32: return load(info, as: Float.self).map(Double.init)
        default: throw SafeTensorsError("\(source): tensor '\(name)' is \(info.dtype.rawValue), expected F64")
        }
    }

    /// An integer tensor (I64, I32, U8 or BOOL) widened to Int.
    public func integers(_ name: String, shape: [Int]? = nil) throws -> [Int] {
        let info = try require(name, shape: shape)
        switch info.dtype {
        case .i64: return load(info, as: Int64.self).map { Int($0) }
        case .i32: return load(info, as: Int32.self).map { Int($0) }
        case .u8, .bool: return load(info, as: UInt8.self).map { Int($0) }
        default: throw SafeTensorsError("\(source): tensor '\(name)' is \(info.dtype.rawValue), expected an integer dtype")
        }
    }

    /// Copies an F32 tensor straight into `destination` (no intermediate array).
    public func copyFloats(_ name: String, shape: [Int], into destination: UnsafeMutablePointer<Float>) throws {
        let info = try require(name, shape: shape)
        guard info.dtype == .f32 else {
            throw SafeTensorsError("\(source): tensor '\(name)' is \(info.dtype.rawValue), expected F32")
        }
        bytes.withUnsafeBytes { raw in
            UnsafeMutableRawPointer(destination).copyMemory(
                from: raw.baseAddress! + dataStart + info.byteRange.lowerBound, byteCount: info.byteRange.count)
        }
    }
}

/// Builds a safetensors file in memory.
public struct SafeTensorsWriter {
    /// A tensor's bytes: copied in, or borrowed from memory that outlives the write (a model's
    /// parameters), so that writing a large model does not hold a second copy of it.
    enum Bytes {
        case owned([UInt8])
        case borrowed(UnsafeRawBufferPointer)
        var count: Int {
            switch self {
            case let .owned(bytes): bytes.count
            case let .borrowed(pointer): pointer.count
            }
        }
        func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
            switch self {
            case let .owned(bytes): try bytes.withUnsafeBytes(body)
            case let .borrowed(pointer): try body(pointer)
            }
        }
    }

    private var entries: [(name: String, dtype: SafeTensors.DType, shape: [Int], bytes: Bytes)] = []
    public var metadata: [String: String]

    public init(metadata: [String: String] = [:]) { self.metadata = metadata }

    public mutating func add(_ name: String, dtype: SafeTensors.DType, shape: [Int], bytes: [UInt8]) {
        add(name, dtype: dtype, shape: shape, .owned(bytes))
    }

    mutating func add(_ name: String, dtype: SafeTensors.DType, shape: [Int], _ bytes: Bytes) {
        precondition(name != "__metadata__", "'__metadata__' is reserved")
        precondition(shape.reduce(1, *) * dtype.size == bytes.count, "tensor '\(name)': shape and byte count disagree")
        entries.append((name, dtype, shape, bytes))
    }

    /// Adds F32 data without copying it: `floats` must stay valid until the writer is done.
    public mutating func add(_ name: String, shape: [Int], borrowing floats: UnsafeBufferPointer<Float>) {
        add(name, dtype: .f32, shape: shape, .borrowed(UnsafeRawBufferPointer(floats)))
    }

    public mutating func add(_ name: String, shape: [Int], floats: UnsafeBufferPointer<Float>) {
        add(name, dtype: .f32, shape: shape, bytes: Array(UnsafeRawBufferPointer(floats)))
    }

    public mutating func add(_ name: String, shape: [Int], floats: [Float]) {
        floats.withUnsafeBufferPointer { add(name, shape: shape, floats: $0) }
    }

    public mutating func add(_ name: String, shape: [Int], doubles: [Double]) {
        add(name, dtype: .f64, shape: shape, bytes: doubles.withUnsafeBytes { Array($0) })
    }

    public mutating func add(_ name: String, shape: [Int], int64s: [Int64]) {
        add(name, dtype: .i64, shape: shape, bytes: int64s.withUnsafeBytes { Array($0) })
    }

    public mutating func add(_ name: String, shape: [Int], uint8s: [UInt8]) {
        add(name, dtype: .u8, shape: shape, bytes: uint8s)
    }

    /// The 8-byte length and the JSON header (padded to a multiple of 8).
    func headerBytes() -> [UInt8] {
        var header = "{"
        var offset = 0
        var fields: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.keys.sorted().map { "\(Self.jsonString($0)):\(Self.jsonString(metadata[$0]!))" }
            fields.append("\"__metadata__\":{\(pairs.joined(separator: ","))}")
        }
        for entry in entries {
            let shape = entry.shape.map(String.init).joined(separator: ",")
            fields.append("\(Self.jsonString(entry.name)):{\"dtype\":\"\(entry.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + entry.bytes.count)]}")
            offset += entry.bytes.count
        }
        header += fields.joined(separator: ",") + "}"
        var headerBytes = Array(header.utf8)
        // Pad with spaces to a multiple of 8 so the data section is aligned, as the Python library does.
        while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }
        var out: [UInt8] = []
        var length = UInt64(headerBytes.count)
        for _ in 0..<8 { out.append(UInt8(length & 0xFF)); length >>= 8 }
        return out + headerBytes
    }

    public func serialized() -> [UInt8] {
        var out = headerBytes()
        for entry in entries { entry.bytes.withUnsafeBytes { out += $0 } }
        return out
    }

    /// Writes the file atomically, tensor by tensor, without assembling it in memory.
    public func write(to path: String) throws {
        try AtomicFile.write(to: path) { fd in
            try AtomicFile.writeAll(fd, headerBytes())
            for entry in entries { try entry.bytes.withUnsafeBytes { try AtomicFile.writeAll(fd, $0) } }
        }
    }

    static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
