// SIMD mappings and small vector helpers, written once: AVX2+FMA+F16C, or the scalar path.
// TG_AVX2 is defined when the compiler targets AVX2, FMA and F16C (-march=native on such a
// machine); kernels test `TG_USE_SIMD` at run time so the scalar path can be forced in tests.
#ifndef TG_SIMD_H
#define TG_SIMD_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#include "tg.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define TG_AVX2 1
#include <immintrin.h>
#define TG_USE_SIMD (tg_simd_enabled)
#else
#define TG_USE_SIMD 0
#endif

// AVX-512 (F + VL + BW + VNNI, e.g. Zen 4, Ice Lake and later) widens the batched GEMM tiles
// and the integer dots; everything else keeps its AVX2 form.
#if defined(TG_AVX2) && defined(__AVX512F__) && defined(__AVX512VL__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define TG_AVX512 1
// The wider forms in 512-bit registers, where the node asks for them (`flag`, an op_params
// entry: GraphOptions.wide_gemm for the GEMMs' 12-column and 32-row tiles, mul_mat.c;
// wide_scan for the chunked scans' 32-column blocks, ssm.c), bit for bit the narrower forms
#define TG_WIDE(flag) (flag)
#else
#define TG_WIDE(flag) 0
#endif

// AMX (Sapphire Rapids and later): the integer GEMM's tile products (mul_mat.c), used when the
// kernel granted the process its tile state (tg_amx_ready, compute.c)
#if defined(TG_AVX512) && defined(__AMX_TILE__) && defined(__AMX_INT8__)
#define TG_AMX 1
#endif

// v as it is at this point, in a register: after an unrolled loop of integer adds into a few
// accumulators, GCC may reassociate the whole chain into a tree over every product (integer
// addition is associative), which needs a register per product and spills them all
#define TG_KEEP(v) __asm__("" : "+x"(v))

#define TG_MIN(a, b) ((a) < (b) ? (a) : (b))
#define TG_MAX(a, b) ((a) > (b) ? (a) : (b))

// Long float sums go in blocks: each block one chain from zero, the blocks added in order to a
// running total. One chain over all n terms rounds a partial sum that keeps growing (rms error
// ~ n ulp); blocks of about sqrt(n) terms balance the two chains (~ n^(3/4) ulp), near what the
// SIMD dots' 16 lanes and their tree of adds reach, at one add per block. A power of two in
// [8, 64], so that it divides mul_mat's k blocks (multiples of 256). Used where a scalar loop
// or a register tile sums over k (mul_mat, the chunked scan's products).
static inline int64_t tg_sum_block(int64_t n) {
    int64_t b = 8;
    while (b < 64 && b * b < n) b *= 2;
    return b;
}

typedef uint16_t tg_fp16_t;

