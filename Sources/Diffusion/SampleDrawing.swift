import Numerics

/// The per-step noise DDPM adds, drawn from a seed. Step `s` of a batch of `count` numbers
/// draws from a counter range of its own, so the noise of a step does not depend on the
/// steps before it: a rollout resumed mid-way, or repeated, draws the same.
public struct DDPMNoise: Sendable {
    public let seed: UInt64

    public init(seed: UInt64) { self.seed = seed }

    /// Fills `out` with step `step`'s `count` standard normal numbers (`Sampler`'s `fillNoise`).
    public func fill(step: Int, _ out: UnsafeMutablePointer<Float>, count: Int) {
        var generator = Philox(seed: seed, stream: 0xDD9, counter: UInt64(step * count))
        generator.fillNormal(out, count: count)
    }
}

/// Samples drawn from a model for people to look at: the sample endpoint's rows, and the
/// PNG grids a job renders at its checkpoints.
public enum SampleDrawing {
    /// x_T in `x` to samples, one array per row; DDPM's per-step noise comes from `seed`. Nil when `shouldStop` ended it.
    public static func denoise(_ x: FloatBuffer, model: ModelFile, conditions: Conditions, sampler: SamplerKind, steps: Int, guidance: Float,
                               seed: UInt64, shouldStop: () -> Bool = { false }) -> [[Float]]? {
        let count = conditions.count, D = model.config.sampleSize
        let completed = Sampler(model: ResMLP(config: model.config), kind: sampler, maxBatch: count).sample(
            parameters: model.parameters, x: x.pointer, batch: count, conditions: conditions, guidance: guidance, steps: steps,
            fillNoise: DDPMNoise(seed: seed).fill, shouldStop: shouldStop)
        guard completed else { return nil }
        return (0..<count).map { Array(UnsafeBufferPointer(start: x.pointer + $0 * D, count: D)) }
    }

    /// x_T of `count` samples drawn from `seed`, row after row: the sample endpoint's noise, which
    /// the sample grids and checkpoint grading use too, so their draws can be asked for again.
    public static func initialNoise(seed: UInt64, count: Int, config: ModelConfig) -> FloatBuffer {
        let x = FloatBuffer(count: count * config.sampleSize)
        var random = Philox(seed: seed, stream: 0x5A3E)
        random.fillNormal(x.pointer, count: x.count)
        return x
    }

    /// Whether samples of this shape can be shown as images.
    public static func isImage(_ shape: [Int]) -> Bool { shape.count == 3 && (shape[0] == 1 || shape[0] == 3) }

    /// A PNG grid of `columns` samples per condition row, with fixed noise, for image-shaped models.
    public static func grid(model: ModelFile, conditions: Conditions, columns: Int, steps: Int = 20, guidance: Float = 1, seed: UInt64 = 0) -> [UInt8]? {
        let shape = model.config.sampleShape
        guard isImage(shape) else { return nil }
        var rows: [Int] = []
        for row in 0..<conditions.count { rows += Array(repeating: row, count: columns) }
        let repeated = conditions.selecting(rows, config: model.config)
        let x = initialNoise(seed: seed, count: rows.count, config: model.config)
        guard let samples = denoise(x, model: model, conditions: repeated, sampler: .dpmpp2m, steps: steps, guidance: guidance, seed: seed)
        else { return nil }
        return PNG.grid(samples: samples, channels: shape[0], height: shape[1], width: shape[2], columns: columns,
                        scale: max(1, 64 / max(shape[1], shape[2])))
    }
}
