import Foundation
import Numerics

/// The `resmlp` conditional noise predictor ε_θ(x, t, c) of SPEC §2, forward
/// and backward by hand (no autograd), in the manner of llm.c: one parameter
/// buffer, one gradient buffer, activations in a workspace allocated once.
///
/// Forward, batch of B, all row-major:
///   φ(t) = [cos(t·f_k), sin(t·f_k)],  f_k = exp(−ln(10000)·k/(F/2))
///   e = time_mlp.2(SiLU(time_mlp.0(φ)));  s = SiLU(e + c)
///   h = in_proj(x)
///   per block: [scale | shift] = mod(s);  u = LN(h)·(1 + scale) + shift;  h += fc2(SiLU(fc1(u)))
///   out = out_proj(LN(h))
public struct ResMLP: Sendable {
    public let config: ModelConfig
    public let layout: ParameterLayout
    let offsets: Offsets
    /// f_k for k = 0…F/2−1.
    let frequencies: [Float]
    /// φ(t) for every integer t < T, [T, F]: training and sampling use integer
    /// timesteps, and a row copy is much cheaper than F sin/cos evaluations.
    let timeFeatureTable: [Float]

    public init(config: ModelConfig) {
        self.config = config
        self.layout = ParameterLayout(config)
        self.offsets = Offsets(layout: layout, config: config)
        let half = config.timeFreqDim / 2
        // Float32 throughout, as the PyTorch reference: exp(−ln(10000)·k / half).
        let logScale = Float(-Foundation.log(10000.0))
        let frequencies = (0..<half).map { k in Float(Foundation.exp(Double(logScale * Float(k) / Float(half)))) }
        self.frequencies = frequencies
        var table = [Float](repeating: 0, count: config.schedule.numTrainTimesteps * 2 * half)
        for t in 0..<config.schedule.numTrainTimesteps {
            for k in 0..<half {
                let argument = Double(Float(t) * frequencies[k])
                table[t * 2 * half + k] = Float(cos(argument))
                table[t * 2 * half + half + k] = Float(sin(argument))
            }
        }
        timeFeatureTable = table
    }

    public var parameterCount: Int { layout.totalCount }

    public func makeWorkspace(maxBatch: Int) -> ResMLPWorkspace { ResMLPWorkspace(config: config, maxBatch: maxBatch) }

    /// Fresh parameters initialised as SPEC §2, from `seed`.
    public func initialParameters(seed: UInt64) -> FloatBuffer {
        let parameters = FloatBuffer(count: layout.totalCount)
        var random = Philox(seed: seed, stream: 0x1A17)
        for entry in layout.entries {
            let p = parameters.pointer + entry.offset
            switch entry.initialization {
            case .zeros: p.update(repeating: 0, count: entry.count)
            case .ones: p.update(repeating: 1, count: entry.count)
            case let .normal(std): random.fillNormal(p, count: entry.count, std: std)
            case .uniformFanIn:
                let bound = 1 / Float(entry.fanIn).squareRoot()
                random.fillUniform(p, count: entry.count, low: -bound, high: bound)
            }
        }
        return parameters
    }

    /// Byte offsets of every parameter the forward pass touches.
    struct Offsets: Sendable {
        struct Block: Sendable { let norm: (weight: Int, bias: Int), fc1: (weight: Int, bias: Int), fc2: (weight: Int, bias: Int) }
        let time0: (weight: Int, bias: Int), time2: (weight: Int, bias: Int)
        let condEmbed: Int?, condProj: (weight: Int, bias: Int)?, nullCond: Int
        let inProj: (weight: Int, bias: Int)
        /// blocks.0.mod.weight; the others follow it ([depth·2H, H] in all).
        let modWeight: Int, modBias: Int
        let blocks: [Block]
        let outNorm: (weight: Int, bias: Int), outProj: (weight: Int, bias: Int)

        init(layout: ParameterLayout, config: ModelConfig) {
            func pair(_ name: String) -> (weight: Int, bias: Int) {
                (layout.offset(of: "\(name).weight"), layout.offset(of: "\(name).bias"))
            }
            time0 = pair("time_mlp.0")
            time2 = pair("time_mlp.2")
            condEmbed = layout["cond_embed.weight"]?.offset
            condProj = layout["cond_proj.weight"] != nil ? pair("cond_proj") : nil
            nullCond = layout.offset(of: "null_cond")
            inProj = pair("in_proj")
            modWeight = layout.offset(of: "blocks.0.mod.weight")
            modBias = layout.offset(of: "blocks.0.mod.bias")
            blocks = (0..<config.depth).map { i in
                Block(norm: pair("blocks.\(i).norm"), fc1: pair("blocks.\(i).fc1"), fc2: pair("blocks.\(i).fc2"))
            }
            outNorm = pair("out_norm")
            outProj = pair("out_proj")
        }
    }

    // MARK: - Time features

