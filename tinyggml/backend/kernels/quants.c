// Quantized weights: unpack to int8 + per-16 scales, activation quantization, integer dots.
//
// Every weight type is described by one unpack function that turns a block of QK values into
//   int8 w[QK], float sc[QK/16], float mn[QK/16]   with   x[i] = sc[i/16] * w[i] - mn[i/16]
// (the dequantization of ggml's dequantize_row_<type>, in the same float order). Activations
// are quantized once per node to TG_TYPE_QACT rows, 16 bits per value with one scale per 32:
//   int16 q[K] | float d[K/32] | float ds[K/16]      x ~= d[i/32] * q[i], ds[h] = d * sum(q in half h)
// so that   dot(x_w, x_a) = sum_32-chunks d_a * (sc_lo * isum_lo + sc_hi * isum_hi) - dot(mn, ds)
// with integer sums isum over 16 products. One generic SIMD integer dot serves every type.
// Why 16-bit activations where ggml uses 8 (Q8_0 / Q8_K): the 8-bit activation rounding is the
// largest error term of a quantized model after the weights themselves (llama.cpp's Q8_0 files
// land 0.13-0.21 logits away from the files' exact float64 output on the reference fixtures);
// int16 removes it at nearly the same cost (cvtepi8_epi16 + madd_epi16 instead of maddubs).
// ref: ggml-quants.c (block layouts), gguf-py quants.py (the layouts the tests dequantize with).
#include "quants.h"

// ---- block layouts (bytes) ------------------------------------------------------------------
// Q4_0 {f16 d; u8 qs[16]}                 Q4_1 {f16 d, m; u8 qs[16]}
// Q5_0 {f16 d; u8 qh[4]; u8 qs[16]}       Q5_1 {f16 d, m; u8 qh[4]; u8 qs[16]}
// Q8_0 {f16 d; i8 qs[32]}
// Q2_K {u8 scales[16]; u8 qs[64]; f16 d, dmin}
// Q3_K {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d}
// Q4_K {f16 d, dmin; u8 scales[12]; u8 qs[128]}
// Q5_K {f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}
// Q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}

static inline float f16(const uint8_t *p) {
    tg_fp16_t h;
    memcpy(&h, p, 2);
#ifdef TG_AVX2
    return _cvtsh_ss(h);          // F16C: exact, one instruction
#else
    return tg_fp16_to_fp32(h);
#endif
}

static void unpack_q4_0(const uint8_t *b, int8_t *w, float *sc, float *mn) {
    const float d = f16(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        w[j] = (int8_t)((qs[j] & 0xF) - 8);
        w[j + 16] = (int8_t)((qs[j] >> 4) - 8);
    }
    sc[0] = sc[1] = d;
    mn[0] = mn[1] = 0.0f;
}

static void unpack_q4_1(const uint8_t *b, int8_t *w, float *sc, float *mn) {
    const float d = f16(b), m = f16(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        w[j] = (int8_t)(qs[j] & 0xF);
        w[j + 16] = (int8_t)(qs[j] >> 4);
    }
    sc[0] = sc[1] = d;
    mn[0] = mn[1] = -m;
}

static void unpack_q5(const uint8_t *qh4, const uint8_t *qs, int offset, int8_t *w) {
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    for (int j = 0; j < 16; j++) {
        const int h0 = ((qh >> j) << 4) & 0x10;
        const int h1 = (qh >> (j + 12)) & 0x10;
        w[j] = (int8_t)(((qs[j] & 0xF) | h0) - offset);
        w[j + 16] = (int8_t)(((qs[j] >> 4) | h1) - offset);
    }
}

static void unpack_q5_0(const uint8_t *b, int8_t *w, float *sc, float *mn) {
    unpack_q5(b + 2, b + 6, 16, w);
    sc[0] = sc[1] = f16(b);
    mn[0] = mn[1] = 0.0f;
}

static void unpack_q5_1(const uint8_t *b, int8_t *w, float *sc, float *mn) {
    unpack_q5(b + 4, b + 8, 0, w);
    sc[0] = sc[1] = f16(b);
    mn[0] = mn[1] = -f16(b + 2);
}

static void unpack_q8_0(const uint8_t *b, int8_t *w, float *sc, float *mn) {
    memcpy(w, b + 2, 32);
    sc[0] = sc[1] = f16(b);
    mn[0] = mn[1] = 0.0f;
}

static void unpack_q2_k(const uint8_t *b, int8_t *w, float *sc, float *mn) {
    const uint8_t *scales = b, *q = b + 16;
    const float d = f16(b + 80), dmin = f16(b + 82);
    int is = 0;
    for (int n = 0; n < 256; n += 128, q += 32) {
        for (int j = 0, shift = 0; j < 4; j++, shift += 2) {
            for (int half = 0; half < 2; half++, is++) {
                sc[is] = d * (scales[is] & 0xF);
                mn[is] = dmin * (scales[is] >> 4);
                for (int l = 0; l < 16; l++)
                    w[n + j * 32 + half * 16 + l] = (int8_t)((q[l + half * 16] >> shift) & 3);
            }
        }
    }
}

static void unpack_q3_k(const uint8_t *b, int8_t *w, float *sc, float *mn) {
    const uint8_t *hm = b, *q = b + 32;
    const float d = f16(b + 108);
    uint32_t aux[4];
    memcpy(aux, b + 96, 12);
    const uint32_t k1 = 0x03030303, k2 = 0x0f0f0f0f, tmp = aux[2];
    aux[2] = ((aux[0] >> 4) & k2) | (((tmp >> 4) & k1) << 4);
    aux[3] = ((aux[1] >> 4) & k2) | (((tmp >> 6) & k1) << 4);
    aux[0] = (aux[0] & k2) | (((tmp >> 0) & k1) << 4);
    aux[1] = (aux[1] & k2) | (((tmp >> 2) & k1) << 4);
    const int8_t *scales = (const int8_t *)aux;
    int is = 0;
    uint8_t m = 1;
    for (int n = 0; n < 256; n += 128, q += 32) {
        for (int j = 0, shift = 0; j < 4; j++, shift += 2, m <<= 1) {
            for (int half = 0; half < 2; half++, is++) {
                sc[is] = d * (scales[is] - 32);
                mn[is] = 0.0f;
                for (int l = 0; l < 16; l++) {
                    const int k = l + half * 16;
                    w[n + j * 32 + half * 16 + l] =
                        (int8_t)(((q[k] >> shift) & 3) - ((hm[k] & m) ? 0 : 4));
                }
            }
        }
    }
}

