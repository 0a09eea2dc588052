import Foundation
@testable import Service
import TestSupport
import Testing

/// The data directory's artifact store: whole files or none, under the names the API serves.
@Suite struct ArtifactsTests {
    @Test func stagedArtifactsAppearWholeAndGoAway() throws {
        let root = temporaryPath("preftune-artifacts")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let artifacts = SharedDirectoryArtifacts(root: root)
        let model = Artifact.model("proj/tiny")
        #expect(!artifacts.exists(model))
        let staged = try artifacts.stagingPath(for: model)
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: staged))
        #expect(!artifacts.exists(model), "staged is not published")
        try artifacts.publish(staged: staged, as: model)
        #expect(artifacts.exists(model) && !FileManager.default.fileExists(atPath: staged))
        #expect(try Data(contentsOf: URL(fileURLWithPath: artifacts.localPath(model))) == Data([1, 2, 3]))
        // A job's result is published as a model and stays in the job's directory.
        let result = artifacts.workingDirectory(job: "ftjob-1").finalModel
        try FileManager.default.createDirectory(atPath: artifacts.workingDirectory(job: "ftjob-1").path, withIntermediateDirectories: true)
        try Data([9]).write(to: URL(fileURLWithPath: result))
        try artifacts.publish(copyOf: result, as: .model("proj/ft"))
        #expect(artifacts.exists(.model("proj/ft")) && FileManager.default.fileExists(atPath: result))
        artifacts.remove(model)
        #expect(!FileManager.default.fileExists(atPath: "\(root)/models/proj/tiny"), "a model goes with its directory")
        try artifacts.append(Data("a\n".utf8), to: .jobLog("ftjob-2"))
        try artifacts.append(Data("b\n".utf8), to: .jobLog("ftjob-2"))
        #expect(try String(contentsOfFile: artifacts.localPath(.jobLog("ftjob-2")), encoding: .utf8) == "a\nb\n")
        #expect(artifacts.localPath(.checkpoint(job: "ftjob-2", step: 30)).hasSuffix("jobs/ftjob-2/checkpoints/step-0000030.safetensors"))
    }
}