    /// φ(t) for each row: cos in the first F/2 columns, sin in the last.
    func timeFeatures(_ timesteps: UnsafePointer<Float>, into phi: UnsafeMutablePointer<Float>, batch: Int) {
        let half = frequencies.count
        let steps = config.schedule.numTrainTimesteps
        for b in 0..<batch {
            let t = timesteps[b]
            if t >= 0, t < Float(steps), t == t.rounded(.towardZero) {
                timeFeatureTable.withUnsafeBufferPointer { table in
                    (phi + b * 2 * half).update(from: table.baseAddress! + Int(t) * 2 * half, count: 2 * half)
                }
                continue
            }
            for k in 0..<half {
                let argument = Double(t * frequencies[k])
                phi[b * 2 * half + k] = Float(cos(argument))
                phi[b * 2 * half + half + k] = Float(sin(argument))
            }
        }
    }

    // MARK: - Condition vector (SPEC §2 step 3)

    /// c for each row: mean token embedding, projected vector, or null_cond; zeros for `none`.
    func conditionForward(_ p: UnsafePointer<Float>, _ ws: ResMLPWorkspace, batch: Int) {
        let H = config.hidden
        let c = ws.condition.pointer
        switch config.condition {
        case let .text(_, maxTokens):
            let embedding = p + offsets.condEmbed!
            ws.tokens.withUnsafeBufferPointer { tokens in
                for b in 0..<batch {
                    let row = c + b * H
                    row.update(repeating: 0, count: H)
                    var count = 0
                    for slot in 0..<maxTokens {
                        let id = Int(tokens[b * maxTokens + slot])
                        if id == 0 { continue }
                        Elementwise.add(embedding + id * H, into: row, count: H)
                        count += 1
                    }
                    ws.tokenCounts[b] = count
                    if count == 0 {
                        row.update(from: p + offsets.nullCond, count: H)
                    } else {
                        Elementwise.scale(row, by: 1 / Float(count), count: H)
                    }
                }
            }
        case let .vector(dim):
            let projection = offsets.condProj!
            BLAS.sgemm(transB: true, m: batch, n: H, k: dim, a: ws.conditionInput.pointer, lda: dim,
                       b: p + projection.weight, ldb: dim, c: c, ldc: H)
            Elementwise.addBias(p + projection.bias, to: c, rows: batch, columns: H, stride: H)
            for b in 0..<batch where ws.conditionIsNull[b] != 0 {
                (c + b * H).update(from: p + offsets.nullCond, count: H)
            }
        case .none:
            c.update(repeating: 0, count: batch * H)
        }
    }

    /// Routes ∂L/∂c back to the embedding rows, the projection, or null_cond.
    func conditionBackward(_ dC: UnsafeMutablePointer<Float>, _ ws: ResMLPWorkspace, batch: Int,
                           gradients g: UnsafeMutablePointer<Float>) {
        let H = config.hidden
        switch config.condition {
        case let .text(_, maxTokens):
            let dEmbedding = g + offsets.condEmbed!
            ws.tokens.withUnsafeBufferPointer { tokens in
                for b in 0..<batch {
                    let count = ws.tokenCounts[b]
                    if count == 0 {
                        Elementwise.add(dC + b * H, into: g + offsets.nullCond, count: H)
                        continue
                    }
                    let share = 1 / Float(count)
                    for slot in 0..<maxTokens {
                        let id = Int(tokens[b * maxTokens + slot])
                        if id != 0 { Elementwise.addScaled(dC + b * H, share, into: dEmbedding + id * H, count: H) }
                    }
                }
            }
        case let .vector(dim):
            // Null rows took null_cond instead of the projection: their gradient goes there.
            for b in 0..<batch where ws.conditionIsNull[b] != 0 {
                Elementwise.add(dC + b * H, into: g + offsets.nullCond, count: H)
                (dC + b * H).update(repeating: 0, count: H)
            }
            let projection = offsets.condProj!
            BLAS.sgemm(transA: true, m: H, n: dim, k: batch, a: dC, lda: H, b: ws.conditionInput.pointer, ldb: dim,
                       beta: 1, c: g + projection.weight, ldc: dim)
            Elementwise.accumulateColumnSums(dC, rows: batch, columns: H, stride: H, into: g + projection.bias)
        case .none:
            break
        }
    }

    // MARK: - Forward

