// The AVX-512 passes of Kernels.c transcribed to AVX2, for CPUs without AVX-512 (Zen 2 and 3,
// Haswell to Comet Lake): 8 lanes instead of 16, a tail read and written through AVX's masked
// loads and stores (which, as AVX-512's, neither read nor write past the mask). Only the tail:
// on AMD a masked store is microcoded, and masking every store made a bench-m SFT step 25 %
// slower than the Swift loop on a Zen 3. Each pass's lanes are an inline function called with
// `full` constant, so the full chunks compile to plain loads and stores. The same IEEE
// operations in the same order as the Swift loops, so the same bits (VectorKernelTests).
#include "CKernels.h"

#if defined(__x86_64__)

#include "Reductions.h"

#define AVX2 __attribute__((target("avx2")))

int preftune_kernels_have_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}

/// The lanes of the tail at i (all 8 when 8 or more values are left), as a mask for maskload/maskstore.
AVX2 static inline __m256i tail_lanes(int64_t count, int64_t i) {
    int64_t left = count - i;
    return left >= 8 ? _mm256_set1_epi32(-1)
                     : _mm256_cmpgt_epi32(_mm256_set1_epi32((int)left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

#define INLINE AVX2 static inline __attribute__((always_inline))

/// In a function with a `full` flag: plain accesses when it is 1 (`lanes` unread), masked when 0.
#define LOAD(lanes, address) (full ? _mm256_loadu_ps(address) : _mm256_maskload_ps((address), (lanes)))
#define STORE(address, lanes, value)                                                     \
    do {                                                                                 \
        if (full) _mm256_storeu_ps((address), (value));                                  \
        else _mm256_maskstore_ps((address), (lanes), (value));                           \
    } while (0)

/// Runs `lanes_call` (an expression of i, lanes and full) over 8-lane chunks of [0, count), the
/// full chunks unmasked, then the tail masked.
#define FOR_LANES(count, lanes_call)                                                     \
    do {                                                                                 \
        int64_t i = 0;                                                                   \
        __m256i lanes = _mm256_set1_epi32(-1);                                           \
        for (int full = 1; i + 8 <= (count); i += 8) lanes_call;                         \
        if (i < (count)) {                                                               \
            int full = 0;                                                                \
            lanes = tail_lanes((count), i);                                              \
            lanes_call;                                                                  \
        }                                                                                \
    } while (0)

/// Zero where |x| is below the smallest normal float (NaN kept: an unordered compare is false).
AVX2 static inline __m256 flush_subnormal(__m256 x) {
    __m256 magnitude = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
    return _mm256_andnot_ps(_mm256_cmp_ps(magnitude, _mm256_set1_ps(1.17549435e-38f), _CMP_LT_OQ), x);
}

// MARK: AdamW

INLINE void adamw_lanes(float *p, float *g, float *m, float *v, const preftune_adamw_coefficients *c,
                        int64_t i, __m256i lanes, int full) {
    const __m256 decay = _mm256_set1_ps(c->decay), one_minus_beta1 = _mm256_set1_ps(c->one_minus_beta1);
    const __m256 beta2 = _mm256_set1_ps(c->beta2), one_minus_beta2 = _mm256_set1_ps(c->one_minus_beta2);
    const __m256 step_size = _mm256_set1_ps(c->step_size), correction2 = _mm256_set1_ps(c->correction2);
    const __m256 epsilon = _mm256_set1_ps(c->epsilon), gradient_scale = _mm256_set1_ps(c->gradient_scale);
    __m256 gi = _mm256_mul_ps(LOAD(lanes, g + i), gradient_scale);
    __m256 m0 = LOAD(lanes, m + i);
    // m + (1 − β1)·(g − m)
    __m256 mi = flush_subnormal(_mm256_add_ps(m0, _mm256_mul_ps(one_minus_beta1, _mm256_sub_ps(gi, m0))));
    // v·β2 + ((1 − β2)·g)·g
    __m256 vi = flush_subnormal(_mm256_add_ps(_mm256_mul_ps(LOAD(lanes, v + i), beta2),
                                              _mm256_mul_ps(_mm256_mul_ps(one_minus_beta2, gi), gi)));
    STORE(m + i, lanes, mi);
    STORE(v + i, lanes, vi);
    // p·decay − stepSize·(m / (√v / correction2 + ε))
    __m256 denominator = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), correction2), epsilon);
    __m256 pi = _mm256_sub_ps(_mm256_mul_ps(LOAD(lanes, p + i), decay), _mm256_mul_ps(step_size, _mm256_div_ps(mi, denominator)));
    STORE(p + i, lanes, pi);
    STORE(g + i, lanes, _mm256_setzero_ps());
}

