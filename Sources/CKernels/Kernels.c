#include "CKernels.h"

#if defined(__x86_64__)

#include "Reductions.h"

int preftune_kernels_have_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

#define AVX512 __attribute__((target("avx512f")))

/// Zero where |x| is below the smallest normal float (NaN kept), as AdamW.flushSubnormal.
AVX512 static inline __m512 flush_subnormal(__m512 x) {
    const __m512 smallest_normal = _mm512_set1_ps(1.17549435e-38f);
    __mmask16 tiny = _mm512_cmp_ps_mask(_mm512_abs_ps(x), smallest_normal, _CMP_LT_OQ);
    return _mm512_mask_mov_ps(x, tiny, _mm512_setzero_ps());
}

/// One AdamW step over 16 lanes at i (the tail masked by `lanes`); returns the new parameters.
#define ADAMW_LANES(lanes)                                                                                    \
    __m512 gi = _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, g + i), gradient_scale);                          \
    __m512 m0 = _mm512_maskz_loadu_ps(lanes, m + i);                                                         \
    /* m + (1 − β1)·(g − m) */                                                                              \
    __m512 mi = flush_subnormal(_mm512_add_ps(m0, _mm512_mul_ps(one_minus_beta1, _mm512_sub_ps(gi, m0))));  \
    /* v·β2 + ((1 − β2)·g)·g */                                                                             \
    __m512 vi = flush_subnormal(_mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, v + i), beta2),    \
                                              _mm512_mul_ps(_mm512_mul_ps(one_minus_beta2, gi), gi)));      \
    _mm512_mask_storeu_ps(m + i, lanes, mi);                                                                 \
    _mm512_mask_storeu_ps(v + i, lanes, vi);                                                                 \
    /* p·decay − stepSize·(m / (√v / correction2 + ε)) */                                                   \
    __m512 denominator = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), correction2), epsilon);             \
    __m512 pi = _mm512_sub_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, p + i), decay),                     \
                              _mm512_mul_ps(step_size, _mm512_div_ps(mi, denominator)));                     \
    _mm512_mask_storeu_ps(p + i, lanes, pi);                                                                 \
    _mm512_mask_storeu_ps(g + i, lanes, _mm512_setzero_ps());

#define ADAMW_CONSTANTS                                                                                                \
    const __m512 decay = _mm512_set1_ps(c->decay), one_minus_beta1 = _mm512_set1_ps(c->one_minus_beta1);             \
    const __m512 beta2 = _mm512_set1_ps(c->beta2), one_minus_beta2 = _mm512_set1_ps(c->one_minus_beta2);             \
    const __m512 step_size = _mm512_set1_ps(c->step_size), correction2 = _mm512_set1_ps(c->correction2);             \
    const __m512 epsilon = _mm512_set1_ps(c->epsilon), gradient_scale = _mm512_set1_ps(c->gradient_scale);

/// The lanes of the tail (past count, neither read nor written).
#define TAIL_LANES(count, i) ((count) - (i) >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << ((count) - (i))) - 1))

AVX512 void preftune_adamw_update_avx512(float *p, float *g, float *m, float *v, int64_t count,
                                         const preftune_adamw_coefficients *c) {
    ADAMW_CONSTANTS
    for (int64_t i = 0; i < count; i += 16) {
        __mmask16 lanes = TAIL_LANES(count, i);
        ADAMW_LANES(lanes)
    }
}

#define AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

int preftune_kernels_have_avx512_bf16(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("avx512bf16");
}

AVX512_BF16 void preftune_adamw_update_avx512_bf16(float *p, float *g, float *m, float *v, uint16_t *p_bf16, int64_t count,
                                                   const preftune_adamw_coefficients *c) {
    ADAMW_CONSTANTS
    for (int64_t i = 0; i < count; i += 16) {
        __mmask16 lanes = TAIL_LANES(count, i);
        ADAMW_LANES(lanes)
        _mm256_mask_storeu_epi16(p_bf16 + i, lanes, (__m256i)_mm512_cvtneps_pbh(pi));
    }
}