// ---- scalar half <-> float (IEEE binary16), exact, with subnormals, inf and nan ----
static inline float tg_fp16_to_fp32(tg_fp16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {                          // subnormal: renormalize
            exp = 127 - 15 + 1;
            while ((man & 0x400) == 0) { man <<= 1; exp--; }
            man &= 0x3ff;
            bits = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline float tg_silu_f32(float x) { return x / (1.0f + expf(-x)); }

static inline float tg_softplus_f32(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

#ifdef TG_AVX2
// horizontal sum of 8 floats
static inline float tg_hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v);
    __m128 hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    __m128 sh = _mm_movehdup_ps(lo);
    lo = _mm_add_ps(lo, sh);
    sh = _mm_movehl_ps(sh, lo);
    lo = _mm_add_ss(lo, sh);
    return _mm_cvtss_f32(lo);
}

// horizontal max of 8 floats
static inline float tg_hmax256(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

// the 8 horizontal sums of a[0..7] as one vector (lane j = sum of a[j])
static inline __m256 tg_hsum8x8(const __m256 a[8]) {
    const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// exp(x) for 8 lanes: x = k*ln2 + r, |r| <= ln2/2, exp(r) = 1 + r + r^2 q(r) with q a degree-4
// polynomial fitted to (exp(r) - 1 - r) / r^2 for the least maximum relative error over the
// range (Lawson's iteration in float64: 3.1e-9, under a tenth of a float ulp); 2^k through the
// exponent bits. Max error 1 ulp, mean 0.26 (expf: 0.5, 0.25). (The Taylor coefficients of
// degree 6 it replaces leave r^7/7! ~ 1.2e-7 at the ends of the range: 2.7 ulp, and an error
// of one sign over each half of the range.)
static inline __m256 tg_exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    // r = x - k*ln2 in two steps (Cody-Waite) for accuracy
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 q = _mm256_set1_ps(1.3814593e-3f);
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(8.368708e-3f));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(4.166839e-2f));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.6666521e-1f));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(4.9999994e-1f));
    const __m256 p = _mm256_add_ps(_mm256_fmadd_ps(q, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// log1p(e) for 4 lanes of e in (0, 1], in double: 2 atanh(s), s = e / (2 + e) <= 1/3, summed
// as a series (9 terms reach ~1e-9 relative), no cancellation for tiny e
static inline __m256d tg_log1p_unit_pd(__m256d e) {
    const __m256d s = _mm256_div_pd(e, _mm256_add_pd(_mm256_set1_pd(2.0), e));
    const __m256d s2 = _mm256_mul_pd(s, s);
    __m256d q = _mm256_set1_pd(1.0 / 17);
    q = _mm256_fmadd_pd(q, s2, _mm256_set1_pd(1.0 / 15));
    q = _mm256_fmadd_pd(q, s2, _mm256_set1_pd(1.0 / 13));
    q = _mm256_fmadd_pd(q, s2, _mm256_set1_pd(1.0 / 11));
    q = _mm256_fmadd_pd(q, s2, _mm256_set1_pd(1.0 / 9));
    q = _mm256_fmadd_pd(q, s2, _mm256_set1_pd(1.0 / 7));
    q = _mm256_fmadd_pd(q, s2, _mm256_set1_pd(1.0 / 5));
    q = _mm256_fmadd_pd(q, s2, _mm256_set1_pd(1.0 / 3));
    q = _mm256_fmadd_pd(q, s2, _mm256_set1_pd(1.0));
    return _mm256_mul_pd(_mm256_add_pd(s, s), q);
}

// softplus(x) = max(x, 0) + log1p(exp(-|x|)): exp in float (tg_exp256, <= 1 ulp), the rest in
// double and rounded once: max 1.5 ulp, mean 0.33, as log1pf(expf(x)) (in float throughout,
// the division and the series added up to 3.6 ulp, mean 0.6 for x < 0, where a trained model's
// dt lies). Called once per token and head (channel for Mamba-1, beside d_state exps): the
// double half costs nothing that shows.
static inline __m256 tg_softplus256(__m256 x) {
    const __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
    const __m256 e = tg_exp256(_mm256_sub_ps(_mm256_setzero_ps(), ax));
    const __m256 mx = _mm256_max_ps(x, _mm256_setzero_ps());
    const __m256d lo = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(mx)),
                                     tg_log1p_unit_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(e))));
    const __m256d hi = _mm256_add_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(mx, 1)),
                                     tg_log1p_unit_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(e, 1))));
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(lo)), _mm256_cvtpd_ps(hi), 1);
}