AVX2 void preftune_adamw_update_avx2(float *p, float *g, float *m, float *v, int64_t count, const preftune_adamw_coefficients *c) {
    FOR_LANES(count, adamw_lanes(p, g, m, v, c, i, lanes, full));
}

// MARK: Σ x²

/// One run as Elementwise.sumOfSquares sums it: 8-float lanes, then the lanes, plus the tail.
AVX2 static inline double run_total(__m256 lanes, const float *tail, int64_t tail_count) {
    float run = 0;
    for (int64_t i = 0; i < tail_count; i++) run += tail[i] * tail[i];
    return (double)lanes_sum(lanes) + (double)run;
}

AVX2 double preftune_sum_of_squares_avx2(const float *x, int64_t count) {
    enum { RUN = 1024 };
    double total = 0;
    int64_t start = 0;
    // Four full runs at a time, one accumulator each: four independent chains of adds.
    for (; start + 4 * RUN <= count; start += 4 * RUN) {
        __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps(), c = _mm256_setzero_ps(), d = _mm256_setzero_ps();
        const float *xa = x + start, *xb = xa + RUN, *xc = xb + RUN, *xd = xc + RUN;
        for (int64_t i = 0; i < RUN; i += 8) {
            __m256 va = _mm256_loadu_ps(xa + i), vb = _mm256_loadu_ps(xb + i);
            __m256 vc = _mm256_loadu_ps(xc + i), vd = _mm256_loadu_ps(xd + i);
            a = _mm256_add_ps(a, _mm256_mul_ps(va, va));
            b = _mm256_add_ps(b, _mm256_mul_ps(vb, vb));
            c = _mm256_add_ps(c, _mm256_mul_ps(vc, vc));
            d = _mm256_add_ps(d, _mm256_mul_ps(vd, vd));
        }
        total += run_total(a, 0, 0);
        total += run_total(b, 0, 0);
        total += run_total(c, 0, 0);
        total += run_total(d, 0, 0);
    }
    for (; start < count; start += RUN) {
        int64_t end = start + RUN < count ? start + RUN : count, i = start;
        __m256 lanes = _mm256_setzero_ps();
        for (; i + 8 <= end; i += 8) {
            __m256 value = _mm256_loadu_ps(x + i);
            lanes = _mm256_add_ps(lanes, _mm256_mul_ps(value, value));
        }
        total += run_total(lanes, x + i, end - i);
    }
    return total;
}

// MARK: SiLU

/// e^x as Elementwise.exp computes it: clamped, 2^n·p(r) with n by the 1.5·2^23 rounding trick.
AVX2 static inline __m256 exp_lanes(__m256 input) {
    const __m256 high = _mm256_set1_ps(88.3f), low = _mm256_set1_ps(-87.3f);
    __m256 x = _mm256_blendv_ps(input, high, _mm256_cmp_ps(input, high, _CMP_GT_OQ));
    x = _mm256_blendv_ps(x, low, _mm256_cmp_ps(x, low, _CMP_LT_OQ));
    const __m256 magic = _mm256_set1_ps(12582912.0f);  // 1.5·2^23
    __m256 shifted = _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), magic);
    __m256 n = _mm256_sub_ps(shifted, magic);
    __m256 r = _mm256_add_ps(_mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(0.693359375f))),
                             _mm256_mul_ps(n, _mm256_set1_ps(2.1219444e-4f)));
    __m256 p = _mm256_set1_ps(1.98756915e-4f);
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.39819995e-3f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(8.3334519e-3f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(4.16657959e-2f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.66666655e-1f));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(5.00000012e-1f));
    __m256 poly = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(p, _mm256_mul_ps(r, r)), r), _mm256_set1_ps(1.0f));
    __m256i exponent = _mm256_add_epi32(_mm256_sub_epi32(_mm256_castps_si256(shifted), _mm256_set1_epi32(0x4B400000)),
                                        _mm256_set1_epi32(127));
    return _mm256_mul_ps(poly, _mm256_castsi256_ps(_mm256_slli_epi32(exponent, 23)));
}

