import Foundation

/// A job's files under one directory, and the only place their names are decided:
/// the log, the checkpoints' weights and sample grids, the training state a resume starts
/// from, and the final model. The trainer writes most of them; the service serves them.
public struct JobDirectory: Sendable, Equatable {
    public let path: String

    public init(_ path: String) { self.path = path }

    public var log: String { "\(path)/log.txt" }
    public var checkpoints: String { "\(path)/checkpoints" }
    /// The weights written at checkpoint `step` (EMA weights when EMA is on).
    public func checkpoint(step: Int) -> String { String(format: "%@/step-%07d.safetensors", checkpoints, step) }
    public var samples: String { "\(path)/samples" }
    /// The sample grid of checkpoint `step`, for image-shaped models.
    public func sampleGrid(step: Int) -> String { String(format: "%@/step-%07d.png", samples, step) }
    public var stateDirectory: String { "\(path)/state" }
    /// The training state a resumed run starts from.
    public var state: String { "\(stateDirectory)/latest.safetensors" }
    /// The training state at checkpoint `step` (a fork of the job at that step starts from it).
    public func state(step: Int) -> String { String(format: "%@/step-%07d.safetensors", stateDirectory, step) }
    /// A fork's starting state: its parent's at the chosen checkpoint, copied when the fork is made.
    public var forkState: String { "\(stateDirectory)/fork.safetensors" }
    /// A job started from a checkpoint: the checkpoint's weights, copied when the job is made.
    public var startingWeights: String { "\(path)/base.safetensors" }
    /// The weights a finished job publishes as its model.
    public var finalModel: String { "\(path)/model.safetensors" }
}