static inline __m256 tg_silu256(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(x, _mm256_add_ps(one, tg_exp256(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

static inline __m256 tg_load_f16x8(const tg_fp16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
#endif

// y[i] = (float)x[i], n elements
static inline void tg_fp16_to_fp32_row(const tg_fp16_t *x, float *y, int64_t n) {
    int64_t i = 0;
#ifdef TG_AVX2
    if (TG_USE_SIMD) {
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, tg_load_f16x8(x + i));
    }
#endif
    for (; i < n; i++) y[i] = tg_fp16_to_fp32(x[i]);
}

// float -> half, rounding to nearest even (as F16C and numpy): overflow to inf, subnormals, nan
static inline tg_fp16_t tg_fp32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) return sign | 0x7c00 | (x > 0x7f800000u ? 0x200 : 0);   // inf, nan
    if (x >= 0x47800000u) return sign | 0x7c00;                 // >= 2^16: beyond the largest half
    if (x < 0x38800000u) {                                      // < 2^-14: a subnormal half (or 0)
        float a;
        memcpy(&a, &x, 4);
        return sign | (uint16_t)lrintf(a * 16777216.0f);        // exact product; 1024 is 2^-14
    }
    uint32_t h = ((x >> 23) - 112) << 10 | (x & 0x7fffff) >> 13;
    const uint32_t rem = x & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;        // a carry rounds up the exponent
    return sign | (uint16_t)h;
}

// y[i] = (half)x[i], n elements
static inline void tg_fp32_to_fp16_row(const float *x, tg_fp16_t *y, int64_t n) {
    int64_t i = 0;
#ifdef TG_AVX2
    if (TG_USE_SIMD) {
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    }
#endif
    for (; i < n; i++) y[i] = tg_fp32_to_fp16(x[i]);
}

// Dot products streaming one row through 4 accumulators, 32 values a step (the bandwidth probe's
// 1-stream read, the K-quants' min terms; the decode reads rows through tg_dot_rows4_* below).
#ifdef TG_AVX2
#define TG_DOT_BODY(LOAD_X)                                                                     \
    __m256 c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps();                                  \
    __m256 c2 = _mm256_setzero_ps(), c3 = _mm256_setzero_ps();                                  \
    for (; i + 32 <= n; i += 32) {                                                              \
        c0 = _mm256_fmadd_ps(LOAD_X(x + i), _mm256_loadu_ps(y + i), c0);                        \
        c1 = _mm256_fmadd_ps(LOAD_X(x + i + 8), _mm256_loadu_ps(y + i + 8), c1);                \
        c2 = _mm256_fmadd_ps(LOAD_X(x + i + 16), _mm256_loadu_ps(y + i + 16), c2);              \
        c3 = _mm256_fmadd_ps(LOAD_X(x + i + 24), _mm256_loadu_ps(y + i + 24), c3);              \
    }                                                                                           \
    for (; i + 8 <= n; i += 8) c0 = _mm256_fmadd_ps(LOAD_X(x + i), _mm256_loadu_ps(y + i), c0); \
    sum = tg_hsum256(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)));
#endif

static inline float tg_dot_f32(int64_t n, const float *x, const float *y) {
    int64_t i = 0;
    float sum = 0.0f;
#ifdef TG_AVX2
    if (TG_USE_SIMD) { TG_DOT_BODY(_mm256_loadu_ps) }
#endif
    for (; i < n; i++) sum += x[i] * y[i];
    return sum;
}

// Decode rows (matrix x vector, F32 or F16 rows): tg_dot_rows4_* takes 4 rows at once, which the
// caller picks far apart (a quarter of a thread's rows), so each core runs 4 read streams
// instead of 1: one stream per core leaves DRAM bandwidth unused (docs/benchmark-log.md has the
// figures). A row's arithmetic is the same in both functions (2 accumulators over 16 values a
// step, one 8-value step, the horizontal sum, a scalar tail), so its result does not depend on
// which rows it is computed with or on the thread count.
// The scalar path (and the SIMD tail, under 8 values: one block) sums in tg_sum_block blocks.
#define TG_DEF_DOT_ROWS(SUF, T, LOAD_X, TO_F32)                                                \
static inline float tg_dot_tail_##SUF(int64_t i, int64_t n, const T *x, const float *y) {    \
    const int64_t kb = tg_sum_block(n - i);                                                      \
    float sum = 0.0f;                                                                            \
    while (i < n) {                                                                              \
        const int64_t i1 = TG_MIN(n, i + kb);                                                    \
        float b = 0.0f;                                                                          \
        for (; i < i1; i++) b += TO_F32(x[i]) * y[i];                                            \
        sum += b;                                                                                \
    }                                                                                            \
    return sum;                                                                                  \
}                                                                                                \
static inline float tg_dot_row1_##SUF(int64_t n, const T *x, const float *y) {               \
    int64_t i = 0;                                                                               \
    float sum = 0.0f;                                                                            \
    TG_DOT_ROW1_SIMD(LOAD_X)                                                                     \
    return i < n ? sum + tg_dot_tail_##SUF(i, n, x, y) : sum;                                    \
}                                                                                                \
static inline void tg_dot_rows4_##SUF(int64_t n, const T *const x[4], const float *y,           \
                                      float out[4]) {                                            \
    TG_DOT_ROWS4_SIMD(LOAD_X, SUF)                                                               \
    for (int r = 0; r < 4; r++) out[r] = tg_dot_row1_##SUF(n, x[r], y);                          \
}

