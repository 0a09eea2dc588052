import Foundation
import Numerics

/// A `resmlp` model on disk: a safetensors file with every parameter as F32
/// under its SPEC §2 name and the architecture in `__metadata__["config"]`.
/// Loads with `safetensors.torch.load_file` into a PyTorch module with these names.
public struct ModelFile {
    public let config: ModelConfig
    public let parameters: FloatBuffer
    public let metadata: [String: String]

    public init(config: ModelConfig, parameters: FloatBuffer, metadata: [String: String] = [:]) {
        self.config = config
        self.parameters = parameters
        self.metadata = metadata
    }

    /// Reads and checks a model file: the config must parse, and the tensors must be
    /// exactly the ones the config implies, each F32 of the right shape.
    public static func load(_ path: String) throws -> ModelFile {
        let file = try SafeTensorsFile(contentsOf: path)
        guard let configText = file.metadata["config"] else {
            throw SafeTensorsError("\(path): no model config in __metadata__[\"config\"]")
        }
        let config: ModelConfig
        do { config = try ModelConfig.parse(configText) } catch {
            throw SafeTensorsError("\(path): model config is invalid: \(error)")
        }
        let parameters = try loadParameters(file, config: config, prefix: "")
        return ModelFile(config: config, parameters: parameters, metadata: file.metadata)
    }

    /// The config a model file declares, read from its header alone (with `requireTensors`, after
    /// checking that its tensors are exactly the ones that config implies): a service checks the
    /// config against its limits before reading or allocating anything of the file.
    public static func declaredConfig(_ path: String, requireTensors: Bool = true) throws -> ModelConfig {
        let header = try SafeTensorsFile.readHeader(path: path)
        guard let configText = header.metadata["config"] else {
            throw SafeTensorsError("\(path): no model config in __metadata__[\"config\"]")
        }
        let config: ModelConfig
        do { config = try ModelConfig.parse(configText) } catch {
            throw SafeTensorsError("\(path): model config is invalid: \(error)")
        }
        guard requireTensors else { return config }
        let layout = ParameterLayout(config)
        let declared = Dictionary(header.tensors.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for entry in layout.entries {
            guard let tensor = declared[entry.name] else {
                if entry.name == "null_cond", config.condition == .none { continue }
                throw SafeTensorsError("\(path): missing tensor '\(entry.name)' required by the config")
            }
            guard tensor.shape == entry.shape, tensor.dtype == .f32 else {
                throw SafeTensorsError("\(path): tensor '\(entry.name)' is \(tensor.dtype.rawValue) \(tensor.shape), expected F32 \(entry.shape)")
            }
        }
        if let unexpected = header.tensors.first(where: { layout[$0.name] == nil }) {
            throw SafeTensorsError("\(path): tensor '\(unexpected.name)' does not belong to a resmlp with this config")
        }
        return config
    }

    /// Copies the parameters named `prefix + name` out of `file` into a fresh buffer in
    /// `config`'s layout. Unknown tensors under the prefix are an error: they mean the
    /// file was made for another architecture.
    public static func loadParameters(_ file: SafeTensorsFile, config: ModelConfig, prefix: String) throws -> FloatBuffer {
        let layout = ParameterLayout(config)
        // Every tensor is checked before the buffer is allocated: a small file declaring a huge
        // config must be an error, not an allocation of what the config implies.
        for entry in layout.entries {
            let name = prefix + entry.name
            if entry.name == "null_cond", config.condition == .none, file.info(name) == nil { continue }
            guard let info = file.info(name) else { throw SafeTensorsError("\(file.source): missing tensor '\(name)' required by the config") }
            guard info.shape == entry.shape else {
                throw SafeTensorsError("\(file.source): tensor '\(name)' has shape \(info.shape), expected \(entry.shape)")
            }
        }
        let parameters: FloatBuffer
        do { parameters = try FloatBuffer(allocating: layout.totalCount) } catch { throw SafeTensorsError("\(file.source): \(error)") }
        for entry in layout.entries {
            let name = prefix + entry.name
            // A model without a condition never reads null_cond; files may leave it out.
            if entry.name == "null_cond", config.condition == .none, file.info(name) == nil { continue }
            guard file.info(name) != nil else {
                throw SafeTensorsError("\(file.source): missing tensor '\(name)' required by the config")
            }
            try file.copyFloats(name, shape: entry.shape, into: parameters.pointer + entry.offset)
        }
        if prefix.isEmpty {
            let unexpected = file.names.filter { layout[$0] == nil }
            if let first = unexpected.first {
                throw SafeTensorsError("\(file.source): tensor '\(first)' does not belong to a resmlp with this config (\(unexpected.count) unexpected)")
            }
        }
        return parameters
    }

    public func serialized() -> [UInt8] { withWriter { $0.serialized() } }

    /// Writes atomically (temp file, fsync, rename), tensor by tensor from the parameters: no second copy in memory.
    public func write(to path: String) throws { try withWriter { try $0.write(to: path) } }

    /// A writer that borrows the parameters, valid inside `body`.
    func withWriter<R>(_ body: (SafeTensorsWriter) throws -> R) rethrows -> R {
        let layout = ParameterLayout(config)
        var writer = SafeTensorsWriter(metadata: metadata.merging(["config": config.json, "format": "pt"]) { _, new in new })
        // Python tools list tensors by name; write them in that order.
        for entry in layout.entries.sorted(by: { $0.name < $1.name }) {
            writer.add(entry.name, shape: entry.shape,
                       borrowing: UnsafeBufferPointer(start: parameters.pointer + entry.offset, count: entry.count))
        }
        return try withExtendedLifetime(parameters) { try body(writer) }
    }
}
