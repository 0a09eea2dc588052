import CKernels

/// Who runs a pass over a whole vector — AdamW's update, the gradient norm, SiLU. Both do
/// the same IEEE operations in the same order, so they give the same bits (tests hold them to it).
public enum VectorKernel: Sendable {
    /// The Swift loop. Swift's baseline x86-64 build makes it 4-wide SSE, where AdamW's square
    /// root and two divisions per value, not memory, set the pace.
    case portable
    /// Its transcription in CKernels, in AVX-512 with the same operations in the same order.
    case avx512

    /// AVX-512 where the CPU has it.
    public static let fastest: VectorKernel = preftune_kernels_have_avx512() != 0 ? .avx512 : .portable
}
