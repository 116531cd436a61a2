// tinyggml CPU kernels. One signature for all: void tg_<op>_f32(const tg_params *p, tg_tensor *dst).
// Each kernel reads its sources from dst->src[], splits its own work by p->ith/p->nth
// (dr = (nr + nth - 1)/nth; ir0 = dr*ith; ir1 = MIN(ir0 + dr, nr)), and allocates nothing.
// Shapes are in ggml order: {ne0, ne1, ...}, ne0 innermost; nb[] are byte strides.
// Every SIMD block (TG_AVX2) has a scalar twin used when TG_USE_SIMD is 0.
#include "quants.h"

#define ROW_RANGE(nr) \
    const int64_t dr = ((nr) + p->nth - 1) / p->nth; \
    const int64_t ir0 = TG_MIN(dr * p->ith, (nr)); \
    const int64_t ir1 = TG_MIN(ir0 + dr, (nr));

// A thread's rows [ir0, ir1) read as `parts` runs side by side (several read streams: the decode
// dots take 4 rows at once, the small F16 tiles 2): run r is rows ir0 + r * len + i for
// i < len = ceil((ir1 - ir0) / parts). m[r] is the row of run r in pass i, or -1 past ir1 (the
// pass then reads row m[0] there again and drops the result).
static inline int64_t tg_run_len(int64_t ir0, int64_t ir1, int parts) {
    return (ir1 - ir0 + parts - 1) / parts;
}

static inline void tg_run_rows(int64_t ir0, int64_t ir1, int64_t len, int parts, int64_t i, int64_t *m) {
    for (int r = 0; r < parts; r++) m[r] = ir0 + r * len + i < ir1 ? ir0 + r * len + i : -1;
}

// pointer to element (i0, i1, i2, i3) of t
static inline char *at(const tg_tensor *t, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
    return t->data + i0 * t->nb[0] + i1 * t->nb[1] + i2 * t->nb[2] + i3 * t->nb[3];
}

static inline float tg_f32_param(const tg_tensor *t, int i) {
    float f;
    memcpy(&f, &t->op_params[i], 4);
    return f;
}

// split a flat row index into (i1, i2, i3) for a tensor with ne[1], ne[2]
#define UNRAVEL(ir, ne, i1, i2, i3) \
    const int64_t i3 = (ir) / ((ne)[1] * (ne)[2]); \
    const int64_t i2 = ((ir) - i3 * (ne)[1] * (ne)[2]) / (ne)[1]; \
    const int64_t i1 = (ir) - i3 * (ne)[1] * (ne)[2] - i2 * (ne)[1];