/// σ(x) = 1 / (1 + e^−x), as Elementwise.sigmoid.
AVX2 static inline __m256 sigmoid_lanes(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, exp_lanes(_mm256_xor_ps(x, _mm256_set1_ps(-0.0f)))));
}

INLINE void silu_forward_lanes(const float *a, float *slope, float *out, int64_t i, __m256i lanes, int full) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 x = LOAD(lanes, a + i), s = sigmoid_lanes(x);
    STORE(out + i, lanes, _mm256_mul_ps(x, s));
    // σ·(1 + a·(1 − σ))
    STORE(slope + i, lanes, _mm256_mul_ps(s, _mm256_add_ps(one, _mm256_mul_ps(x, _mm256_sub_ps(one, s)))));
}

AVX2 void preftune_silu_forward_avx2(const float *a, float *slope, float *out, int64_t count) {
    FOR_LANES(count, silu_forward_lanes(a, slope, out, i, lanes, full));
}

INLINE void silu_in_place_lanes(float *y, int64_t i, __m256i lanes, int full) {
    __m256 x = LOAD(lanes, y + i);
    STORE(y + i, lanes, _mm256_mul_ps(x, sigmoid_lanes(x)));
}

AVX2 void preftune_silu_in_place_avx2(float *y, int64_t count) {
    FOR_LANES(count, silu_in_place_lanes(y, i, lanes, full));
}

// MARK: LayerNorm and modulation

/// One row's x̂, y and u at i (each written where its pointer is not NULL).
INLINE void layernorm_forward_row_lanes(const float *xr, const float *gamma, const float *beta, float mean, float inverse,
                                        const float *scale, float *normalized, float *out, float *modulated, int64_t width,
                                        int64_t i, __m256i lanes, int full) {
    __m256 n = _mm256_mul_ps(_mm256_sub_ps(LOAD(lanes, xr + i), _mm256_set1_ps(mean)), _mm256_set1_ps(inverse));
    if (normalized) STORE(normalized + i, lanes, n);
    __m256 y = _mm256_add_ps(_mm256_mul_ps(n, LOAD(lanes, gamma + i)), LOAD(lanes, beta + i));
    if (out) STORE(out + i, lanes, y);
    if (scale) {
        // y·(1 + scale) + shift
        __m256 u = _mm256_add_ps(_mm256_mul_ps(y, _mm256_add_ps(_mm256_set1_ps(1.0f), LOAD(lanes, scale + i))),
                                 LOAD(lanes, scale + width + i));
        STORE(modulated + i, lanes, u);
    }
}

AVX2 void preftune_layernorm_forward_avx2(const float *x, const float *gamma, const float *beta,
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
            FOR_LANES(width, layernorm_forward_row_lanes(xr, gamma, beta, mean[r], inverse[r], scale,
                                                         normalized ? normalized + row * width : 0, out ? out + row * width : 0,
                                                         scale ? modulated + row * width : 0, width, i, lanes, full));
        }
    }
}