AVX512_BF16 void preftune_convert_to_bf16(const float *x, uint16_t *x_bf16, int64_t count) {
    for (int64_t i = 0; i < count; i += 16) {
        __mmask16 lanes = TAIL_LANES(count, i);
        _mm256_mask_storeu_epi16(x_bf16 + i, lanes, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(lanes, x + i)));
    }
}

// MARK: SiLU

/// e^x as Elementwise.exp computes it: clamped, 2^n·p(r) with n by the 1.5·2^23 rounding trick.
AVX512 static inline __m512 exp_lanes(__m512 input) {
    __m512 x = _mm512_mask_mov_ps(input, _mm512_cmp_ps_mask(input, _mm512_set1_ps(88.3f), _CMP_GT_OQ), _mm512_set1_ps(88.3f));
    x = _mm512_mask_mov_ps(x, _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_LT_OQ), _mm512_set1_ps(-87.3f));
    const __m512 magic = _mm512_set1_ps(12582912.0f);  // 1.5·2^23
    __m512 shifted = _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), magic);
    __m512 n = _mm512_sub_ps(shifted, magic);
    __m512 r = _mm512_add_ps(_mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(0.693359375f))),
                             _mm512_mul_ps(n, _mm512_set1_ps(2.1219444e-4f)));
    __m512 p = _mm512_set1_ps(1.98756915e-4f);
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.39819995e-3f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(8.3334519e-3f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(4.16657959e-2f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.66666655e-1f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(5.00000012e-1f));
    __m512 poly = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(p, _mm512_mul_ps(r, r)), r), _mm512_set1_ps(1.0f));
    __m512i exponent = _mm512_add_epi32(_mm512_sub_epi32(_mm512_castps_si512(shifted), _mm512_set1_epi32(0x4B400000)),
                                        _mm512_set1_epi32(127));
    return _mm512_mul_ps(poly, _mm512_castsi512_ps(_mm512_slli_epi32(exponent, 23)));
}

/// σ(x) = 1 / (1 + e^−x), as Elementwise.sigmoid.
AVX512 static inline __m512 sigmoid_lanes(__m512 x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 negated = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u)));
    return _mm512_div_ps(one, _mm512_add_ps(one, exp_lanes(negated)));
}

AVX512 void preftune_silu_forward_avx512(const float *a, float *slope, float *out, int64_t count) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < count; i += 16) {
        __mmask16 lanes = TAIL_LANES(count, i);
        __m512 x = _mm512_maskz_loadu_ps(lanes, a + i), s = sigmoid_lanes(x);
        _mm512_mask_storeu_ps(out + i, lanes, _mm512_mul_ps(x, s));
        // σ·(1 + a·(1 − σ))
        _mm512_mask_storeu_ps(slope + i, lanes, _mm512_mul_ps(s, _mm512_add_ps(one, _mm512_mul_ps(x, _mm512_sub_ps(one, s)))));
    }
}

AVX512 void preftune_silu_in_place_avx512(float *y, int64_t count) {
    for (int64_t i = 0; i < count; i += 16) {
        __mmask16 lanes = TAIL_LANES(count, i);
        __m512 x = _mm512_maskz_loadu_ps(lanes, y + i);
        _mm512_mask_storeu_ps(y + i, lanes, _mm512_mul_ps(x, sigmoid_lanes(x)));
    }
}

// MARK: LayerNorm and modulation