// ---------------------------------------------------------------------------------------------
// cpy: dst = src0, same shape, any strides (cont(), and copies into views)
// src0: {ne0, ne1, ne2, ne3} F32, dst: same shape F32
static void tg_cpy_f32(const tg_params *p, tg_tensor *dst) {
    const tg_tensor *src0 = dst->src[0];
    const int64_t nr = dst->ne[1] * dst->ne[2] * dst->ne[3];
    ROW_RANGE(nr);
    for (int64_t ir = ir0; ir < ir1; ir++) {
        UNRAVEL(ir, dst->ne, i1, i2, i3);
        const char *s = at(src0, 0, i1, i2, i3);
        char *d = at(dst, 0, i1, i2, i3);
        if (src0->nb[0] == 4 && dst->nb[0] == 4) {
            memcpy(d, s, dst->ne[0] * 4);
        } else {
            for (int64_t i0 = 0; i0 < dst->ne[0]; i0++)
                *(float *)(d + i0 * dst->nb[0]) = *(const float *)(s + i0 * src0->nb[0]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// get_rows: dst[:, i] = src0[:, ids[i]]
// src0: {ne00, n_rows} F32 | F16 | BF16 | quantized, src1: ids {n} I32, dst: {ne00, n} F32
static void tg_get_rows_f32(const tg_params *p, tg_tensor *dst) {
    const tg_tensor *src0 = dst->src[0];
    const tg_tensor *src1 = dst->src[1];
    const int64_t n = src1->ne[0];
    const int64_t ne00 = src0->ne[0];
    ROW_RANGE(n);
    for (int64_t i = ir0; i < ir1; i++) {
        const int32_t id = *(const int32_t *)(src1->data + i * src1->nb[0]);
        float *d = (float *)(dst->data + i * dst->nb[1]);
        if (id < 0 || id >= src0->ne[1]) {     // the runtime validates ids; never read out of bounds
            memset(d, 0, ne00 * 4);
            continue;
        }
        const char *s = src0->data + id * src0->nb[1];
        if (src0->type == TG_TYPE_F16) {
            tg_fp16_to_fp32_row((const tg_fp16_t *)s, d, ne00);
        } else if (src0->type == TG_TYPE_F32) {
            memcpy(d, s, ne00 * 4);
        } else {                      // BF16 or a quantized type: scratch for the unpacked row
            int8_t *w = (int8_t *)p->wdata;
            float *sc = (float *)(p->wdata + ne00), *mn = sc + ne00 / 16;
            tg_dequantize_row(src0->type, s, ne00, d, w, sc, mn);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// mul_mat: dst[m, n] = sum_k src0[k, m] * src1[k, n], broadcast over dims 2, 3
// src0: {K, M, ne02, ne03} any weight type (rows contiguous), src1: {K, N, ne12, ne13} F32
// (rows contiguous) or QACT (quantized weights: tg_mul_mat_q), dst: {M, N, ne12, ne13} F32.
// Threads split M. Paths: one column of F32/F16 weights reads each thread's rows as 4 quarters
// side by side (decode: 4 read streams, simd.h tg_dot_rows4_*); batches with SIMD run on packed
// 16-row panels (tg_mul_mat_panels, non-F32 rows widened first; with VNNI, quantized batches on
// integer panels, tg_mul_mat_qpanels); the scalar build uses 4-row x 3-column dot tiles.

// out[r] = dot(a[r], b) for 4 rows
static inline void tg_dot4_f32(int64_t K, const float *a0, const float *a1, const float *a2,
                               const float *a3, const float *b, float *out) {
    int64_t k = 0;
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#ifdef TG_AVX2
    if (TG_USE_SIMD) {
        __m256 c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps();
        __m256 c2 = _mm256_setzero_ps(), c3 = _mm256_setzero_ps();
        for (; k + 8 <= K; k += 8) {
            const __m256 vb = _mm256_loadu_ps(b + k);
            c0 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + k), vb, c0);
            c1 = _mm256_fmadd_ps(_mm256_loadu_ps(a1 + k), vb, c1);
            c2 = _mm256_fmadd_ps(_mm256_loadu_ps(a2 + k), vb, c2);
            c3 = _mm256_fmadd_ps(_mm256_loadu_ps(a3 + k), vb, c3);
        }
        s0 = tg_hsum256(c0); s1 = tg_hsum256(c1); s2 = tg_hsum256(c2); s3 = tg_hsum256(c3);
    }
#endif
    for (; k < K; k++) {
        s0 += a0[k] * b[k]; s1 += a1[k] * b[k]; s2 += a2[k] * b[k]; s3 += a3[k] * b[k];
    }
    out[0] = s0; out[1] = s1; out[2] = s2; out[3] = s3;
}

// dst[j, i] = src[i, j] for i < rows, j < cols (row-major, leading dims lds, ldd); 8x8 blocks
// in registers.
static void tg_transpose(const float *src, int64_t lds, float *dst, int64_t ldd, int64_t rows,
                         int64_t cols) {
    int64_t i0 = 0;
#ifdef TG_AVX2
    if (TG_USE_SIMD) {
        for (; i0 + 8 <= rows; i0 += 8) {
            int64_t j0 = 0;
            for (; j0 + 8 <= cols; j0 += 8) {
                __m256 r[8], t[8];
                for (int k = 0; k < 8; k++) r[k] = _mm256_loadu_ps(src + (i0 + k) * lds + j0);
                for (int k = 0; k < 8; k += 2) {
                    t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
                    t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
                }
                for (int k = 0; k < 8; k += 4) {
                    r[k] = _mm256_shuffle_ps(t[k], t[k + 2], 0x44);
                    r[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], 0xEE);
                    r[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0x44);
                    r[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0xEE);
                }
                for (int k = 0; k < 4; k++) {
                    _mm256_storeu_ps(dst + (j0 + k) * ldd + i0, _mm256_permute2f128_ps(r[k], r[k + 4], 0x20));
                    _mm256_storeu_ps(dst + (j0 + k + 4) * ldd + i0, _mm256_permute2f128_ps(r[k], r[k + 4], 0x31));
                }
            }
            for (; j0 < cols; j0++)
                for (int64_t i = i0; i < i0 + 8; i++) dst[j0 * ldd + i] = src[i * lds + j0];
        }
    }
#endif
    for (; i0 < rows; i0++)
        for (int64_t j = 0; j < cols; j++) dst[j * ldd + i0] = src[i0 * lds + j];
}

// Batched mul_mat on packed panels (SIMD): 16 weight rows are packed k-major, Wp[k][16], so
// one k step is two 8-row loads; the activations are packed too, 6 columns k-major,
// Bp[k][6], so the 6 broadcasts of a k step read one stream (not 6 rows K floats apart). The
// 16 x 6 outputs stay in 12 registers for the whole K, then store straight into dst's columns
// (no horizontal sums). Each output is one fused multiply-add chain over k in order, so it
// does not depend on the tiling or the thread count.
#define MM_MR 16
#define MM_NR 6

#ifdef TG_AVX2
// acc: continue the sums already in d (a later k block), else start from zero
static inline void tg_panel_16x6(int64_t K, const float *Wp, const float *Bp,
                                 float *const d[MM_NR], int acc) {
    __m256 c[MM_NR][2];
    for (int j = 0; j < MM_NR; j++) {
        c[j][0] = acc ? _mm256_loadu_ps(d[j]) : _mm256_setzero_ps();
        c[j][1] = acc ? _mm256_loadu_ps(d[j] + 8) : _mm256_setzero_ps();
    }
    #pragma GCC unroll 4
    for (int64_t k = 0; k < K; k++) {
        const __m256 w0 = _mm256_load_ps(Wp + k * MM_MR), w1 = _mm256_load_ps(Wp + k * MM_MR + 8);
        for (int j = 0; j < MM_NR; j++) {
            const __m256 bj = _mm256_broadcast_ss(Bp + k * MM_NR + j);
            c[j][0] = _mm256_fmadd_ps(w0, bj, c[j][0]);
            c[j][1] = _mm256_fmadd_ps(w1, bj, c[j][1]);
        }
    }
    for (int j = 0; j < MM_NR; j++) {
        _mm256_storeu_ps(d[j], c[j][0]);
        _mm256_storeu_ps(d[j] + 8, c[j][1]);
    }
}
#endif

// Long rows times wide batches are multiplied in k blocks of MM_KC: a panel's block (16 x
// MM_KC floats, 64 KiB) stays in L2 across all the column tiles, and each thread's packed
// activations are one block (N x MM_KC floats, 2 MiB at N = 512), where a whole panel of 16 x K
// floats (512 KiB at K = 8192) streamed for every tile and the activations (16 MiB at K = 8192,
// N = 512) from memory for every panel. The sums carry over between blocks through dst (stored
// and reloaded exactly), so results equal the unblocked ones bit for bit. Each block restarts
// every tile on sums reloaded from dst (cache misses), so blocks are long: 1024 measured 6-15%
// faster than 256 (16 KiB panels in L1) on 2048 x 4096 and 4096 x 8192 (BENCHMARKS.md).
// Measured: +12% pp512 on Mamba-Codestral-7B (blocks of 256 against none); no gain for K <=
// 2048; under 256 columns blocks of 1024 measured slower (2048 x 4096 x 128 Q4_0: 115-117
// against 129-132 GFLOP/s unblocked), as 256 was about even at 128.
#define MM_KC 1024
#define MM_KBLOCK_MIN_K 2048   // K above this and N at least MM_KBLOCK_MIN_N are blocked
#define MM_KBLOCK_MIN_N 256

// the blocking above, for the scratch sizes ops.py computes (ops.MM_KBLOCK, set at import)
void tg_mm_kblock(int64_t out[3]) {
    out[0] = MM_KC;
    out[1] = MM_KBLOCK_MIN_K;
    out[2] = MM_KBLOCK_MIN_N;
}

#ifdef TG_AVX2

// rows [ir0, ir1) of dst for every column; scratch: Wp 16*KC floats (64-byte aligned), rows
// 16*KC floats, Bp (N rounded up to 6)*KC floats, Cp (N rounded up to 6)*16 floats (a last
// partial panel's sums), the unpack scratch after them. KC = K, or MM_KC for long rows. Every
// thread packs all of src1 itself (a copy of the activations, small beside the K*N*rows/16
// panel work; no barrier needed).
static void tg_mul_mat_panels(const tg_params *p, tg_tensor *dst, int64_t ir0, int64_t ir1) {
    const tg_tensor *src0 = dst->src[0], *src1 = dst->src[1];
    const int64_t K = src0->ne[0], N = src1->ne[1], NP = (N + MM_NR - 1) / MM_NR * MM_NR;
    const int64_t KC = K > MM_KBLOCK_MIN_K && N >= MM_KBLOCK_MIN_N ? MM_KC : K;
    const int64_t r2 = src1->ne[2] / src0->ne[2], r3 = src1->ne[3] / src0->ne[3];
    float *Wp = (float *)(((uintptr_t)p->wdata + 63) & ~(uintptr_t)63);
    float *rows = Wp + MM_MR * KC, *Bp = rows + MM_MR * KC, *Cp = Bp + NP * KC;
    int8_t *uw = (int8_t *)(Cp + NP * MM_MR);
    float *usc = (float *)(uw + K), *umn = usc + K / 16;
    for (int64_t i13 = 0; i13 < src1->ne[3]; i13++)
    for (int64_t i12 = 0; i12 < src1->ne[2]; i12++) {
        if (ir0 >= ir1) break;
        for (int64_t k0 = 0; k0 < K; k0 += KC) {
            const int64_t kc = TG_MIN(KC, K - k0), first = k0 == 0, last = k0 + kc == K;
            // Bp[n/6][k][n%6] = src1[k0 + k, n]; a last partial group repeats its last column
            for (int64_t n0 = 0; n0 < N; n0 += MM_NR)
                for (int j = 0; j < MM_NR; j++) {
                    const float *b = (const float *)at(src1, k0, TG_MIN(n0 + j, N - 1), i12, i13);
                    float *bp = Bp + n0 * kc + j;
                    for (int64_t k = 0; k < kc; k++) bp[k * MM_NR] = b[k];
                }
            for (int64_t m0 = ir0; m0 < ir1; m0 += MM_MR) {
                const int64_t nm = TG_MIN(MM_MR, ir1 - m0);
                // widen (F16, BF16, quantized) and pack: rows[r][k] -> Wp[k][r], zero rows past nm
                const float *src_rows = rows;
                int64_t lds = kc;
                if (src0->type == TG_TYPE_F32 && nm == MM_MR) {
                    src_rows = (const float *)at(src0, k0, m0, i12 / r2, i13 / r3);
                    lds = src0->nb[1] / 4;
                } else {
                    for (int64_t r = 0; r < MM_MR; r++) {
                        float *row = rows + r * kc;
                        if (r >= nm) { memset(row, 0, kc * 4); continue; }
                        const char *w = at(src0, 0, m0 + r, i12 / r2, i13 / r3) + tg_row_bytes(src0->type, k0);
                        if (src0->type == TG_TYPE_F32) memcpy(row, w, kc * 4);
                        else if (src0->type == TG_TYPE_F16) tg_fp16_to_fp32_row((const tg_fp16_t *)w, row, kc);
                        else tg_dequantize_row(src0->type, w, kc, row, uw, usc, umn);
                    }
                }
                tg_transpose(src_rows, lds, Wp, MM_MR, MM_MR, kc);
                for (int64_t n = 0; n < N; n += MM_NR) {
                    const int nr = (int)TG_MIN(MM_NR, N - n);
                    float *d[MM_NR];
                    for (int j = 0; j < MM_NR; j++)   // a partial tile repeats its last column
                        d[j] = nm == MM_MR ? (float *)at(dst, m0, n + TG_MIN(j, nr - 1), i12, i13)
                                           : Cp + (n + j) * MM_MR;
                    tg_panel_16x6(kc, Wp, Bp + n * kc, d, !first);
                    if (nm < MM_MR && last)
                        for (int j = 0; j < nr; j++)
                            memcpy(at(dst, m0, n + j, i12, i13), Cp + (n + j) * MM_MR, nm * 4);
                }
            }
        }
    }
}
#endif

#ifdef TG_AVX2
// Batched quantized mul_mat on integer panels (QACT activations, any N >= MM_NR): the integer
// twin of tg_mul_mat_panels. 16 weight rows are unpacked to int16 and packed pair-interleaved,
// Wq[k/2][row][2], so one multiply-add step takes 8 rows times 2 activation values (one
// broadcast int32 holding q[k], q[k+1]) into 8 int32 lanes: 16 multiply-adds per instruction
// (VNNI vpdpwssd) or per vpmaddwd + vpaddd pair (AVX2), against an FMA's 8. On Zen 3 the AVX2
// tile is bound by its loads and measured slower than the float panels on wide batches, so
// batches of 48 or more take the float panels there (ops.QUANT_INT_GEMM, QUANT_GEMM_MIN_ROWS,
// BENCHMARKS.md); batches of 6-47 still come here. Per scale group (16 or 32 values) the exact
// integer sums are scaled by the rows' weight scales times the column's activation scale into
// float accumulators; the min term of Q4_1/Q5_1/Q2_K/Q4_K/Q5_K is
// subtracted per 16 values (mins times the activation half sums, as in tg_dot_unpacked_qact;
// once per 32 where the type's mins are per 32). A tile is 16 rows x QP_NR columns, 2 int32
// and 2 float accumulators per column: 6 columns in AVX-512's 32 registers, 3 in AVX2's 16.
// Integer sums stay exact: |w| <= 127 and |q| <= 32767, so a lane's 32 products per group fit.
#ifdef TG_AVX512
#define QP_NR 6
#else
#define QP_NR 3
#endif

static inline __attribute__((always_inline)) void tg_qpanel_tile(
        int nr, int64_t K, int G, int has_min, const int16_t *Wq, const float *Ws, const float *Wm,
        const uint8_t *const act[QP_NR], float *const d[QP_NR]) {
    __m256 f[QP_NR][2];
    const int16_t *q[QP_NR];
    const float *da[QP_NR], *ds[QP_NR];
    for (int j = 0; j < nr; j++) {
        f[j][0] = f[j][1] = _mm256_setzero_ps();
        q[j] = (const int16_t *)act[j];
        da[j] = (const float *)(act[j] + 2 * K);
        ds[j] = da[j] + K / 32;
    }
    for (int64_t k0 = 0; k0 < K; k0 += G) {
        __m256i s[QP_NR][2];
        for (int j = 0; j < nr; j++) s[j][0] = s[j][1] = _mm256_setzero_si256();
#ifdef TG_AVX512
        #pragma GCC unroll 16
        for (int64_t kp = k0 / 2; kp < (k0 + G) / 2; kp++) {
            const __m256i w0 = _mm256_load_si256((const __m256i *)(Wq + kp * 32));
            const __m256i w1 = _mm256_load_si256((const __m256i *)(Wq + kp * 32 + 16));
            for (int j = 0; j < nr; j++) {
                int32_t pair;
                memcpy(&pair, q[j] + 2 * kp, 4);
                const __m256i b = _mm256_set1_epi32(pair);
                s[j][0] = _mm256_dpwssd_epi32(s[j][0], w0, b);
                s[j][1] = _mm256_dpwssd_epi32(s[j][1], w1, b);
            }
        }
#else
        // two pairs at a time, their products added before they meet the accumulator (one
        // vpaddd chain step per two vpmaddwd: 40 vs 34 G multiply-adds/s per core on Zen 3)
        #pragma GCC unroll 8
        for (int64_t kp = k0 / 2; kp < (k0 + G) / 2; kp += 2) {
            const __m256i w0 = _mm256_load_si256((const __m256i *)(Wq + kp * 32));
            const __m256i w1 = _mm256_load_si256((const __m256i *)(Wq + kp * 32 + 16));
            const __m256i v0 = _mm256_load_si256((const __m256i *)(Wq + kp * 32 + 32));
            const __m256i v1 = _mm256_load_si256((const __m256i *)(Wq + kp * 32 + 48));
            for (int j = 0; j < nr; j++) {
                int32_t pair[2];
                memcpy(pair, q[j] + 2 * kp, 8);
                const __m256i b = _mm256_set1_epi32(pair[0]), c = _mm256_set1_epi32(pair[1]);
                s[j][0] = _mm256_add_epi32(s[j][0], _mm256_add_epi32(_mm256_madd_epi16(w0, b),
                                                                     _mm256_madd_epi16(v0, c)));
                s[j][1] = _mm256_add_epi32(s[j][1], _mm256_add_epi32(_mm256_madd_epi16(w1, b),
                                                                     _mm256_madd_epi16(v1, c)));
            }
        }
#endif
        const __m256 ws0 = _mm256_load_ps(Ws + (k0 / 16) * 16), ws1 = _mm256_load_ps(Ws + (k0 / 16) * 16 + 8);
        for (int j = 0; j < nr; j++) {
            const __m256 a = _mm256_set1_ps(da[j][k0 / 32]);
            f[j][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[j][0]), _mm256_mul_ps(ws0, a), f[j][0]);
            f[j][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[j][1]), _mm256_mul_ps(ws1, a), f[j][1]);
        }
        if (has_min && G == 32) {            // mins per 32 (equal halves): one step
            const int64_t h = k0 / 16;
            const __m256 m0 = _mm256_load_ps(Wm + h * 16), m1 = _mm256_load_ps(Wm + h * 16 + 8);
            for (int j = 0; j < nr; j++) {
                const __m256 b = _mm256_set1_ps(ds[j][h] + ds[j][h + 1]);
                f[j][0] = _mm256_fnmadd_ps(m0, b, f[j][0]);
                f[j][1] = _mm256_fnmadd_ps(m1, b, f[j][1]);
            }
        } else if (has_min) {
            for (int64_t h = k0 / 16; h < (k0 + G) / 16; h++) {
                const __m256 m0 = _mm256_load_ps(Wm + h * 16), m1 = _mm256_load_ps(Wm + h * 16 + 8);
                for (int j = 0; j < nr; j++) {
                    const __m256 b = _mm256_set1_ps(ds[j][h]);
                    f[j][0] = _mm256_fnmadd_ps(m0, b, f[j][0]);
                    f[j][1] = _mm256_fnmadd_ps(m1, b, f[j][1]);
                }
            }
        }
    }
    for (int j = 0; j < nr; j++) {
        _mm256_storeu_ps(d[j], f[j][0]);
        _mm256_storeu_ps(d[j] + 8, f[j][1]);
    }
}

// the full tile for each scale group size, compiled on their own so the tile width and the
// group length are constants (loops unroll, accumulators stay in place)
static __attribute__((noinline)) void tg_qpanel_full_g32(
        int64_t K, int has_min, const int16_t *Wq, const float *Ws, const float *Wm,
        const uint8_t *const act[QP_NR], float *const d[QP_NR]) {
    tg_qpanel_tile(QP_NR, K, 32, has_min, Wq, Ws, Wm, act, d);
}

static __attribute__((noinline)) void tg_qpanel_full_g16(
        int64_t K, int has_min, const int16_t *Wq, const float *Ws, const float *Wm,
        const uint8_t *const act[QP_NR], float *const d[QP_NR]) {
    tg_qpanel_tile(QP_NR, K, 16, has_min, Wq, Ws, Wm, act, d);
}

// rows [ir0, ir1) of dst for every column. Scratch (64-byte aligned): Wq 32*K bytes, rows
// int16 [16][K] 32*K bytes, Ws and Wm [K/16][16] floats, then the unpack scratch.
static void tg_mul_mat_qpanels(const tg_params *p, tg_tensor *dst, int64_t ir0, int64_t ir1) {
    const tg_tensor *src0 = dst->src[0], *src1 = dst->src[1];
    const int64_t K = src0->ne[0], N = src1->ne[1];
    const int64_t r2 = src1->ne[2] / src0->ne[2], r3 = src1->ne[3] / src0->ne[3];
    const int G = tg_scale_group(src0->type), has_min = tg_has_min(src0->type);
    int16_t *Wq = (int16_t *)(((uintptr_t)p->wdata + 63) & ~(uintptr_t)63);
    int16_t *rows = Wq + 16 * K;
    float *Ws = (float *)(rows + 16 * K), *Wm = Ws + K;
    int8_t *uw = (int8_t *)(Wm + K);
    float *usc = (float *)(uw + K), *umn = usc + K / 16;
    float tmp[QP_NR][MM_MR];
    for (int64_t i13 = 0; i13 < src1->ne[3]; i13++)
    for (int64_t i12 = 0; i12 < src1->ne[2]; i12++) {
        for (int64_t m0 = ir0; m0 < ir1; m0 += MM_MR) {
            const int64_t nm = TG_MIN(MM_MR, ir1 - m0);
            for (int64_t r = 0; r < MM_MR; r++) {
                if (r >= nm) {
                    memset(rows + r * K, 0, K * 2);
                    for (int64_t h = 0; h < K / 16; h++) Ws[h * 16 + r] = Wm[h * 16 + r] = 0.0f;
                    continue;
                }
                tg_unpack_row(src0->type, at(src0, 0, m0 + r, i12 / r2, i13 / r3), K, uw, usc, umn);
                int64_t k = 0;
                for (; k + 16 <= K; k += 16)
                    _mm256_storeu_si256((__m256i *)(rows + r * K + k),
                                        _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(uw + k))));
                for (int64_t h = 0; h < K / 16; h++) {
                    Ws[h * 16 + r] = usc[h];
                    Wm[h * 16 + r] = umn[h];
                }
            }
            // pairs of int16 moved as 32-bit units: rows[r][k/2] -> Wq[k/2][r]
            tg_transpose((const float *)rows, K / 2, (float *)Wq, MM_MR, MM_MR, K / 2);
            for (int64_t n = 0; n < N; n += QP_NR) {
                const int nr = (int)TG_MIN(QP_NR, N - n);
                const uint8_t *act[QP_NR];
                float *d[QP_NR];
                for (int j = 0; j < QP_NR; j++) {
                    act[j] = (const uint8_t *)at(src1, 0, n + TG_MIN(j, nr - 1), i12, i13);
                    d[j] = nm == MM_MR ? (float *)at(dst, m0, n + TG_MIN(j, nr - 1), i12, i13) : tmp[j];
                }
                if (nr == QP_NR && G == 32) tg_qpanel_full_g32(K, has_min, Wq, Ws, Wm, act, d);
                else if (nr == QP_NR) tg_qpanel_full_g16(K, has_min, Wq, Ws, Wm, act, d);
                else tg_qpanel_tile(nr, K, G, has_min, Wq, Ws, Wm, act, d);
                if (nm < MM_MR)
                    for (int j = 0; j < nr; j++)
                        memcpy(at(dst, m0, n + j, i12, i13), tmp[j], nm * 4);
            }
        }
    }
}
#endif