#ifdef TG_AVX2
#define TG_DOT_ROW1_SIMD(LOAD_X)                                                                 \
    if (TG_USE_SIMD) {                                                                           \
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();                               \
        for (; i + 16 <= n; i += 16) {                                                           \
            a0 = _mm256_fmadd_ps(LOAD_X(x + i), _mm256_loadu_ps(y + i), a0);                     \
            a1 = _mm256_fmadd_ps(LOAD_X(x + i + 8), _mm256_loadu_ps(y + i + 8), a1);             \
        }                                                                                        \
        if (i + 8 <= n) {                                                                        \
            a0 = _mm256_fmadd_ps(LOAD_X(x + i), _mm256_loadu_ps(y + i), a0);                     \
            i += 8;                                                                              \
        }                                                                                        \
        sum = tg_hsum256(_mm256_add_ps(a0, a1));                                                 \
    }
#define TG_DOT_ROWS4_SIMD(LOAD_X, SUF)                                                           \
    if (TG_USE_SIMD) {                                                                           \
        const __m256 z = _mm256_setzero_ps();                                                    \
        __m256 a0 = z, a1 = z, b0 = z, b1 = z, c0 = z, c1 = z, d0 = z, d1 = z;                   \
        int64_t i;                                                                               \
        for (i = 0; i + 16 <= n; i += 16) {                                                      \
            const __m256 y0 = _mm256_loadu_ps(y + i), y1 = _mm256_loadu_ps(y + i + 8);          \
            a0 = _mm256_fmadd_ps(LOAD_X(x[0] + i), y0, a0);                                      \
            a1 = _mm256_fmadd_ps(LOAD_X(x[0] + i + 8), y1, a1);                                  \
            b0 = _mm256_fmadd_ps(LOAD_X(x[1] + i), y0, b0);                                      \
            b1 = _mm256_fmadd_ps(LOAD_X(x[1] + i + 8), y1, b1);                                  \
            c0 = _mm256_fmadd_ps(LOAD_X(x[2] + i), y0, c0);                                      \
            c1 = _mm256_fmadd_ps(LOAD_X(x[2] + i + 8), y1, c1);                                  \
            d0 = _mm256_fmadd_ps(LOAD_X(x[3] + i), y0, d0);                                      \
            d1 = _mm256_fmadd_ps(LOAD_X(x[3] + i + 8), y1, d1);                                  \
        }                                                                                        \
        if (i + 8 <= n) {                                                                        \
            const __m256 y0 = _mm256_loadu_ps(y + i);                                            \
            a0 = _mm256_fmadd_ps(LOAD_X(x[0] + i), y0, a0);                                      \
            b0 = _mm256_fmadd_ps(LOAD_X(x[1] + i), y0, b0);                                      \
            c0 = _mm256_fmadd_ps(LOAD_X(x[2] + i), y0, c0);                                      \
            d0 = _mm256_fmadd_ps(LOAD_X(x[3] + i), y0, d0);                                      \
        }                                                                                        \
        out[0] = tg_hsum256(_mm256_add_ps(a0, a1));                                              \
        out[1] = tg_hsum256(_mm256_add_ps(b0, b1));                                              \
        out[2] = tg_hsum256(_mm256_add_ps(c0, c1));                                              \
        out[3] = tg_hsum256(_mm256_add_ps(d0, d1));                                              \
        if (n % 8)                                                                               \
            for (int r = 0; r < 4; r++) out[r] += tg_dot_tail_##SUF(n / 8 * 8, n, x[r], y);      \
        return;                                                                                  \
    }
#else
#define TG_DOT_ROW1_SIMD(LOAD_X)
#define TG_DOT_ROWS4_SIMD(LOAD_X, SUF)
#endif

#define TG_F32_ID(v) (v)
TG_DEF_DOT_ROWS(f32, float, _mm256_loadu_ps, TG_F32_ID)
TG_DEF_DOT_ROWS(f16, tg_fp16_t, tg_load_f16x8, tg_fp16_to_fp32)

#endif
