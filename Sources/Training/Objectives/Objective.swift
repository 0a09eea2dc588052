import Diffusion
import Foundation
import Numerics

/// What an objective reports for one batch: the loss and its named statistics (SPEC §5).
public struct ObjectiveResult: Sendable {
    public var loss: Double
    public var statistics: [String: Double]
}

/// Everything an objective needs for one batch of `examples`. The workspace
/// inputs (x_t, t, condition) of all `examples × rowsPerExample` rows are filled,
/// example b's rows at b, b + examples, …, all with the same t and condition
/// (a pair shares them, SPEC §5), so the model computes their conditioning once;
/// `targets` holds each row's regression target ε.
public struct ObjectiveContext {
    public let model: ResMLP
    public let theta: FloatBuffer
    /// The frozen starting model of the job (nil for objectives that need none).
    public let reference: FloatBuffer?
    public let workspace: ResMLPWorkspace
    public let examples: Int
    public let targets: UnsafePointer<Float>
    /// KTO's per-example label.
    public let desirable: [Bool]
    public let scratch: ObjectiveScratch
    /// ∂L/∂θ is added here; nil evaluates the loss only (validation).
    public let gradients: FloatBuffer?

    public init(model: ResMLP, theta: FloatBuffer, reference: FloatBuffer?, workspace: ResMLPWorkspace, examples: Int,
                targets: UnsafePointer<Float>, desirable: [Bool] = [], scratch: ObjectiveScratch, gradients: FloatBuffer?) {
        self.model = model
        self.theta = theta
        self.reference = reference
        self.workspace = workspace
        self.examples = examples
        self.targets = targets
        self.desirable = desirable
        self.scratch = scratch
        self.gradients = gradients
    }
}

public protocol Objective: Sendable {
    /// Model rows per example: 1 (sft, kto) or 2 (a pair: dpo, rpo; expert and policy: dro).
    var rowsPerExample: Int { get }
    var needsReference: Bool { get }
    func lossAndGradient(_ context: ObjectiveContext) -> ObjectiveResult
}

/// Per-batch buffers shared by the objectives, allocated once per job.
public final class ObjectiveScratch {
    public let maxRows: Int
    let config: ModelConfig
    /// The reference model's activations: its forward pass runs beside θ's. Made on
    /// first use, so objectives without a reference do not hold them.
    private(set) lazy var referenceWorkspace = ResMLPWorkspace(config: config, maxBatch: maxRows)
    /// The reference model's condition vector of each example, [examples, H].
    let referenceCondition: FloatBuffer
    /// The job's second thread when OpenBLAS is set to two or more threads: it runs the
    /// reference forward beside θ's and half of AdamW and the gradient norm. Made on first use.
    public private(set) lazy var companion: CompanionThread? =
        BLASRuntime.configuredThreadCount >= 2 ? CompanionThread(name: "train-companion") : nil
    /// The reference model's weights packed for its products, made once per job (the reference
    /// never changes); remade if a different reference buffer comes.
    private var packedReference: PackedWeights?
    func packed(_ reference: FloatBuffer) -> PackedWeights {
        if let packedReference, packedReference.weights === reference { return packedReference }
        let made = PackedWeights(reference)
        packedReference = made
        return made
    }
    /// Per-row mean squared errors of θ and ref, and ∂L/∂mse_θ per row.
    var thetaMSE: [Double]
    var referenceMSE: [Double]
    var dMSE: [Double]
    /// The examples a backward pass runs on (`ObjectiveContext.backpropagateMSE`), kept here so
    /// that a step allocates none.
    var keptExamples: [Int]

    public init(config: ModelConfig, maxRows: Int) {
        self.maxRows = maxRows
        self.config = config
        referenceCondition = FloatBuffer(count: maxRows * config.hidden)
        thetaMSE = [Double](repeating: 0, count: maxRows)
        referenceMSE = [Double](repeating: 0, count: maxRows)
        dMSE = [Double](repeating: 0, count: maxRows)
        keptExamples = []
        keptExamples.reserveCapacity(maxRows)
    }
}

extension ObjectiveContext {
    var rowWidth: Int { model.config.sampleSize }