// Q4_0 batches under this many columns take the fused dots two columns at a time instead of the
// integer panels (no packing): 3352 x 768, 2 threads, alternated builds, GFLOP/s: N = 2 55-61
// vs 50-51 (one column at a time), 4: 64-71 vs 54, 6: 63-64 vs 42-45, 8: 61-62 vs 50-55 (panels),
// 12: 59-61 vs 63-73 (BENCHMARKS.md)
#define QDOT2_MAX_N 12
// the same for Q4_K, whose pairs lose sooner: 3352 x 768, 3 alternated rounds, medians GFLOP/s,
// pairs vs one column at a time (N < 6) or the integer panels: N = 2 44-57 vs 36-45, 4 52-59 vs
// 43-46, 6 45-77 vs 37-42, 8 45-53 vs 39-45, 11 44-54 vs 51-54; mamba2-130m Q4_K pp8 163-232 vs
// 183-208, pp10 174-258 vs 230-251 t/s
#define QDOT2_MAX_N_Q4_K 8

// quantized weights: src0 {K, M} quantized rows, src1 {K, N, ne12, ne13} QACT rows (QACT_K
// for Q6_K weights and N < MM_NR; one QUANTIZE node made them), dst {M, N, ne12, ne13}. Each
// weight row is unpacked once into scratch (K int8 + K/16 scales + K/16 mins) and dotted with
// every activation row.
static void tg_mul_mat_q(const tg_params *p, tg_tensor *dst) {
    const tg_tensor *src0 = dst->src[0];
    const tg_tensor *src1 = dst->src[1];
    const int64_t K = src0->ne[0], M = src0->ne[1], N = src1->ne[1];
    const int64_t r2 = src1->ne[2] / src0->ne[2], r3 = src1->ne[3] / src0->ne[3];
    const int has_min = tg_has_min(src0->type);
    int8_t *w = (int8_t *)p->wdata;
    float *sc = (float *)(p->wdata + K), *mn = sc + K / 16;
    const int split = src1->type == TG_TYPE_QACT_K;    // Q6_K columns (ops.py mul_mat)
    float (*fused)(int64_t, const void *, const uint8_t *) =
        split ? tg_dot_q6_k_kact :
        src0->type == TG_TYPE_Q4_0 ? tg_dot_q4_0_qact :
        src0->type == TG_TYPE_Q8_0 ? tg_dot_q8_0_qact : NULL;
#ifdef TG_AVX2
    if (TG_USE_SIMD && src0->type == TG_TYPE_Q4_K) fused = tg_dot_q4_k_qact;
    if (TG_USE_SIMD && src0->type == TG_TYPE_Q6_K && !split) fused = tg_dot_q6_k_qact;
#endif
    // Q4_0 / Q4_K columns in pairs: each row's blocks widen once for two columns
    void (*pair4)(int64_t, const void *const *, const uint8_t *, const uint8_t *, float *) = NULL;
#ifdef TG_AVX2
    if (TG_USE_SIMD && !split) {
        if (src0->type == TG_TYPE_Q4_0 && N < QDOT2_MAX_N) pair4 = tg_dot2x4_q4_0_qact;
        if (src0->type == TG_TYPE_Q4_K && N < QDOT2_MAX_N_Q4_K) pair4 = tg_dot2x4_q4_k_qact;
    }
#endif
    const int pairs = pair4 != NULL;
#ifdef TG_AVX2
    if (TG_USE_SIMD && N >= MM_NR && !split && !pairs) {   // batches: integer panels, whole 16-row panels per thread
        const int64_t dr = ((M + p->nth - 1) / p->nth + MM_MR - 1) / MM_MR * MM_MR;
        const int64_t ir0 = TG_MIN(dr * p->ith, M), ir1 = TG_MIN(ir0 + dr, M);
        tg_mul_mat_qpanels(p, dst, ir0, ir1);
        return;
    }
#endif
    ROW_RANGE(M);
    // 4 rows side by side (4 read streams, as the F32 / F16 decode), each output computed as
    // by the one-row dot; Q4_0 / Q4_K columns in pairs
    void (*fused4)(int64_t, const void *const *, const uint8_t *, float *) =
        split ? tg_dot4_q6_k_kact :
        src0->type == TG_TYPE_Q4_0 ? tg_dot4_q4_0_qact :
        src0->type == TG_TYPE_Q8_0 ? tg_dot4_q8_0_qact : NULL;
#ifdef TG_AVX2
    if (TG_USE_SIMD && src0->type == TG_TYPE_Q4_K) fused4 = tg_dot4_q4_k_qact;
#endif
    const int64_t len = tg_run_len(ir0, ir1, 4);
    for (int64_t i13 = 0; i13 < src1->ne[3]; i13++)
    for (int64_t i12 = 0; i12 < src1->ne[2]; i12++) {
        if (fused4) {
            for (int64_t i = 0; i < len; i++) {
                int64_t m[4];
                const void *rows[4];
                tg_run_rows(ir0, ir1, len, 4, i, m);
                for (int r = 0; r < 4; r++) rows[r] = at(src0, 0, m[r] < 0 ? m[0] : m[r], i12 / r2, i13 / r3);
                int64_t n = 0;
                for (; pairs && n + 2 <= N; n += 2) {
                    float o[8];
                    pair4(K, rows, (const uint8_t *)at(src1, 0, n, i12, i13),
                          (const uint8_t *)at(src1, 0, n + 1, i12, i13), o);
                    for (int r = 0; r < 4 && m[r] >= 0; r++) {
                        *(float *)at(dst, m[r], n, i12, i13) = o[2 * r];
                        *(float *)at(dst, m[r], n + 1, i12, i13) = o[2 * r + 1];
                    }
                }
                for (; n < N; n++) {
                    float o[4];
                    fused4(K, rows, (const uint8_t *)at(src1, 0, n, i12, i13), o);
                    for (int r = 0; r < 4 && m[r] >= 0; r++) *(float *)at(dst, m[r], n, i12, i13) = o[r];
                }
            }
            continue;
        }
        for (int64_t m = ir0; m < ir1; m++) {
            const char *row = at(src0, 0, m, i12 / r2, i13 / r3);
            if (fused) {
                for (int64_t n = 0; n < N; n++)
                    *(float *)at(dst, m, n, i12, i13) =
                        fused(K, row, (const uint8_t *)at(src1, 0, n, i12, i13));
                continue;
            }
            tg_unpack_row(src0->type, row, K, w, sc, mn);
            for (int64_t n = 0; n < N; n++) {
                const uint8_t *act = (const uint8_t *)at(src1, 0, n, i12, i13);
                *(float *)at(dst, m, n, i12, i13) = tg_dot_unpacked_qact(K, w, sc, mn, act, has_min);
            }
        }
    }
}

// 4 weight rows x 3 activation columns: 12 accumulators share each load (the batched path of
// the scalar build; SIMD builds take tg_mul_mat_panels for batches).
// Each output is one sum over k in order, as in tg_dot4_f32's scalar path, so results do not
// depend on how the columns of a batch are grouped.
static inline void tg_dot4x3_f32(int64_t K, const float *const a[4], const float *b0,
                                 const float *b1, const float *b2, float *d0, float *d1,
                                 float *d2) {
    float s[3][4] = {{0}};
    for (int64_t k = 0; k < K; k++)
        for (int r = 0; r < 4; r++) {
            s[0][r] += a[r][k] * b0[k];
            s[1][r] += a[r][k] * b1[k];
            s[2][r] += a[r][k] * b2[k];
        }
    for (int r = 0; r < 4; r++) { d0[r] = s[0][r]; d1[r] = s[1][r]; d2[r] = s[2][r]; }
}

#ifdef TG_AVX2
// Small batches of F16 rows (2 .. MM_SMALL_N - 1 columns): 2 rows x 4 columns per pass, the
// rows read in place and widened in registers, 8 accumulators of 8 lanes. The packed panels
// below pay a widening and pack of 16 rows per panel that so few columns do not repay. 2
// threads, alternated builds, GFLOP/s, 3352 x 768 (in L3): N = 2 14-17 -> 33-34, 4 35-36 ->
// 76-82, 8 47-51 -> 67-70; 33520 x 768 (from memory, as in a model): N = 2 12-14 -> 13-20, 4
// 21-25 -> 28-30, 8 41-42 -> 46-56, 12 57-68 -> 46-47 (BENCHMARKS.md). The two rows of a pass
// come from the two halves of the thread's rows, two read streams (as the decode dots read
// four): 33520 x 768, N = 4 32-40 -> 56-58, N = 8 56-63 -> 62-70 GFLOP/s against adjacent rows
// (3352 x 768 in L3 unchanged). F32 rows measured slower here than on the panels (which read
// them in place too), so they stay there. Each output is one 8-lane sum over k then a
// horizontal sum and a scalar tail, whatever rows and columns it is grouped with (a lone last
// row or partial column group repeats its last one), so results do not depend on the tiling.
#define MM_SMALL_N 10