    /// Runs the model on the first `batch` rows of the workspace inputs; the prediction is in `ws.output`.
    ///
    /// With `conditionRows` G < batch, row r shares its timestep and condition with row
    /// r mod G (a DPO pair, DRO's expert and policy rows), so the path that depends only
    /// on (t, c) — time MLP, condition vector, all blocks' modulation — runs on the first
    /// G rows and is reused: a pair costs 10–18 % fewer FLOPs. Gradients are the same
    /// sums, taken per shared row.
    ///
    /// Without `keepingActivations` (sampling, the reference model, validation: no backward pass
    /// follows) the SiLU layers keep only their output, and on oneDNN each SiLU is its product's
    /// post-op rather than a pass of its own. Such a pass also finds for itself the rows whose
    /// timestep and condition vector are the same bits (a sample request's n samples of a prompt,
    /// classifier-free guidance's null rows, a rollout's repeated prompts) and runs the
    /// conditioning path once for each: the time MLP and the modulation products are a fifth of
    /// a bench-m row's FLOPs. Each row's output is the one it would get alone, up to how the
    /// products round over fewer rows.
    public func forward(_ parameters: FloatBuffer, _ ws: ResMLPWorkspace, batch: Int, conditionRows: Int? = nil,
                        keepingActivations: Bool = true) {
        precondition(parameters.count == layout.totalCount, "parameters do not match this model")
        precondition(batch <= ws.maxBatch, "batch \(batch) exceeds the workspace's \(ws.maxBatch)")
        let G = conditionRows ?? batch
        precondition(G > 0 && batch % G == 0, "\(G) condition rows do not divide a batch of \(batch)")
        precondition(G == batch || ws.rowsShareConditioning(batch: batch, conditionRows: G, config: config),
                     "rows sharing their conditioning must have the same timestep and condition")
        ws.conditionRows = G
        let p = UnsafePointer(parameters.pointer)
        let B = batch, H = config.hidden, F = config.timeFreqDim, D = config.sampleSize, M = config.mlpHidden
        let modWidth = 2 * H * config.depth

        // The conditioning path runs on U rows, and row b reads modulation row ws.modulationRows[b]:
        // b mod G, or (a pass with no backward) its first row of the same timestep and condition.
        conditionForward(p, ws, batch: G)
        let U = G == B && !keepingActivations ? ws.findSharedConditioning(batch: B, hidden: H) : ws.shareConditioning(batch: B, conditionRows: G)
        let shared = U < G

        // 1–2. Time embedding e. Shared rows run the time MLP once for each distinct timestep
        // among them (a sampler step has one), row k's being row timeRows[k] of its output.
        let T = shared ? ws.findSharedTimesteps(conditioningRows: U) : U
        if shared {
            ws.conditioningTimesteps.withUnsafeBufferPointer { timeFeatures($0.baseAddress!, into: ws.timeFeatures.pointer, batch: T) }
        } else {
            timeFeatures(ws.timesteps.pointer, into: ws.timeFeatures.pointer, batch: U)
        }
        linearSiLU(p, offsets.time0, input: ws.timeFeatures.pointer, inputs: F, slope: ws.time0Slope.pointer,
                   output: ws.time0Activation.pointer, outputs: H, batch: T, keepingActivations: keepingActivations)
        linear(p, offsets.time2, input: ws.time0Activation.pointer, inputs: H, output: ws.conditioned.pointer, outputs: H, batch: T)

        // 3. s = SiLU(e + c).
        if shared {
            // Each row's e in place, last row first: row k reads row timeRows[k] ≤ k, which no
            // row after it has overwritten.
            for k in stride(from: U - 1, through: 0, by: -1) {
                let row = ws.conditioned.pointer + k * H, timeRow = Int(ws.timeRows[k])
                if timeRow != k { row.update(from: ws.conditioned.pointer + timeRow * H, count: H) }
                Elementwise.add(ws.condition.pointer + ws.conditioningSources[k] * H, into: row, count: H)
            }
        } else {
            Elementwise.add(ws.condition.pointer, into: ws.conditioned.pointer, count: U * H)
        }
        Elementwise.siluForward(ws.conditioned.pointer, slope: ws.conditionedSlope.pointer, out: ws.s.pointer, count: U * H)

        // 4. h = in_proj(x).
        linear(p, offsets.inProj, input: ws.x.pointer, inputs: D, output: ws.h.pointer, outputs: H, batch: B)

        // 5. Blocks; the modulation of all blocks in one GEMM.
        linear(p, (offsets.modWeight, offsets.modBias), input: ws.s.pointer, inputs: H, output: ws.modulation.pointer, outputs: modWidth, batch: U)
        for (i, block) in offsets.blocks.enumerated() {
            let a = ws.blocks[i]
            // u = LN(h)·(1 + scale) + shift in one pass; x̂, rstd and LN(h) are kept only for a backward pass.
            ws.modulationRows.withUnsafeBufferPointer { rows in
                LayerNorm.forward(ws.h.pointer, gamma: p + block.norm.weight, beta: p + block.norm.bias,
                                  normalized: keepingActivations ? a.normalized.pointer : nil,
                                  rstd: keepingActivations ? a.rstd.pointer : nil, out: keepingActivations ? a.normOut.pointer : nil,
                                  modulation: .init(scaleShift: ws.modulation.pointer + i * 2 * H, stride: modWidth, rows: rows.baseAddress!),
                                  modulated: a.u.pointer, rows: B, width: H)
            }
            linearSiLU(p, block.fc1, input: a.u.pointer, inputs: H, slope: a.fc1Slope.pointer,
                       output: a.fc1Activation.pointer, outputs: M, batch: B, keepingActivations: keepingActivations)
            // h += fc2(…): the product accumulates straight into the residual stream.
            BLAS.linear(a.fc1Activation.pointer, rows: B, inputs: M, weight: p + block.fc2.weight, bias: p + block.fc2.bias, outputs: H,
                        into: ws.h.pointer, accumulate: true)
        }

        // 6. out = out_proj(LN(h)).
        LayerNorm.forward(ws.h.pointer, gamma: p + offsets.outNorm.weight, beta: p + offsets.outNorm.bias,
                          normalized: keepingActivations ? ws.outNormalized.pointer : nil,
                          rstd: keepingActivations ? ws.outRstd.pointer : nil, out: ws.outNormOut.pointer, rows: B, width: H)
        linear(p, offsets.outProj, input: ws.outNormOut.pointer, inputs: H, output: ws.output.pointer, outputs: D, batch: B)
    }