AVX512 void preftune_layernorm_forward_avx512(const float *x, const float *gamma, const float *beta,
                                              float *normalized, float *rstd, float *out,
                                              const float *modulation, int64_t modulation_stride,
                                              const int32_t *modulation_rows, float *modulated,
                                              int64_t rows, int64_t width) {
    for (int64_t first = 0; first < rows; first += ROW_GROUP) {
        const int64_t group = rows - first < ROW_GROUP ? rows - first : ROW_GROUP;
        float mean[ROW_GROUP], inverse[ROW_GROUP];
        layernorm_group_statistics(x, first, group, width, mean, inverse, rstd);
        for (int r = 0; r < group; r++) {
            const int64_t row = first + r;
            const float *xr = x + row * width;
            const float *scale = modulation ? modulation + (int64_t)modulation_rows[row] * modulation_stride : 0;
            const __m512 m = _mm512_set1_ps(mean[r]), v = _mm512_set1_ps(inverse[r]), one = _mm512_set1_ps(1.0f);
            for (int64_t i = 0; i < width; i += 16) {
                __mmask16 lanes = TAIL_LANES(width, i);
                __m512 n = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(lanes, xr + i), m), v);
                if (normalized) _mm512_mask_storeu_ps(normalized + row * width + i, lanes, n);
                __m512 y = _mm512_add_ps(_mm512_mul_ps(n, _mm512_maskz_loadu_ps(lanes, gamma + i)), _mm512_maskz_loadu_ps(lanes, beta + i));
                if (out) _mm512_mask_storeu_ps(out + row * width + i, lanes, y);
                if (scale) {
                    // y·(1 + scale) + shift
                    __m512 u = _mm512_add_ps(_mm512_mul_ps(y, _mm512_add_ps(one, _mm512_maskz_loadu_ps(lanes, scale + i))),
                                             _mm512_maskz_loadu_ps(lanes, scale + width + i));
                    _mm512_mask_storeu_ps(modulated + row * width + i, lanes, u);
                }
            }
        }
    }
}

AVX512 void preftune_layernorm_backward_avx512(const float *d_out, const float *normalized, const float *rstd,
                                               const float *gamma, float *dx, float *d_gamma, float *d_beta,
                                               const float *modulation, int64_t modulation_stride,
                                               const int32_t *modulation_rows, const float *y, float *d_modulation,
                                               int64_t rows, int64_t width) {
    const __m512 one = _mm512_set1_ps(1.0f);
    int32_t written = 0;
    for (int64_t first = 0; first < rows; first += ROW_GROUP) {
        const int64_t group = rows - first < ROW_GROUP ? rows - first : ROW_GROUP;
        float mean_g[ROW_GROUP], mean_gn[ROW_GROUP];
        const float *scales[ROW_GROUP];
        for (int r = 0; r < ROW_GROUP; r++)
            scales[r] = modulation && r < group ? modulation + (int64_t)modulation_rows[first + r] * modulation_stride : 0;
        layernorm_group_gradient_means(d_out, normalized, gamma, scales, first, group, width, mean_g, mean_gn);
        // Rows in order: dγ, dβ and the modulation's gradient accumulate over them.
        for (int r = 0; r < group; r++) {
            const int64_t row = first + r;
            const float *du = d_out + row * width, *n = normalized + row * width, *scale = scales[r];
            float *d_scale = 0;
            int accumulate = 0;
            if (scale) {
                int32_t shared = modulation_rows[row];
                accumulate = shared != written;
                if (!accumulate) written++;
                d_scale = d_modulation + (int64_t)shared * modulation_stride;
            }
            const __m512 r_ = _mm512_set1_ps(rstd[row]), mg = _mm512_set1_ps(mean_g[r]), mgn = _mm512_set1_ps(mean_gn[r]);
            for (int64_t i = 0; i < width; i += 16) {
                __mmask16 lanes = TAIL_LANES(width, i);
                __m512 d = _mm512_maskz_loadu_ps(lanes, du + i), nn = _mm512_maskz_loadu_ps(lanes, n + i);
                if (scale) {
                    // dscale = du·y, dshift = du; then dy = du·(1 + scale).
                    __m512 ds = _mm512_mul_ps(d, _mm512_maskz_loadu_ps(lanes, y + row * width + i));
                    if (accumulate) {
                        ds = _mm512_add_ps(_mm512_maskz_loadu_ps(lanes, d_scale + i), ds);
                        _mm512_mask_storeu_ps(d_scale + width + i, lanes, _mm512_add_ps(_mm512_maskz_loadu_ps(lanes, d_scale + width + i), d));
                    } else {
                        _mm512_mask_storeu_ps(d_scale + width + i, lanes, d);
                    }
                    _mm512_mask_storeu_ps(d_scale + i, lanes, ds);
                    d = _mm512_mul_ps(d, _mm512_add_ps(one, _mm512_maskz_loadu_ps(lanes, scale + i)));
                }
                __m512 g = _mm512_mul_ps(d, _mm512_maskz_loadu_ps(lanes, gamma + i));
                // dx + r·(g − meanG − x̂·meanGN)
                __m512 step = _mm512_mul_ps(r_, _mm512_sub_ps(_mm512_sub_ps(g, mg), _mm512_mul_ps(nn, mgn)));
                _mm512_mask_storeu_ps(dx + row * width + i, lanes, _mm512_add_ps(_mm512_maskz_loadu_ps(lanes, dx + row * width + i), step));
                _mm512_mask_storeu_ps(d_gamma + i, lanes, _mm512_add_ps(_mm512_maskz_loadu_ps(lanes, d_gamma + i), _mm512_mul_ps(d, nn)));
                _mm512_mask_storeu_ps(d_beta + i, lanes, _mm512_add_ps(_mm512_maskz_loadu_ps(lanes, d_beta + i), d));
            }
        }
    }
}