static void tg_mul_mat_small_f16(const tg_params *p, tg_tensor *dst) {
    const tg_tensor *src0 = dst->src[0], *src1 = dst->src[1];
    const int64_t K = src0->ne[0], M = src0->ne[1], N = src1->ne[1];
    const int64_t r2 = src1->ne[2] / src0->ne[2], r3 = src1->ne[3] / src0->ne[3];
    ROW_RANGE(M);
    const int64_t len = tg_run_len(ir0, ir1, 2);   // a row of each half of the thread's rows per pass
    for (int64_t i13 = 0; i13 < src1->ne[3]; i13++)
    for (int64_t i12 = 0; i12 < src1->ne[2]; i12++)
    for (int64_t i = 0; i < len; i++) {
        int64_t mr[2];
        tg_run_rows(ir0, ir1, len, 2, i, mr);
        const tg_fp16_t *w[2] = {(const tg_fp16_t *)at(src0, 0, mr[0], i12 / r2, i13 / r3),
                                 (const tg_fp16_t *)at(src0, 0, mr[1] < 0 ? mr[0] : mr[1], i12 / r2, i13 / r3)};
        for (int64_t n0 = 0; n0 < N; n0 += 4) {
            const float *b[4];
            for (int j = 0; j < 4; j++) b[j] = (const float *)at(src1, 0, TG_MIN(n0 + j, N - 1), i12, i13);
            __m256 c[2][4];
            for (int r = 0; r < 2; r++)
                for (int j = 0; j < 4; j++) c[r][j] = _mm256_setzero_ps();
            int64_t k = 0;
            for (; k + 8 <= K; k += 8) {
                if ((k & 31) == 0) {          // the rows stream from memory: 1 KiB ahead
                    _mm_prefetch((const char *)(w[0] + k) + 1024, _MM_HINT_T0);
                    _mm_prefetch((const char *)(w[1] + k) + 1024, _MM_HINT_T0);
                }
                const __m256 w0 = tg_load_f16x8(w[0] + k), w1 = tg_load_f16x8(w[1] + k);
                for (int j = 0; j < 4; j++) {
                    const __m256 bj = _mm256_loadu_ps(b[j] + k);
                    c[0][j] = _mm256_fmadd_ps(w0, bj, c[0][j]);
                    c[1][j] = _mm256_fmadd_ps(w1, bj, c[1][j]);
                }
            }
            for (int r = 0; r < 2 && mr[r] >= 0; r++)
                for (int j = 0; j < 4 && n0 + j < N; j++) {
                    float s = tg_hsum256(c[r][j]);
                    for (int64_t kk = k; kk < K; kk++) s += tg_fp16_to_fp32(w[r][kk]) * b[j][kk];
                    *(float *)at(dst, mr[r], n0 + j, i12, i13) = s;
                }
        }
    }
}
#endif

#define MM_NB 64   // activation columns per block: K*64 floats stay in L2 across weight rows
#define MM_MB 32   // weight rows per panel: non-F32 rows are widened once, into MM_MB*K floats