    /// y = x·Wᵀ + b for W stored [outputs, inputs].
    @inline(__always)
    func linear(_ p: UnsafePointer<Float>, _ offsets: (weight: Int, bias: Int), input: UnsafePointer<Float>, inputs: Int,
                output: UnsafeMutablePointer<Float>, outputs: Int, batch: Int) {
        BLAS.linear(input, rows: batch, inputs: inputs, weight: p + offsets.weight, bias: p + offsets.bias, outputs: outputs, into: output)
    }

    /// SiLU(x·Wᵀ + b): for a backward pass SiLU's slope at the pre-activation is kept too (the
    /// product writes the pre-activation into `slope`, which the SiLU pass turns into the slope
    /// in place); without one, only the output, the SiLU fused into the product.
    @inline(__always)
    func linearSiLU(_ p: UnsafePointer<Float>, _ offsets: (weight: Int, bias: Int), input: UnsafePointer<Float>, inputs: Int,
                    slope: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>,
                    outputs: Int, batch: Int, keepingActivations: Bool) {
        if keepingActivations {
            linear(p, offsets, input: input, inputs: inputs, output: slope, outputs: outputs, batch: batch)
            Elementwise.siluForward(slope, slope: slope, out: output, count: batch * outputs)
        } else {
            BLAS.linear(input, rows: batch, inputs: inputs, weight: p + offsets.weight, bias: p + offsets.bias, outputs: outputs,
                        into: output, silu: true)
        }
    }

    /// dW += dYᵀ·X, db += Σ dY, and (when `dInput` is given) dX = dY·W — or, when X is a
    /// SiLU's output, straight through it: ∂L/∂a = (dY·W) ⊙ SiLU′(a), with `slopeOfInput` kept
    /// by the forward pass.
    @inline(__always)
    func linearBackward(_ p: UnsafePointer<Float>, _ g: UnsafeMutablePointer<Float>, _ offsets: (weight: Int, bias: Int),
                        input: UnsafePointer<Float>, inputs: Int, dOutput: UnsafePointer<Float>, outputs: Int,
                        dInput: UnsafeMutablePointer<Float>?, slopeOfInput: UnsafePointer<Float>? = nil, batch: Int) {
        BLAS.sgemm(transA: true, m: outputs, n: inputs, k: batch, a: dOutput, lda: outputs, b: input, ldb: inputs,
                   beta: 1, c: g + offsets.weight, ldc: inputs)
        Elementwise.accumulateColumnSums(dOutput, rows: batch, columns: outputs, stride: outputs, into: g + offsets.bias)
        if let dInput {
            BLAS.sgemm(m: batch, n: inputs, k: outputs, a: dOutput, lda: outputs, b: p + offsets.weight, ldb: inputs,
                       c: dInput, ldc: inputs, multipliedBy: slopeOfInput)
        }
    }

    // MARK: - Backward