/// One row's dx, dγ, dβ and, when modulated, [dscale | dshift] at i.
INLINE void layernorm_backward_row_lanes(const float *du, const float *n, const float *gamma, float rstd, float mean_g,
                                         float mean_gn, const float *scale, const float *yr, float *d_scale, int accumulate,
                                         float *dx, float *d_gamma, float *d_beta, int64_t width,
                                         int64_t i, __m256i lanes, int full) {
    __m256 d = LOAD(lanes, du + i), nn = LOAD(lanes, n + i);
    if (scale) {
        // dscale = du·y, dshift = du; then dy = du·(1 + scale).
        __m256 ds = _mm256_mul_ps(d, LOAD(lanes, yr + i));
        if (accumulate) {
            ds = _mm256_add_ps(LOAD(lanes, d_scale + i), ds);
            STORE(d_scale + width + i, lanes, _mm256_add_ps(LOAD(lanes, d_scale + width + i), d));
        } else {
            STORE(d_scale + width + i, lanes, d);
        }
        STORE(d_scale + i, lanes, ds);
        d = _mm256_mul_ps(d, _mm256_add_ps(_mm256_set1_ps(1.0f), LOAD(lanes, scale + i)));
    }
    __m256 g = _mm256_mul_ps(d, LOAD(lanes, gamma + i));
    // dx + r·(g − meanG − x̂·meanGN)
    __m256 step = _mm256_mul_ps(_mm256_set1_ps(rstd),
                                _mm256_sub_ps(_mm256_sub_ps(g, _mm256_set1_ps(mean_g)), _mm256_mul_ps(nn, _mm256_set1_ps(mean_gn))));
    STORE(dx + i, lanes, _mm256_add_ps(LOAD(lanes, dx + i), step));
    STORE(d_gamma + i, lanes, _mm256_add_ps(LOAD(lanes, d_gamma + i), _mm256_mul_ps(d, nn)));
    STORE(d_beta + i, lanes, _mm256_add_ps(LOAD(lanes, d_beta + i), d));
}

AVX2 void preftune_layernorm_backward_avx2(const float *d_out, const float *normalized, const float *rstd,
                                           const float *gamma, float *dx, float *d_gamma, float *d_beta,
                                           const float *modulation, int64_t modulation_stride,
                                           const int32_t *modulation_rows, const float *y, float *d_modulation,
                                           int64_t rows, int64_t width) {
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
            FOR_LANES(width, layernorm_backward_row_lanes(du, n, gamma, rstd[row], mean_g[r], mean_gn[r], scale,
                                                          scale ? y + row * width : 0, d_scale, accumulate, dx + row * width,
                                                          d_gamma, d_beta, width, i, lanes, full));
        }
    }
}

INLINE void column_sum_lanes(const float *xr, float *sums, int64_t i, __m256i lanes, int full) {
    STORE(sums + i, lanes, _mm256_add_ps(LOAD(lanes, sums + i), LOAD(lanes, xr + i)));
}

AVX2 void preftune_accumulate_column_sums_avx2(const float *x, int64_t rows, int64_t columns, int64_t stride, float *sums) {
    for (int64_t row = 0; row < rows; row++) {
        const float *xr = x + row * stride;
        FOR_LANES(columns, column_sum_lanes(xr, sums, i, lanes, full));
    }
}

#else  // Not x86-64: VectorKernel.fastest is .portable, so none of these is called.

#include <stdlib.h>

int preftune_kernels_have_avx2(void) { return 0; }
void preftune_adamw_update_avx2(float *p, float *g, float *m, float *v, int64_t count, const preftune_adamw_coefficients *c) { abort(); }
double preftune_sum_of_squares_avx2(const float *x, int64_t count) { abort(); }
void preftune_silu_forward_avx2(const float *a, float *slope, float *out, int64_t count) { abort(); }
void preftune_silu_in_place_avx2(float *y, int64_t count) { abort(); }
void preftune_layernorm_forward_avx2(const float *x, const float *gamma, const float *beta, float *normalized, float *rstd,
                                     float *out, const float *modulation, int64_t modulation_stride,
                                     const int32_t *modulation_rows, float *modulated, int64_t rows, int64_t width) { abort(); }
void preftune_layernorm_backward_avx2(const float *d_out, const float *normalized, const float *rstd, const float *gamma,
                                      float *dx, float *d_gamma, float *d_beta, const float *modulation,
                                      int64_t modulation_stride, const int32_t *modulation_rows, const float *y,
                                      float *d_modulation, int64_t rows, int64_t width) { abort(); }
void preftune_accumulate_column_sums_avx2(const float *x, int64_t rows, int64_t columns, int64_t stride, float *sums) { abort(); }

#endif