static void tg_mul_mat_f32(const tg_params *p, tg_tensor *dst) {
    const tg_tensor *src0 = dst->src[0];
    const tg_tensor *src1 = dst->src[1];
    const int64_t K = src0->ne[0], M = src0->ne[1], N = src1->ne[1];
    const int64_t r2 = src1->ne[2] / src0->ne[2], r3 = src1->ne[3] / src0->ne[3];
    if (tg_is_quantized(src0->type) && (src1->type == TG_TYPE_QACT || src1->type == TG_TYPE_QACT_K)) {
        tg_mul_mat_q(p, dst);
        return;
    }
    // F16 / BF16 / quantized rows: widened to F32 in scratch, a panel of MM_MB rows at a time
    const int is_f16 = src0->type == TG_TYPE_F16;
    const int widen = src0->type != TG_TYPE_F32;
    float *wrows = (float *)p->wdata;                                 // MM_MB*K floats
    int8_t *uw = (int8_t *)(p->wdata + MM_MB * 4 * K);                // unpack scratch: K int8
    float *usc = (float *)(p->wdata + MM_MB * 4 * K + K), *umn = usc + K / 16;

#ifdef TG_AVX2
    if (TG_USE_SIMD && N > 1 && N < MM_SMALL_N && is_f16) {
        tg_mul_mat_small_f16(p, dst);
        return;
    }
    if (TG_USE_SIMD && N > 1) {            // batches: packed panels, whole 16-row panels per thread
        const int64_t dr = ((M + p->nth - 1) / p->nth + MM_MR - 1) / MM_MR * MM_MR;
        const int64_t ir0 = TG_MIN(dr * p->ith, M), ir1 = TG_MIN(ir0 + dr, M);
        tg_mul_mat_panels(p, dst, ir0, ir1);
        return;
    }
#endif
    // rows per thread rounded up to the 4-row block: results do not depend on the thread count
    const int64_t dr = ((M + p->nth - 1) / p->nth + 3) / 4 * 4;
    const int64_t ir0 = TG_MIN(dr * p->ith, M), ir1 = TG_MIN(ir0 + dr, M);
    if (N == 1 && (src0->type == TG_TYPE_F32 || is_f16)) {
        // decode: the thread's rows in 4 quarters read side by side, 4 streams (simd.h)
        const int64_t len = tg_run_len(ir0, ir1, 4);
        for (int64_t i13 = 0; i13 < src1->ne[3]; i13++)
        for (int64_t i12 = 0; i12 < src1->ne[2]; i12++) {
            const float *b = (const float *)at(src1, 0, 0, i12, i13);
            float *d = (float *)at(dst, 0, 0, i12, i13);
            for (int64_t i = 0; i < len; i++) {
                int64_t m[4];
                const void *rows[4];
                float out[4];
                tg_run_rows(ir0, ir1, len, 4, i, m);
                for (int r = 0; r < 4; r++) rows[r] = at(src0, 0, m[r] < 0 ? m[0] : m[r], i12 / r2, i13 / r3);
                if (is_f16) tg_dot_rows4_f16(K, (const tg_fp16_t *const *)rows, b, out);
                else tg_dot_rows4_f32(K, (const float *const *)rows, b, out);
                for (int r = 0; r < 4 && m[r] >= 0; r++) d[m[r]] = out[r];
            }
        }
        return;
    }
    for (int64_t i13 = 0; i13 < src1->ne[3]; i13++)
    for (int64_t i12 = 0; i12 < src1->ne[2]; i12++) {
        const int64_t i03 = i13 / r3, i02 = i12 / r2;
        for (int64_t mb = ir0; mb < ir1; mb += MM_MB) {
        const int64_t mb1 = TG_MIN(ir1, mb + MM_MB);
        if (widen) {
            for (int64_t m = mb; m < mb1; m++) {
                const char *row = at(src0, 0, m, i02, i03);
                if (is_f16) tg_fp16_to_fp32_row((const tg_fp16_t *)row, wrows + (m - mb) * K, K);
                else tg_dequantize_row(src0->type, row, K, wrows + (m - mb) * K, uw, usc, umn);
            }
        }
        for (int64_t n0 = 0; n0 < N; n0 += MM_NB)
        for (int64_t m0 = mb; m0 < mb1; m0 += 4) {
            const int64_t nm = TG_MIN(4, mb1 - m0), n1 = TG_MIN(N, n0 + MM_NB);
            const float *a[4];
            for (int r = 0; r < 4; r++) {
                const int64_t m = m0 + TG_MIN(r, nm - 1);   // pad a partial block by repeating
                a[r] = widen ? wrows + (m - mb) * K : (const float *)at(src0, 0, m, i02, i03);
            }
            int64_t n = n0;
            if (nm == 4) {
                for (; n + 3 <= n1; n += 3)
                    tg_dot4x3_f32(K, a, (const float *)at(src1, 0, n, i12, i13),
                                  (const float *)at(src1, 0, n + 1, i12, i13),
                                  (const float *)at(src1, 0, n + 2, i12, i13),
                                  (float *)at(dst, m0, n, i12, i13),
                                  (float *)at(dst, m0, n + 1, i12, i13),
                                  (float *)at(dst, m0, n + 2, i12, i13));
            }
            for (; n < n1; n++) {
                const float *b = (const float *)at(src1, 0, n, i12, i13);
                float *d = (float *)at(dst, m0, n, i12, i13);
                if (nm == 4) {
                    tg_dot4_f32(K, a[0], a[1], a[2], a[3], b, d);
                } else {                  // padded rows: every output accumulates the same way
                    float o[4];
                    tg_dot4_f32(K, a[0], a[1], a[2], a[3], b, o);
                    for (int r = 0; r < nm; r++) d[r] = o[r];
                }
            }
        }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// add / mul: dst = src0 (op) src1, src1 repeated to src0's shape (ne1x divides ne0x)
// src0: {ne00, ne01, ne02, ne03} F32, src1: {ne10, ne11, ne12, ne13} F32, dst: like src0
static inline void tg_binary_f32(const tg_params *p, tg_tensor *dst, int is_mul) {
    const tg_tensor *src0 = dst->src[0];
    const tg_tensor *src1 = dst->src[1];
    const int64_t ne0 = dst->ne[0];
    const int64_t nr = dst->ne[1] * dst->ne[2] * dst->ne[3];
    ROW_RANGE(nr);
    for (int64_t ir = ir0; ir < ir1; ir++) {
        UNRAVEL(ir, dst->ne, i1, i2, i3);
        const char *a = at(src0, 0, i1, i2, i3);
        const char *b = at(src1, 0, i1 % src1->ne[1], i2 % src1->ne[2], i3 % src1->ne[3]);
        float *d = (float *)at(dst, 0, i1, i2, i3);
        if (src0->nb[0] == 4 && src1->nb[0] == 4 && dst->nb[0] == 4 && src1->ne[0] == ne0) {
            const float *x = (const float *)a, *y = (const float *)b;
            int64_t i = 0;
#ifdef TG_AVX2
            if (TG_USE_SIMD) {
                for (; i + 8 <= ne0; i += 8) {
                    const __m256 vx = _mm256_loadu_ps(x + i), vy = _mm256_loadu_ps(y + i);
                    _mm256_storeu_ps(d + i, is_mul ? _mm256_mul_ps(vx, vy) : _mm256_add_ps(vx, vy));
                }
            }
#endif
            for (; i < ne0; i++) d[i] = is_mul ? x[i] * y[i] : x[i] + y[i];
        } else {
            for (int64_t i0 = 0; i0 < ne0; i0++) {
                const float x = *(const float *)(a + i0 * src0->nb[0]);
                const float y = *(const float *)(b + (i0 % src1->ne[0]) * src1->nb[0]);
                *(float *)((char *)d + i0 * dst->nb[0]) = is_mul ? x * y : x + y;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// unary ops over rows: scale (op_params[0] = s as f32 bits), silu, and gate_silu
// (dst = src0 * silu(src1), src1 the same shape as src0). All F32, any row strides.
enum { UN_SCALE, UN_SILU, UN_GATE };

static inline void tg_unary_f32(const tg_params *p, tg_tensor *dst, int kind) {
    const tg_tensor *src0 = dst->src[0];
    const tg_tensor *src1 = dst->src[1];   // gate only
    const float s = kind == UN_SCALE ? tg_f32_param(dst, 0) : 0.0f;
    const int64_t ne0 = dst->ne[0];
    const int64_t nr = dst->ne[1] * dst->ne[2] * dst->ne[3];
    ROW_RANGE(nr);
    for (int64_t ir = ir0; ir < ir1; ir++) {
        UNRAVEL(ir, dst->ne, i1, i2, i3);
        const char *a = at(src0, 0, i1, i2, i3);
        const char *g = kind == UN_GATE ? at(src1, 0, i1, i2, i3) : NULL;
        float *d = (float *)at(dst, 0, i1, i2, i3);
        int64_t i = 0;
        const int contig = src0->nb[0] == 4 && dst->nb[0] == 4 && (kind != UN_GATE || src1->nb[0] == 4);
#ifdef TG_AVX2
        if (TG_USE_SIMD && contig) {
            const float *x = (const float *)a;
            for (; i + 8 <= ne0; i += 8) {
                const __m256 vx = _mm256_loadu_ps(x + i);
                __m256 r;
                if (kind == UN_SCALE) r = _mm256_mul_ps(vx, _mm256_set1_ps(s));
                else if (kind == UN_SILU) r = tg_silu256(vx);
                else r = _mm256_mul_ps(vx, tg_silu256(_mm256_loadu_ps((const float *)g + i)));
                _mm256_storeu_ps(d + i, r);
            }
        }
#endif
        (void)contig;
        for (; i < ne0; i++) {
            const float x = *(const float *)(a + i * src0->nb[0]);
            float r;
            if (kind == UN_SCALE) r = x * s;
            else if (kind == UN_SILU) r = tg_silu_f32(x);
            else r = x * tg_silu_f32(*(const float *)(g + i * src1->nb[0]));
            *(float *)((char *)d + i * dst->nb[0]) = r;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// rms_norm: dst row = g / sqrt(mean(g^2) + eps) (* w), eps = op_params[0] (f32 bits), where
// g = src0 row (* silu(gate row)). The weight and the gate fuse the Mamba norms' neighbours
// into one pass over the rows; the arithmetic is theirs in their order (bit for bit the
// separate gate_silu, rms_norm and mul).
// src0: {ne0, ...} F32 with nb0 == 4; src1: NULL or the weight {ne0, w1, w2, w3} F32 with
// nb0 == 4, broadcast over rows as mul's; src2: NULL or the gate, src0's shape, nb0 == 4;
// dst: same shape, contiguous
static void tg_rms_norm_f32(const tg_params *p, tg_tensor *dst) {
    const tg_tensor *src0 = dst->src[0], *wt = dst->src[1], *gz = dst->src[2];
    const float eps = tg_f32_param(dst, 0);
    const int64_t ne0 = src0->ne[0];
    const int64_t nr = src0->ne[1] * src0->ne[2] * src0->ne[3];
    ROW_RANGE(nr);
    for (int64_t ir = ir0; ir < ir1; ir++) {
        UNRAVEL(ir, src0->ne, i1, i2, i3);
        const float *x = (const float *)at(src0, 0, i1, i2, i3);
        const float *z = gz ? (const float *)at(gz, 0, i1, i2, i3) : NULL;
        const float *w = wt ? (const float *)at(wt, 0, i1 % wt->ne[1], i2 % wt->ne[2], i3 % wt->ne[3]) : NULL;
        float *d = (float *)at(dst, 0, i1, i2, i3);
        int64_t i = 0;
        double sum = 0.0;
        if (z) {                   // d = x * silu(z) first, then normed in place
#ifdef TG_AVX2
            if (TG_USE_SIMD)
                for (; i + 8 <= ne0; i += 8)
                    _mm256_storeu_ps(d + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), tg_silu256(_mm256_loadu_ps(z + i))));
#endif
            for (; i < ne0; i++) d[i] = x[i] * tg_silu_f32(z[i]);
            x = d;
            i = 0;
        }
#ifdef TG_AVX2
        if (TG_USE_SIMD) {
            __m256 acc = _mm256_setzero_ps();
            for (; i + 8 <= ne0; i += 8) {
                const __m256 v = _mm256_loadu_ps(x + i);
                acc = _mm256_fmadd_ps(v, v, acc);
            }
            sum = tg_hsum256(acc);
        }
#endif
        for (; i < ne0; i++) sum += (double)x[i] * x[i];
        const float scale = (float)(1.0 / sqrt(sum / ne0 + eps));
        i = 0;
#ifdef TG_AVX2
        if (TG_USE_SIMD) {
            const __m256 vs = _mm256_set1_ps(scale);
            if (w)
                for (; i + 8 <= ne0; i += 8)
                    _mm256_storeu_ps(d + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs), _mm256_loadu_ps(w + i)));
            else
                for (; i + 8 <= ne0; i += 8) _mm256_storeu_ps(d + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vs));
        }
#endif
        for (; i < ne0; i++) d[i] = w ? (x[i] * scale) * w[i] : x[i] * scale;
    }
}

// ---------------------------------------------------------------------------------------------
// concat along dim = op_params[0]: dst = [src0, src1], all dims but `dim` equal
// src0: {ne00, ...} F32, src1: {ne10, ...} F32, any strides; dst: contiguous
static void tg_concat_f32(const tg_params *p, tg_tensor *dst) {
    const tg_tensor *src0 = dst->src[0];
    const tg_tensor *src1 = dst->src[1];
    const int dim = dst->op_params[0];
    const int64_t nr = dst->ne[1] * dst->ne[2] * dst->ne[3];
    ROW_RANGE(nr);
    for (int64_t ir = ir0; ir < ir1; ir++) {
        UNRAVEL(ir, dst->ne, i1, i2, i3);
        for (int64_t i0 = 0; i0 < dst->ne[0]; i0++) {
            int64_t idx[4] = {i0, i1, i2, i3};
            const tg_tensor *s = src0;
            if (idx[dim] >= src0->ne[dim]) { idx[dim] -= src0->ne[dim]; s = src1; }
            *(float *)at(dst, i0, i1, i2, i3) = *(const float *)at(s, idx[0], idx[1], idx[2], idx[3]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ssm_conv: causal depthwise convolution over each sequence of a ubatch, reading and updating
// that sequence's conv state in place; optional bias and SiLU fused (op_params[0] = silu).
// src0: x {ch, n_t} (nb0 == 4)            src1: conv state {d_conv-1, ch, n_slots} contiguous
// src2: weight {d_conv, ch} contiguous     src3: bias {ch} or NULL
// src4: seq info {3, n_s} I32: (slot, first token, n tokens) per sequence
// dst:  {ch, n_t} contiguous
// Threads split channels in blocks of 8. A prompt goes token by token, each thread over its
// channels of the row (contiguous in x, 8 per instruction), with its weights transposed into
// scratch; a one-token sequence (decode) goes channel by channel, SiLU over the row afterwards.
// one decode token of channels [c0, c1): d[c] = bias[c] + w[c] . [state[c] | x[c]], then the
// state shifts by one (x[c] enters)
static inline __attribute__((always_inline)) void tg_conv_decode_channels(
        const tg_tensor *w, const tg_tensor *bias, const float *xt, float *state, float *d,
        int64_t c0, int64_t c1, int64_t dc) {
    for (int64_t c = c0; c < c1; c++) {
        const float *wc = (const float *)w->data + c * dc;
        float *sc = state + c * (dc - 1);
        float acc = bias ? ((const float *)bias->data)[c] : 0.0f;
        for (int64_t k = 0; k < dc - 1; k++) acc += wc[k] * sc[k];
        acc += wc[dc - 1] * xt[c];
        for (int64_t k = 0; k + 1 < dc - 1; k++) sc[k] = sc[k + 1];
        sc[dc - 2] = xt[c];
        d[c] = acc;
    }
}

static void tg_ssm_conv_f32(const tg_params *p, tg_tensor *dst) {
    const tg_tensor *x = dst->src[0], *st = dst->src[1], *w = dst->src[2], *bias = dst->src[3];
    const tg_tensor *info = dst->src[4];
    const int silu = dst->op_params[0];
    const int64_t ch = x->ne[0], dc = w->ne[0], n_s = info->ne[1];
    const int64_t nblk = (ch + 7) / 8;
    float *wT = (float *)p->wdata;        // [d_conv][channels of this thread]
    ROW_RANGE(nblk);
    for (int64_t s = 0; s < n_s; s++) {
        const int32_t *si = (const int32_t *)(info->data + s * info->nb[1]);
        const int64_t slot = si[0], t0 = si[1], len = si[2];
        if (len == 1) {                      // decode: channel by channel, no window
            const int64_t c0 = ir0 * 8, c1 = TG_MIN(ch, ir1 * 8);
            float *state = (float *)(st->data + slot * st->nb[2]);
            float *d = (float *)at(dst, 0, t0, 0, 0);
            const float *xt = (const float *)at(x, 0, t0, 0, 0);
            // d_conv 4 (every Mamba model) as a constant: the loops unroll, the state stays in
            // registers (0.28 -> 0.13 ms per token, mamba2-130m decode, 24 layers)
            if (dc == 4) tg_conv_decode_channels(w, bias, xt, state, d, c0, c1, 4);
            else tg_conv_decode_channels(w, bias, xt, state, d, c0, c1, dc);
            if (silu) {
                int64_t c = c0;
#ifdef TG_AVX2
                if (TG_USE_SIMD)
                    for (; c + 8 <= c1; c += 8) _mm256_storeu_ps(d + c, tg_silu256(_mm256_loadu_ps(d + c)));
#endif
                for (; c < c1; c++) d[c] = tg_silu_f32(d[c]);
            }
            continue;
        }
        // a prompt: token by token over this thread's channels [c0, c1), so each row of x is
        // read in order (channels are contiguous); the weights transposed once, wT[k][c - c0]
        const int64_t c0 = ir0 * 8, c1 = TG_MIN(ch, ir1 * 8), nc = c1 - c0;
        if (nc <= 0) continue;
        float *state = (float *)(st->data + slot * st->nb[2]);
        const float *b = bias ? (const float *)bias->data : NULL;
        for (int64_t c = c0; c < c1; c++)
            for (int64_t k = 0; k < dc; k++) wT[k * nc + c - c0] = ((const float *)w->data)[c * dc + k];
        for (int64_t t = 0; t < len; t++) {
            float *d = (float *)at(dst, 0, t0 + t, 0, 0);
            // window entry k of channel c is xr[k][c * xs[k]]: the old state for the first
            // d_conv-1 tokens (stride d_conv-1), else a row of x (channels contiguous)
            const float *xr[16];
            int64_t xs[16];
            for (int64_t k = 0; k < dc; k++) {
                const int64_t j = t + k;             // index in the window [state | x]
                xr[k] = j < dc - 1 ? state + j : (const float *)at(x, 0, t0 + j - (dc - 1), 0, 0);
                xs[k] = j < dc - 1 ? dc - 1 : 1;
            }
            int64_t c = c0;
#ifdef TG_AVX2
            if (TG_USE_SIMD && t >= dc - 1)      // the whole window is in x
                for (; c + 8 <= c1; c += 8) {
                    __m256 acc = b ? _mm256_loadu_ps(b + c) : _mm256_setzero_ps();
                    for (int64_t k = 0; k < dc; k++)
                        acc = _mm256_fmadd_ps(_mm256_loadu_ps(xr[k] + c), _mm256_loadu_ps(wT + k * nc + c - c0), acc);
                    _mm256_storeu_ps(d + c, silu ? tg_silu256(acc) : acc);
                }
#endif
            for (; c < c1; c++) {
                float acc = b ? b[c] : 0.0f;
                for (int64_t k = 0; k < dc; k++) acc += wT[k * nc + c - c0] * xr[k][c * xs[k]];
                d[c] = silu ? tg_silu_f32(acc) : acc;
            }
        }
        // the new state is the last d_conv-1 entries of [state | x]; in place, ascending j
        // reads only entries not yet overwritten (len + j > j)
        for (int64_t c = c0; c < c1; c++)
            for (int64_t j = 0; j < dc - 1; j++) {
                const int64_t i = len + j;
                state[c * (dc - 1) + j] = i < dc - 1 ? state[c * (dc - 1) + i]
                                                     : *(const float *)at(x, c, t0 + i - (dc - 1), 0, 0);
            }
    }
}

// ---------------------------------------------------------------------------------------------
// ssm_scan: selective scan over each sequence, reading and updating its SSM state in place.
//   dt' = softplus(dt[h]);  s[p, n] = s[p, n] * exp(dt' * A[n, h]) + B[n] * dt' * x[p, h]
//   y[p, h] = sum_n s[p, n] * C[n] (+ D[h] * x[p, h])
// Mamba-1: head_dim 1, n_head = d_inner, A {d_state, n_head}. Mamba-2: A {1, n_head} (scalar).
// src0: state {d_state, head_dim, n_head, n_slots} contiguous
// src1: x {head_dim, n_head, n_t} (nb0 == 4)   src2: dt {n_head, n_t} (nb0 == 4)
// src3: A {d_state | 1, n_head} contiguous      src4: B {d_state, n_group, n_t} (nb0 == 4)
// src5: C {d_state, n_group, n_t} (nb0 == 4)    src6: D {n_head} or NULL
// src7: seq info {3, n_s} I32 (slot, first token, n tokens)
// dst: y {head_dim, n_head, n_t} contiguous
// ref: mamba_ssm selective_scan_ref; Mamba-2 arXiv 2405.21060 eq. (2) with scalar A per head.
#ifdef TG_AVX2
// Mamba-1 on the state's own layout, [channel][n] (d_state a multiple of 8): per token,
// softplus of the block's 8 dt at once, then per channel d_state/8 vectors of exp(dt*A[c])
// and the state update in place; the 8 channels' output sums are reduced together. Nothing is
// transposed, so a decode step reads and writes each state once (mamba-130m Q4_0 decode, 24
// layers of 1536 channels, d_state 16, 2 threads: 1.5 -> 0.6-1.0 ms per token in profiles of
// separate runs). Prompts of 8 tokens or more keep the transposed form below, which reloads
// nothing per token (mamba-130m pp512 scan: 198 ms there, 229 ms here).
static void tg_scan_m1_direct(const tg_tensor *dst, int64_t slot, int64_t t0, int64_t len,
                              int64_t c0, int64_t nc) {
    const tg_tensor *st = dst->src[0], *x = dst->src[1], *dt = dst->src[2], *A = dst->src[3];
    const tg_tensor *B = dst->src[4], *C = dst->src[5], *D = dst->src[6];
    const int64_t ds = st->ne[0];
    float d8[8] = {0};
    for (int64_t l = 0; l < nc; l++) d8[l] = D ? *(const float *)(D->data + (c0 + l) * D->nb[0]) : 0.0f;
    for (int64_t t = t0; t < t0 + len; t++) {
        float x8[8] = {0}, dt8[8] = {0}, sp[8], y8[8];
        for (int64_t l = 0; l < nc; l++) {
            x8[l] = *(const float *)at(x, 0, c0 + l, t, 0);
            dt8[l] = *(const float *)at(dt, c0 + l, t, 0, 0);
        }
        _mm256_storeu_ps(sp, tg_softplus256(_mm256_loadu_ps(dt8)));
        const float *b = (const float *)at(B, 0, 0, t, 0);
        const float *cc = (const float *)at(C, 0, 0, t, 0);
        __m256 acc[8];
        for (int64_t l = 0; l < 8; l++) {
            acc[l] = _mm256_setzero_ps();
            if (l >= nc) continue;
            const float *a = (const float *)(A->data + (c0 + l) * A->nb[1]);
            float *s = (float *)(st->data + slot * st->nb[3] + (c0 + l) * st->nb[2]);
            const __m256 vdt = _mm256_set1_ps(sp[l]), vdx = _mm256_set1_ps(sp[l] * x8[l]);
            for (int64_t n = 0; n < ds; n += 8) {
                const __m256 da = tg_exp256(_mm256_mul_ps(vdt, _mm256_loadu_ps(a + n)));
                const __m256 sn = _mm256_fmadd_ps(_mm256_loadu_ps(s + n), da,
                                                  _mm256_mul_ps(_mm256_loadu_ps(b + n), vdx));
                _mm256_storeu_ps(s + n, sn);
                acc[l] = _mm256_fmadd_ps(sn, _mm256_loadu_ps(cc + n), acc[l]);
            }
        }
        _mm256_storeu_ps(y8, _mm256_fmadd_ps(_mm256_loadu_ps(d8), _mm256_loadu_ps(x8), tg_hsum8x8(acc)));
        for (int64_t l = 0; l < nc; l++) *(float *)at(dst, 0, c0 + l, t, 0) = y8[l];
    }
}
#endif

// Mamba-1 layout (head_dim 1, A per element): lanes are 8 channels, contiguous in x, dt, y;
// each channel's d_state states live in scratch as S[n][lane]. Per token: softplus of 8 dt at
// once, then for each state n one exp of dt*A[n] over the 8 channels (B[n], C[n] broadcast).
// Sequences of under 8 tokens (decode) take tg_scan_m1_direct where d_state is a multiple of 8.
static void tg_ssm_scan_m1_f32(const tg_params *p, tg_tensor *dst) {
    const tg_tensor *st = dst->src[0], *x = dst->src[1], *dt = dst->src[2], *A = dst->src[3];
    const tg_tensor *B = dst->src[4], *C = dst->src[5], *D = dst->src[6], *info = dst->src[7];
    const int64_t ds = st->ne[0], nh = st->ne[2], n_s = info->ne[1];
    const int64_t nblk = (nh + 7) / 8;
    float *S = (float *)p->wdata;          // [ds][8] states
    float *At = S + ds * 8;                // [ds][8] A, transposed
    ROW_RANGE(n_s * nblk);
    for (int64_t ir = ir0; ir < ir1; ir++) {
        const int64_t s = ir / nblk, c0 = (ir % nblk) * 8, nc = TG_MIN(8, nh - c0);
        const int32_t *si = (const int32_t *)(info->data + s * info->nb[1]);
        const int64_t slot = si[0], t0 = si[1], len = si[2];
#ifdef TG_AVX2
        if (TG_USE_SIMD && ds % 8 == 0 && len < 8) {   // decode; prompts amortize the transposes
            tg_scan_m1_direct(dst, slot, t0, len, c0, nc);
            continue;
        }
#endif
        float d8[8] = {0};
        for (int64_t l = 0; l < 8; l++) {
            const int64_t c = c0 + TG_MIN(l, nc - 1);
            const float *sc = (const float *)(st->data + slot * st->nb[3] + c * st->nb[2]);
            const float *ac = (const float *)(A->data + c * A->nb[1]);
            for (int64_t n = 0; n < ds; n++) {
                S[n * 8 + l] = l < nc ? sc[n] : 0.0f;
                At[n * 8 + l] = ac[n];
            }
            if (D && l < nc) d8[l] = *(const float *)(D->data + c * D->nb[0]);
        }
        for (int64_t t = t0; t < t0 + len; t++) {
            float x8[8] = {0}, dt8[8] = {0}, y8[8];
            for (int64_t l = 0; l < nc; l++) {
                x8[l] = *(const float *)at(x, 0, c0 + l, t, 0);
                dt8[l] = *(const float *)at(dt, c0 + l, t, 0, 0);
            }
            const float *b = (const float *)at(B, 0, 0, t, 0);
            const float *cc = (const float *)at(C, 0, 0, t, 0);
#ifdef TG_AVX2
            if (TG_USE_SIMD) {
                const __m256 vx = _mm256_loadu_ps(x8);
                const __m256 sp = tg_softplus256(_mm256_loadu_ps(dt8));
                const __m256 dx = _mm256_mul_ps(sp, vx);
                __m256 y = _mm256_mul_ps(_mm256_loadu_ps(d8), vx);
                for (int64_t n = 0; n < ds; n++) {
                    const __m256 da = tg_exp256(_mm256_mul_ps(sp, _mm256_loadu_ps(At + n * 8)));
                    const __m256 sn = _mm256_fmadd_ps(_mm256_loadu_ps(S + n * 8), da,
                                                      _mm256_mul_ps(_mm256_set1_ps(b[n]), dx));
                    _mm256_storeu_ps(S + n * 8, sn);
                    y = _mm256_fmadd_ps(sn, _mm256_set1_ps(cc[n]), y);
                }
                _mm256_storeu_ps(y8, y);
            } else
#endif
            {
                float sp[8];
                for (int l = 0; l < 8; l++) {
                    sp[l] = tg_softplus_f32(dt8[l]);
                    y8[l] = d8[l] * x8[l];
                }
                for (int64_t n = 0; n < ds; n++)
                    for (int l = 0; l < 8; l++) {
                        const float sn = S[n * 8 + l] * expf(sp[l] * At[n * 8 + l]) + b[n] * (sp[l] * x8[l]);
                        S[n * 8 + l] = sn;
                        y8[l] += sn * cc[n];
                    }
            }
            for (int64_t l = 0; l < nc; l++) *(float *)at(dst, 0, c0 + l, t, 0) = y8[l];
        }
        for (int64_t l = 0; l < nc; l++) {
            float *sc = (float *)(st->data + slot * st->nb[3] + (c0 + l) * st->nb[2]);
            for (int64_t n = 0; n < ds; n++) sc[n] = S[n * 8 + l];
        }
    }
}

// One head over one sequence, token by token (decode, short sequences, Mamba-2 with A per
// element). state [hd][ds]; dA: ds floats of scratch.
static void tg_scan_head_recurrent(const tg_tensor *dst, float *state, int64_t t0, int64_t len,
                                   int64_t h, float *dA) {
    const tg_tensor *x = dst->src[1], *dt = dst->src[2], *A = dst->src[3];
    const tg_tensor *B = dst->src[4], *C = dst->src[5], *D = dst->src[6];
    const int64_t ds = dst->src[0]->ne[0], hd = dst->src[0]->ne[1];
    const int64_t g = h / (dst->src[0]->ne[2] / B->ne[1]);
    const int scalar_a = A->ne[0] == 1;
    const float *a = (const float *)(A->data + h * A->nb[1]);
    const float dh = D ? *(const float *)(D->data + h * D->nb[0]) : 0.0f;
    for (int64_t t = t0; t < t0 + len; t++) {
        const float dtv = tg_softplus_f32(*(const float *)at(dt, h, t, 0, 0));
        const float *b = (const float *)at(B, 0, g, t, 0);
        const float *c = (const float *)at(C, 0, g, t, 0);
        const float *xp = (const float *)at(x, 0, h, t, 0);
        float *y = (float *)at(dst, 0, h, t, 0);
        const float da_scalar = scalar_a ? expf(dtv * a[0]) : 0.0f;
        if (!scalar_a) {
            int64_t n = 0;
#ifdef TG_AVX2
            if (TG_USE_SIMD) {
                const __m256 vdt = _mm256_set1_ps(dtv);
                for (; n + 8 <= ds; n += 8)
                    _mm256_storeu_ps(dA + n, tg_exp256(_mm256_mul_ps(vdt, _mm256_loadu_ps(a + n))));
            }
#endif
            for (; n < ds; n++) dA[n] = expf(dtv * a[n]);
        }
        int64_t p0 = 0;
#ifdef TG_AVX2
        if (TG_USE_SIMD && ds % 8 == 0) {      // 8 rows of the state, their sums reduced together
            const __m256 vda = _mm256_set1_ps(da_scalar);
            for (; p0 + 8 <= hd; p0 += 8) {
                __m256 acc[8];
                for (int j = 0; j < 8; j++) {
                    const __m256 vx = _mm256_set1_ps(xp[p0 + j] * dtv);
                    float *sp = state + (p0 + j) * ds;
                    __m256 a0 = _mm256_setzero_ps();
                    for (int64_t n = 0; n < ds; n += 8) {
                        const __m256 da = scalar_a ? vda : _mm256_loadu_ps(dA + n);
                        const __m256 sn = _mm256_fmadd_ps(_mm256_loadu_ps(sp + n), da,
                                                          _mm256_mul_ps(_mm256_loadu_ps(b + n), vx));
                        _mm256_storeu_ps(sp + n, sn);
                        a0 = _mm256_fmadd_ps(sn, _mm256_loadu_ps(c + n), a0);
                    }
                    acc[j] = a0;
                }
                const __m256 vxp = _mm256_loadu_ps(xp + p0);
                _mm256_storeu_ps(y + p0, _mm256_fmadd_ps(_mm256_set1_ps(dh), vxp, tg_hsum8x8(acc)));
            }
        }
#endif
        for (int64_t pi = p0; pi < hd; pi++) {
            const float xdt = xp[pi] * dtv;
            float *sp = state + pi * ds;
            int64_t n = 0;
            float sum = 0.0f;
#ifdef TG_AVX2
            if (TG_USE_SIMD) {
                const __m256 vx = _mm256_set1_ps(xdt), vda = _mm256_set1_ps(da_scalar);
                __m256 acc = _mm256_setzero_ps();
                for (; n + 8 <= ds; n += 8) {
                    const __m256 da = scalar_a ? vda : _mm256_loadu_ps(dA + n);
                    const __m256 sn = _mm256_fmadd_ps(_mm256_loadu_ps(sp + n), da,
                                                      _mm256_mul_ps(_mm256_loadu_ps(b + n), vx));
                    _mm256_storeu_ps(sp + n, sn);
                    acc = _mm256_fmadd_ps(sn, _mm256_loadu_ps(c + n), acc);
                }
                sum = tg_hsum256(acc);
            }
#endif
            for (; n < ds; n++) {
                const float sn = sp[n] * (scalar_a ? da_scalar : dA[n]) + b[n] * xdt;
                sp[n] = sn;
                sum += sn * c[n];
            }
            y[pi] = sum + dh * xp[pi];
        }
    }
}

#ifdef TG_AVX2
// Four heads with scalar A over one sequence, token by token, side by side: each head's
// arithmetic is tg_scan_head_recurrent's SIMD path in the same order (bit for bit), but the n
// loop updates a row of all four states, so a thread reads and writes four streams at once
// instead of one (one stream per core is latency-bound: BENCHMARKS.md, session 9). Needs
// d_state and head_dim multiples of 8. state[k]: head h[k]'s [hd][ds].
static void tg_scan_heads4_recurrent(const tg_tensor *dst, float *const state[4], int64_t t0,
                                     int64_t len, const int64_t h[4]) {
    const tg_tensor *x = dst->src[1], *dt = dst->src[2], *A = dst->src[3];
    const tg_tensor *B = dst->src[4], *C = dst->src[5], *D = dst->src[6];
    const int64_t ds = dst->src[0]->ne[0], hd = dst->src[0]->ne[1];
    const int64_t hpg = dst->src[0]->ne[2] / B->ne[1];          // heads per group
    for (int64_t t = t0; t < t0 + len; t++) {
        const float *b[4], *c[4], *xp[4];
        float *y[4];
        __m256 vda[4], vdh[4];
        float dtv[4];
        for (int k = 0; k < 4; k++) {
            dtv[k] = tg_softplus_f32(*(const float *)at(dt, h[k], t, 0, 0));
            b[k] = (const float *)at(B, 0, h[k] / hpg, t, 0);
            c[k] = (const float *)at(C, 0, h[k] / hpg, t, 0);
            xp[k] = (const float *)at(x, 0, h[k], t, 0);
            y[k] = (float *)at(dst, 0, h[k], t, 0);
            vda[k] = _mm256_set1_ps(expf(dtv[k] * *(const float *)(A->data + h[k] * A->nb[1])));
            vdh[k] = _mm256_set1_ps(D ? *(const float *)(D->data + h[k] * D->nb[0]) : 0.0f);
        }
        for (int64_t p0 = 0; p0 < hd; p0 += 8) {
            __m256 acc[4][8];
            for (int j = 0; j < 8; j++) {
                __m256 vx[4], a[4];
                float *sp[4];
                for (int k = 0; k < 4; k++) {
                    vx[k] = _mm256_set1_ps(xp[k][p0 + j] * dtv[k]);
                    sp[k] = state[k] + (p0 + j) * ds;
                    a[k] = _mm256_setzero_ps();
                }
                for (int64_t n = 0; n < ds; n += 8)
                    for (int k = 0; k < 4; k++) {
                        const __m256 sn = _mm256_fmadd_ps(_mm256_loadu_ps(sp[k] + n), vda[k],
                                                          _mm256_mul_ps(_mm256_loadu_ps(b[k] + n), vx[k]));
                        _mm256_storeu_ps(sp[k] + n, sn);
                        a[k] = _mm256_fmadd_ps(sn, _mm256_loadu_ps(c[k] + n), a[k]);
                    }
                for (int k = 0; k < 4; k++) acc[k][j] = a[k];
            }
            for (int k = 0; k < 4; k++)
                _mm256_storeu_ps(y[k] + p0, _mm256_fmadd_ps(vdh[k], _mm256_loadu_ps(xp[k] + p0), tg_hsum8x8(acc[k])));
        }
    }
}
#endif

// C[i, j] = sum_k A[i, k] * B[k, j] for i < M, j < N, row-major with leading dims lda, ldb,
// ldc (the chunked scan's C_t . B_s): 6 rows x 16 (or 8) columns of C stay in registers
// across k.
#ifdef TG_AVX2
// The register tile of the scan's small products: acc[r][v] (r < mr <= 6 rows, v < nv <= 2
// vectors of 8 columns) += sum_{k < K} A[r * ar + k * ak] * B[k * ldb + 8 v], in k order.
// A is addressed by a row and a k stride, so row-major (ak = 1) and column-major (ar = 1)
// operands are read where they lie.
static inline __attribute__((always_inline)) void tg_tile_fma(
        int mr, int nv, int64_t K, const float *A, int64_t ar, int64_t ak, const float *B,
        int64_t ldb, __m256 acc[6][2]) {
    for (int64_t k = 0; k < K; k++) {
        __m256 b[2];
        for (int v = 0; v < nv; v++) b[v] = _mm256_loadu_ps(B + k * ldb + 8 * v);
        for (int r = 0; r < mr; r++) {
            const __m256 a = _mm256_broadcast_ss(A + r * ar + k * ak);
            for (int v = 0; v < nv; v++) acc[r][v] = _mm256_fmadd_ps(a, b[v], acc[r][v]);
        }
    }
}

static inline __attribute__((always_inline)) void tg_tile_store(int mr, int nv, const __m256 acc[6][2],
                                                                float *C, int64_t ldc) {
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++) _mm256_storeu_ps(C + r * ldc + 8 * v, acc[r][v]);
}

// mr (<= 6) rows x 8 nv (1 or 2) columns of C in registers across k
static inline __attribute__((always_inline)) void tg_gemm_tile(
        int mr, int nv, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
        float *C, int64_t ldc) {
    __m256 acc[6][2];
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++) acc[r][v] = _mm256_setzero_ps();
    tg_tile_fma(mr, nv, K, A, lda, 1, B, ldb, acc);
    tg_tile_store(mr, nv, acc, C, ldc);
}
#endif

static void tg_gemm(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                    const float *B, int64_t ldb, float *C, int64_t ldc) {
    for (int64_t j0 = 0; j0 < N; j0 += 16) {
        const int64_t nj = TG_MIN(16, N - j0);
        int64_t i = 0;
#ifdef TG_AVX2
        if (TG_USE_SIMD && nj == 16) {
            for (; i + 6 <= M; i += 6) tg_gemm_tile(6, 2, K, A + i * lda, lda, B + j0, ldb, C + i * ldc + j0, ldc);
            if (i + 4 <= M) {
                tg_gemm_tile(4, 2, K, A + i * lda, lda, B + j0, ldb, C + i * ldc + j0, ldc);
                i += 4;
            }
        } else if (TG_USE_SIMD && nj == 8) {     // chunks that are not a multiple of 16
            for (; i + 6 <= M; i += 6) tg_gemm_tile(6, 1, K, A + i * lda, lda, B + j0, ldb, C + i * ldc + j0, ldc);
            if (i + 4 <= M) {
                tg_gemm_tile(4, 1, K, A + i * lda, lda, B + j0, ldb, C + i * ldc + j0, ldc);
                i += 4;
            }
        }
#endif
        for (; i < M; i++) {
            float *c = C + i * ldc + j0;
            for (int64_t j = 0; j < nj; j++) c[j] = 0.0f;
            for (int64_t k = 0; k < K; k++) {
                const float av = A[i * lda + k];
                const float *b = B + k * ldb + j0;
                for (int64_t j = 0; j < nj; j++) c[j] += av * b[j];
            }
        }
    }
}

// v[i] = exp(v[i]) or softplus(v[i]), n values (kind is a constant at every call: inlined per kind)
enum { ROW_EXP, ROW_SOFTPLUS };
static inline __attribute__((always_inline)) void tg_row_map(float *v, int64_t n, int kind) {
    int64_t i = 0;
#ifdef TG_AVX2
    if (TG_USE_SIMD)
        for (; i + 8 <= n; i += 8) {
            const __m256 x = _mm256_loadu_ps(v + i);
            _mm256_storeu_ps(v + i, kind == ROW_EXP ? tg_exp256(x) : tg_softplus256(x));
        }
#endif
    for (; i < n; i++) v[i] = kind == ROW_EXP ? expf(v[i]) : tg_softplus_f32(v[i]);
}

// Chunked scan (state-space duality, arXiv 2405.21060 sec. 6) for heads [h0, h1) of one
// sequence, scalar A per head. For a chunk of Lc tokens, with a_t = softplus(dt_t) * A and
// cs_t = a_0 + ... + a_t (in double, so exp(cs_t - cs_s) keeps float accuracy):
//   y_t   = exp(cs_t) C_t . h0  +  sum_{s<=t} exp(cs_t - cs_s) dt_s (C_t . B_s) x_s  +  D x_t
//   h_end = exp(cs_last) h0  +  sum_s exp(cs_last - cs_s) dt_s x_s B_s^T
// Each head runs through all its chunks with its state transposed into scratch, S[n][p], so
// both products read and write token rows where they lie, nothing transposed per chunk:
//   y[t][p]  = exp(cs_t) sum_n C_t[n] S[n][p]  +  sum_s M[t][s] x_s[p]     (ytile)
//   S[n][p]  = exp(cs_last) S[n][p]  +  sum_s B_s[n] Xw[s][p]             (stile)
// with M[t][s] = exp(cs_t - cs_s) dt_s (C_t . B_s) for s <= t (else 0), D added on its
// diagonal, and Xw[s][p] = exp(cs_last - cs_s) dt_s x_s[p]. The tiles of one 16-column block
// of S run back to back (outputs, then the update), so the block stays in L1; the state stays
// in L1/L2 for the whole sequence. CB[t][s] = C_t . B_s depends on the group only: made for
// all chunks when a thread's heads enter a group.
// Scratch (floats, L = chunk rounded up to 8): S [ds][hd] (rounded up to 8, so what follows
// stays 32-byte aligned), BT [ds][L], M [L][L], Xw [L][hd], dtv, ecs, w [L], cs [L] doubles,
// then CB [chunks][L][L]: ops.py _scan_wsize.
#ifdef TG_AVX2
// y rows t (mr <= 6) x 8 nv columns: exp(cs_t) (C_t . S) + M[t][:ks] x[:ks]
static inline __attribute__((always_inline)) void tg_ssd_ytile(
        int mr, int nv, int64_t ds, const float *C, int64_t ldc, const float *S, int64_t lds,
        const float *ecs, int64_t ks, const float *M, int64_t ldm, const float *X, int64_t ldx,
        float *Y, int64_t ldy) {
    __m256 acc[6][2];
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++) acc[r][v] = _mm256_setzero_ps();
    tg_tile_fma(mr, nv, ds, C, ldc, 1, S, lds, acc);
    for (int r = 0; r < mr; r++) {
        const __m256 e = _mm256_broadcast_ss(ecs + r);
        for (int v = 0; v < nv; v++) acc[r][v] = _mm256_mul_ps(acc[r][v], e);
    }
    tg_tile_fma(mr, nv, ks, M, ldm, 1, X, ldx, acc);
    tg_tile_store(mr, nv, acc, Y, ldy);
}

// S rows n (mr <= 6) x 8 nv columns: decay S + sum_s B_s[n] Xw[s]
static inline __attribute__((always_inline)) void tg_ssd_stile(
        int mr, int nv, int64_t Lc, const float *Bn, int64_t ldb, const float *Xw, int64_t ldw,
        float decay, float *S, int64_t lds) {
    __m256 acc[6][2];
    const __m256 vd = _mm256_set1_ps(decay);
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++) acc[r][v] = _mm256_mul_ps(vd, _mm256_loadu_ps(S + r * lds + 8 * v));
    tg_tile_fma(mr, nv, Lc, Bn, 1, ldb, Xw, ldw, acc);
    tg_tile_store(mr, nv, acc, S, lds);
}

// one block of 8 nv columns: all output rows of the chunk, then all state rows
static inline __attribute__((always_inline)) void tg_ssd_block(
        int nv, int64_t Lc, int64_t ds, const float *C, int64_t ldc, const float *Bn, int64_t ldb,
        const float *ecs, const float *M, int64_t ldm, const float *X, int64_t ldx,
        const float *Xw, int64_t ldw, float decay, float *S, int64_t lds, float *Y, int64_t ldy) {
#define YTILE(mr, ks) tg_ssd_ytile(mr, nv, ds, C + t * ldc, ldc, S, lds, ecs + t, ks, M + t * ldm, ldm, \
                                  X, ldx, Y + t * ldy, ldy)
#define STILE(mr) tg_ssd_stile(mr, nv, Lc, Bn + n, ldb, Xw, ldw, decay, S + n * lds, lds)
    int64_t t = 0;
    for (; t + 6 <= Lc; t += 6) YTILE(6, t + 6);
    switch (Lc - t) {     // mr as a constant: the tile's registers stay registers
        case 5: YTILE(5, Lc); break;
        case 4: YTILE(4, Lc); break;
        case 3: YTILE(3, Lc); break;
        case 2: YTILE(2, Lc); break;
        case 1: YTILE(1, Lc); break;
        default: break;
    }
    int64_t n = 0;
    for (; n + 6 <= ds; n += 6) STILE(6);
    switch (ds - n) {
        case 5: STILE(5); break;
        case 4: STILE(4); break;
        case 3: STILE(3); break;
        case 2: STILE(2); break;
        case 1: STILE(1); break;
        default: break;
    }
#undef YTILE
#undef STILE
}
#endif

// the same for columns [p0, p1) one at a time (the scalar build, and SIMD tails)
static void tg_ssd_columns(int64_t p0, int64_t p1, int64_t Lc, int64_t ds, const float *C,
                           int64_t ldc, const float *Bn, int64_t ldb, const float *ecs,
                           const float *M, int64_t ldm, const float *X, int64_t ldx,
                           const float *Xw, int64_t ldw, float decay, float *S, int64_t lds,
                           float *Y, int64_t ldy) {
    for (int64_t pc = p0; pc < p1; pc++) {
        for (int64_t t = 0; t < Lc; t++) {
            float a = 0.0f, b = 0.0f;
            for (int64_t n = 0; n < ds; n++) a += C[t * ldc + n] * S[n * lds + pc];
            for (int64_t s = 0; s <= t; s++) b += M[t * ldm + s] * X[s * ldx + pc];
            Y[t * ldy + pc] = a * ecs[t] + b;
        }
        for (int64_t n = 0; n < ds; n++) {
            float a = decay * S[n * lds + pc];
            for (int64_t s = 0; s < Lc; s++) a += Bn[s * ldb + n] * Xw[s * ldw + pc];
            S[n * lds + pc] = a;
        }
    }
}

static void tg_ssd_heads(const tg_params *p, const tg_tensor *dst, int64_t slot, int64_t t0,
                         int64_t len, int64_t h0, int64_t h1) {
    const tg_tensor *st = dst->src[0], *x = dst->src[1], *dt = dst->src[2], *A = dst->src[3];
    const tg_tensor *B = dst->src[4], *C = dst->src[5], *D = dst->src[6];
    const int64_t ds = st->ne[0], hd = st->ne[1], hpg = st->ne[2] / B->ne[1];
    const int64_t L = (dst->op_params[1] + 7) / 8 * 8, chunk = dst->op_params[1];
    float *S = (float *)(((uintptr_t)p->wdata + 63) & ~(uintptr_t)63);
    float *BT = S + (ds * hd + 7) / 8 * 8, *M = BT + ds * L, *Xw = M + L * L;   // 32-byte blocks
    float *dtv = Xw + L * hd, *ecs = dtv + L, *w = ecs + L;
    double *cs = (double *)(w + L);
    float *CBs = (float *)(cs + L);                 // [chunk][t][s], this group's
    // token strides in floats (ops.py checks they are whole floats)
    const int64_t ldb = B->nb[2] / 4, ldc = C->nb[2] / 4, ldx = x->nb[2] / 4, ldy = dst->nb[2] / 4;
    int64_t g_done = -1;
    for (int64_t h = h0; h < h1; h++) {
        const int64_t g = h / hpg;
        if (g != g_done) {                   // CB[t][s] = C_t . B_s for every chunk
            for (int64_t c0 = 0; c0 < len; c0 += chunk) {
                const int64_t Lc = TG_MIN(chunk, len - c0), tc = t0 + c0;
                if (Lc < L) memset(BT, 0, ds * L * 4);
                tg_transpose((const float *)at(B, 0, g, tc, 0), ldb, BT, L, Lc, ds);
                tg_gemm(Lc, L, ds, (const float *)at(C, 0, g, tc, 0), ldc, BT, L, CBs + c0 / chunk * L * L, L);
            }
            g_done = g;
        }
        const float a = *(const float *)(A->data + h * A->nb[1]);
        const float dh = D ? *(const float *)(D->data + h * D->nb[0]) : 0.0f;
        float *state = (float *)(st->data + slot * st->nb[3] + h * st->nb[2]);   // [hd][ds]
        tg_transpose(state, ds, S, hd, hd, ds);
        for (int64_t c0 = 0; c0 < len; c0 += chunk) {
            const int64_t Lc = TG_MIN(chunk, len - c0), tc = t0 + c0;
            const float *CB = CBs + c0 / chunk * L * L;
            for (int64_t t = 0; t < Lc; t++) dtv[t] = *(const float *)at(dt, h, tc + t, 0, 0);
            tg_row_map(dtv, Lc, ROW_SOFTPLUS);
            double acc = 0.0;
            for (int64_t t = 0; t < Lc; t++) {
                acc += (double)dtv[t] * a;
                cs[t] = acc;
            }
            const double last = cs[Lc - 1];
            for (int64_t t = 0; t < Lc; t++) {
                ecs[t] = (float)cs[t];
                w[t] = (float)(last - cs[t]);
            }
            tg_row_map(ecs, Lc, ROW_EXP);
            tg_row_map(w, Lc, ROW_EXP);
            for (int64_t t = 0; t < Lc; t++) w[t] *= dtv[t];
            // M[t][s] = exp(cs_t - cs_s) dt_s CB[t][s] for s <= t, + D on the diagonal, 0 after
            int64_t t = 0;
#ifdef TG_AVX2
            if (TG_USE_SIMD) {    // whole rows of 8 exps; the lanes past t are masked to 0
                const int64_t L8 = (Lc + 7) / 8 * 8;  // whatever they hold (inf, nan, stale)
                for (; t < Lc; t++) {
                    float *m = M + t * L;
                    const float *cb = CB + t * L;
                    const __m256d vt = _mm256_set1_pd(cs[t]);
                    const __m256 vti = _mm256_set1_ps((float)t);
                    for (int64_t s = 0; s < L8; s += 8) {
                        const __m128 lo = _mm256_cvtpd_ps(_mm256_sub_pd(vt, _mm256_loadu_pd(cs + s)));
                        const __m128 hi = _mm256_cvtpd_ps(_mm256_sub_pd(vt, _mm256_loadu_pd(cs + s + 4)));
                        const __m256 e = tg_exp256(_mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1));
                        const __m256 si = _mm256_add_ps(_mm256_set1_ps((float)s), _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7));
                        const __m256 v = _mm256_mul_ps(e, _mm256_mul_ps(_mm256_loadu_ps(dtv + s), _mm256_loadu_ps(cb + s)));
                        _mm256_storeu_ps(m + s, _mm256_and_ps(v, _mm256_cmp_ps(si, vti, _CMP_LE_OQ)));
                    }
                    m[t] += dh;
                }
            }
#endif
            for (; t < Lc; t++) {
                float *m = M + t * L;
                const float *cb = CB + t * L;
                for (int64_t s = 0; s <= t; s++) m[s] = expf((float)(cs[t] - cs[s])) * (dtv[s] * cb[s]);
                m[t] += dh;
                for (int64_t s = t + 1; s < Lc; s++) m[s] = 0.0f;
            }
            // Xw[s][p] = w_s x_s[p]
            const float *xc = (const float *)at(x, 0, h, tc, 0);
            for (int64_t s = 0; s < Lc; s++)
                for (int64_t pc = 0; pc < hd; pc++) Xw[s * hd + pc] = w[s] * xc[s * ldx + pc];
            const float *Cc = (const float *)at(C, 0, g, tc, 0), *Bc = (const float *)at(B, 0, g, tc, 0);
            float *yc = (float *)at(dst, 0, h, tc, 0);
            const float decay = (float)exp(last);
            int64_t pc = 0;
#ifdef TG_AVX2
            if (TG_USE_SIMD) {
                for (; pc + 16 <= hd; pc += 16)
                    tg_ssd_block(2, Lc, ds, Cc, ldc, Bc, ldb, ecs, M, L, xc + pc, ldx, Xw + pc, hd,
                                 decay, S + pc, hd, yc + pc, ldy);
                for (; pc + 8 <= hd; pc += 8)
                    tg_ssd_block(1, Lc, ds, Cc, ldc, Bc, ldb, ecs, M, L, xc + pc, ldx, Xw + pc, hd,
                                 decay, S + pc, hd, yc + pc, ldy);
            }
#endif
            tg_ssd_columns(pc, hd, Lc, ds, Cc, ldc, Bc, ldb, ecs, M, L, xc, ldx, Xw, hd, decay, S, hd, yc, ldy);
        }
        tg_transpose(S, hd, state, ds, ds, hd);
    }
}

static void tg_ssm_scan_f32(const tg_params *p, tg_tensor *dst) {
    if (dst->src[3]->ne[0] != 1 && dst->src[0]->ne[1] == 1) {   // A per element, head_dim 1
        tg_ssm_scan_m1_f32(p, dst);
        return;
    }
    const tg_tensor *st = dst->src[0], *info = dst->src[7];
    const int64_t nh = st->ne[2], n_s = info->ne[1];
    const int algo = dst->op_params[0], min_len = dst->op_params[2];
    const int scalar_a = dst->src[3]->ne[0] == 1;
    // rows are (sequence, head); this thread's rows of one sequence are a run of heads
    ROW_RANGE(n_s * nh);
    for (int64_t ir = ir0; ir < ir1;) {
        const int64_t s = ir / nh, h0 = ir % nh, h1 = TG_MIN(nh, h0 + (ir1 - ir));
        const int32_t *si = (const int32_t *)(info->data + s * info->nb[1]);
        const int64_t slot = si[0], t0 = si[1], len = si[2];
        if (scalar_a && len > 0 && (algo == 2 || (algo == 0 && len >= min_len))) {
            tg_ssd_heads(p, dst, slot, t0, len, h0, h1);
        } else {
            // the run of heads in 4 quarters, one head of each side by side (4 streams; 1
            // quarter, one head at a time, where the 4-head loop does not apply); a short last
            // quarter leaves its partners to the one-head loop (a state is updated in place,
            // so no head may run twice)
            const int parts = TG_USE_SIMD && scalar_a && st->ne[0] % 8 == 0 && st->ne[1] % 8 == 0 ? 4 : 1;
            const int64_t rl = tg_run_len(h0, h1, parts);
            for (int64_t i = 0; i < rl; i++) {
                int64_t m[4];
                tg_run_rows(h0, h1, rl, parts, i, m);
                float *sp[4];
                for (int k = 0; k < parts; k++)
                    sp[k] = m[k] < 0 ? NULL : (float *)(st->data + slot * st->nb[3] + m[k] * st->nb[2]);
#ifdef TG_AVX2
                if (parts == 4 && m[3] >= 0) {
                    tg_scan_heads4_recurrent(dst, sp, t0, len, m);
                    continue;
                }
#endif
                for (int k = 0; k < parts && m[k] >= 0; k++)
                    tg_scan_head_recurrent(dst, sp[k], t0, len, m[k], (float *)p->wdata);
            }
        }
        ir += h1 - h0;
    }
}

// ---------------------------------------------------------------------------------------------
// quantize: F32 rows -> QACT rows (activations for integer dots with quantized weights)
// src0: {K, n1, n2, n3} F32 (nb0 == 4), dst: same ne, QACT (row bytes 2*K + 12*K/32) or
// QACT_K (row bytes 2*K + 68*K/256)
static void tg_quantize_f32(const tg_params *p, tg_tensor *dst) {
    const tg_tensor *src0 = dst->src[0];
    const int64_t nr = src0->ne[1] * src0->ne[2] * src0->ne[3];
    ROW_RANGE(nr);
    for (int64_t ir = ir0; ir < ir1; ir++) {
        UNRAVEL(ir, src0->ne, i1, i2, i3);
        const float *x = (const float *)at(src0, 0, i1, i2, i3);
        uint8_t *q = (uint8_t *)at(dst, 0, i1, i2, i3);
        if (dst->type == TG_TYPE_QACT_K) tg_quantize_kact_row(x, src0->ne[0], q);
        else tg_quantize_act_row(x, src0->ne[0], q);
    }
}

// ---------------------------------------------------------------------------------------------
void tg_compute_forward(const tg_params *p, tg_tensor *dst) {
    switch (dst->op) {
        case TG_OP_CPY:       tg_cpy_f32(p, dst); break;
        case TG_OP_GET_ROWS:  tg_get_rows_f32(p, dst); break;
        case TG_OP_MUL_MAT:   tg_mul_mat_f32(p, dst); break;
        case TG_OP_ADD:       tg_binary_f32(p, dst, 0); break;
        case TG_OP_MUL:       tg_binary_f32(p, dst, 1); break;
        case TG_OP_SCALE:     tg_unary_f32(p, dst, UN_SCALE); break;
        case TG_OP_SILU:      tg_unary_f32(p, dst, UN_SILU); break;
        case TG_OP_GATE_SILU: tg_unary_f32(p, dst, UN_GATE); break;
        case TG_OP_RMS_NORM:  tg_rms_norm_f32(p, dst); break;
        case TG_OP_CONCAT:    tg_concat_f32(p, dst); break;
        case TG_OP_SSM_CONV:  tg_ssm_conv_f32(p, dst); break;
        case TG_OP_SSM_SCAN:  tg_ssm_scan_f32(p, dst); break;
        case TG_OP_QUANTIZE:  tg_quantize_f32(p, dst); break;
        default: break;       // NONE / VIEW: nothing to compute
    }
}