    /// Adds ∂L/∂θ to `gradients`, given ∂L/∂out for the batch of the last `forward`
    /// on this workspace. Gradients accumulate (micro-batches add up); AdamW leaves
    /// the buffer zeroed as it consumes it, so no step pays a separate zeroing pass
    /// (OpenBLAS would make one for β = 0 anyway).
    public func backward(_ parameters: FloatBuffer, _ ws: ResMLPWorkspace, batch: Int,
                         dOutput: UnsafePointer<Float>, gradients: FloatBuffer) {
        precondition(gradients.count == layout.totalCount, "gradients do not match this model")
        let p = UnsafePointer(parameters.pointer), g = gradients.pointer
        let B = batch, H = config.hidden, F = config.timeFreqDim, D = config.sampleSize, M = config.mlpHidden
        let modWidth = 2 * H * config.depth
        let G = ws.conditionRows
        precondition(batch % G == 0, "backward of \(batch) rows after a forward with \(G) condition rows")
        let dH = ws.dH.pointer, dNorm = ws.dNorm.pointer

        // 6. out_proj and out_norm.
        linearBackward(p, g, offsets.outProj, input: ws.outNormOut.pointer, inputs: H, dOutput: dOutput, outputs: D,
                       dInput: dNorm, batch: B)
        dH.update(repeating: 0, count: B * H)
        LayerNorm.backward(dOut: dNorm, normalized: ws.outNormalized.pointer, rstd: ws.outRstd.pointer,
                           gamma: p + offsets.outNorm.weight, dX: dH,
                           dGamma: g + offsets.outNorm.weight, dBeta: g + offsets.outNorm.bias, rows: B, width: H)

        // 5. Blocks in reverse; dH carries the residual gradient through each.
        for (i, block) in offsets.blocks.enumerated().reversed() {
            let a = ws.blocks[i]
            // Into fc1's pre-activation, through the SiLU, in the product.
            linearBackward(p, g, block.fc2, input: a.fc1Activation.pointer, inputs: M, dOutput: dH, outputs: H,
                           dInput: ws.dWide.pointer, slopeOfInput: a.fc1Slope.pointer, batch: B)
            linearBackward(p, g, block.fc1, input: a.u.pointer, inputs: H, dOutput: ws.dWide.pointer, outputs: M,
                           dInput: ws.dU.pointer, batch: B)
            // From ∂L/∂u through the modulation (into its gradient rows) and the norm, in one pass.
            ws.modulationRows.withUnsafeBufferPointer { rows in
                LayerNorm.backward(dOut: ws.dU.pointer, normalized: a.normalized.pointer, rstd: a.rstd.pointer,
                                   gamma: p + block.norm.weight, dX: dH, dGamma: g + block.norm.weight, dBeta: g + block.norm.bias,
                                   modulation: .init(scaleShift: ws.modulation.pointer + i * 2 * H, stride: modWidth, rows: rows.baseAddress!),
                                   y: a.normOut.pointer, dModulation: ws.dModulation.pointer + i * 2 * H, rows: B, width: H)
            }
        }
        // Through s = SiLU(e + c) in the product: dS holds ∂L/∂(e + c).
        linearBackward(p, g, (offsets.modWeight, offsets.modBias), input: ws.s.pointer, inputs: H,
                       dOutput: ws.dModulation.pointer, outputs: modWidth, dInput: ws.dS.pointer,
                       slopeOfInput: ws.conditionedSlope.pointer, batch: G)

        // 4. in_proj: x needs no gradient.
        linearBackward(p, g, offsets.inProj, input: ws.x.pointer, inputs: D, dOutput: dH, outputs: H, dInput: nil, batch: B)

        // 3. e + c: the same gradient reaches e and c; into time_mlp.0's pre-activation through its SiLU.
        linearBackward(p, g, offsets.time2, input: ws.time0Activation.pointer, inputs: H, dOutput: ws.dS.pointer, outputs: H,
                       dInput: ws.dU.pointer, slopeOfInput: ws.time0Slope.pointer, batch: G)
        conditionBackward(ws.dS.pointer, ws, batch: G, gradients: g)

        // 2. time_mlp.0: φ(t) needs no gradient.
        linearBackward(p, g, offsets.time0, input: ws.timeFeatures.pointer, inputs: F, dOutput: ws.dU.pointer, outputs: H,
                       dInput: nil, batch: G)
    }
}

/// Inputs, activations and backward scratch of one `ResMLP` for up to `maxBatch`
/// rows, allocated once (per job, not per step).
public final class ResMLPWorkspace {
    public let maxBatch: Int

    // Inputs, filled by the caller before `forward`.
    /// Noisy samples x_t, [B, D].
    public let x: FloatBuffer
    /// Timesteps as Float32, [B].
    public let timesteps: FloatBuffer
    /// Token ids, [B, max_tokens] (text models).
    public var tokens: [Int32]
    /// Condition vectors, [B, dim] (vector models), and per-row null flags.
    public let conditionInput: FloatBuffer
    public var conditionIsNull: [UInt8]

    // Outputs.
    /// ε prediction, [B, D].
    public let output: FloatBuffer
    /// The condition vector c of each row, [B, H] (SPEC §2 step 3); of the first G rows
    /// only after a forward pass whose rows share their conditioning.
    public let condition: FloatBuffer
    /// ∂L/∂output, [B, D]: objectives write it, `backward` reads it.
    public let outputGradient: FloatBuffer

    struct BlockActivations {
        let normalized: FloatBuffer, rstd: FloatBuffer, normOut: FloatBuffer, u: FloatBuffer
        /// fc1's pre-activation, made SiLU's slope there by the forward pass; SiLU's output.
        let fc1Slope: FloatBuffer, fc1Activation: FloatBuffer
    }

