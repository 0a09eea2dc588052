import CKernels

/// Who runs a pass over a whole vector — AdamW's update, the gradient norm, SiLU, LayerNorm. All
/// do the same IEEE operations in the same order, so they give the same bits (tests hold them to it).
public enum VectorKernel: Sendable, CaseIterable {
    /// The Swift loop. Swift's baseline x86-64 build makes it 4-wide SSE, where AdamW's square
    /// root and two divisions per value, not memory, set the pace.
    case portable
    /// Its transcription in CKernels, in 8-lane AVX2, for CPUs without AVX-512 (Zen 2 and 3).
    case avx2
    /// Its transcription in CKernels, in AVX-512.
    case avx512

    /// Every kernel this CPU runs, the Swift loop first (the one the others are held to).
    public static let available: [VectorKernel] = allCases.filter {
        switch $0 {
        case .portable: true
        case .avx2: preftune_kernels_have_avx2() != 0
        case .avx512: preftune_kernels_have_avx512() != 0
        }
    }

    /// The widest this CPU runs: AVX-512, else AVX2, else the Swift loop.
    public static let fastest = available.last!
}
