// What this machine can do at most, measured beside the bench's own figures (preftune-bench):
// the peak rate of its fp32 FMA units, and the memory's pace for AdamW's traffic.
#ifndef PREFTUNE_CCEILINGS_H
#define PREFTUNE_CCEILINGS_H

#include <stdint.h>

/// `rounds` rounds of 18 independent AVX-512 FMAs on operands held in registers: the most any
/// fp32 matrix product can do on one core. The work is rounds × 18 × 32 flops; the return
/// value is the accumulators' sum. An empty asm barrier keeps the compiler from folding the
/// identical chains into one (which would count one chain's work eighteen times).
/// AVX-512F: call only when CKernels' preftune_kernels_have_avx512() is 1 (`VectorKernel.fastest`).
float preftune_ceilings_fma_rounds(int64_t rounds);

/// AdamW's memory traffic with next to no arithmetic: reads p, g, m and v, writes p, m, v and g,
/// as one AdamW pass does (p += g, m += g, v += g, g = 0).
void preftune_ceilings_adamw_traffic(float *p, float *g, float *m, float *v, int64_t count);

#endif