    let timeFeatures: FloatBuffer, time0Slope: FloatBuffer, time0Activation: FloatBuffer
    /// e + c, then SiLU's slope there and s = SiLU(e + c).
    let conditioned: FloatBuffer, conditionedSlope: FloatBuffer, s: FloatBuffer
    var tokenCounts: [Int]
    /// G of the last forward pass: the rows whose conditioning path was computed.
    var conditionRows = 1
    /// The modulation row each row of the last forward pass read, [B].
    var modulationRows: [Int32]
    /// For a pass that found rows sharing their conditioning: the row each conditioning row was
    /// computed for, and its timestep, [U]; and a hash table of row indices (-1 empty).
    var conditioningSources: [Int], conditioningTimesteps: [Float], conditioningTable: [Int32]
    /// For each of the U conditioning rows, its timestep's row among the distinct ones.
    var timeRows: [Int32]
    let h: FloatBuffer, modulation: FloatBuffer
    let blocks: [BlockActivations]
    let outNormalized: FloatBuffer, outRstd: FloatBuffer, outNormOut: FloatBuffer
    // Backward scratch.
    let dH: FloatBuffer, dNorm: FloatBuffer, dU: FloatBuffer, dWide: FloatBuffer, dModulation: FloatBuffer, dS: FloatBuffer
    /// The activations `backward` reads, by the rows they have: one per row, one per conditioning
    /// row (`narrowed` moves them; listed once, so a step builds no list).
    let activationsByRow: [FloatBuffer], activationsByConditioningRow: [FloatBuffer]

    /// Floats a workspace holds per row, as `init` allocates them (a test keeps the two in step);
    /// with `bytesPerRow`, what memory budgets are computed from.
    public static func floatsPerRow(_ config: ModelConfig) -> Int {
        let H = config.hidden, D = config.sampleSize, M = config.mlpHidden, F = config.timeFreqDim, depth = config.depth
        let conditionInput = if case let .vector(dim) = config.condition { dim } else { 0 }
        let block = 3 * H + 1 + 2 * M
        return 3 * D + 1 + conditionInput + F + 13 * H + 2 * (2 * H * depth) + depth * block + 1 + max(M, H)
    }

    /// Bytes per row: the floats, token ids, null flags, token counts, and the conditioning's row map.
    public static func bytesPerRow(_ config: ModelConfig) -> Int {
        let tokens = if case let .text(_, maxTokens) = config.condition { maxTokens } else { 0 }
        // modulationRows, conditioningSources, conditioningTimesteps, timeRows, and at most four hash slots.
        let rowMap = 4 + MemoryLayout<Int>.stride + 4 + 4 + 4 * 4
        return 4 * floatsPerRow(config) + 4 * tokens + 1 + MemoryLayout<Int>.stride + rowMap
    }

    public init(config: ModelConfig, maxBatch: Int) {
        precondition(maxBatch > 0, "workspace needs at least one row")
        self.maxBatch = maxBatch
        let B = maxBatch, H = config.hidden, D = config.sampleSize, M = config.mlpHidden, F = config.timeFreqDim
        let modWidth = 2 * H * config.depth
        x = FloatBuffer(count: B * D)
        timesteps = FloatBuffer(count: B)
        switch config.condition {
        case let .text(_, maxTokens):
            tokens = [Int32](repeating: 0, count: B * maxTokens)
            conditionInput = FloatBuffer(count: 0)
        case let .vector(dim):
            tokens = []
            conditionInput = FloatBuffer(count: B * dim)
        case .none:
            tokens = []
            conditionInput = FloatBuffer(count: 0)
        }
        conditionIsNull = [UInt8](repeating: 0, count: B)
        output = FloatBuffer(count: B * D)
        condition = FloatBuffer(count: B * H)
        outputGradient = FloatBuffer(count: B * D)
        timeFeatures = FloatBuffer(count: B * F)
        time0Slope = FloatBuffer(count: B * H)
        time0Activation = FloatBuffer(count: B * H)
        conditioned = FloatBuffer(count: B * H)
        conditionedSlope = FloatBuffer(count: B * H)
        s = FloatBuffer(count: B * H)
        tokenCounts = [Int](repeating: 0, count: B)
        modulationRows = [Int32](repeating: 0, count: B)
        conditioningSources = [Int](repeating: 0, count: B)
        conditioningTimesteps = [Float](repeating: 0, count: B)
        timeRows = [Int32](repeating: 0, count: B)
        conditioningTable = [Int32](repeating: -1, count: Self.tableSize(rows: B))
        h = FloatBuffer(count: B * H)
        modulation = FloatBuffer(count: B * modWidth)
        blocks = (0..<config.depth).map { _ in
            BlockActivations(normalized: FloatBuffer(count: B * H), rstd: FloatBuffer(count: B),
                             normOut: FloatBuffer(count: B * H), u: FloatBuffer(count: B * H),
                             fc1Slope: FloatBuffer(count: B * M), fc1Activation: FloatBuffer(count: B * M))
        }
        outNormalized = FloatBuffer(count: B * H)
        outRstd = FloatBuffer(count: B)
        outNormOut = FloatBuffer(count: B * H)
        dH = FloatBuffer(count: B * H)
        dNorm = FloatBuffer(count: B * H)
        dU = FloatBuffer(count: B * H)
        dWide = FloatBuffer(count: B * max(M, H))
        dModulation = FloatBuffer(count: B * modWidth)
        dS = FloatBuffer(count: B * H)
        activationsByRow = [outNormOut, outNormalized, outRstd] + blocks.flatMap { [$0.normalized, $0.rstd, $0.normOut, $0.u, $0.fc1Slope, $0.fc1Activation] }
        activationsByConditioningRow = [modulation, s, conditionedSlope, time0Activation, time0Slope, timeFeatures]
    }

