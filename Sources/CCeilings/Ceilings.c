#include "CCeilings.h"
#include "CKernels.h"

#if defined(__x86_64__)

#include <immintrin.h>
#include <stdlib.h>

#define AVX512 __attribute__((target("avx512f")))

AVX512 static float fma_rounds_avx512(int64_t rounds) {
    // 18 accumulators: two FMA ports × 4 cycles of latency needs at least 8 chains in flight.
    const __m512 zero = _mm512_setzero_ps();
    __m512 c00 = zero, c01 = zero, c02 = zero, c10 = zero, c11 = zero, c12 = zero, c20 = zero, c21 = zero, c22 = zero,
           c30 = zero, c31 = zero, c32 = zero, c40 = zero, c41 = zero, c42 = zero, c50 = zero, c51 = zero, c52 = zero;
    __m512 x0 = _mm512_set1_ps(1e-3f), x1 = x0, x2 = x0, x3 = x0, x4 = x0, x5 = x0, b0 = x0, b1 = x0, b2 = x0;
    for (int64_t round = 0; round < rounds; round++) {
        // The operands are opaque to the compiler, so it cannot see that the chains are equal.
        __asm__ volatile("" : "+v"(b0), "+v"(b1), "+v"(b2), "+v"(x0), "+v"(x1), "+v"(x2), "+v"(x3), "+v"(x4), "+v"(x5));
#define ROW(r)                                   \
    c##r##0 = _mm512_fmadd_ps(x##r, b0, c##r##0); \
    c##r##1 = _mm512_fmadd_ps(x##r, b1, c##r##1); \
    c##r##2 = _mm512_fmadd_ps(x##r, b2, c##r##2);
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
#undef ROW
    }
    __m512 sum = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c00, c01), _mm512_add_ps(c02, c10)),
                               _mm512_add_ps(_mm512_add_ps(c11, c12), _mm512_add_ps(c20, c21)));
    sum = _mm512_add_ps(sum, _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c22, c30), _mm512_add_ps(c31, c32)),
                                           _mm512_add_ps(_mm512_add_ps(c40, c41), _mm512_add_ps(c42, c50))));
    return _mm512_reduce_add_ps(_mm512_add_ps(sum, _mm512_add_ps(c51, c52)));
}

#define AVX2_FMA __attribute__((target("avx2,fma")))

/// The same probe in AVX2 with FMA3: 16 registers hold 9 accumulators and the 6 operands of a 3 × 3
/// grid of independent chains, enough for two FMA pipes of 4 cycles' latency (8 in flight).
AVX2_FMA static float fma_rounds_avx2(int64_t rounds) {
    const __m256 zero = _mm256_setzero_ps();
    __m256 c00 = zero, c01 = zero, c02 = zero, c10 = zero, c11 = zero, c12 = zero, c20 = zero, c21 = zero, c22 = zero;
    __m256 x0 = _mm256_set1_ps(1e-3f), x1 = x0, x2 = x0, b0 = x0, b1 = x0, b2 = x0;
    for (int64_t round = 0; round < rounds; round++) {
        __asm__ volatile("" : "+x"(b0), "+x"(b1), "+x"(b2), "+x"(x0), "+x"(x1), "+x"(x2));
#define ROW(r)                                   \
    c##r##0 = _mm256_fmadd_ps(x##r, b0, c##r##0); \
    c##r##1 = _mm256_fmadd_ps(x##r, b1, c##r##1); \
    c##r##2 = _mm256_fmadd_ps(x##r, b2, c##r##2);
        ROW(0) ROW(1) ROW(2)
#undef ROW
    }
    __m256 sum = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c00, c01), _mm256_add_ps(c02, c10)),
                               _mm256_add_ps(_mm256_add_ps(c11, c12), _mm256_add_ps(c20, c21)));
    sum = _mm256_add_ps(sum, c22);
    // The 8 lanes pairwise: equal lanes add exactly.
    __m128 half = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
    half = _mm_add_ps(half, _mm_movehl_ps(half, half));
    return _mm_cvtss_f32(_mm_add_ss(half, _mm_movehdup_ps(half)));
}

static int have_avx2_fma(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

int64_t preftune_ceilings_fma_flops_per_round(void) {
    if (preftune_kernels_have_avx512()) return 18 * 16 * 2;
    return have_avx2_fma() ? 9 * 8 * 2 : 0;
}

float preftune_ceilings_fma_rounds(int64_t rounds) {
    if (preftune_kernels_have_avx512()) return fma_rounds_avx512(rounds);
    if (have_avx2_fma()) return fma_rounds_avx2(rounds);
    abort();
}

/// 16 lanes at a time, as AdamW's AVX-512 pass moves them; the tail is left to the caller.
AVX512 static int64_t adamw_traffic_avx512(float *p, float *g, float *m, float *v, int64_t count) {
    int64_t i = 0;
    for (; i + 16 <= count; i += 16) {
        __m512 gi = _mm512_loadu_ps(g + i);
        _mm512_storeu_ps(p + i, _mm512_add_ps(_mm512_loadu_ps(p + i), gi));
        _mm512_storeu_ps(m + i, _mm512_add_ps(_mm512_loadu_ps(m + i), gi));
        _mm512_storeu_ps(v + i, _mm512_add_ps(_mm512_loadu_ps(v + i), gi));
        _mm512_storeu_ps(g + i, _mm512_setzero_ps());
    }
    return i;
}

/// 8 lanes at a time, as AdamW's AVX2 pass moves them; the tail is left to the caller.
AVX2_FMA static int64_t adamw_traffic_avx2(float *p, float *g, float *m, float *v, int64_t count) {
    int64_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256 gi = _mm256_loadu_ps(g + i);
        _mm256_storeu_ps(p + i, _mm256_add_ps(_mm256_loadu_ps(p + i), gi));
        _mm256_storeu_ps(m + i, _mm256_add_ps(_mm256_loadu_ps(m + i), gi));
        _mm256_storeu_ps(v + i, _mm256_add_ps(_mm256_loadu_ps(v + i), gi));
        _mm256_storeu_ps(g + i, _mm256_setzero_ps());
    }
    return i;
}

#else  // Not x86-64: no FMA probe (the bench leaves its line out: no flops per round).

#include <stdlib.h>

int64_t preftune_ceilings_fma_flops_per_round(void) { return 0; }
float preftune_ceilings_fma_rounds(int64_t rounds) { abort(); }
static int64_t adamw_traffic_avx512(float *p, float *g, float *m, float *v, int64_t count) { abort(); }
static int64_t adamw_traffic_avx2(float *p, float *g, float *m, float *v, int64_t count) { abort(); }

#endif

void preftune_ceilings_adamw_traffic(float *p, float *g, float *m, float *v, int64_t count) {
    // The same CPU check as AdamW's own kernel choice (CKernels), so both passes move memory alike.
    int64_t i = preftune_kernels_have_avx512() ? adamw_traffic_avx512(p, g, m, v, count)
              : preftune_kernels_have_avx2()   ? adamw_traffic_avx2(p, g, m, v, count)
                                               : 0;
    for (; i < count; i++) { p[i] += g[i]; m[i] += g[i]; v[i] += g[i]; g[i] = 0; }
}
