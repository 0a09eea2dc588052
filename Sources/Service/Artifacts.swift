import Foundation
import Numerics
import Training

/// What preftune keeps besides the database, by name: what the database's rows refer to
/// and the API serves. Where each lives is the `ArtifactStore`'s business alone.
public enum Artifact: Hashable, Sendable {
    /// An uploaded file, as sent.
    case upload(String)
    /// A model's weights, by its storage key (base models and fine-tuned results).
    case model(String)
    /// A job's log.
    case jobLog(String)
    /// A job's weights at a checkpoint.
    case checkpoint(job: String, step: Int)
    /// The sample grid drawn at a checkpoint (image-shaped models).
    case sampleGrid(job: String, step: Int)
    /// The full training state at a checkpoint, which a fork starts from.
    case trainingState(job: String, step: Int)
    /// A fork's starting state (its parent's at the chosen step), or the weights of a checkpoint
    /// a job starts from, copied into the job's directory when the job is made.
    case forkState(job: String)
    case startingWeights(job: String)
}

/// Where artifacts live, behind one interface: every read, write and removal of an
/// artifact by the API and the workers goes through it. `SharedDirectoryArtifacts` keeps
/// them in the data directory, shared by every node of a fleet (e.g. over NFS).
///
/// The interface is shaped for a store without a file system too: a new artifact is staged
/// locally and published whole; a reader asks for a local path to read from (a file system
/// hands out the artifact's own, for zero-copy sends and memory-mapped models; an object store
/// would fetch to a local cache); a running job trains in a working directory on local disk
/// (an object store would publish its checkpoints as they are written).
public protocol ArtifactStore: Sendable {
    /// A path on this machine to read the artifact from, whether or not it exists yet.
    func localPath(_ artifact: Artifact) -> String
    func exists(_ artifact: Artifact) -> Bool
    /// A new, empty place to write an artifact's content before `publish`.
    func stagingPath(for artifact: Artifact) throws -> String
    /// The staged file becomes the artifact, whole: a reader sees the previous one or this one.
    func publish(staged: String, as artifact: Artifact) throws
    /// A finished file elsewhere becomes the artifact as well, and stays where it is.
    func publish(copyOf path: String, as artifact: Artifact) throws
    /// Removes the artifact (and, for a model, everything stored with it); absent is fine.
    func remove(_ artifact: Artifact)
    /// Appends to a log artifact, in one write; readers follow it by offset.
    func append(_ data: Data, to artifact: Artifact) throws
    /// The working directory of a job: where its trainer writes checkpoints, grids, its
    /// training state and its log as it runs.
    func workingDirectory(job: String) -> JobDirectory
}

/// Artifacts as files in the data directory: `files/`, `models/<key>/`, `jobs/<id>/`. Every
/// file is written under a temporary name, synced and renamed, so a reader on any machine
/// sharing the directory sees a whole file or none.
public struct SharedDirectoryArtifacts: ArtifactStore {
    public let root: String

    public init(root: String) { self.root = root }

    public func localPath(_ artifact: Artifact) -> String {
        switch artifact {
        case let .upload(id): "\(root)/files/\(id)"
        case let .model(key): "\(modelDirectory(key))/model.safetensors"
        case let .jobLog(job): workingDirectory(job: job).log
        case let .checkpoint(job, step): workingDirectory(job: job).checkpoint(step: step)
        case let .sampleGrid(job, step): workingDirectory(job: job).sampleGrid(step: step)
        case let .trainingState(job, step): workingDirectory(job: job).state(step: step)
        case let .forkState(job): workingDirectory(job: job).forkState
        case let .startingWeights(job): workingDirectory(job: job).startingWeights
        }
    }

    func modelDirectory(_ key: String) -> String { "\(root)/models/\(key)" }

    public func workingDirectory(job: String) -> JobDirectory { JobDirectory("\(root)/jobs/\(job)") }

    public func exists(_ artifact: Artifact) -> Bool { FileManager.default.fileExists(atPath: localPath(artifact)) }

    /// Beside the artifact's place (a rename stays on one file system), under a hidden name.
    public func stagingPath(for artifact: Artifact) throws -> String {
        let target = localPath(artifact)
        let directory = (target as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return "\(directory)/.staged-\(UUID().uuidString.prefix(12))-\((target as NSString).lastPathComponent)"
    }

    public func publish(staged: String, as artifact: Artifact) throws {
        let target = localPath(artifact)
        let descriptor = open(staged, O_RDONLY | O_CLOEXEC)
        if descriptor >= 0 {
            fsync(descriptor)
            close(descriptor)
        }
        guard rename(staged, target) == 0 else { throw ArtifactError("cannot store \(target): \(String(cString: strerror(errno)))") }
    }

    /// A hard link where the file system allows (no copy of a large model), else a copy.
    public func publish(copyOf path: String, as artifact: Artifact) throws {
        let target = localPath(artifact)
        try FileManager.default.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try? FileManager.default.removeItem(atPath: target)
        if link(path, target) != 0 {
            try AtomicFile.write(Array(try Data(contentsOf: URL(fileURLWithPath: path))), to: target)
        }
    }

    public func remove(_ artifact: Artifact) {
        switch artifact {
        case let .model(key): try? FileManager.default.removeItem(atPath: modelDirectory(key))
        default: try? FileManager.default.removeItem(atPath: localPath(artifact))
        }
    }

    public func append(_ data: Data, to artifact: Artifact) throws {
        let path = localPath(artifact)
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw ArtifactError("cannot append to \(path): \(String(cString: strerror(errno)))") }
        try FileHandle(fileDescriptor: descriptor, closeOnDealloc: true).write(contentsOf: data)
    }
}

public struct ArtifactError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
