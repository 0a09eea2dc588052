// The reductions the AVX-512 (Kernels.c) and AVX2 (KernelsAVX2.c) passes share. Both sum in
// 8-float lanes, as the Swift loops do, so one AVX2 transcription serves both (AVX-512 code may
// inline AVX2 code).
#ifndef PREFTUNE_CKERNELS_REDUCTIONS_H
#define PREFTUNE_CKERNELS_REDUCTIONS_H

#if defined(__x86_64__)

#include <immintrin.h>
#include <math.h>
#include <stdint.h>

// Every multiply and add rounds on its own, as in the Swift loops these mirror.
#pragma clang fp contract(off)

#define REDUCTION static inline __attribute__((target("avx2"), always_inline))

/// The sum of 8 lanes in index order, as Swift's SIMD8<Float>.sum().
REDUCTION float lanes_sum(__m256 lanes) {
    float values[8];
    _mm256_storeu_ps(values, lanes);
    float total = -0.0f;
    for (int j = 0; j < 8; j++) total += values[j];
    return total;
}

/// Rows whose reductions run together: each row's sums are one chain of dependent adds, in
/// LayerNorm's order; four rows' chains side by side keep the adder busy without changing a bit.
enum { ROW_GROUP = 4 };

/// The mean and 1/√(variance + eps) of `group` rows of x from `first`, as LayerNorm.forward computes
/// them: each sum in 8-float lanes, the lanes in order, then the row's tail. rstd may be NULL.
REDUCTION void layernorm_group_statistics(const float *x, int64_t first, int64_t group, int64_t width,
                                          float mean[ROW_GROUP], float inverse[ROW_GROUP], float *rstd) {
    const int64_t width8 = width - width % 8;
    __m256 sums[ROW_GROUP], squares[ROW_GROUP];
    for (int r = 0; r < ROW_GROUP; r++) sums[r] = squares[r] = _mm256_setzero_ps();
    for (int64_t i = 0; i < width8; i += 8)
        for (int r = 0; r < group; r++) sums[r] = _mm256_add_ps(sums[r], _mm256_loadu_ps(x + (first + r) * width + i));
    for (int r = 0; r < group; r++) {
        const float *xr = x + (first + r) * width;
        float total = lanes_sum(sums[r]);
        for (int64_t j = width8; j < width; j++) total += xr[j];
        mean[r] = total / (float)width;
    }
    for (int64_t i = 0; i < width8; i += 8)
        for (int r = 0; r < group; r++) {
            __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + (first + r) * width + i), _mm256_set1_ps(mean[r]));
            squares[r] = _mm256_add_ps(squares[r], _mm256_mul_ps(d, d));
        }
    for (int r = 0; r < group; r++) {
        const float *xr = x + (first + r) * width;
        float variance = lanes_sum(squares[r]);
        for (int64_t j = width8; j < width; j++) variance += (xr[j] - mean[r]) * (xr[j] - mean[r]);
        inverse[r] = 1.0f / sqrtf(variance / (float)width + 1e-5f);
        if (rstd) rstd[first + r] = inverse[r];
    }
}

/// mean(g) and mean(g·x̂) over each of `group` rows from `first`, g = dy·γ, as LayerNorm.backward
/// computes them; dy = du·(1 + scale) where the row's `scales` entry is not NULL.
REDUCTION void layernorm_group_gradient_means(const float *d_out, const float *normalized, const float *gamma,
                                              const float *const scales[ROW_GROUP], int64_t first, int64_t group,
                                              int64_t width, float mean_g[ROW_GROUP], float mean_gn[ROW_GROUP]) {
    const int64_t width8 = width - width % 8;
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 sum_g[ROW_GROUP], sum_gn[ROW_GROUP];
    for (int r = 0; r < ROW_GROUP; r++) sum_g[r] = sum_gn[r] = _mm256_setzero_ps();
    for (int64_t i = 0; i < width8; i += 8)
        for (int r = 0; r < group; r++) {
            __m256 dy = _mm256_loadu_ps(d_out + (first + r) * width + i);
            if (scales[r]) dy = _mm256_mul_ps(dy, _mm256_add_ps(one, _mm256_loadu_ps(scales[r] + i)));
            __m256 g = _mm256_mul_ps(dy, _mm256_loadu_ps(gamma + i));
            sum_g[r] = _mm256_add_ps(sum_g[r], g);
            sum_gn[r] = _mm256_add_ps(sum_gn[r], _mm256_mul_ps(g, _mm256_loadu_ps(normalized + (first + r) * width + i)));
        }
    for (int r = 0; r < group; r++) {
        const float *du = d_out + (first + r) * width, *n = normalized + (first + r) * width, *scale = scales[r];
        float total_g = lanes_sum(sum_g[r]), total_gn = lanes_sum(sum_gn[r]);
        for (int64_t j = width8; j < width; j++) {
            float g = (scale ? du[j] * (1 + scale[j]) : du[j]) * gamma[j];
            total_g += g;
            total_gn += g * n[j];
        }
        mean_g[r] = total_g / (float)width;
        mean_gn[r] = total_gn / (float)width;
    }
}

#endif
#endif