// 6-bit scale and min of sub-block j of a Q4_K / Q5_K superblock
static inline void scale_min_k4(int j, const uint8_t *q, int *d, int *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static void unpack_q45_k(const uint8_t *b, int8_t *w, float *sc, float *mn, int five) {
    const float d = f16(b), dmin = f16(b + 2);
    const uint8_t *scales = b + 4;
    const uint8_t *qh = b + 16;                    // Q5_K only
    const uint8_t *q = b + (five ? 48 : 16);
    int is = 0;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0; j < 256; j += 64, q += 32, is += 2, u1 <<= 2, u2 <<= 2) {
        int s, m;
        scale_min_k4(is, scales, &s, &m);
        const float d1 = d * s, m1 = dmin * m;
        scale_min_k4(is + 1, scales, &s, &m);
        const float d2 = d * s, m2 = dmin * m;
        for (int l = 0; l < 32; l++) {
            w[j + l] = (int8_t)((q[l] & 0xF) + (five && (qh[l] & u1) ? 16 : 0));
            w[j + 32 + l] = (int8_t)((q[l] >> 4) + (five && (qh[l] & u2) ? 16 : 0));
        }
        sc[j / 16] = sc[j / 16 + 1] = d1;
        mn[j / 16] = mn[j / 16 + 1] = m1;
        sc[j / 16 + 2] = sc[j / 16 + 3] = d2;
        mn[j / 16 + 2] = mn[j / 16 + 3] = m2;
    }
}

static void unpack_q4_k(const uint8_t *b, int8_t *w, float *sc, float *mn) { unpack_q45_k(b, w, sc, mn, 0); }
static void unpack_q5_k(const uint8_t *b, int8_t *w, float *sc, float *mn) { unpack_q45_k(b, w, sc, mn, 1); }

static void unpack_q6_k(const uint8_t *b, int8_t *w, float *sc, float *mn) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *s = (const int8_t *)(b + 192);
    const float d = f16(b + 208);
    for (int n = 0; n < 256; n += 128, ql += 64, qh += 32, s += 8) {
        for (int l = 0; l < 32; l++) {
            w[n + l] = (int8_t)(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
            w[n + l + 32] = (int8_t)(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
            w[n + l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            w[n + l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
        for (int k = 0; k < 8; k++) {
            sc[n / 16 + k] = d * s[k];
            mn[n / 16 + k] = 0.0f;
        }
    }
}

int64_t tg_row_bytes(int type, int64_t n) {
    const tg_type_traits *tt = tg_get_type_traits(type);
    return n / tt->blck_size * tt->type_size;
}

void tg_unpack_row(int type, const void *row, int64_t K, int8_t *w, float *sc, float *mn) {
    const tg_type_traits *tt = tg_get_type_traits(type);
    const uint8_t *b = (const uint8_t *)row;
    for (int64_t i = 0; i < K; i += tt->blck_size, b += tt->type_size)
        tt->unpack(b, w + i, sc + i / 16, mn + i / 16);
}

void tg_dequantize_row(int type, const void *row, int64_t K, float *y, int8_t *w, float *sc, float *mn) {
    if (type == TG_TYPE_BF16) {
        const uint16_t *x = (const uint16_t *)row;
        for (int64_t i = 0; i < K; i++) {
            const uint32_t u = (uint32_t)x[i] << 16;
            memcpy(&y[i], &u, 4);
        }
        return;
    }
    tg_unpack_row(type, row, K, w, sc, mn);
    int64_t i = 0;
#ifdef TG_AVX2
    if (TG_USE_SIMD)                       // 16 values (one scale and min) at a time
        for (; i + 16 <= K; i += 16) {
            const __m256 s = _mm256_set1_ps(sc[i / 16]), m = _mm256_set1_ps(mn[i / 16]);
            const __m128i b = _mm_loadu_si128((const __m128i *)(w + i));
            const __m256 lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
            const __m256 hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(b, b)));
            _mm256_storeu_ps(y + i, _mm256_fmsub_ps(s, lo, m));
            _mm256_storeu_ps(y + i + 8, _mm256_fmsub_ps(s, hi, m));
        }
#endif
    for (; i < K; i++) y[i] = sc[i / 16] * w[i] - mn[i / 16];
}

// ---- activations ----------------------------------------------------------------------------
// max |x[i]| of n floats (n a multiple of 8 on the SIMD path; inlined with a constant n)
static inline __attribute__((always_inline)) float amax_f32(const float *x, int64_t n) {
    float amax = 0.0f;
    int64_t i = 0;
#ifdef TG_AVX2
    if (TG_USE_SIMD) {
        const __m256 sign = _mm256_set1_ps(-0.0f);
        __m256 m = _mm256_setzero_ps();
        for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        amax = _mm_cvtss_f32(h);
    }
#endif
    for (; i < n; i++) amax = TG_MAX(amax, fabsf(x[i]));
    return amax;
}

void tg_quantize_act_row(const float *x, int64_t K, uint8_t *out) {
    int16_t *q = (int16_t *)out;
    float *d = (float *)(out + 2 * K);
    float *ds = d + K / 32;
    for (int64_t c = 0; c < K / 32; c++) {
        const float *xc = x + c * 32;
        const float dc = amax_f32(xc, 32) / 32767.0f;
        const float id = dc != 0.0f ? 1.0f / dc : 0.0f;
        int s0 = 0, s1 = 0;
        for (int i = 0; i < 32; i++) {
            const int v = TG_MIN(32767, TG_MAX(-32767, (int)nearbyintf(xc[i] * id)));
            q[c * 32 + i] = (int16_t)v;
            if (i < 16) s0 += v; else s1 += v;
        }
        d[c] = dc;
        ds[2 * c] = dc * (float)s0;
        ds[2 * c + 1] = dc * (float)s1;
    }
}

#ifdef TG_AVX2
// the 128 raw 6-bit values (0-63, before the -32) of half a Q6_K superblock, as 4 x 32 bytes:
// w[k] = values 32k..32k+31 of the half (low nibbles of ql then high, plus 2 bits of qh each)
static inline void q6k_half(const uint8_t *ql, const uint8_t *qh, __m256i w[4]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    const __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
    const __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
    const __m256i hh = _mm256_loadu_si256((const __m256i *)qh);
    w[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(hh, 4), m30));
    w[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(hh, 2), m30));
    w[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hh, m30));
    w[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                           _mm256_and_si256(_mm256_srli_epi16(hh, 2), m30));
}
#endif

