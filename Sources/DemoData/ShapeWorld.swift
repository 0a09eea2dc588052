import Diffusion
import Foundation
import Numerics

/// A procedural text-to-image world for demos and alignment tests: small RGB
/// images (C·H·W, values in [−1, 1], black background) of a coloured shape at a
/// named position, prompted as "red circle left". Each image also has a hidden
/// style — how vivid its colour is, v ∈ [0.2, 1] — that prompts never mention
/// and that `reward` measures: the preference the fine-tuning methods must learn.
public struct ShapeWorld: Sendable {
    public static let colors: [(name: String, rgb: (Float, Float, Float))] = [
        ("red", (1, 0, 0)), ("green", (0, 1, 0)), ("blue", (0, 0, 1)),
        ("yellow", (1, 1, 0)), ("magenta", (1, 0, 1)), ("cyan", (0, 1, 1)),
    ]
    public static let shapes = ["square", "circle", "cross"]
    public static let positions = ["left", "right", "top", "bottom", "center"]

    public let size: Int
    public init(size: Int = 8) {
        precondition(size >= 8, "images of at least 8×8")
        self.size = size
    }

    public var sampleShape: [Int] { [3, size, size] }
    public var sampleSize: Int { 3 * size * size }

    public struct Scene: Sendable, Equatable {
        public var color: Int, shape: Int, position: Int
        /// The hidden style: colour intensity in [0, 1].
        public var vividness: Float
        public var prompt: String { "\(ShapeWorld.colors[color].name) \(ShapeWorld.shapes[shape]) \(ShapeWorld.positions[position])" }

        public init(color: Int, shape: Int, position: Int, vividness: Float) {
            self.color = color
            self.shape = shape
            self.position = position
            self.vividness = vividness
        }

        /// The scene a prompt names ("red circle left"); vividness, which prompts do not name, is 1.
        public init?(prompt: String) {
            let words = prompt.split(separator: " ").map(String.init)
            guard words.count == 3, let color = ShapeWorld.colors.firstIndex(where: { $0.name == words[0] }),
                  let shape = ShapeWorld.shapes.firstIndex(of: words[1]), let position = ShapeWorld.positions.firstIndex(of: words[2])
            else { return nil }
            self.init(color: color, shape: shape, position: position, vividness: 1)
        }
    }

    /// The centre of each named position, in pixels (x, y).
    func anchor(_ position: Int) -> (Float, Float) {
        let low = Float(size) * 0.27, high = Float(size) * 0.73, middle = Float(size - 1) / 2
        switch ShapeWorld.positions[position] {
        case "left": return (low - 0.5, middle)
        case "right": return (high - 0.5, middle)
        case "top": return (middle, low - 0.5)
        case "bottom": return (middle, high - 0.5)
        default: return (middle, middle)
        }
    }

    public func randomScene(_ random: inout Philox, vividness: ClosedRange<Float> = 0.2...1) -> Scene {
        Scene(color: random.nextInt(below: ShapeWorld.colors.count), shape: random.nextInt(below: ShapeWorld.shapes.count),
              position: random.nextInt(below: ShapeWorld.positions.count),
              vividness: vividness.lowerBound + (vividness.upperBound - vividness.lowerBound) * random.nextUniform())
    }

    /// Draws a scene: the shape, about a quarter of the image wide, in its colour scaled by vividness.
    public func render(_ scene: Scene) -> [Float] {
        var image = [Float](repeating: -1, count: sampleSize)
        let (cx, cy) = anchor(scene.position)
        let radius = Float(size) * 0.2
        let rgb = ShapeWorld.colors[scene.color].rgb
        let channels = [rgb.0, rgb.1, rgb.2]
        for y in 0..<size {
            for x in 0..<size {
                let dx = Float(x) - cx, dy = Float(y) - cy
                let inside: Bool
                switch ShapeWorld.shapes[scene.shape] {
                case "square": inside = abs(dx) <= radius && abs(dy) <= radius
                case "circle": inside = dx * dx + dy * dy <= radius * radius * 1.3
                default: inside = (abs(dx) <= radius * 0.45 && abs(dy) <= radius * 1.2) || (abs(dy) <= radius * 0.45 && abs(dx) <= radius * 1.2)
                }
                guard inside else { continue }
                for c in 0..<3 { image[c * size * size + y * size + x] = -1 + 2 * scene.vividness * channels[c] }
            }
        }
        return image
    }

    // MARK: - Reward and prompt following

    /// Pixels brighter than this (in their brightest channel) are foreground.
    static let foregroundThreshold: Float = -0.7

