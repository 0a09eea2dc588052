import Diffusion
import Numerics

/// Fills a workspace's inputs as the trainer does for `examples` examples of `rowsPerExample`
/// rows: example b's rows are b, b + examples, …, with x drawn for every row, and the example's
/// timestep (`timesteps[b]`) and condition shared by its rows — `prompts[b]` in a text model; in
/// a vector model a drawn vector, example 1's null.
func fillPairedInputs(_ workspace: ResMLPWorkspace, config: ModelConfig, examples: Int, rowsPerExample: Int,
                      timesteps: [Float], prompts: [[Int32]], random: inout Philox) {
    let rows = examples * rowsPerExample
    random.fillNormal(workspace.x.pointer, count: rows * config.sampleSize)
    for row in 0..<rows { workspace.timesteps[row] = timesteps[row % examples] }
    switch config.condition {
    case .text:
        workspace.tokens = (0..<rows).flatMap { prompts[$0 % examples] }
    case let .vector(dim):
        random.fillNormal(workspace.conditionInput.pointer, count: examples * dim)
        for row in examples..<rows {
            (workspace.conditionInput.pointer + row * dim).update(from: workspace.conditionInput.pointer + (row % examples) * dim, count: dim)
        }
        workspace.conditionIsNull = (0..<rows).map { $0 % examples == 1 ? 1 : 0 }
    case .none:
        break
    }
}