// K floats -> one QACT_K row (K % 256 == 0): per 256 values d = amax / 32639 and q = round(x / d),
// stored split as q = 256 hi + lo with hi, lo int8 (lo the sign-extended low byte), so that
// vpmaddubsw can multiply unsigned 6-bit Q6_K weights by each half; |q| <= 32639 keeps hi in
// int8. Layout: per superblock hi[256] | lo[256], then d[K/256], then the sums of q per 16
// values as floats (exact: |sum| < 2^24), for the weights' -32 offset.
void tg_quantize_kact_row(const float *x, int64_t K, uint8_t *out) {
    float *d = (float *)(out + 2 * K), *qs = d + K / 256;
    for (int64_t s = 0; s < K / 256; s++) {
        const float *xs = x + 256 * s;
        int8_t *hi = (int8_t *)out + 512 * s, *lo = hi + 256;
        const float dc = amax_f32(xs, 256) / 32639.0f;
        const float id = dc != 0.0f ? 1.0f / dc : 0.0f;
        for (int g = 0; g < 16; g++) {
            int sum = 0;
            for (int i = 16 * g; i < 16 * g + 16; i++) {
                const int v = TG_MIN(32639, TG_MAX(-32639, (int)nearbyintf(xs[i] * id)));
                const int l = (int8_t)(v & 0xFF);
                lo[i] = (int8_t)l;
                hi[i] = (int8_t)((v - l) / 256);
                sum += v;
            }
            qs[16 * s + g] = (float)sum;
        }
        d[s] = dc;
    }
}

// Q6_K row x QACT_K row. SIMD: per 32 weights (raw 6-bit, unsigned) two vpmaddubsw (times hi
// and lo) and two vpmaddwd by the two group scales (int16, one per 128-bit lane), summed in
// int32 over the superblock: no per-group horizontal sums, no widening of the weights. The
// -32 offset is 32 * sum_g scale_g * (sum of q over group g), in float.
#ifdef TG_AVX2
// vpshufb masks over a lane-broadcast of 8 int16 scales: for the 32 weights k of a 128-value
// half, low lane = scale 2k (weights 0-15), high lane = scale 2k+1
static inline void q6_k_scale_masks(__m256i msk[4]) {
    for (int k = 0; k < 4; k++) {
        const char a0 = (char)(4 * k), a1 = (char)(4 * k + 1), b0 = (char)(4 * k + 2), b1 = (char)(4 * k + 3);
        msk[k] = _mm256_setr_epi8(a0, a1, a0, a1, a0, a1, a0, a1, a0, a1, a0, a1, a0, a1, a0, a1,
                                  b0, b1, b0, b1, b0, b1, b0, b1, b0, b1, b0, b1, b0, b1, b0, b1);
    }
}

// acc + superblock i (at b) of one row times one QACT_K column
static inline __attribute__((always_inline)) __m256 q6_k_ksuper(const uint8_t *b, const uint8_t *act, int64_t K,
                                                               const __m256i msk[4], int64_t i, __m256 acc) {
    const float *d = (const float *)(act + 2 * K), *qs = d + K / 256;
    // into every cache level (T0): on an Intel Xeon the non-temporal hint halved the LM head's
    // speed (43 -> 81 GFLOP/s for 50288 x 768 rows read from the L3); equal on Zen 3 (session 7)
    for (int l = 0; l < 4; l++) _mm_prefetch((const char *)(b + 1024 + 64 * l), _MM_HINT_T0);
    const int8_t *hi = (const int8_t *)act + 2 * i, *lo = hi + 256;
    const __m128i sc8 = _mm_loadu_si128((const __m128i *)(b + 192));
    const __m256i S = _mm256_cvtepi8_epi16(sc8);            // scales 0-7 | 8-15
    __m256i sh = _mm256_setzero_si256(), sl = _mm256_setzero_si256();
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
        const __m256i Sh = h ? _mm256_permute2x128_si256(S, S, 0x11)    // immediates at -O0/-O1 too
                             : _mm256_permute2x128_si256(S, S, 0x00);
        __m256i w[4];
        q6k_half(ql, qh, w);
        for (int k = 0; k < 4; k++) {
            const __m256i scv = _mm256_shuffle_epi8(Sh, msk[k]);
            const __m256i *a = (const __m256i *)(hi + 128 * h + 32 * k);
            const __m256i *c = (const __m256i *)(lo + 128 * h + 32 * k);
            sh = _mm256_add_epi32(sh, _mm256_madd_epi16(_mm256_maddubs_epi16(w[k], _mm256_loadu_si256(a)), scv));
            sl = _mm256_add_epi32(sl, _mm256_madd_epi16(_mm256_maddubs_epi16(w[k], _mm256_loadu_si256(c)), scv));
        }
    }
    const __m256 v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sh), _mm256_set1_ps(256.0f),
                                     _mm256_cvtepi32_ps(sl));
    const __m256 sf0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc8));
    const __m256 sf1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(sc8, sc8)));
    const __m256 off = _mm256_fmadd_ps(sf0, _mm256_loadu_ps(qs + i / 16),
                                       _mm256_mul_ps(sf1, _mm256_loadu_ps(qs + i / 16 + 8)));
    return _mm256_fmadd_ps(_mm256_fnmadd_ps(_mm256_set1_ps(32.0f), off, v),
                           _mm256_set1_ps(f16(b + 208) * d[i / 256]), acc);
}
#endif

float tg_dot_q6_k_kact(int64_t K, const void *row, const uint8_t *act) {
    const uint8_t *b = (const uint8_t *)row;
    const float *d = (const float *)(act + 2 * K);
    float sum = 0.0f;
    int64_t i = 0;
#ifdef TG_AVX2
    if (TG_USE_SIMD) {
        __m256i msk[4];
        q6_k_scale_masks(msk);
        __m256 acc = _mm256_setzero_ps();
        for (; i < K; i += 256, b += 210) acc = q6_k_ksuper(b, act, K, msk, i, acc);
        sum = tg_hsum256(acc);
    }
#endif
    for (; i < K; i += 256, b += 210) {
        int8_t w[256];
        float sc[16], mn[16];
        const int8_t *hi = (const int8_t *)act + 2 * i, *lo = hi + 256;
        unpack_q6_k(b, w, sc, mn);
        float blk = 0.0f;
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int j = 16 * g; j < 16 * g + 16; j++) s += w[j] * (256 * hi[j] + lo[j]);
            blk += sc[g] * (float)s;
        }
        sum += blk * d[i / 256];
    }
    return sum;
}