    /// The preferred style: the mean brightness, in [0, 1], of the foreground's
    /// brightest channel (equals v on a rendered scene); 0 for an empty image.
    public func reward(_ image: UnsafePointer<Float>) -> Double {
        let plane = size * size
        var total = 0.0, count = 0
        for p in 0..<plane {
            let brightest = max(image[p], image[plane + p], image[2 * plane + p])
            if brightest > Self.foregroundThreshold {
                total += Double((brightest + 1) / 2)
                count += 1
            }
        }
        return count > 0 ? min(1, total / Double(count)) : 0
    }

    /// Whether an image shows what the prompt asked: the foreground's mean colour is
    /// nearest the prompted colour, and its centroid nearest the prompted position.
    public func followsPrompt(_ image: UnsafePointer<Float>, scene: Scene) -> Bool {
        let plane = size * size
        var sum = (Float(0), Float(0), Float(0)), weight: Float = 0, centroid = (Float(0), Float(0))
        for p in 0..<plane {
            let r = (image[p] + 1) / 2, g = (image[plane + p] + 1) / 2, b = (image[2 * plane + p] + 1) / 2
            let brightest = max(r, g, b) * 2 - 1
            guard brightest > Self.foregroundThreshold else { continue }
            let w = max(r, g, b)
            sum = (sum.0 + r * w, sum.1 + g * w, sum.2 + b * w)
            centroid = (centroid.0 + w * Float(p % size), centroid.1 + w * Float(p / size))
            weight += w
        }
        guard weight > 0 else { return false }
        func cosine(_ a: (Float, Float, Float), _ b: (Float, Float, Float)) -> Float {
            let dot = a.0 * b.0 + a.1 * b.1 + a.2 * b.2
            return dot / max(1e-6, (a.0 * a.0 + a.1 * a.1 + a.2 * a.2).squareRoot() * (b.0 * b.0 + b.1 * b.1 + b.2 * b.2).squareRoot())
        }
        let color = (0..<ShapeWorld.colors.count).max { cosine(sum, ShapeWorld.colors[$0].rgb) < cosine(sum, ShapeWorld.colors[$1].rgb) }!
        let center = (centroid.0 / weight, centroid.1 / weight)
        let position = (0..<ShapeWorld.positions.count).min { a, b in
            let pa = anchor(a), pb = anchor(b)
            return (pa.0 - center.0) * (pa.0 - center.0) + (pa.1 - center.1) * (pa.1 - center.1)
                < (pb.0 - center.0) * (pb.0 - center.0) + (pb.1 - center.1) * (pb.1 - center.1)
        }!
        return color == scene.color && position == scene.position
    }

    // MARK: - Datasets (SPEC §8 JSONL)

    public enum Kind: String, CaseIterable, Sendable {
        /// Scenes of every vividness: what a base model learns from.
        case pretrain
        /// The top of the reward (v ≥ 0.9): demonstrations for sft fine-tuning and dro.
        case expert
        /// Same prompt, two vividnesses; the more vivid one is chosen (dpo, rpo).
        case pairs
        /// Scenes labelled desirable when v ≥ 0.6 (kto).
        case labelled
    }

    /// `count` JSONL lines of one kind, deterministic in `seed`.
    public func dataset(_ kind: Kind, count: Int, seed: UInt64) -> String {
        var random = Philox(seed: seed, stream: UInt64(Kind.allCases.firstIndex(of: kind)!) + 0x5CE)
        var lines: [String] = []
        lines.reserveCapacity(count)
        func array(_ values: [Float]) -> String { "[" + values.map { String(format: "%.4g", $0) }.joined(separator: ",") + "]" }
        for _ in 0..<count {
            switch kind {
            case .pretrain:
                let scene = randomScene(&random)
                lines.append(#"{"prompt":"\#(scene.prompt)","sample":\#(array(render(scene)))}"#)
            case .expert:
                let scene = randomScene(&random, vividness: 0.9...1)
                lines.append(#"{"prompt":"\#(scene.prompt)","sample":\#(array(render(scene)))}"#)
            case .pairs:
                var first = randomScene(&random), second = first
                second.vividness = 0.2 + 0.8 * random.nextUniform()
                if second.vividness > first.vividness { swap(&first, &second) }
                lines.append(#"{"prompt":"\#(first.prompt)","chosen":\#(array(render(first))),"rejected":\#(array(render(second)))}"#)
            case .labelled:
                let scene = randomScene(&random)
                lines.append(#"{"prompt":"\#(scene.prompt)","sample":\#(array(render(scene))),"desirable":\#(scene.vividness >= 0.6)}"#)
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// A text model suited to this world's images and prompts. `hidden` must be at least the
    /// sample size (3·size²): the model predicts ε through an H-wide stream.
    public func modelConfig(hidden: Int = 256, depth: Int = 3) -> ModelConfig {
        ModelConfig(sampleShape: sampleShape, hidden: hidden, depth: depth, mlpRatio: 2, timeFreqDim: 32,
                    condition: .text(vocab: 64, maxTokens: 4))
    }
}
