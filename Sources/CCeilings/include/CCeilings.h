// What this machine can do at most, measured beside the bench's own figures (preftune-bench):
// the peak rate of its fp32 FMA units, and the memory's pace for AdamW's traffic.
#ifndef PREFTUNE_CCEILINGS_H
#define PREFTUNE_CCEILINGS_H

#include <stdint.h>

/// `rounds` rounds of independent FMAs on operands held in registers, in the widest FMA this CPU
/// has: 18 AVX-512 FMAs a round, or 9 AVX2 (FMA3) ones. The most any fp32 matrix product can do on
/// one core. The work is rounds × preftune_ceilings_fma_flops_per_round() flops; the return value
/// is the accumulators' sum. An empty asm barrier keeps the compiler from folding the identical
/// chains into one (which would count one chain's work many times).
/// Call only when preftune_ceilings_fma_flops_per_round() is not 0.
float preftune_ceilings_fma_rounds(int64_t rounds);

/// Flops one round of preftune_ceilings_fma_rounds does on this CPU: 576 (AVX-512), 144 (AVX2 with
/// FMA3), or 0 where it has neither and the probe is not run.
int64_t preftune_ceilings_fma_flops_per_round(void);

/// AdamW's memory traffic with next to no arithmetic: reads p, g, m and v, writes p, m, v and g,
/// as one AdamW pass does (p += g, m += g, v += g, g = 0).
void preftune_ceilings_adamw_traffic(float *p, float *g, float *m, float *v, int64_t count);

#endif