// four Q6_K rows x one QACT_K row, side by side (4 read streams: mul_mat.c); bit for bit the one-row dot
void tg_dot4_q6_k_kact(int64_t K, const void *const rows[4], const uint8_t *act, float out[4]) {
#ifdef TG_AVX2
    if (TG_USE_SIMD) {
        __m256i msk[4];
        q6_k_scale_masks(msk);
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int64_t i = 0; i < K; i += 256)
            for (int r = 0; r < 4; r++)
                acc[r] = q6_k_ksuper((const uint8_t *)rows[r] + 210 * (i / 256), act, K, msk, i, acc[r]);
        for (int r = 0; r < 4; r++) out[r] = tg_hsum256(acc[r]);
        return;
    }
#endif
    for (int r = 0; r < 4; r++) out[r] = tg_dot_q6_k_kact(K, rows[r], act);
}

// dot of one unpacked weight row (w, sc, mn) with one QACT activation row
float tg_dot_unpacked_qact(int64_t K, const int8_t *w, const float *sc, const float *mn,
                           const uint8_t *act, int has_min) {
    const int16_t *q = (const int16_t *)act;
    const float *d = (const float *)(act + 2 * K);
    const float *ds = d + K / 32;
    float sum = 0.0f;
    int64_t c = 0;
#ifdef TG_AVX2
    if (TG_USE_SIMD) {
        __m256 acc = _mm256_setzero_ps();
        for (; c < K / 32; c++) {
            const __m256i vw = _mm256_loadu_si256((const __m256i *)(w + c * 32));
            const __m256i w0 = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(vw));       // 0..15
            const __m256i w1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(vw, 1));  // 16..31
            const __m256i p0 = _mm256_madd_epi16(w0, _mm256_loadu_si256((const __m256i *)(q + c * 32)));
            const __m256i p1 = _mm256_madd_epi16(w1, _mm256_loadu_si256((const __m256i *)(q + c * 32 + 16)));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_set1_ps(sc[2 * c] * d[c]), acc);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_set1_ps(sc[2 * c + 1] * d[c]), acc);
        }
        sum = tg_hsum256(acc);
    }
#endif
    for (; c < K / 32; c++) {
        int s0 = 0, s1 = 0;
        for (int i = 0; i < 16; i++) s0 += w[c * 32 + i] * q[c * 32 + i];
        for (int i = 16; i < 32; i++) s1 += w[c * 32 + i] * q[c * 32 + i];
        sum += d[c] * (sc[2 * c] * (float)s0 + sc[2 * c + 1] * (float)s1);
    }
    return has_min ? sum - tg_dot_f32(K / 16, mn, ds) : sum;
}

// ---- fused dots for the common block types (no unpack buffer) --------------------------------
#ifdef TG_AVX2
// sum of madd(int8 w (16 values, as 128 bits), int16 q (16 values)) as 8 int32 lanes
static inline __m256i madd16(__m128i w8, const int16_t *q) {
    return _mm256_madd_epi16(_mm256_cvtepi8_epi16(w8), _mm256_loadu_si256((const __m256i *)q));
}
#endif

#ifdef TG_AVX2
// acc + madd(w, q) (16 int16 x 16 int16 -> 8 int32 lanes): one VNNI instruction where there is one
static inline __m256i dp16(__m256i acc, __m256i w, __m256i q) {
#ifdef TG_AVX512
    return _mm256_dpwssd_epi32(acc, w, q);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(w, q));
#endif
}

// the 4 horizontal sums of a[0..3] (int32 lanes) as one 128-bit vector
static inline __m128i hsum4x8_epi32(const __m256i a[4]) {
    const __m256i u = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(a[2], a[3]));
    return _mm_add_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1));
}

#endif

// Q4_0 row x QACT row: per block, (nibble - 8) * q summed in int32, scaled by d_w * d_a.
// SIMD: 8 blocks at a time; each block's 16 bytes widen to 16-bit lanes once, so the low and
// high nibbles (values 0-15 and 16-31) are one AND and one shift; the 8 block sums are reduced
// together and scaled by 8 weight scales (F16C) times 8 activation scales in one step. The
// helpers below are shared with the four-row and two-column dots, so all compute a column the
// same way.
#ifdef TG_AVX2
// block k's nibbles widened to 16-bit lanes: lo = values 0-15, hi = values 16-31
static inline __attribute__((always_inline)) void q4_0_widen(const uint8_t *b, int k, __m256i *lo, __m256i *hi) {
    const __m256i x = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(b + 18 * k + 2)));
    *lo = _mm256_and_si256(x, _mm256_set1_epi16(0x0F));
    *hi = _mm256_srli_epi16(x, 4);
}

// block c's sum of nibble * q for one QACT column q, as 8 int32 lanes
static inline __attribute__((always_inline)) __m256i q4_0_madd(__m256i lo, __m256i hi, const int16_t *q, int64_t c) {
    const __m256i *qc = (const __m256i *)(q + 32 * c);
    return dp16(_mm256_madd_epi16(lo, _mm256_loadu_si256(qc)), hi, _mm256_loadu_si256(qc + 1));
}

// acc + the 8 blocks c .. c+7 of one column: s = their integer sums (two halves of 4), dw = the
// 8 weight scales; per block d_a * sum(n q) - 8 * d_a * sum(q), the latter from the half sums
static inline __attribute__((always_inline)) __m256 q4_0_scale8(const uint8_t *act, int64_t K, int64_t c,
                                                               const __m128i s[2], __m256 dw, __m256 acc) {
    const float *d = (const float *)(act + 2 * K), *ds = d + K / 32;
    const __m256 qsum = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(
        _mm256_hadd_ps(_mm256_loadu_ps(ds + 2 * c), _mm256_loadu_ps(ds + 2 * c + 8))), 0xD8));
    const __m256 blk = _mm256_fnmadd_ps(_mm256_set1_ps(8.0f), qsum,
        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_set_m128i(s[1], s[0])), _mm256_loadu_ps(d + c)));
    return _mm256_fmadd_ps(blk, dw, acc);
}