    /// Copies the inputs of the first `rows` rows (x_t, t, condition) from another
    /// workspace of the same model, into this one's buffers (no allocation).
    public func copyInputs(from other: ResMLPWorkspace, rows: Int) {
        precondition(rows <= maxBatch && rows <= other.maxBatch, "\(rows) rows do not fit the workspace")
        x.pointer.update(from: other.x.pointer, count: rows * (x.count / maxBatch))
        timesteps.pointer.update(from: other.timesteps.pointer, count: rows)
        let tokensPerRow = tokens.count / maxBatch, dim = conditionInput.count / maxBatch
        if tokensPerRow > 0 {
            tokens.withUnsafeMutableBufferPointer { tokens in
                other.tokens.withUnsafeBufferPointer { tokens.baseAddress!.update(from: $0.baseAddress!, count: rows * tokensPerRow) }
            }
        }
        conditionInput.pointer.update(from: other.conditionInput.pointer, count: rows * dim)
        conditionIsNull.withUnsafeMutableBufferPointer { flags in
            other.conditionIsNull.withUnsafeBufferPointer { flags.baseAddress!.update(from: $0.baseAddress!, count: rows) }
        }
    }

    /// Runs `body` (a backward pass) on the last forward pass narrowed to the examples in
    /// `kept`, ascending, as if that pass had run on them alone. The pass kept its activations
    /// and had `examples` conditioning rows, example b's rows being b, b + examples, …; example
    /// kept[j]'s rows are then j, j + kept.count, … and its conditioning row j. The activations
    /// are left narrowed; the inputs `backward` reads (x, tokens, condition vectors) are put back
    /// where they were after `body`, so the workspace's inputs stay the caller's. An example whose
    /// rows all have ∂L/∂output = 0 (a DRO pair whose hinge is inactive) adds nothing to any
    /// gradient, and its backward pass can be skipped.
    public func narrowed(to kept: [Int], of examples: Int, rowsPerExample: Int, _ body: () -> Void) {
        precondition(!kept.isEmpty, "no example to keep")
        precondition(conditionRows == examples, "the last forward pass had \(conditionRows) conditioning rows, not \(examples)")
        precondition(examples * rowsPerExample <= maxBatch, "\(examples) examples of \(rowsPerExample) rows do not fit the workspace")
        precondition(zip(kept, kept.dropFirst()).allSatisfy { $0 < $1 } && kept.allSatisfy { (0..<examples).contains($0) },
                     "kept examples must ascend within 0..<\(examples)")
        let count = kept.count
        // Row c·examples + b goes to c·count + j, taken in that order: every destination lies below
        // every row still to go, so activations simply move down, in place. Inputs swap with what
        // lies there, and the same swaps in reverse order put them back.
        func forEachMove(copies: Int, reversed: Bool = false, _ move: (_ to: Int, _ from: Int) -> Void) {
            let last = copies * count - 1
            for index in reversed ? stride(from: last, through: 0, by: -1) : stride(from: 0, through: last, by: 1) {
                let copy = index / count, j = index % count
                let to = copy * count + j, from = copy * examples + kept[j]
                if to != from { move(to, from) }
            }
        }
        func narrow(_ buffer: FloatBuffer, copies: Int) {
            let width = buffer.count / maxBatch, base = buffer.pointer
            forEachMove(copies: copies) { to, from in (base + to * width).update(from: base + from * width, count: width) }
        }
        func swapRows<T>(_ base: UnsafeMutablePointer<T>, width: Int, copies: Int, reversed: Bool) {
            guard width > 0 else { return }
            forEachMove(copies: copies, reversed: reversed) { to, from in
                for i in 0..<width { swap(&base[to * width + i], &base[from * width + i]) }
            }
        }
        func swapInputs(reversed: Bool) {
            swapRows(x.pointer, width: x.count / maxBatch, copies: rowsPerExample, reversed: reversed)
            swapRows(conditionInput.pointer, width: conditionInput.count / maxBatch, copies: 1, reversed: reversed)
            let tokensPerRow = tokens.count / maxBatch
            tokens.withUnsafeMutableBufferPointer { swapRows($0.baseAddress!, width: tokensPerRow, copies: 1, reversed: reversed) }
            conditionIsNull.withUnsafeMutableBufferPointer { swapRows($0.baseAddress!, width: 1, copies: 1, reversed: reversed) }
        }

        swapInputs(reversed: false)
        for buffer in activationsByRow { narrow(buffer, copies: rowsPerExample) }
        for buffer in activationsByConditioningRow { narrow(buffer, copies: 1) }
        tokenCounts.withUnsafeMutableBufferPointer { counts in
            forEachMove(copies: 1) { to, from in counts[to] = counts[from] }
        }
        _ = shareConditioning(batch: count * rowsPerExample, conditionRows: count)
        conditionRows = count
        body()
        swapInputs(reversed: true)
    }

