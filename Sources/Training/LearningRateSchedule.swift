import Foundation

/// Learning-rate schedules with diffusers' `get_scheduler` semantics: the
/// multiplier of the base rate for the update at `step` (0 for the first update).
public enum LearningRateSchedule: String, Codable, Sendable, CaseIterable {
    case constant
    case constantWithWarmup = "constant_with_warmup"
    case linear
    case cosine

    public func multiplier(step: Int, warmupSteps: Int, totalSteps: Int) -> Double {
        if self != .constant, step < warmupSteps {
            return Double(step) / Double(max(1, warmupSteps))
        }
        switch self {
        case .constant, .constantWithWarmup:
            return 1
        case .linear:
            return max(0, Double(totalSteps - step) / Double(max(1, totalSteps - warmupSteps)))
        case .cosine:
            // num_cycles = 0.5: a half cosine from 1 down to 0.
            let progress = Double(step - warmupSteps) / Double(max(1, totalSteps - warmupSteps))
            return max(0, 0.5 * (1 + cos(Double.pi * 2 * 0.5 * progress)))
        }
    }
}