// the weight scales of 8 blocks
static inline __attribute__((always_inline)) __m256 q4_0_scales8(const uint8_t *b) {
    uint16_t h[8];
    for (int j = 0; j < 8; j++) memcpy(&h[j], b + 18 * j, 2);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
}

// software prefetch 1 KiB ahead: decoding a large model streams its rows from DRAM, where the
// hardware prefetcher alone leaves bandwidth unused. Into every cache level (T0): on an Intel
// Xeon the non-temporal hint (L1 only) ran these dots at half speed; equal on Zen 3 (session 7).
static inline __attribute__((always_inline)) void q4_0_prefetch(const uint8_t *b) {
    _mm_prefetch((const char *)(b + 1024), _MM_HINT_T0);
    _mm_prefetch((const char *)(b + 1088), _MM_HINT_T0);
    _mm_prefetch((const char *)(b + 1152), _MM_HINT_T0);
}
#endif

// sum + blocks c0 .. K/32 - 1 of one column (the scalar path, and the blocks past the last
// group of 8)
static float q4_0_tail(const uint8_t *b, const uint8_t *act, int64_t K, int64_t c0, float sum) {
    const int16_t *q = (const int16_t *)act;
    const float *d = (const float *)(act + 2 * K);
    for (int64_t c = c0; c < K / 32; c++, b += 18) {
        int s = 0;
        for (int j = 0; j < 16; j++)
            s += ((b[2 + j] & 0xF) - 8) * q[c * 32 + j] + ((b[2 + j] >> 4) - 8) * q[c * 32 + j + 16];
        sum += (float)s * (f16(b) * d[c]);
    }
    return sum;
}

#ifdef TG_AVX2
// acc[j] + the 8 blocks at b (blocks c .. c+7 of the row) times QACT column act[j], j < n (1 or
// 2): each block's nibbles widen once for all n columns, and each column's arithmetic is the
// same whatever n, so a column's result does not depend on its partner
static inline __attribute__((always_inline)) void q4_0_blocks8_n(const uint8_t *b, const uint8_t *const *act,
                                                                int n, int64_t K, int64_t c, __m256 *acc) {
    q4_0_prefetch(b);
    __m128i s4[2][2];
    for (int h = 0; h < 2; h++) {      // 4 blocks at a time: fewer live registers
        __m256i p[2][4];
        for (int j = 0; j < 4; j++) {
            __m256i lo, hi;
            q4_0_widen(b, 4 * h + j, &lo, &hi);
            for (int a = 0; a < n; a++) p[a][j] = q4_0_madd(lo, hi, (const int16_t *)act[a], c + 4 * h + j);
        }
        for (int a = 0; a < n; a++) s4[a][h] = hsum4x8_epi32(p[a]);
    }
    const __m256 dw = q4_0_scales8(b);
    for (int a = 0; a < n; a++) acc[a] = q4_0_scale8(act[a], K, c, s4[a], dw, acc[a]);
}

// acc + the 8 blocks at b times one QACT column
static inline __attribute__((always_inline)) __m256 q4_0_blocks8(const uint8_t *b, const uint8_t *act,
                                                                int64_t K, int64_t c, __m256 acc) {
    q4_0_blocks8_n(b, &act, 1, K, c, &acc);
    return acc;
}
#endif

float tg_dot_q4_0_qact(int64_t K, const void *row, const uint8_t *act) {
    const uint8_t *b = (const uint8_t *)row;
    float sum = 0.0f;
    int64_t c = 0;
#ifdef TG_AVX2
    if (TG_USE_SIMD) {
        __m256 acc = _mm256_setzero_ps();
        for (; c + 8 <= K / 32; c += 8, b += 8 * 18) acc = q4_0_blocks8(b, act, K, c, acc);
        sum = tg_hsum256(acc);
    }
#endif
    return q4_0_tail(b, act, K, c, sum);
}

// four Q4_0 rows x one QACT row, the rows read side by side (4 read streams: mul_mat.c decode);
// out[r] equals tg_dot_q4_0_qact(K, rows[r], act) bit for bit
void tg_dot4_q4_0_qact(int64_t K, const void *const rows[4], const uint8_t *act, float out[4]) {
    float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    int64_t c = 0;
#ifdef TG_AVX2
    if (TG_USE_SIMD) {
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        for (; c + 8 <= K / 32; c += 8)
            for (int r = 0; r < 4; r++)
                acc[r] = q4_0_blocks8((const uint8_t *)rows[r] + 18 * c, act, K, c, acc[r]);
        for (int r = 0; r < 4; r++) sum[r] = tg_hsum256(acc[r]);
    }
#endif
    for (int r = 0; r < 4; r++) out[r] = q4_0_tail((const uint8_t *)rows[r] + 18 * c, act, K, c, sum[r]);
}

// four Q4_0 rows x two QACT rows (two columns of a small batch), the rows read side by side (4
// read streams, as the decode dot); each block's nibbles widen once for both columns
// (q4_0_blocks8_n): out[2 r + j] equals tg_dot_q4_0_qact(K, rows[r], act_j) bit for bit
void tg_dot2x4_q4_0_qact(int64_t K, const void *const rows[4], const uint8_t *act0, const uint8_t *act1,
                         float out[8]) {
    float sum[8] = {0.0f};
    int64_t c = 0;
#ifdef TG_AVX2
    if (TG_USE_SIMD) {
        __m256 acc[8];
        for (int r = 0; r < 8; r++) acc[r] = _mm256_setzero_ps();
        const uint8_t *const act[2] = {act0, act1};
        for (; c + 8 <= K / 32; c += 8)
            for (int r = 0; r < 4; r++)
                q4_0_blocks8_n((const uint8_t *)rows[r] + 18 * c, act, 2, K, c, &acc[2 * r]);
        for (int r = 0; r < 8; r++) sum[r] = tg_hsum256(acc[r]);
    }
#endif
    for (int r = 0; r < 4; r++) {
        out[2 * r] = q4_0_tail((const uint8_t *)rows[r] + 18 * c, act0, K, c, sum[2 * r]);
        out[2 * r + 1] = q4_0_tail((const uint8_t *)rows[r] + 18 * c, act1, K, c, sum[2 * r + 1]);
    }
}

// Q8_0 row x QACT row
#ifdef TG_AVX2
// block c (at b): its 32 int8 values widened to int16 in two halves
static inline __attribute__((always_inline)) void q8_0_widen(const uint8_t *b, int64_t c,
                                                           __m256i *w0, __m256i *w1) {
    // no software prefetch here: on an Intel Xeon it halved the Q8_0 decode (13.6 -> 25.9
    // GB/s without it, 400000x768 rows, BENCHMARKS.md)
    *w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + 2)));
    *w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + 18)));
}