    /// The time features φ(t) of the last forward pass's conditioning rows, [U, F] (every row's,
    /// [B, F], in a pass that keeps activations for a backward one; one for each distinct
    /// timestep, in a pass that found rows sharing them).
    public var lastTimeFeatures: FloatBuffer { timeFeatures }

    /// Row b reads modulation row b mod G (the conditioning path ran on the first G rows).
    /// Returns G.
    func shareConditioning(batch: Int, conditionRows G: Int) -> Int {
        for b in 0..<batch { modulationRows[b] = Int32(b % G) }
        return G
    }

    /// Finds the rows whose timestep and condition vector c (already computed, [B, H]) are the
    /// same bits as an earlier row's: each row's modulation row is its first such row's index
    /// among the distinct ones (in order of first appearance), and `conditioningSources` lists
    /// the row of each. Returns U, the number of distinct rows.
    func findSharedConditioning(batch: Int, hidden H: Int) -> Int {
        let mask = conditioningTable.count - 1
        for i in conditioningTable.indices { conditioningTable[i] = -1 }
        var distinct = 0
        let c = UnsafePointer(condition.pointer)
        for b in 0..<batch {
            let row = c + b * H
            // FNV-1a over t and 16 of c's values: rows equal in both collide, others rarely; a
            // collision is settled by comparing the whole rows.
            var hash: UInt64 = 0xCBF2_9CE4_8422_2325
            hash = (hash ^ UInt64(timesteps[b].bitPattern)) &* 0x100_0000_01B3
            for j in stride(from: 0, to: H, by: max(1, H / 16)) { hash = (hash ^ UInt64(row[j].bitPattern)) &* 0x100_0000_01B3 }
            var slot = Int(truncatingIfNeeded: hash ^ (hash >> 29)) & mask
            while true {
                let seen = conditioningTable[slot]
                if seen < 0 {
                    conditioningTable[slot] = Int32(distinct)
                    conditioningSources[distinct] = b
                    modulationRows[b] = Int32(distinct)
                    distinct += 1
                    break
                }
                let source = conditioningSources[Int(seen)]
                if timesteps[source].bitPattern == timesteps[b].bitPattern && memcmp(c + source * H, row, H * 4) == 0 {
                    modulationRows[b] = seen
                    break
                }
                slot = (slot + 1) & mask
            }
        }
        return distinct
    }

    /// The distinct timesteps (bits) among the first U conditioning rows, into
    /// `conditioningTimesteps` in order of first appearance; each row's index among them in
    /// `timeRows`. Returns their count. Each row scans those found so far: a sampler step has
    /// one timestep. Past `mostDistinctTimesteps` (random timesteps, as in validation) the scan
    /// would cost more than it saves, and every row keeps its own.
    func findSharedTimesteps(conditioningRows U: Int) -> Int {
        var distinct = 0
        for k in 0..<U {
            let t = timesteps[conditioningSources[k]]
            var j = 0
            while j < distinct && conditioningTimesteps[j].bitPattern != t.bitPattern { j += 1 }
            if j == distinct {
                guard distinct < Self.mostDistinctTimesteps else {
                    for row in 0..<U {
                        conditioningTimesteps[row] = timesteps[conditioningSources[row]]
                        timeRows[row] = Int32(row)
                    }
                    return U
                }
                conditioningTimesteps[distinct] = t
                distinct += 1
            }
            timeRows[k] = Int32(j)
        }
        return distinct
    }

    static let mostDistinctTimesteps = 16

    /// Slots of the hash table for `rows` rows: a power of two at least twice the rows.
    static func tableSize(rows: Int) -> Int {
        var size = 2
        while size < 2 * rows { size *= 2 }
        return size
    }

    /// Whether every row r < batch has the timestep and condition inputs of row r mod G.
    func rowsShareConditioning(batch: Int, conditionRows G: Int, config: ModelConfig) -> Bool {
        for r in G..<batch {
            let shared = r % G
            if timesteps[r] != timesteps[shared] { return false }
            switch config.condition {
            case let .text(_, maxTokens):
                for slot in 0..<maxTokens where tokens[r * maxTokens + slot] != tokens[shared * maxTokens + slot] { return false }
            case let .vector(dim):
                if conditionIsNull[r] != conditionIsNull[shared] { return false }
                if conditionIsNull[r] == 0 {
                    for k in 0..<dim where conditionInput[r * dim + k] != conditionInput[shared * dim + k] { return false }
                }
            case .none:
                break
            }
        }
        return true
    }
}