    /// mse(a, b) per row: the mean over D of (a − b)².
    static func rowMSE(_ prediction: UnsafePointer<Float>, _ target: UnsafePointer<Float>, rows: Int, width: Int,
                       into mse: inout [Double]) {
        for row in 0..<rows {
            var sum: Float = 0
            let p = prediction + row * width, t = target + row * width
            for j in 0..<width { let d = p[j] - t[j]; sum += d * d }
            mse[row] = Double(sum) / Double(width)
        }
    }

    /// Runs θ's forward pass and computes its per-row mse.
    func runTheta(rows: Int) {
        model.forward(theta, workspace, batch: rows, conditionRows: examples, keepingActivations: gradients != nil)
        Self.rowMSE(workspace.output.pointer, targets, rows: rows, width: rowWidth, into: &scratch.thetaMSE)
    }

    /// Runs the reference model and θ on the same inputs, side by side (each on its own
    /// workspace), and keeps both per-row mse and the reference's condition vectors.
    func runReferenceAndTheta(rows: Int) {
        guard let reference else { preconditionFailure("this objective needs the reference model") }
        let referenceWorkspace = scratch.referenceWorkspace, packedReference = scratch.packed(reference)
        referenceWorkspace.copyInputs(from: workspace, rows: rows)
        let runReference = { [model, examples] in
            packedReference.using {
                model.forward(reference, referenceWorkspace, batch: rows, conditionRows: examples, keepingActivations: false)
            }
        }
        if let companion = scratch.companion {
            companion.sideBySide({ runTheta(rows: rows) }, runReference)
        } else {
            runReference()
            runTheta(rows: rows)
        }
        Self.rowMSE(referenceWorkspace.output.pointer, targets, rows: rows, width: rowWidth, into: &scratch.referenceMSE)
        scratch.referenceCondition.pointer.update(from: referenceWorkspace.condition.pointer, count: examples * model.config.hidden)
    }

    /// Backpropagates ∂L/∂mse_θ (in `scratch.dMSE`) through θ:
    /// ∂L/∂out_ij = ∂L/∂mse_i · 2(out_ij − target_ij)/D.
    /// Examples whose rows all have ∂L/∂mse = 0 add nothing to the gradient — a DRO pair whose
    /// hinge is inactive, 19–38 % of the pairs in ShapeWorld fine-tuning — so the
    /// backward pass runs on the others alone (`ResMLPWorkspace.narrowed`): the same sums
    /// without their zero terms, rounded as products over fewer rows round.
    func backpropagateMSE(rows: Int) {
        guard let gradients else { return }
        let D = rowWidth, perExample = rows / examples
        var kept: [Int] = []
        swap(&kept, &scratch.keptExamples)  // held alone while it changes, so its storage is reused
        defer { swap(&kept, &scratch.keptExamples) }
        kept.removeAll(keepingCapacity: true)
        for b in 0..<examples where (0..<perExample).contains(where: { scratch.dMSE[$0 * examples + b] != 0 }) { kept.append(b) }
        if kept.isEmpty { return }
        let out = workspace.output.pointer, dOut = workspace.outputGradient.pointer
        for copy in 0..<perExample {
            for (j, b) in kept.enumerated() {
                let row = copy * examples + b, keptRow = copy * kept.count + j
                let scale = Float(scratch.dMSE[row] * 2 / Double(D))
                for i in 0..<D { dOut[keptRow * D + i] = scale * (out[row * D + i] - targets[row * D + i]) }
            }
        }
        func backward() { model.backward(theta, workspace, batch: kept.count * perExample, dOutput: dOut, gradients: gradients) }
        if kept.count == examples { backward() } else { workspace.narrowed(to: kept, of: examples, rowsPerExample: perExample, backward) }
    }
}

/// log σ(z), stable for large |z|.
@inline(__always) func logSigmoid(_ z: Double) -> Double { z >= 0 ? -Foundation.log1p(Foundation.exp(-z)) : z - Foundation.log1p(Foundation.exp(z)) }
@inline(__always) func sigmoid(_ z: Double) -> Double { z >= 0 ? 1 / (1 + Foundation.exp(-z)) : Foundation.exp(z) / (1 + Foundation.exp(z)) }
