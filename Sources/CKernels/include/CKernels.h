// Passes over whole vectors — AdamW, the gradient norm, SiLU, LayerNorm — written for the CPU's wide
// vector units and chosen at run time. Swift's baseline x86-64 build compiles its loops to 4-wide SSE,
// where AdamW's square root and divisions, not memory, set the pace.
//
// Each kernel does exactly the IEEE operations of its Swift twin, in the same order and
// without fused multiply-adds, so the two give the same bits (but for which NaN a NaN is:
// LLVM may swap a Swift product's operands); the tests hold them to that.
#ifndef PREFTUNE_CKERNELS_H
#define PREFTUNE_CKERNELS_H

#include <stdint.h>

/// 1 when this CPU (and its OS) runs AVX-512F code, else 0.
int preftune_kernels_have_avx512(void);

/// AdamW's constants for one step (see Training/AdamW.swift).
typedef struct {
    float decay, one_minus_beta1, beta2, one_minus_beta2, step_size, correction2, epsilon, gradient_scale;
} preftune_adamw_coefficients;

/// One AdamW step over `count` values, gradients zeroed: AVX-512F. Call only when
/// preftune_kernels_have_avx512() is 1.
void preftune_adamw_update_avx512(float *p, float *g, float *m, float *v, int64_t count,
                                  const preftune_adamw_coefficients *c);

/// 1 when this CPU converts to bf16 in AVX-512 (AVX512-BF16, with BW and VL), else 0.
int preftune_kernels_have_avx512_bf16(void);

/// preftune_adamw_update_avx512 that also writes the new parameters rounded to bf16 into
/// `p_bf16` (VCVTNEPS2BF16: to nearest even, as oneDNN's reorders). AVX512-BF16.
void preftune_adamw_update_avx512_bf16(float *p, float *g, float *m, float *v, uint16_t *p_bf16, int64_t count,
                                       const preftune_adamw_coefficients *c);

/// x rounded to bf16, as preftune_adamw_update_avx512_bf16 rounds parameters. AVX512-BF16.
void preftune_convert_to_bf16(const float *x, uint16_t *x_bf16, int64_t count);

/// SiLU as Elementwise computes it (its own e^x, σ = 1/(1 + e^−x)), AVX-512F: out = a·σ(a)
/// keeping the slope σ·(1 + a·(1 − σ)) (`slope` may be `a`); y = y·σ(y) in place.
void preftune_silu_forward_avx512(const float *a, float *slope, float *out, int64_t count);
void preftune_silu_in_place_avx512(float *y, int64_t count);

/// LayerNorm over `rows` rows of `width` (eps 1e−5), as LayerNorm.forward computes it: the mean
/// and the variance each summed in 8-float lanes, the lanes in order, then the tail. Any of
/// `normalized` (x̂), `rstd` and `out` (y = x̂·γ + β) may be NULL when not wanted. With
/// `modulation`, also `modulated` = y·(1 + scale) + shift, [scale | shift] being row
/// `modulation_rows[r]` of a matrix with row stride `modulation_stride`. AVX-512F.
void preftune_layernorm_forward_avx512(const float *x, const float *gamma, const float *beta,
                                       float *normalized, float *rstd, float *out,
                                       const float *modulation, int64_t modulation_stride,
                                       const int32_t *modulation_rows, float *modulated,
                                       int64_t rows, int64_t width);

/// LayerNorm.backward: dx += rstd·(g − mean(g) − x̂·mean(g·x̂)) with g = dy·γ; dγ += Σ dy·x̂,
/// dβ += Σ dy. With `modulation`, `d_out` is the gradient of the modulated rows: then
/// dy = du·(1 + scale), and d_modulation's [dscale | dshift] row takes du·y and du (`y` the
/// LayerNorm's output), written by the first row that reads it and accumulated by the others.
/// AVX-512F.
void preftune_layernorm_backward_avx512(const float *d_out, const float *normalized, const float *rstd,
                                        const float *gamma, float *dx, float *d_gamma, float *d_beta,
                                        const float *modulation, int64_t modulation_stride,
                                        const int32_t *modulation_rows, const float *y, float *d_modulation,
                                        int64_t rows, int64_t width);

/// sums[j] += Σ_r x[r·stride + j], rows in order. AVX-512F.
void preftune_accumulate_column_sums_avx512(const float *x, int64_t rows, int64_t columns, int64_t stride, float *sums);

// MARK: AVX2 (KernelsAVX2.c)
// Each pass above but the bf16 ones, in 8-lane AVX2 for CPUs without AVX-512, with the same
// operations in the same order, so the same bits. Call only when preftune_kernels_have_avx2() is 1.

/// 1 when this CPU (and its OS) runs AVX2 code, else 0.
int preftune_kernels_have_avx2(void);

void preftune_adamw_update_avx2(float *p, float *g, float *m, float *v, int64_t count, const preftune_adamw_coefficients *c);
/// Σ x², as Elementwise.sumOfSquares sums one chunk: runs of 1024 values, each summed in
/// 8 float lanes (then the lanes in order, then the run's tail), the runs' totals added in
/// double, in order. Runs are independent until then, so four are summed at once. 8-lane
/// sums are the Swift loop's own, so AVX-512 CPUs run this one too.
double preftune_sum_of_squares_avx2(const float *x, int64_t count);
void preftune_silu_forward_avx2(const float *a, float *slope, float *out, int64_t count);
void preftune_silu_in_place_avx2(float *y, int64_t count);
void preftune_layernorm_forward_avx2(const float *x, const float *gamma, const float *beta,
                                     float *normalized, float *rstd, float *out,
                                     const float *modulation, int64_t modulation_stride,
                                     const int32_t *modulation_rows, float *modulated,
                                     int64_t rows, int64_t width);
void preftune_layernorm_backward_avx2(const float *d_out, const float *normalized, const float *rstd,
                                      const float *gamma, float *dx, float *d_gamma, float *d_beta,
                                      const float *modulation, int64_t modulation_stride,
                                      const int32_t *modulation_rows, const float *y, float *d_modulation,
                                      int64_t rows, int64_t width);
void preftune_accumulate_column_sums_avx2(const float *x, int64_t rows, int64_t columns, int64_t stride, float *sums);

#endif