// acc + a widened block (w0, w1; scale ws) times block c of one QACT column
static inline __attribute__((always_inline)) __m256 q8_0_madd(__m256i w0, __m256i w1, float ws,
                                                             const int16_t *q, const float *d,
                                                             int64_t c, __m256 acc) {
    const __m256i p = _mm256_add_epi32(
        _mm256_madd_epi16(w0, _mm256_loadu_si256((const __m256i *)(q + c * 32))),
        _mm256_madd_epi16(w1, _mm256_loadu_si256((const __m256i *)(q + c * 32 + 16))));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(ws * d[c]), acc);
}

// acc + block c (at b) times one QACT column
static inline __attribute__((always_inline)) __m256 q8_0_block(const uint8_t *b, const int16_t *q,
                                                              const float *d, int64_t c, __m256 acc) {
    __m256i w0, w1;
    q8_0_widen(b, c, &w0, &w1);
    return q8_0_madd(w0, w1, f16(b), q, d, c, acc);
}
#endif

#ifdef TG_AVX512
// AVX-512 builds: each block's 32 products summed exactly in int32, times (d_w d_a) into float
// lane c % 8, the lanes summed as tg_hsum256 sums them: the order the repacked 16-row dots
// (repack.c) follow lane for lane, so a Q8_0 row gives the same result packed or not.
static float q8_0_dot_blocks(int64_t K, const uint8_t *b, const int16_t *q, const float *d) {
    float lane[8] = {0};
    for (int64_t c = 0; c < K / 32; c++, b += 34) {
        const __m512i w = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(b + 2)));
        const int s = _mm512_reduce_add_epi32(_mm512_madd_epi16(w, _mm512_loadu_si512((const void *)(q + 32 * c))));
        lane[c % 8] = fmaf((float)s, f16(b) * d[c], lane[c % 8]);
    }
    return tg_hsum256(_mm256_loadu_ps(lane));
}
#endif

float tg_dot_q8_0_qact(int64_t K, const void *row, const uint8_t *act) {
    const uint8_t *b = (const uint8_t *)row;
    const int16_t *q = (const int16_t *)act;
    const float *d = (const float *)(act + 2 * K);
#ifdef TG_AVX512
    if (TG_USE_SIMD) return q8_0_dot_blocks(K, b, q, d);
#elif defined(TG_AVX2)
    if (TG_USE_SIMD) {
        __m256 acc = _mm256_setzero_ps();
        for (int64_t c = 0; c < K / 32; c++) acc = q8_0_block(b + 34 * c, q, d, c, acc);
        return tg_hsum256(acc);
    }
#endif
    float sum = 0.0f;
    for (int64_t c = 0; c < K / 32; c++, b += 34) {
        int s = 0;
        for (int j = 0; j < 32; j++) s += (int8_t)b[2 + j] * q[c * 32 + j];
        sum += (float)s * (f16(b) * d[c]);
    }
    return sum;
}

// four Q8_0 rows x one QACT row, side by side (4 read streams: mul_mat.c); bit for bit the one-row dot
// (AVX-512 builds: the one-row dots themselves; there Q8_0 weights decode repacked, repack.c)
void tg_dot4_q8_0_qact(int64_t K, const void *const rows[4], const uint8_t *act, float out[4]) {
#if defined(TG_AVX2) && !defined(TG_AVX512)
    if (TG_USE_SIMD) {
        const int16_t *q = (const int16_t *)act;
        const float *d = (const float *)(act + 2 * K);
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int64_t c = 0; c < K / 32; c++)
            for (int r = 0; r < 4; r++) acc[r] = q8_0_block((const uint8_t *)rows[r] + 34 * c, q, d, c, acc[r]);
        for (int r = 0; r < 4; r++) out[r] = tg_hsum256(acc[r]);
        return;
    }
#endif
    for (int r = 0; r < 4; r++) out[r] = tg_dot_q8_0_qact(K, rows[r], act);
}

// four Q8_0 rows x two QACT rows (two columns of a small batch: decoding several sequences),
// the rows read side by side; each block's int8 values widen once for both columns. out[2 r + j]
// equals tg_dot_q8_0_qact(K, rows[r], act_j) bit for bit (the same operations per column), so a
// sequence decodes alike alone and in a batch.
void tg_dot2x4_q8_0_qact(int64_t K, const void *const rows[4], const uint8_t *act0,
                         const uint8_t *act1, float out[8]) {
#if defined(TG_AVX2) && !defined(TG_AVX512)
    if (TG_USE_SIMD) {
        const int16_t *q0 = (const int16_t *)act0, *q1 = (const int16_t *)act1;
        const float *d0 = (const float *)(act0 + 2 * K), *d1 = (const float *)(act1 + 2 * K);
        __m256 acc[8];
        for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
        for (int64_t c = 0; c < K / 32; c++)
            for (int r = 0; r < 4; r++) {
                const uint8_t *b = (const uint8_t *)rows[r] + 34 * c;
                __m256i w0, w1;
                q8_0_widen(b, c, &w0, &w1);
                const float ws = f16(b);
                acc[2 * r] = q8_0_madd(w0, w1, ws, q0, d0, c, acc[2 * r]);
                acc[2 * r + 1] = q8_0_madd(w0, w1, ws, q1, d1, c, acc[2 * r + 1]);
            }
        for (int i = 0; i < 8; i++) out[i] = tg_hsum256(acc[i]);
        return;
    }
#endif
    for (int r = 0; r < 4; r++) {
        out[2 * r] = tg_dot_q8_0_qact(K, rows[r], act0);
        out[2 * r + 1] = tg_dot_q8_0_qact(K, rows[r], act1);
    }
}

