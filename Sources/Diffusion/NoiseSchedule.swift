import Foundation

/// β schedules and ᾱ_t = Π_{i≤t}(1 − β_i), as diffusers' DDPMScheduler computes
/// them (float32 linspace, float32 cumulative product).
public struct NoiseSchedule: Sendable {
    public struct Config: Codable, Equatable, Sendable {
        public var numTrainTimesteps: Int = 1000
        public var betaSchedule: String = "scaled_linear"
        public var betaStart: Double = 0.00085
        public var betaEnd: Double = 0.012

        public init(numTrainTimesteps: Int = 1000, betaSchedule: String = "scaled_linear",
                    betaStart: Double = 0.00085, betaEnd: Double = 0.012) {
            self.numTrainTimesteps = numTrainTimesteps
            self.betaSchedule = betaSchedule
            self.betaStart = betaStart
            self.betaEnd = betaEnd
        }

        enum CodingKeys: String, CodingKey {
            case numTrainTimesteps = "num_train_timesteps", betaSchedule = "beta_schedule"
            case betaStart = "beta_start", betaEnd = "beta_end"
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            numTrainTimesteps = try c.decodePresent(Int.self, forKey: .numTrainTimesteps) ?? 1000
            betaSchedule = try c.decodePresent(String.self, forKey: .betaSchedule) ?? "scaled_linear"
            betaStart = try c.decodePresent(Double.self, forKey: .betaStart) ?? 0.00085
            betaEnd = try c.decodePresent(Double.self, forKey: .betaEnd) ?? 0.012
        }

        public func validate() throws {
            guard (2...100_000).contains(numTrainTimesteps) else {
                throw ModelConfigError(param: "schedule.num_train_timesteps",
                                       message: "schedule.num_train_timesteps must be in 2...100000, got \(numTrainTimesteps)")
            }
            guard ["linear", "scaled_linear", "squaredcos_cap_v2"].contains(betaSchedule) else {
                throw ModelConfigError(param: "schedule.beta_schedule",
                                       message: "schedule.beta_schedule must be linear, scaled_linear or squaredcos_cap_v2, got \"\(betaSchedule)\"")
            }
            guard betaStart > 0, betaEnd > 0, betaStart < 1, betaEnd < 1 else {
                throw ModelConfigError(param: "schedule.beta_start",
                                       message: "schedule.beta_start and beta_end must be in (0, 1)")
            }
        }
    }

    public let config: Config
    public let betas: [Float]
    public let alphasCumprod: [Float]
    public var count: Int { betas.count }

    public init(_ config: Config) {
        self.config = config
        let steps = config.numTrainTimesteps
        var betas: [Float]
        switch config.betaSchedule {
        case "linear":
            betas = Self.linspace(Float(config.betaStart), Float(config.betaEnd), steps)
        case "scaled_linear":
            betas = Self.linspace(Float(config.betaStart.squareRoot()), Float(config.betaEnd.squareRoot()), steps).map { $0 * $0 }
        default:  // squaredcos_cap_v2, computed in float64 like diffusers' betas_for_alpha_bar
            func alphaBar(_ s: Double) -> Double { pow(cos((s + 0.008) / 1.008 * Double.pi / 2), 2) }
            betas = (0..<steps).map { i in
                Float(min(1 - alphaBar(Double(i + 1) / Double(steps)) / alphaBar(Double(i) / Double(steps)), 0.999))
            }
        }
        var product: Float = 1
        alphasCumprod = betas.map { beta in
            product *= (1 - beta)
            return product
        }
        self.betas = betas
    }

    /// torch.linspace in float32: the first half counts up from `start`, the second down from `end`.
    static func linspace(_ start: Float, _ end: Float, _ count: Int) -> [Float] {
        guard count > 1 else { return [start] }
        let step = (end - start) / Float(count - 1)
        let half = count / 2
        return (0..<count).map { i in i < half ? start + step * Float(i) : end - step * Float(count - i - 1) }
    }

    /// Forward noising x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε for `rows` rows of `width` values, each at its own t.
    public func addNoise(x0: UnsafePointer<Float>, noise: UnsafePointer<Float>, timesteps: UnsafePointer<Float>,
                         into xt: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        for row in 0..<rows {
            let alphaBar = alphasCumprod[Int(timesteps[row])]
            let signal = alphaBar.squareRoot(), noiseScale = (1 - alphaBar).squareRoot()
            for j in 0..<width {
                xt[row * width + j] = signal * x0[row * width + j] + noiseScale * noise[row * width + j]
            }
        }
    }
}
