import Foundation

/// Which checkpoint is best, and when to stop: a metric the job records (`val_loss`,
/// `reward_mean`, …), whether lower or higher is better, and how many evaluations without an
/// improvement of more than `minDelta` end the job (`patience`; nil selects without stopping).
public struct EarlyStopping: Codable, Equatable, Sendable {
    public enum Mode: String, Codable, Sendable, CaseIterable { case min, max }

    public var metric: String
    public var mode: Mode
    public var patience: Int?
    public var minDelta: Double

    public init(metric: String, mode: Mode, patience: Int?, minDelta: Double = 0) {
        self.metric = metric
        self.mode = mode
        self.patience = patience
        self.minDelta = minDelta
    }

    enum CodingKeys: String, CodingKey { case metric, mode, patience, minDelta = "min_delta" }

    /// The mode a metric is judged by when none is given: losses fall; rewards, win rates and accuracies rise.
    public static func defaultMode(for metric: String) -> Mode { metric.hasSuffix("loss") ? .min : .max }
}

/// The best value seen of the selection metric, where it was, and how long ago: part of the
/// training state, so a resumed job decides exactly as an uninterrupted one.
public struct CheckpointSelection: Codable, Equatable, Sendable {
    public let rule: EarlyStopping
    public private(set) var bestValue: Double?
    public private(set) var bestStep: Int?
    /// Evaluations of the metric since the best one.
    public private(set) var sinceBest = 0

    public init(rule: EarlyStopping) { self.rule = rule }

    public enum Verdict: Equatable, Sendable {
        /// A new best: this step's checkpoint is the one to keep.
        case improved
        case notImproved
        /// `patience` evaluations without an improvement: the job ends here.
        case stop
    }

    /// Judges `value` of the metric at `step`. Non-finite values never improve.
    public mutating func observe(_ value: Double, step: Int) -> Verdict {
        let better: Bool
        if let best = bestValue {
            better = rule.mode == .min ? value < best - rule.minDelta : value > best + rule.minDelta
        } else {
            better = value.isFinite
        }
        if better && value.isFinite {
            bestValue = value
            bestStep = step
            sinceBest = 0
            return .improved
        }
        sinceBest += 1
        if let patience = rule.patience, sinceBest >= patience { return .stop }
        return .notImproved
    }

    /// Why the job stopped, for its event.
    public var stopReason: String {
        let best = bestValue.map { String(format: "%.6g", $0) } ?? "none"
        return "\(rule.metric) did not improve by more than \(rule.minDelta) (\(rule.mode == .min ? "lower" : "higher") is better) in \(sinceBest) evaluations; best \(best) at step \(bestStep.map(String.init) ?? "none")"
    }
}

/// Which weights a finished job publishes as its model.
public enum ResultChoice: String, Codable, Sendable, CaseIterable {
    /// The best checkpoint by the selection metric (the last weights when nothing was measured).
    case best
    case last
}