#ifdef TG_AVX2
// Q4_K row x QACT row (SIMD only; the scalar path is the generic unpack + dot). The 8 six-bit
// scales and mins of a superblock are unpacked branch-free with 32-bit masks, and the scales
// (times d and the activation scales) and the min term are computed 8 at a time. The helper
// takes n QACT columns (1 or 2): the scales unpack and the nibbles widen once for all of them,
// and each column's arithmetic is the same whatever n, so a column's result does not depend on
// its partner.
// superblock i (at b) of one row times QACT columns act[a], a < n, into acc[a] (scaled sums)
// and macc[a] (min term)
static inline __attribute__((always_inline)) void q4_k_super_n(const uint8_t *b, const uint8_t *const *act,
                                                              int n, int64_t K, int64_t i, __m256 *acc,
                                                              __m256 *macc) {
    const __m256i m4 = _mm256_set1_epi16(0x0F);
    const uint32_t k1 = 0x3f3f3f3f, k2 = 0x0f0f0f0f, k3 = 0x03030303;
    _mm_prefetch((const char *)(b + 1024), _MM_HINT_T0);    // T0: as q4_0_prefetch
    _mm_prefetch((const char *)(b + 1088), _MM_HINT_T0);
    _mm_prefetch((const char *)(b + 1152), _MM_HINT_T0);
    uint32_t u[4];
    memcpy(u, b + 4, 12);
    u[3] = ((u[2] >> 4) & k2) | (((u[1] >> 6) & k3) << 4);
    const uint32_t mins_lo = u[1] & k1;
    u[1] = (u[2] & k2) | (((u[0] >> 6) & k3) << 4);
    u[2] = mins_lo;
    u[0] &= k1;                       // bytes 0-7: scales, bytes 8-15: mins
    const int64_t c0 = i / 32;        // first 32-value chunk of this superblock
    const __m128i sm = _mm_loadu_si128((const __m128i *)u);
    const __m256 vsc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sm));
    const __m256 vmn = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(sm, 8)));
    const float dw = f16(b), dmin = f16(b + 2);
    const int16_t *q[2];
    for (int a = 0; a < n; a++) {
        q[a] = (const int16_t *)act[a];
        const float *d = (const float *)(act[a] + 2 * K), *ds = d + K / 32;
        // min term: dmin * sum_j m_j * (ds[2(c0+j)] + ds[2(c0+j)+1]); hadd gives
        // [c0 c1 c4 c5 | c2 c3 c6 c7] pair sums, reordered by 64-bit lanes to c0..c7
        const __m256 h0 = _mm256_loadu_ps(ds + 2 * c0), h1 = _mm256_loadu_ps(ds + 2 * c0 + 8);
        const __m256 pairs = _mm256_castpd_ps(_mm256_permute4x64_pd(
            _mm256_castps_pd(_mm256_hadd_ps(h0, h1)), 0xD8));
        macc[a] = _mm256_fmadd_ps(_mm256_mul_ps(vmn, _mm256_set1_ps(dmin)), pairs, macc[a]);
    }
    // 32 bytes hold chunk 2j (low nibbles) and 2j+1 (high); each 16-byte half widens to
    // 16-bit lanes once. The 8 chunk sums are reduced together and scaled by the 8 scales.
    __m128i s4[2][2];
    for (int h = 0; h < 2; h++) {      // 4 chunks at a time: fewer live registers
        __m256i p[2][4];
        for (int j = 0; j < 2; j++) {
            const uint8_t *qs = b + 16 + 32 * (2 * h + j);
            const __m256i x0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)qs));
            const __m256i x1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(qs + 16)));
            const __m256i l0 = _mm256_and_si256(x0, m4), l1 = _mm256_and_si256(x1, m4);
            const __m256i u0 = _mm256_srli_epi16(x0, 4), u1 = _mm256_srli_epi16(x1, 4);
            for (int a = 0; a < n; a++) {
                const __m256i *q0 = (const __m256i *)(q[a] + 32 * (c0 + 4 * h + 2 * j)), *q1 = q0 + 2;
                p[a][2 * j] = dp16(_mm256_madd_epi16(l0, _mm256_loadu_si256(q0)),
                                   l1, _mm256_loadu_si256(q0 + 1));
                p[a][2 * j + 1] = dp16(_mm256_madd_epi16(u0, _mm256_loadu_si256(q1)),
                                       u1, _mm256_loadu_si256(q1 + 1));
            }
        }
        for (int a = 0; a < n; a++) s4[a][h] = hsum4x8_epi32(p[a]);
    }
    for (int a = 0; a < n; a++) {
        const float *d = (const float *)(act[a] + 2 * K);
        const __m256 sc8 = _mm256_mul_ps(_mm256_mul_ps(vsc, _mm256_set1_ps(dw)), _mm256_loadu_ps(d + c0));
        acc[a] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_set_m128i(s4[a][1], s4[a][0])), sc8, acc[a]);
    }
}

float tg_dot_q4_k_qact(int64_t K, const void *row, const uint8_t *act) {
    __m256 acc = _mm256_setzero_ps(), macc = _mm256_setzero_ps();
    for (int64_t i = 0; i < K; i += 256)
        q4_k_super_n((const uint8_t *)row + 144 * (i / 256), &act, 1, K, i, &acc, &macc);
    return tg_hsum256(acc) - tg_hsum256(macc);
}

// four Q4_K rows side by side (4 read streams: mul_mat.c) times n QACT columns (1 or 2):
// out[n r + a] = row r times column a, each bit for bit the one-row dot
static inline __attribute__((always_inline)) void q4_k_rows4_n(int64_t K, const void *const rows[4],
                                                              const uint8_t *const *act, int n, float *out) {
    __m256 acc[8], macc[8];
    for (int j = 0; j < 4 * n; j++) acc[j] = macc[j] = _mm256_setzero_ps();
    for (int64_t i = 0; i < K; i += 256)
        for (int r = 0; r < 4; r++)
            q4_k_super_n((const uint8_t *)rows[r] + 144 * (i / 256), act, n, K, i, &acc[n * r], &macc[n * r]);
    for (int j = 0; j < 4 * n; j++) out[j] = tg_hsum256(acc[j]) - tg_hsum256(macc[j]);
}

// four Q4_K rows x one QACT row; bit for bit the one-row dot
void tg_dot4_q4_k_qact(int64_t K, const void *const rows[4], const uint8_t *act, float out[4]) {
    q4_k_rows4_n(K, rows, &act, 1, out);
}

// four Q4_K rows x two QACT rows (two columns of a small batch): each superblock's scales
// unpack and nibbles widen once for both columns (q4_k_super_n); out[2 r + j] equals
// tg_dot_q4_k_qact(K, rows[r], act_j) bit for bit
void tg_dot2x4_q4_k_qact(int64_t K, const void *const rows[4], const uint8_t *act0, const uint8_t *act1,
                         float out[8]) {
    const uint8_t *const act[2] = {act0, act1};
    q4_k_rows4_n(K, rows, act, 2, out);
}