AVX512 void preftune_accumulate_column_sums_avx512(const float *x, int64_t rows, int64_t columns, int64_t stride, float *sums) {
    for (int64_t row = 0; row < rows; row++) {
        const float *xr = x + row * stride;
        for (int64_t i = 0; i < columns; i += 16) {
            __mmask16 lanes = TAIL_LANES(columns, i);
            _mm512_mask_storeu_ps(sums + i, lanes, _mm512_add_ps(_mm512_maskz_loadu_ps(lanes, sums + i), _mm512_maskz_loadu_ps(lanes, xr + i)));
        }
    }
}

#else  // Not x86-64: no wide kernels. VectorKernel.fastest is .portable and BF16Shadow is never
       // made, so none of these is called; they exist so that the module links.

#include <stdlib.h>

int preftune_kernels_have_avx512(void) { return 0; }
int preftune_kernels_have_avx512_bf16(void) { return 0; }
void preftune_adamw_update_avx512(float *p, float *g, float *m, float *v, int64_t count, const preftune_adamw_coefficients *c) { abort(); }
void preftune_adamw_update_avx512_bf16(float *p, float *g, float *m, float *v, uint16_t *p_bf16, int64_t count,
                                       const preftune_adamw_coefficients *c) { abort(); }
void preftune_convert_to_bf16(const float *x, uint16_t *x_bf16, int64_t count) { abort(); }
void preftune_silu_forward_avx512(const float *a, float *slope, float *out, int64_t count) { abort(); }
void preftune_silu_in_place_avx512(float *y, int64_t count) { abort(); }
void preftune_layernorm_forward_avx512(const float *x, const float *gamma, const float *beta, float *normalized, float *rstd,
                                      float *out, const float *modulation, int64_t modulation_stride,
                                      const int32_t *modulation_rows, float *modulated, int64_t rows, int64_t width) { abort(); }
void preftune_layernorm_backward_avx512(const float *d_out, const float *normalized, const float *rstd, const float *gamma,
                                       float *dx, float *d_gamma, float *d_beta, const float *modulation,
                                       int64_t modulation_stride, const int32_t *modulation_rows, const float *y,
                                       float *d_modulation, int64_t rows, int64_t width) { abort(); }
void preftune_accumulate_column_sums_avx512(const float *x, int64_t rows, int64_t columns, int64_t stride, float *sums) { abort(); }

#endif