// Q6_K row x QACT row (SIMD only)
float tg_dot_q6_k_qact(int64_t K, const void *row, const uint8_t *act) {
    const uint8_t *b = (const uint8_t *)row;
    const int16_t *q = (const int16_t *)act;
    const float *d = (const float *)(act + 2 * K);
    const __m256i m32 = _mm256_set1_epi8(32);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < K; i += 256, b += 210) {
        for (int l = 0; l < 4; l++) _mm_prefetch((const char *)(b + 1024 + 64 * l), _MM_HINT_T0);
        const float dd = f16(b + 208);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
            const int8_t *sc = (const int8_t *)(b + 192 + 8 * h);
            __m256i w[4];
            q6k_half(ql, qh, w);
            // the 8 groups of 16 (one scale each): integer sums reduced together, then scaled
            // by dd * sc[g] * d[chunk of g] as one vector
            const int64_t c = (i + 128 * h) / 32;
            const int16_t *qc = q + 32 * c;
            __m128i s4[2];
            for (int g = 0; g < 2; g++) {  // 4 groups at a time: fewer live registers
                __m256i p[4];
                for (int k = 2 * g; k < 2 * g + 2; k++) {
                    const __m256i wk = _mm256_sub_epi8(w[k], m32);
                    p[2 * (k - 2 * g)] = madd16(_mm256_castsi256_si128(wk), qc + 32 * k);
                    p[2 * (k - 2 * g) + 1] = madd16(_mm256_extracti128_si256(wk, 1), qc + 32 * k + 16);
                }
                s4[g] = hsum4x8_epi32(p);
            }
            const __m256 scf = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)sc)));
            const __m256 d2 = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(d + c)),
                                                       _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
            acc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_set_m128i(s4[1], s4[0])),
                                                _mm256_mul_ps(scf, d2)),
                                  _mm256_set1_ps(dd), acc);
        }
    }
    return tg_hsum256(acc);
}
#endif

// ---- the type table ---------------------------------------------------------------------------
// One row per tensor type the kernels read (tinyggml/tensor.py's TYPES is checked against it by
// tests/test_types.py). A new weight type is a row here plus its unpack function; fused dots are
// optional (without them, quantized columns go through unpack + tg_dot_unpacked_qact).
#ifdef TG_AVX2
#define TG_SIMD_DOT(f) f
#else
#define TG_SIMD_DOT(f) NULL
#endif

// Q8_0 batches under this many columns take the paired dots (tg_dot2x4_q8_0_qact: each weight
// row read from memory once, every column summed as alone; on AVX-512 builds, where Q8_0
// weights decode repacked, the one-row dots per column), larger ones the integer panels
#ifndef Q8_0_PAIRS_MAX_N
#define Q8_0_PAIRS_MAX_N 12
#endif

static const tg_type_traits TYPE_TRAITS[] = {
    // name    type           blck bytes  quant min grp  unpack
    {"f32",    TG_TYPE_F32,    1,   4,    0,    0,  0,   NULL},
    {"f16",    TG_TYPE_F16,    1,   2,    0,    0,  0,   NULL},
    {"bf16",   TG_TYPE_BF16,   1,   2,    0,    0,  0,   NULL},
    {"i32",    TG_TYPE_I32,    1,   4,    0,    0,  0,   NULL},
    {"q4_0",   TG_TYPE_Q4_0,   32,  18,   1,    0,  32,  unpack_q4_0,
     .dot = tg_dot_q4_0_qact, .dot4 = tg_dot4_q4_0_qact,
     .dot2x4 = TG_SIMD_DOT(tg_dot2x4_q4_0_qact), .dot2x4_max_n = 12},
    {"q4_1",   TG_TYPE_Q4_1,   32,  20,   1,    1,  32,  unpack_q4_1},
    {"q5_0",   TG_TYPE_Q5_0,   32,  22,   1,    0,  32,  unpack_q5_0},
    {"q5_1",   TG_TYPE_Q5_1,   32,  24,   1,    1,  32,  unpack_q5_1},
    {"q8_0",   TG_TYPE_Q8_0,   32,  34,   1,    0,  32,  unpack_q8_0,
     .dot = tg_dot_q8_0_qact, .dot4 = tg_dot4_q8_0_qact,
     .dot2x4 = TG_SIMD_DOT(tg_dot2x4_q8_0_qact), .dot2x4_max_n = Q8_0_PAIRS_MAX_N},
    {"q2_K",   TG_TYPE_Q2_K,   256, 84,   1,    1,  16,  unpack_q2_k},
    {"q3_K",   TG_TYPE_Q3_K,   256, 110,  1,    0,  16,  unpack_q3_k},
    {"q4_K",   TG_TYPE_Q4_K,   256, 144,  1,    1,  32,  unpack_q4_k,
     .dot_simd = TG_SIMD_DOT(tg_dot_q4_k_qact), .dot4_simd = TG_SIMD_DOT(tg_dot4_q4_k_qact),
     .dot2x4 = TG_SIMD_DOT(tg_dot2x4_q4_k_qact), .dot2x4_max_n = 8},
    {"q5_K",   TG_TYPE_Q5_K,   256, 176,  1,    1,  32,  unpack_q5_k},
    {"q6_K",   TG_TYPE_Q6_K,   256, 210,  1,    0,  16,  unpack_q6_k,
     .dot_simd = TG_SIMD_DOT(tg_dot_q6_k_qact),
     .kact_dot = tg_dot_q6_k_kact, .kact_dot4 = tg_dot4_q6_k_kact},
    {"qact",   TG_TYPE_QACT,   32,  76,   0,    0,  0,   NULL},
    {"qact_k", TG_TYPE_QACT_K, 256, 580,  0,    0,  0,   NULL},
};

const tg_type_traits *tg_get_type_traits(int type) {
    for (size_t i = 0; i < sizeof(TYPE_TRAITS) / sizeof(TYPE_TRAITS[0]); i++)
        if (TYPE_TRAITS[i].type == type) return &TYPE_TRAITS[i];
    return NULL;
}


int tg_type_info(int type, const char **name, int64_t *blck_size, int64_t *type_size,
                 int *is_quantized) {
    const tg_type_traits *tt = tg_get_type_traits(type);
    if (tt == NULL) return 0;
    *name = tt->name;
    *blck_size = tt->blck_size;
    *type_size = tt->type_size;
    *is_quantized = tt->is_quantized;
    return 1;
}
