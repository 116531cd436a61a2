// mul_mat: dst[m, n] = sum_k src0[k, m] * src1[k, n], broadcast over dims 2, 3
// src0: {K, M, ne02, ne03} any weight type (rows contiguous), src1: {K, N, ne12, ne13} F32
// (rows contiguous), or QACT / QACT_K rows when a QUANTIZE node made them (quantized weights
// on the integer paths), dst: {M, N, ne12, ne13} F32. Threads split M. op_params (ops.mul_mat,
// from the graph's options): [0] the float panels' k block, [1] the integer panels on AMX
// tiles, [2] the wider GEMM tiles (AVX-512: 12 columns and 32 rows in zmm; AVX2: the integer
// panels' 16 x 6 tile), each bit for bit the narrower one.
//
// tg_mul_mat_path, at the end of this file, is the one place that picks a node's kernel:
// - decode (one F32 / F16 column): each thread's rows as 4 quarters read side by side (4 read
//   streams, simd.h tg_dot_rows4_*);
// - quantized weights with QACT columns: integer dots under MM_NR columns (the type table's
//   fused dots where it has them: 4 rows at a time, columns in pairs), integer panels from
//   MM_NR columns (SIMD);
// - weights repacked at load (repack.c: AVX-512 VNNI; AVX2, Q4_0 / Q4_K) with QACT / QACT_K
//   columns under PACKED_MAX_N (AVX2: PACKED_MAX_N_AVX2): 16 rows at a time, one int32 lane per
//   row, up to PACKED_PASS columns per pass;
//   everything else reads their rows gathered back (tg_weight_row), bit for bit as from the
//   file layout;
// - F16 rows times 2 .. MM_SMALL_N - 1 columns: 2 rows x 4 columns in registers (SIMD);
// - other batches: packed 16 x 6 float panels, non-F32 rows widened first (SIMD), or 4-row x
//   3-column dot tiles on widened rows (the portable build).
#include "internal.h"

// out[r] = dot(a[r], b) for 4 rows (the scalar path and the tail in tg_sum_block blocks, as
// tg_dot4x3_f32)
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
    const int64_t kb = tg_sum_block(K);
    while (k < K) {
        const int64_t k1 = TG_MIN(K, (k / kb + 1) * kb);
        float t0 = 0, t1 = 0, t2 = 0, t3 = 0;
        for (; k < k1; k++) {
            t0 += a0[k] * b[k]; t1 += a1[k] * b[k]; t2 += a2[k] * b[k]; t3 += a3[k] * b[k];
        }
        s0 += t0; s1 += t1; s2 += t2; s3 += t3;
    }
    out[0] = s0; out[1] = s1; out[2] = s2; out[3] = s3;
}

// Batched mul_mat on packed panels (SIMD): 16 weight rows are packed k-major, Wp[k][16], so
// one k step is two 8-row loads; the activations are packed too, 6 columns k-major,
// Bp[k][6], so the 6 broadcasts of a k step read one stream (not 6 rows K floats apart). The
// 16 x 6 outputs stay in registers for the whole K, then store straight into dst's columns
// (no horizontal sums). Each output is summed in blocks of kb = tg_sum_block(K) k values (one
// fused multiply-add chain per block, from zero) added in k order to a running total: one
// chain over all of K rounds a partial sum that grows with k at every step (2.3x the rms
// error of the decode dots at K = 256), the blocks keep both chains short. The order is fixed
// by k and K alone, so a result does not depend on the tiling or the thread count.
#define MM_MR 16
#define MM_NR 6

#ifdef TG_AVX2
// acc: continue the sums already in d (a later k block of kc, a multiple of kb), else start
// from zero. The 12 totals and 12 block sums fit AVX-512's 32 registers; with AVX2's 16 the
// totals spill to the stack, read and written once per kb steps.
static inline void tg_panel_16x6(int64_t K, int64_t kb, const float *Wp, const float *Bp,
                                 float *const d[MM_NR], int acc) {
    __m256 t[MM_NR][2];
    for (int j = 0; j < MM_NR; j++) {
        t[j][0] = acc ? _mm256_loadu_ps(d[j]) : _mm256_setzero_ps();
        t[j][1] = acc ? _mm256_loadu_ps(d[j] + 8) : _mm256_setzero_ps();
    }
    for (int64_t k0 = 0; k0 < K; k0 += kb) {
        const int64_t k1 = TG_MIN(K, k0 + kb);
        __m256 c[MM_NR][2];
        for (int j = 0; j < MM_NR; j++) c[j][0] = c[j][1] = _mm256_setzero_ps();
        #pragma GCC unroll 4
        for (int64_t k = k0; k < k1; k++) {
            const __m256 w0 = _mm256_load_ps(Wp + k * MM_MR), w1 = _mm256_load_ps(Wp + k * MM_MR + 8);
            for (int j = 0; j < MM_NR; j++) {
                const __m256 bj = _mm256_broadcast_ss(Bp + k * MM_NR + j);
                c[j][0] = _mm256_fmadd_ps(w0, bj, c[j][0]);
                c[j][1] = _mm256_fmadd_ps(w1, bj, c[j][1]);
            }
        }
        for (int j = 0; j < MM_NR; j++) {
            t[j][0] = _mm256_add_ps(t[j][0], c[j][0]);
            t[j][1] = _mm256_add_ps(t[j][1], c[j][1]);
        }
    }
    for (int j = 0; j < MM_NR; j++) {
        _mm256_storeu_ps(d[j], t[j][0]);
        _mm256_storeu_ps(d[j] + 8, t[j][1]);
    }
}
#ifdef TG_AVX512
// tg_panel_16x6 twice over, in 512-bit registers: the 16 rows in one zmm, twelve columns (two
// consecutive 6-column tiles of Bp: Bp0 and Bp1 = Bp0 + 6 kc); 12 totals + 12 block sums +
// the weights stay in the 32 registers. Every output sees the same operations in the same
// order as in tg_panel_16x6 (one FMA per k into its block sum, block sums added to the total
// in k order), so the results are bit for bit the 16x6 ones; per k one weight load and twelve
// broadcasts feed twelve 16-wide FMAs, where the 16x6 tile needs two loads and six broadcasts
// for twelve 8-wide ones.
static inline void tg_panel_16x12(int64_t K, int64_t kb, const float *Wp, const float *Bp0,
                                  const float *Bp1, float *const d[2 * MM_NR], int acc) {
    __m512 t[2 * MM_NR];
    for (int j = 0; j < 2 * MM_NR; j++) t[j] = acc ? _mm512_loadu_ps(d[j]) : _mm512_setzero_ps();
    for (int64_t k0 = 0; k0 < K; k0 += kb) {
        const int64_t k1 = TG_MIN(K, k0 + kb);
        __m512 c[2 * MM_NR];
        for (int j = 0; j < 2 * MM_NR; j++) c[j] = _mm512_setzero_ps();
        #pragma GCC unroll 2
        for (int64_t k = k0; k < k1; k++) {
            const __m512 w = _mm512_load_ps(Wp + k * MM_MR);
            for (int j = 0; j < MM_NR; j++) {
                c[j] = _mm512_fmadd_ps(w, _mm512_set1_ps(Bp0[k * MM_NR + j]), c[j]);
                c[MM_NR + j] = _mm512_fmadd_ps(w, _mm512_set1_ps(Bp1[k * MM_NR + j]), c[MM_NR + j]);
            }
        }
        for (int j = 0; j < 2 * MM_NR; j++) t[j] = _mm512_add_ps(t[j], c[j]);
    }
    for (int j = 0; j < 2 * MM_NR; j++) _mm512_storeu_ps(d[j], t[j]);
}

// Two 16-row panels (Wp0: rows 0-15, Wp1: rows 16-31) times the same twelve columns: per k two
// weight loads and twelve broadcasts feed 24 FMAs, where tg_panel_16x12 (one load and twelve
// broadcasts for twelve) is bound by its loads. The 24 block sums stay in registers, the totals
// spill to the stack (read and written once per block of kb). Every output sees
// tg_panel_16x12's operations in its order: the results are the same bit for bit. KB: kb as a
// constant (the block loop unrolls whole), or 0 to read kb.
static inline __attribute__((always_inline)) void tg_panel_32x12_kb(
        int64_t K, int64_t kb, const int KB, const float *Wp0, const float *Wp1, const float *Bp0,
        const float *Bp1, float *const d[2 * MM_NR], int acc) {
    __m512 t[2][2 * MM_NR];
    for (int j = 0; j < 2 * MM_NR; j++)
        for (int h = 0; h < 2; h++) t[h][j] = acc ? _mm512_loadu_ps(d[j] + 16 * h) : _mm512_setzero_ps();
    for (int64_t k0 = 0; k0 < K; k0 += kb) {
        __m512 c[2][2 * MM_NR];
        for (int j = 0; j < 2 * MM_NR; j++) c[0][j] = c[1][j] = _mm512_setzero_ps();
        const float *w0p = Wp0 + k0 * MM_MR, *w1p = Wp1 + k0 * MM_MR;
        const float *b0p = Bp0 + k0 * MM_NR, *b1p = Bp1 + k0 * MM_NR;
#define STEP(k) do { \
            const __m512 w0 = _mm512_load_ps(w0p + (k) * MM_MR), w1 = _mm512_load_ps(w1p + (k) * MM_MR); \
            for (int j = 0; j < MM_NR; j++) { \
                const __m512 b0 = _mm512_set1_ps(b0p[(k) * MM_NR + j]), b1 = _mm512_set1_ps(b1p[(k) * MM_NR + j]); \
                c[0][j] = _mm512_fmadd_ps(w0, b0, c[0][j]); \
                c[1][j] = _mm512_fmadd_ps(w1, b0, c[1][j]); \
                c[0][MM_NR + j] = _mm512_fmadd_ps(w0, b1, c[0][MM_NR + j]); \
                c[1][MM_NR + j] = _mm512_fmadd_ps(w1, b1, c[1][MM_NR + j]); \
            } } while (0)
        if (KB && k0 + KB <= K) {
            #pragma GCC unroll 64
            for (int k = 0; k < KB; k++) STEP(k);
        } else {
            const int64_t n = TG_MIN(kb, K - k0);
            for (int64_t k = 0; k < n; k++) STEP(k);
        }
#undef STEP
        for (int j = 0; j < 2 * MM_NR; j++)
            for (int h = 0; h < 2; h++) t[h][j] = _mm512_add_ps(t[h][j], c[h][j]);
    }
    for (int j = 0; j < 2 * MM_NR; j++)
        for (int h = 0; h < 2; h++) _mm512_storeu_ps(d[j] + 16 * h, t[h][j]);
}

// the blocks of K > 256 (tg_sum_block: 32 up to 1024 values, 64 above) compiled with their
// length constant; shorter rows with the length read
static __attribute__((noinline)) void tg_panel_32x12(
        int64_t K, int64_t kb, const float *Wp0, const float *Wp1, const float *Bp0,
        const float *Bp1, float *const d[2 * MM_NR], int acc) {
    if (kb == 32) tg_panel_32x12_kb(K, 32, 32, Wp0, Wp1, Bp0, Bp1, d, acc);
    else if (kb == 64) tg_panel_32x12_kb(K, 64, 64, Wp0, Wp1, Bp0, Bp1, d, acc);
    else tg_panel_32x12_kb(K, kb, 0, Wp0, Wp1, Bp0, Bp1, d, acc);
}
#endif
#endif

// Long rows times wide batches are multiplied in k blocks of kc = op_params[0] values (0: K in
// one block; ops.mul_mat sets it from the graph's options): a panel's block (16 x kc floats)
// stays in L2 across all the column tiles, and each thread's packed activations are one block
// (N x kc floats), where a whole panel of 16 x K floats would stream for every tile and the
// activations from memory for every panel. The sums carry over between blocks through dst
// (stored and reloaded exactly), so results equal the unblocked ones bit for bit.
static inline int64_t tg_mm_kc(const tg_tensor *dst, int64_t K) {
    const int64_t kc = dst->op_params[0];
    return kc > 0 && kc < K ? kc : K;
}

#ifdef TG_AVX2

// values [k0, k0 + kc) of rows m0 .. m0 + nm - 1 of src0 widened (F16, BF16, quantized) and
// packed into panel P: rows[r][k] -> P[k][r], zero rows past nm. F32 rows are read in place.
// scratch: the unpack scratch (K int8, K/16 scales and mins, a packed row gathered).
static void tg_pack_panel(const tg_tensor *src0, int64_t k0, int64_t kc, int64_t m0, int64_t nm,
                          int64_t i02, int64_t i03, float *rows, float *P, void *scratch) {
    const int64_t K = src0->ne[0];
    int8_t *uw = (int8_t *)scratch;
    float *usc = (float *)(uw + K), *umn = usc + K / 16;
    char *rbuf = (char *)(umn + K / 16);
    const float *src_rows = rows;
    int64_t lds = kc;
    if (src0->type == TG_TYPE_F32 && nm == MM_MR) {
        src_rows = (const float *)at(src0, k0, m0, i02, i03);
        lds = src0->nb[1] / 4;
    } else {
        for (int64_t r = 0; r < MM_MR; r++) {
            float *row = rows + r * kc;
            if (r >= nm) { memset(row, 0, kc * 4); continue; }
            const char *w = tg_weight_row(src0, m0 + r, i02, i03, rbuf) + tg_row_bytes(src0->type, k0);
            if (src0->type == TG_TYPE_F32) memcpy(row, w, kc * 4);
            else if (src0->type == TG_TYPE_F16) tg_fp16_to_fp32_row((const tg_fp16_t *)w, row, kc);
            else tg_dequantize_row(src0->type, w, kc, row, uw, usc, umn);
        }
    }
    tg_transpose(src_rows, lds, P, MM_MR, MM_MR, kc);
}

// rows [ir0, ir1) of dst for every column; scratch: Wp, Wp1 16*KC floats each (64-byte
// aligned; two panels for the 32-row tiles), rows 16*KC floats, Bp (N rounded up to 6)*KC floats, Cp (N rounded up to 6)*16 floats (a last
// partial panel's sums), the unpack scratch after them. KC = K, or MM_KC for long rows. Every
// thread packs all of src1 itself (a copy of the activations, small beside the K*N*rows/16
// panel work; no barrier needed).
static void tg_mul_mat_panels(const tg_params *p, tg_tensor *dst, int64_t ir0, int64_t ir1) {
    const tg_tensor *src0 = dst->src[0], *src1 = dst->src[1];
    const int64_t K = src0->ne[0], N = src1->ne[1], NP = (N + MM_NR - 1) / MM_NR * MM_NR;
    const int64_t KC = tg_mm_kc(dst, K), kb = tg_sum_block(K);
    const int64_t r2 = src1->ne[2] / src0->ne[2], r3 = src1->ne[3] / src0->ne[3];
    float *Wp = (float *)(((uintptr_t)p->wdata + 63) & ~(uintptr_t)63);
    float *Wp1 = Wp + MM_MR * KC;                    // the second panel of a 32-row pair
    float *rows = Wp1 + MM_MR * KC, *Bp = rows + MM_MR * KC, *Cp = Bp + NP * KC;
    void *scratch = Cp + NP * MM_MR;
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
            int64_t m0 = ir0;
#ifdef TG_AVX512
            // pairs of full panels through the 32 x 12 tiles while 12 columns remain; their
            // last columns through the 16-row tiles, panel by panel
            for (; TG_WIDE(dst->op_params[2]) && N >= 2 * MM_NR && m0 + 2 * MM_MR <= ir1; m0 += 2 * MM_MR) {
                tg_pack_panel(src0, k0, kc, m0, MM_MR, i12 / r2, i13 / r3, rows, Wp, scratch);
                tg_pack_panel(src0, k0, kc, m0 + MM_MR, MM_MR, i12 / r2, i13 / r3, rows, Wp1, scratch);
                int64_t n = 0;
                for (; n + 2 * MM_NR <= N; n += 2 * MM_NR) {
                    float *d[2 * MM_NR];
                    for (int j = 0; j < 2 * MM_NR; j++) d[j] = (float *)at(dst, m0, n + j, i12, i13);
                    tg_panel_32x12(kc, kb, Wp, Wp1, Bp + n * kc, Bp + (n + MM_NR) * kc, d, !first);
                }
                for (int h = 0; h < 2; h++)
                    for (int64_t nn = n; nn < N; nn += MM_NR) {
                        const int nr = (int)TG_MIN(MM_NR, N - nn);
                        float *d[MM_NR];
                        for (int j = 0; j < MM_NR; j++)
                            d[j] = (float *)at(dst, m0 + h * MM_MR, nn + TG_MIN(j, nr - 1), i12, i13);
                        tg_panel_16x6(kc, kb, h ? Wp1 : Wp, Bp + nn * kc, d, !first);
                    }
            }
#endif
            for (; m0 < ir1; m0 += MM_MR) {
                const int64_t nm = TG_MIN(MM_MR, ir1 - m0);
                tg_pack_panel(src0, k0, kc, m0, nm, i12 / r2, i13 / r3, rows, Wp, scratch);
                for (int64_t n = 0; n < N;) {
                    // 12 columns at once (two 6-column tiles, AVX-512) while two full tiles
                    // remain, else one tile of up to 6
                    const int wide = TG_WIDE(dst->op_params[2]) && N - n >= 2 * MM_NR;
                    const int w = wide ? 2 * MM_NR : MM_NR;
                    const int nr = (int)TG_MIN(w, N - n);
                    float *d[2 * MM_NR];
                    for (int j = 0; j < w; j++)       // a partial tile repeats its last column
                        d[j] = nm == MM_MR ? (float *)at(dst, m0, n + TG_MIN(j, nr - 1), i12, i13)
                                           : Cp + (n + j) * MM_MR;
#ifdef TG_AVX512
                    if (wide) tg_panel_16x12(kc, kb, Wp, Bp + n * kc, Bp + (n + MM_NR) * kc, d, !first);
                    else
#endif
                    tg_panel_16x6(kc, kb, Wp, Bp + n * kc, d, !first);
                    if (nm < MM_MR && last)
                        for (int j = 0; j < nr; j++)
                            memcpy(at(dst, m0, n + j, i12, i13), Cp + (n + j) * MM_MR, nm * 4);
                    n += w;
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
// (VNNI vpdpwssd) or per vpmaddwd + vpaddd pair (AVX2), against an FMA's 8. The AVX2 tile is
// bound by its loads, so which batches come here is a graph option (GraphOptions.int_gemm,
// int_gemm_min_cols; the per-CPU defaults are in tinyggml/options.py). Per scale group (16 or
// 32 values) the exact
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
        // vpaddd chain step per two vpmaddwd: a shorter dependency chain)
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

#ifdef TG_AVX512
// tg_qpanel_tile for 12 columns in 512-bit registers (TG_WIDE): a k pair of all 16 rows
// is one zmm of Wq, so one load and twelve broadcasts feed twelve vpdpwssd of 16 lanes, where
// the 256-bit tile loads twice for six columns. The integer sums are exact and every float step
// is the 256-bit tile's, lane for lane: the results are the same bit for bit.
#define QP_NR_WIDE 12
static inline __attribute__((always_inline)) void tg_qpanel_tile12(
        int64_t K, int G, int has_min, const int16_t *Wq, const float *Ws, const float *Wm,
        const uint8_t *const act[QP_NR_WIDE], float *const d[QP_NR_WIDE]) {
    __m512 f[QP_NR_WIDE];
    const int16_t *q[QP_NR_WIDE];
    const float *da[QP_NR_WIDE], *ds[QP_NR_WIDE];
    for (int j = 0; j < QP_NR_WIDE; j++) {
        f[j] = _mm512_setzero_ps();
        q[j] = (const int16_t *)act[j];
        da[j] = (const float *)(act[j] + 2 * K);
        ds[j] = da[j] + K / 32;
    }
    for (int64_t k0 = 0; k0 < K; k0 += G) {
        __m512i s[QP_NR_WIDE];
        for (int j = 0; j < QP_NR_WIDE; j++) s[j] = _mm512_setzero_si512();
        const int16_t *wp = Wq + k0 * 16;    // a constant trip count, as in tg_qpanel_tile32x12
        #pragma GCC unroll 16
        for (int kp = 0; kp < G / 2; kp++) {
            const __m512i w = _mm512_load_si512((const void *)(wp + kp * 32));
            for (int j = 0; j < QP_NR_WIDE; j++) {
                int32_t pair;
                memcpy(&pair, q[j] + k0 + 2 * kp, 4);
                s[j] = _mm512_dpwssd_epi32(s[j], w, _mm512_set1_epi32(pair));
            }
        }
        const __m512 ws = _mm512_load_ps(Ws + (k0 / 16) * 16);
        for (int j = 0; j < QP_NR_WIDE; j++)
            f[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[j]), _mm512_mul_ps(ws, _mm512_set1_ps(da[j][k0 / 32])), f[j]);
        if (has_min && G == 32) {            // mins per 32 (equal halves): one step
            const int64_t h = k0 / 16;
            const __m512 m = _mm512_load_ps(Wm + h * 16);
            for (int j = 0; j < QP_NR_WIDE; j++)
                f[j] = _mm512_fnmadd_ps(m, _mm512_set1_ps(ds[j][h] + ds[j][h + 1]), f[j]);
        } else if (has_min) {
            for (int64_t h = k0 / 16; h < (k0 + G) / 16; h++) {
                const __m512 m = _mm512_load_ps(Wm + h * 16);
                for (int j = 0; j < QP_NR_WIDE; j++) f[j] = _mm512_fnmadd_ps(m, _mm512_set1_ps(ds[j][h]), f[j]);
            }
        }
    }
    for (int j = 0; j < QP_NR_WIDE; j++) _mm512_storeu_ps(d[j], f[j]);
}

static __attribute__((noinline)) void tg_qpanel_wide_g32(
        int64_t K, int has_min, const int16_t *Wq, const float *Ws, const float *Wm,
        const uint8_t *const act[QP_NR_WIDE], float *const d[QP_NR_WIDE]) {
    tg_qpanel_tile12(K, 32, has_min, Wq, Ws, Wm, act, d);
}

static __attribute__((noinline)) void tg_qpanel_wide_g16(
        int64_t K, int has_min, const int16_t *Wq, const float *Ws, const float *Wm,
        const uint8_t *const act[QP_NR_WIDE], float *const d[QP_NR_WIDE]) {
    tg_qpanel_tile12(K, 16, has_min, Wq, Ws, Wm, act, d);
}

// Two 16-row panels (P[0]: rows 0-15, P[1]: rows 16-31) times 12 columns: per k pair two
// weight loads and twelve broadcasts feed 24 vpdpwssd, where tg_qpanel_tile12 needs one load
// and twelve broadcasts for twelve: the 16-row tile is bound by its loads (13 per 12
// multiply-adds), this one by the multiply-adds. 24 integer sums stay in registers; the float
// sums spill to the stack and are read and written once per scale group. Each row sees
// tg_qpanel_tile12's operations in its order, so the results are the same bit for bit.
typedef struct { const int16_t *Wq; const float *Ws, *Wm; } tg_qpanel;

static inline __attribute__((always_inline)) void tg_qpanel_tile32x12(
        int64_t K, int G, int has_min, const tg_qpanel P[2], const uint8_t *const act[QP_NR_WIDE],
        float *const d[QP_NR_WIDE]) {
    __m512 f[QP_NR_WIDE][2];
    const int16_t *q[QP_NR_WIDE];
    const float *da[QP_NR_WIDE], *ds[QP_NR_WIDE];
    for (int j = 0; j < QP_NR_WIDE; j++) {
        f[j][0] = f[j][1] = _mm512_setzero_ps();
        q[j] = (const int16_t *)act[j];
        da[j] = (const float *)(act[j] + 2 * K);
        ds[j] = da[j] + K / 32;
    }
    for (int64_t k0 = 0; k0 < K; k0 += G) {
        __m512i s[QP_NR_WIDE][2];
        for (int j = 0; j < QP_NR_WIDE; j++) s[j][0] = s[j][1] = _mm512_setzero_si512();
        // a constant trip count from group-local pointers: the loop unrolls whole, every
        // address a constant offset (no remainder paths, no pointers reloaded from the stack)
        const int16_t *w0p = P[0].Wq + k0 * 16, *w1p = P[1].Wq + k0 * 16;
        #pragma GCC unroll 16
        for (int kp = 0; kp < G / 2; kp++) {
            const __m512i w0 = _mm512_load_si512((const void *)(w0p + kp * 32));
            const __m512i w1 = _mm512_load_si512((const void *)(w1p + kp * 32));
            for (int j = 0; j < QP_NR_WIDE; j++) {
                int32_t pair;
                memcpy(&pair, q[j] + k0 + 2 * kp, 4);
                const __m512i b = _mm512_set1_epi32(pair);
                s[j][0] = _mm512_dpwssd_epi32(s[j][0], w0, b);
                s[j][1] = _mm512_dpwssd_epi32(s[j][1], w1, b);
            }
        }
        for (int h = 0; h < 2; h++) {
            const __m512 ws = _mm512_load_ps(P[h].Ws + (k0 / 16) * 16);
            for (int j = 0; j < QP_NR_WIDE; j++)
                f[j][h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[j][h]), _mm512_mul_ps(ws, _mm512_set1_ps(da[j][k0 / 32])), f[j][h]);
            if (has_min && G == 32) {
                const int64_t g = k0 / 16;
                const __m512 m = _mm512_load_ps(P[h].Wm + g * 16);
                for (int j = 0; j < QP_NR_WIDE; j++)
                    f[j][h] = _mm512_fnmadd_ps(m, _mm512_set1_ps(ds[j][g] + ds[j][g + 1]), f[j][h]);
            } else if (has_min) {
                for (int64_t g = k0 / 16; g < (k0 + G) / 16; g++) {
                    const __m512 m = _mm512_load_ps(P[h].Wm + g * 16);
                    for (int j = 0; j < QP_NR_WIDE; j++) f[j][h] = _mm512_fnmadd_ps(m, _mm512_set1_ps(ds[j][g]), f[j][h]);
                }
            }
        }
    }
    for (int j = 0; j < QP_NR_WIDE; j++) {
        _mm512_storeu_ps(d[j], f[j][0]);
        _mm512_storeu_ps(d[j] + 16, f[j][1]);
    }
}

static __attribute__((noinline)) void tg_qpanel_tall_g32(
        int64_t K, int has_min, const tg_qpanel P[2], const uint8_t *const act[QP_NR_WIDE],
        float *const d[QP_NR_WIDE]) {
    tg_qpanel_tile32x12(K, 32, has_min, P, act, d);
}

static __attribute__((noinline)) void tg_qpanel_tall_g16(
        int64_t K, int has_min, const tg_qpanel P[2], const uint8_t *const act[QP_NR_WIDE],
        float *const d[QP_NR_WIDE]) {
    tg_qpanel_tile32x12(K, 16, has_min, P, act, d);
}
#endif

#ifndef TG_AVX512
// AVX2: 16 rows x 6 columns, the 12 integer sums in registers (with the two weight vectors and a
// broadcast, 15 of the 16) and the float sums in dst itself, read and written once per scale
// group: 8 loads per 12 vpmaddwd where tg_qpanel_tile's 3 columns take 5 per 6. Each output
// sees tg_qpanel_tile's float operations in its order (the integer sums are exact), so the
// results are the same bit for bit.
#define QP_NR6 6
static inline __attribute__((always_inline)) void tg_qpanel_tile6(
        int64_t K, int G, int has_min, const int16_t *Wq, const float *Ws, const float *Wm,
        const uint8_t *const act[QP_NR6], float *const d[QP_NR6]) {
    const int16_t *q[QP_NR6];
    const float *da[QP_NR6], *ds[QP_NR6];
    for (int j = 0; j < QP_NR6; j++) {
        q[j] = (const int16_t *)act[j];
        da[j] = (const float *)(act[j] + 2 * K);
        ds[j] = da[j] + K / 32;
        _mm256_storeu_ps(d[j], _mm256_setzero_ps());
        _mm256_storeu_ps(d[j] + 8, _mm256_setzero_ps());
    }
    for (int64_t k0 = 0; k0 < K; k0 += G) {
        __m256i s[QP_NR6][2];
        for (int j = 0; j < QP_NR6; j++) s[j][0] = s[j][1] = _mm256_setzero_si256();
        const int16_t *wp = Wq + k0 * 16;
        #pragma GCC unroll 16
        for (int kp = 0; kp < G / 2; kp++) {
            const __m256i w0 = _mm256_load_si256((const __m256i *)(wp + kp * 32));
            const __m256i w1 = _mm256_load_si256((const __m256i *)(wp + kp * 32 + 16));
            for (int j = 0; j < QP_NR6; j++) {
                int32_t pair;
                memcpy(&pair, q[j] + k0 + 2 * kp, 4);
                const __m256i b = _mm256_set1_epi32(pair);
                s[j][0] = _mm256_add_epi32(s[j][0], _mm256_madd_epi16(w0, b));
                s[j][1] = _mm256_add_epi32(s[j][1], _mm256_madd_epi16(w1, b));
                TG_KEEP(s[j][0]);
                TG_KEEP(s[j][1]);
            }
        }
        const __m256 ws0 = _mm256_load_ps(Ws + (k0 / 16) * 16), ws1 = _mm256_load_ps(Ws + (k0 / 16) * 16 + 8);
        for (int j = 0; j < QP_NR6; j++) {
            const __m256 a = _mm256_set1_ps(da[j][k0 / 32]);
            _mm256_storeu_ps(d[j], _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[j][0]), _mm256_mul_ps(ws0, a),
                                                   _mm256_loadu_ps(d[j])));
            _mm256_storeu_ps(d[j] + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[j][1]), _mm256_mul_ps(ws1, a),
                                                       _mm256_loadu_ps(d[j] + 8)));
        }
        // the mins once a group: per 32 (equal halves, both half sums) or per 16
        for (int64_t h = k0 / 16; has_min && h < (k0 + G) / 16; h += G / 16) {
            const __m256 m0 = _mm256_load_ps(Wm + h * 16), m1 = _mm256_load_ps(Wm + h * 16 + 8);
            for (int j = 0; j < QP_NR6; j++) {
                const __m256 b = _mm256_set1_ps(G == 32 ? ds[j][h] + ds[j][h + 1] : ds[j][h]);
                _mm256_storeu_ps(d[j], _mm256_fnmadd_ps(m0, b, _mm256_loadu_ps(d[j])));
                _mm256_storeu_ps(d[j] + 8, _mm256_fnmadd_ps(m1, b, _mm256_loadu_ps(d[j] + 8)));
            }
        }
    }
}

static __attribute__((noinline)) void tg_qpanel_six_g32(
        int64_t K, int has_min, const int16_t *Wq, const float *Ws, const float *Wm,
        const uint8_t *const act[QP_NR6], float *const d[QP_NR6]) {
    tg_qpanel_tile6(K, 32, has_min, Wq, Ws, Wm, act, d);
}

static __attribute__((noinline)) void tg_qpanel_six_g16(
        int64_t K, int has_min, const int16_t *Wq, const float *Ws, const float *Wm,
        const uint8_t *const act[QP_NR6], float *const d[QP_NR6]) {
    tg_qpanel_tile6(K, 16, has_min, Wq, Ws, Wm, act, d);
}
#endif

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

// rows m0 .. m0 + nm - 1 (nm <= MM_MR) of src0 unpacked to int16 and packed pair-interleaved into
// panel Wq [K/2][16][2], their scales and mins into Ws, Wm [K/16][16]; rows past nm are zeros.
static void tg_qpanel_unpack(const tg_tensor *src0, int64_t m0, int64_t nm, int64_t i02, int64_t i03,
                             int16_t *Wq, float *Ws, float *Wm, int16_t *rows, void *scratch) {
    const int64_t K = src0->ne[0];
    int8_t *uw = (int8_t *)scratch;
    float *usc = (float *)(uw + K), *umn = usc + K / 16;
    char *rbuf = (char *)(umn + K / 16);             // a packed row, gathered
    for (int64_t r = 0; r < MM_MR; r++) {
        if (r >= nm) {
            memset(rows + r * K, 0, K * 2);
            for (int64_t h = 0; h < K / 16; h++) Ws[h * 16 + r] = Wm[h * 16 + r] = 0.0f;
            continue;
        }
        tg_unpack_row(src0->type, tg_weight_row(src0, m0 + r, i02, i03, rbuf), K, uw, usc, umn);
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
}

#ifdef TG_AVX512
#define QP_WIDE QP_NR_WIDE
#define tg_qpanel_w32 tg_qpanel_wide_g32
#define tg_qpanel_w16 tg_qpanel_wide_g16
#else
#define QP_WIDE QP_NR6
#define tg_qpanel_w32 tg_qpanel_six_g32
#define tg_qpanel_w16 tg_qpanel_six_g16
#endif

// columns [n, N) of one 16-row panel: its nm rows of dst from row m0
static void tg_qpanel_columns(const tg_tensor *dst, int64_t n, int64_t m0, int64_t nm, int64_t i12,
                              int64_t i13, const int16_t *Wq, const float *Ws, const float *Wm) {
    const tg_tensor *src1 = dst->src[1];
    const int64_t K = dst->src[0]->ne[0], N = src1->ne[1];
    const tg_type_traits *tt = tg_get_type_traits(dst->src[0]->type);
    const int G = tt->scale_group, has_min = tt->has_min;
    // the wide tiles while they fill (AVX-512: 12 columns in zmm; AVX2: 6), then the 3 / 6-column one
    float tmp[QP_WIDE][MM_MR];
    for (; dst->op_params[2] && n + QP_WIDE <= N; n += QP_WIDE) {
        const uint8_t *act[QP_WIDE];
        float *d[QP_WIDE];
        for (int j = 0; j < QP_WIDE; j++) {
            act[j] = (const uint8_t *)at(src1, 0, n + j, i12, i13);
            d[j] = nm == MM_MR ? (float *)at(dst, m0, n + j, i12, i13) : tmp[j];
        }
        if (G == 32) tg_qpanel_w32(K, has_min, Wq, Ws, Wm, act, d);
        else tg_qpanel_w16(K, has_min, Wq, Ws, Wm, act, d);
        if (nm < MM_MR)
            for (int j = 0; j < QP_WIDE; j++)
                memcpy(at(dst, m0, n + j, i12, i13), tmp[j], nm * 4);
    }
    for (; n < N; n += QP_NR) {
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

#ifdef TG_AMX
// The integer GEMM on AMX tiles (op_params[1] = 1: GraphOptions.amx). A tile product multiplies
// int8 by int8 (or uint8), so the int16 activations go in as their high bytes (int8) and low
// bytes (uint8): per scale group (G = 32 or 16 values) two products, 16 weight rows x 16
// columns each, the int32 sums exact; 256 hi + lo is the same integer sum(w q) the vpdpwssd
// tiles make, and every float step after it is theirs (ws * da, one fused multiply-add into the
// row's sum, the mins subtracted per group), so the outputs are the same bit for bit.
// Layouts: A, the 16 unpacked weight rows as int8, row-major (stride K); B, per block of 16
// columns and per group, G / 4 rows of 64 bytes: row kk holds k = 4 kk .. 4 kk + 3 of each
// column (the tile product's 4-deep pairing); columns past N are zeros. Per block and group the
// columns' activation scales (and their half sums for the mins) sit in 16-float vectors.
// Scratch (after the panels' own): per block of 16 columns, B hi and lo (32 K bytes), the
// scales and the half sums (4 K bytes each).
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tg_tilecfg;

static void tg_amx_pack_columns(const tg_tensor *src1, int64_t n0, int64_t i12, int64_t i13, int G,
                                int has_min, uint8_t *Bh, uint8_t *Bl, float *D, float *DS) {
    const int64_t K = src1->ne[0], N = src1->ne[1];
    memset(Bh, 0, 16 * K);
    memset(Bl, 0, 16 * K);
    for (int64_t g = 0; g < K / G; g++)
        for (int j = 0; j < 16; j++) D[16 * g + j] = DS[16 * g + j] = 0.0f;
    for (int j = 0; j < 16 && n0 + j < N; j++) {
        const uint8_t *act = (const uint8_t *)at(src1, 0, n0 + j, i12, i13);
        const int16_t *q = (const int16_t *)act;
        const float *da = (const float *)(act + 2 * K), *ds = da + K / 32;
        for (int64_t k = 0; k < K; k += 4) {      // byte 4 j + k % 4 of row k / 4
            uint8_t h[4], l[4];
            for (int t = 0; t < 4; t++) {
                h[t] = (uint8_t)(q[k + t] >> 8);
                l[t] = (uint8_t)(q[k + t] & 0xFF);
            }
            memcpy(Bh + (k / 4) * 64 + 4 * j, h, 4);
            memcpy(Bl + (k / 4) * 64 + 4 * j, l, 4);
        }
        for (int64_t g = 0; g < K / G; g++) {
            D[16 * g + j] = da[g * G / 32];
            if (has_min) DS[16 * g + j] = G == 32 ? ds[2 * g] + ds[2 * g + 1] : ds[g];
        }
    }
}

// a group's sums of one block (its stored tiles ch, cl: high and low bytes' products) into the
// rows' float sums f[r] (16 columns each), as the VNNI tiles' epilogue
static inline __attribute__((always_inline)) void tg_amx_epilogue(int64_t k0, int has_min, const float *Ws,
                                                                 const float *Wm, const int32_t ch[16][16],
                                                                 const int32_t cl[16][16], __m512 d,
                                                                 __m512 dsum, float f[16][16]) {
    for (int r = 0; r < 16; r++) {
        const __m512i s = _mm512_add_epi32(_mm512_slli_epi32(_mm512_loadu_si512(ch[r]), 8),
                                           _mm512_loadu_si512(cl[r]));
        __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(_mm512_set1_ps(Ws[(k0 / 16) * 16 + r]), d),
                                   _mm512_loadu_ps(f[r]));
        if (has_min) v = _mm512_fnmadd_ps(_mm512_set1_ps(Wm[(k0 / 16) * 16 + r]), dsum, v);
        _mm512_storeu_ps(f[r], v);
    }
}

// one 16-row panel (A, scales Ws / Wm [K/16][16]) times one packed block of 16 columns: the
// rows' float sums (16 columns each) into out[r][16]
static void tg_amx_block(int64_t K, int G, int has_min, const int8_t *A, const float *Ws,
                         const float *Wm, const uint8_t *Bh, const uint8_t *Bl, const float *D,
                         const float *DS, float out[16][16]) {
    // the products of group g are stored while group g - 1's are read: a vector load of a tile
    // store still in flight waits for it to complete (no store forwarding), so the sums of a
    // group are read one group later, from the other buffer
    int32_t c[2][2][16][16];
    memset(out, 0, 16 * 16 * sizeof(float));
    const int64_t ng = K / G;
    for (int64_t g = 0; g <= ng; g++) {
        if (g < ng) {
            const int64_t k0 = g * G;
            _tile_loadd(1, A + k0, K);
            _tile_loadd(2, Bh + (k0 / 4) * 64, 64);
            _tile_loadd(3, Bl + (k0 / 4) * 64, 64);
            _tile_zero(4);
            _tile_zero(5);
            _tile_dpbssd(4, 1, 2);
            _tile_dpbsud(5, 1, 3);
            _tile_stored(4, c[g & 1][0], 64);
            _tile_stored(5, c[g & 1][1], 64);
        }
        if (g == 0) continue;
        const int64_t q = g - 1;
        tg_amx_epilogue(q * G, has_min, Ws, Wm, c[q & 1][0], c[q & 1][1], _mm512_loadu_ps(D + 16 * q),
                        _mm512_loadu_ps(DS + 16 * q), out);
    }
}

// tg_amx_block for two blocks of columns at once: one A tile meets four B tiles per group (the
// B tiles rotate through three registers), so a group's chain of loads, products and stores
// carries twice the products; each output's steps are tg_amx_block's (the last block of an odd
// count goes there)
static void tg_amx_block2(int64_t K, int G, int has_min, const int8_t *A, const float *Ws,
                          const float *Wm, const uint8_t *B0, const uint8_t *B1, const float *D0,
                          const float *DS0, const float *D1, const float *DS1, float out0[16][16],
                          float out1[16][16]) {
    int32_t c[2][4][16][16];
    memset(out0, 0, 16 * 16 * sizeof(float));
    memset(out1, 0, 16 * 16 * sizeof(float));
    const int64_t ng = K / G;
    for (int64_t g = 0; g <= ng; g++) {
        if (g < ng) {
            const int64_t k0 = g * G, ob = (k0 / 4) * 64;
            _tile_loadd(1, A + k0, K);
            _tile_loadd(2, B0 + ob, 64);
            _tile_loadd(3, B0 + 16 * K + ob, 64);
            _tile_loadd(0, B1 + ob, 64);
            _tile_zero(4);
            _tile_zero(5);
            _tile_zero(6);
            _tile_zero(7);
            _tile_dpbssd(4, 1, 2);
            _tile_dpbsud(5, 1, 3);
            _tile_dpbssd(6, 1, 0);
            _tile_loadd(2, B1 + 16 * K + ob, 64);
            _tile_dpbsud(7, 1, 2);
            _tile_stored(4, c[g & 1][0], 64);
            _tile_stored(5, c[g & 1][1], 64);
            _tile_stored(6, c[g & 1][2], 64);
            _tile_stored(7, c[g & 1][3], 64);
        }
        if (g == 0) continue;
        const int64_t q = g - 1;
        tg_amx_epilogue(q * G, has_min, Ws, Wm, c[q & 1][0], c[q & 1][1], _mm512_loadu_ps(D0 + 16 * q),
                        _mm512_loadu_ps(DS0 + 16 * q), out0);
        tg_amx_epilogue(q * G, has_min, Ws, Wm, c[q & 1][2], c[q & 1][3], _mm512_loadu_ps(D1 + 16 * q),
                        _mm512_loadu_ps(DS1 + 16 * q), out1);
    }
}

static void tg_mul_mat_amx(const tg_params *p, tg_tensor *dst, int64_t ir0, int64_t ir1) {
    const tg_tensor *src0 = dst->src[0], *src1 = dst->src[1];
    const tg_type_traits *tt = tg_get_type_traits(src0->type);
    const int64_t K = src0->ne[0], N = src1->ne[1], NB = (N + 15) / 16;
    const int G = tt->scale_group, has_min = tt->has_min;
    const int64_t r2 = src1->ne[2] / src0->ne[2], r3 = src1->ne[3] / src0->ne[3];
    if (ir0 >= ir1) return;
    // the panels' layout (tg_mul_mat_qpanels): A in the first panel's place, the scales as there
    int8_t *A = (int8_t *)(((uintptr_t)p->wdata + 63) & ~(uintptr_t)63);
    float *Ws = (float *)((int16_t *)A + 32 * K), *Wm = Ws + 2 * K;
    // past the rows: a row's scales and mins (its int8 values go straight into A), a gathered row
    float *usc = (float *)((char *)(Wm + 2 * K) + 32 * K), *umn = usc + K / 16;
    char *rbuf = (char *)(umn + K / 16);
    uint8_t *B = (uint8_t *)(((uintptr_t)(rbuf + src0->nb[1]) + 63) & ~(uintptr_t)63);
    float *Dall = (float *)(B + 32 * K * NB), *DSall = Dall + NB * (K / 16) * 16;
    tg_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    cfg.rows[1] = 16, cfg.colsb[1] = (uint16_t)G;            // A: 16 rows x G bytes
    cfg.rows[0] = cfg.rows[2] = cfg.rows[3] = (uint8_t)(G / 4);          // B: G / 4 rows
    cfg.colsb[0] = cfg.colsb[2] = cfg.colsb[3] = 64;
    for (int t = 4; t < 8; t++) cfg.rows[t] = 16, cfg.colsb[t] = 64;   // C: 16 x 16 int32
    _tile_loadconfig(&cfg);
    float out[2][16][16];
    for (int64_t i13 = 0; i13 < src1->ne[3]; i13++)
    for (int64_t i12 = 0; i12 < src1->ne[2]; i12++) {
        const int64_t i02 = i12 / r2, i03 = i13 / r3;
        for (int64_t b = 0; b < NB; b++)
            tg_amx_pack_columns(src1, 16 * b, i12, i13, G, has_min, B + 32 * K * b, B + 32 * K * b + 16 * K,
                                Dall + b * (K / 16) * 16, DSall + b * (K / 16) * 16);
        for (int64_t m0 = ir0; m0 < ir1; m0 += MM_MR) {
            const int64_t nm = TG_MIN(MM_MR, ir1 - m0);
            for (int64_t r = 0; r < MM_MR; r++) {
                if (r >= nm) {
                    memset(A + r * K, 0, K);
                    for (int64_t h = 0; h < K / 16; h++) Ws[h * 16 + r] = Wm[h * 16 + r] = 0.0f;
                    continue;
                }
                tg_unpack_row(src0->type, tg_weight_row(src0, m0 + r, i02, i03, rbuf), K, A + r * K, usc, umn);
                for (int64_t h = 0; h < K / 16; h++) {
                    Ws[h * 16 + r] = usc[h];
                    Wm[h * 16 + r] = umn[h];
                }
            }
            for (int64_t b = 0; b < NB; b += 2) {
                const float *D = Dall + b * (K / 16) * 16, *DS = DSall + b * (K / 16) * 16;
                if (b + 1 < NB)
                    tg_amx_block2(K, G, has_min, A, Ws, Wm, B + 32 * K * b, B + 32 * K * (b + 1), D, DS,
                                  D + (K / 16) * 16, DS + (K / 16) * 16, out[0], out[1]);
                else
                    tg_amx_block(K, G, has_min, A, Ws, Wm, B + 32 * K * b, B + 32 * K * b + 16 * K, D, DS, out[0]);
                for (int e = 0; e < 2 && b + e < NB; e++)
                    for (int j = 0; j < 16 && 16 * (b + e) + j < N; j++) {
                        float *d = (float *)at(dst, m0, 16 * (b + e) + j, i12, i13);
                        for (int r = 0; r < nm; r++) d[r] = out[e][r][j];
                    }
            }
        }
    }
    _tile_release();
}
#endif

// rows [ir0, ir1) of dst for every column: two 16-row panels at a time through the 32 x 12
// tiles where the AVX-512 tiles run (their last columns and a last odd panel through the
// 16-row tiles), else one panel at a time. Scratch (64-byte aligned), two panels' worth: Wq0,
// Wq1 (32*K bytes each), Ws0, Ws1, Wm0, Wm1 ([K/16][16] floats each), then rows int16 [16][K]
// (32*K bytes) and the unpack scratch.
static void tg_mul_mat_qpanels(const tg_params *p, tg_tensor *dst, int64_t ir0, int64_t ir1) {
    const tg_tensor *src0 = dst->src[0], *src1 = dst->src[1];
    const int64_t K = src0->ne[0];
    const int64_t r2 = src1->ne[2] / src0->ne[2], r3 = src1->ne[3] / src0->ne[3];
    int16_t *Wq[2], *rows;
    float *Ws[2], *Wm[2];
    Wq[0] = (int16_t *)(((uintptr_t)p->wdata + 63) & ~(uintptr_t)63);
    Wq[1] = Wq[0] + 16 * K;                              // K is a multiple of 32: stays aligned
    Ws[0] = (float *)(Wq[1] + 16 * K), Ws[1] = Ws[0] + K;
    Wm[0] = Ws[1] + K, Wm[1] = Wm[0] + K;
    rows = (int16_t *)(Wm[1] + K);
    void *scratch = rows + 16 * K;
#ifdef TG_AMX
    if (dst->op_params[1] && tg_amx_ready()) {
        tg_mul_mat_amx(p, dst, ir0, ir1);
        return;
    }
#endif
    for (int64_t i13 = 0; i13 < src1->ne[3]; i13++)
    for (int64_t i12 = 0; i12 < src1->ne[2]; i12++) {
        const int64_t i02 = i12 / r2, i03 = i13 / r3;
        int64_t m0 = ir0;
#ifdef TG_AVX512
        const tg_type_traits *tt = tg_get_type_traits(src0->type);
        const int64_t N = src1->ne[1];
        for (; TG_WIDE(dst->op_params[2]) && N >= QP_NR_WIDE && m0 + 2 * MM_MR <= ir1; m0 += 2 * MM_MR) {
            tg_qpanel P[2];
            for (int h = 0; h < 2; h++) {
                tg_qpanel_unpack(src0, m0 + h * MM_MR, MM_MR, i02, i03, Wq[h], Ws[h], Wm[h], rows, scratch);
                P[h] = (tg_qpanel){Wq[h], Ws[h], Wm[h]};
            }
            int64_t n = 0;
            for (; n + QP_NR_WIDE <= N; n += QP_NR_WIDE) {
                const uint8_t *act[QP_NR_WIDE];
                float *d[QP_NR_WIDE];
                for (int j = 0; j < QP_NR_WIDE; j++) {
                    act[j] = (const uint8_t *)at(src1, 0, n + j, i12, i13);
                    d[j] = (float *)at(dst, m0, n + j, i12, i13);
                }
                if (tt->scale_group == 32) tg_qpanel_tall_g32(K, tt->has_min, P, act, d);
                else tg_qpanel_tall_g16(K, tt->has_min, P, act, d);
            }
            for (int h = 0; h < 2; h++)
                tg_qpanel_columns(dst, n, m0 + h * MM_MR, MM_MR, i12, i13, Wq[h], Ws[h], Wm[h]);
        }
#endif
        for (; m0 < ir1; m0 += MM_MR) {
            const int64_t nm = TG_MIN(MM_MR, ir1 - m0);
            tg_qpanel_unpack(src0, m0, nm, i02, i03, Wq[0], Ws[0], Wm[0], rows, scratch);
            tg_qpanel_columns(dst, 0, m0, nm, i12, i13, Wq[0], Ws[0], Wm[0]);
        }
    }
}
#endif

// Quantized weights times QACT columns under MM_NR (QACT_K columns: the Q6_K decode). src0
// {K, M} quantized rows, src1 {K, N, ne12, ne13}, dst {M, N, ne12, ne13}. With the type
// table's fused 4-row dots: 4 rows side by side (4 read streams, as the F32 / F16 decode),
// columns in pairs below the type's dot2x4_max_n; otherwise one row at a time, through its
// fused one-row dot or unpacked once into scratch (K int8 + K/16 scales + K/16 mins) and dotted
// with every column.
static void tg_mul_mat_qdots(const tg_params *p, tg_tensor *dst) {
    const tg_tensor *src0 = dst->src[0];
    const tg_tensor *src1 = dst->src[1];
    const tg_type_traits *tt = tg_get_type_traits(src0->type);
    const int64_t K = src0->ne[0], M = src0->ne[1], N = src1->ne[1];
    const int64_t r2 = src1->ne[2] / src0->ne[2], r3 = src1->ne[3] / src0->ne[3];
    int8_t *w = (int8_t *)p->wdata;
    float *sc = (float *)(p->wdata + K), *mn = sc + K / 16;
    char *rbuf = (char *)(mn + K / 16);              // 4 packed rows, gathered
    const int64_t rb = src0->nb[1];
    const int split = src1->type == TG_TYPE_QACT_K, simd = TG_USE_SIMD;
    const tg_dot_fn fused = split ? tt->kact_dot : simd && tt->dot_simd ? tt->dot_simd : tt->dot;
    const tg_dot4_fn fused4 = split ? tt->kact_dot4 : simd && tt->dot4_simd ? tt->dot4_simd : tt->dot4;
    const tg_dot2x4_fn pair4 = simd && !split && N < tt->dot2x4_max_n ? tt->dot2x4 : NULL;
    ROW_RANGE(M);
    const int64_t len = tg_run_len(ir0, ir1, 4);
    for (int64_t i13 = 0; i13 < src1->ne[3]; i13++)
    for (int64_t i12 = 0; i12 < src1->ne[2]; i12++) {
        if (fused4) {
            for (int64_t i = 0; i < len; i++) {
                int64_t m[4];
                const void *rows[4];
                tg_run_rows(ir0, ir1, len, 4, i, m);
                for (int r = 0; r < 4; r++)
                    rows[r] = tg_weight_row(src0, m[r] < 0 ? m[0] : m[r], i12 / r2, i13 / r3, rbuf + r * rb);
                int64_t n = 0;
                for (; pair4 && n + 2 <= N; n += 2) {
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
            const char *row = tg_weight_row(src0, m, i12 / r2, i13 / r3, rbuf);
            if (fused) {
                for (int64_t n = 0; n < N; n++)
                    *(float *)at(dst, m, n, i12, i13) =
                        fused(K, row, (const uint8_t *)at(src1, 0, n, i12, i13));
                continue;
            }
            tg_unpack_row(src0->type, row, K, w, sc, mn);
            for (int64_t n = 0; n < N; n++) {
                const uint8_t *act = (const uint8_t *)at(src1, 0, n, i12, i13);
                *(float *)at(dst, m, n, i12, i13) = tg_dot_unpacked_qact(K, w, sc, mn, act, tt->has_min);
            }
        }
    }
}

// 4 weight rows x 3 activation columns: 12 accumulators share each load (the batched path of
// the scalar build; SIMD builds take tg_mul_mat_panels for batches).
// Each output is summed over k in order in tg_sum_block blocks, as in tg_dot4_f32's scalar
// path, so results do not depend on how the columns of a batch are grouped.
static inline void tg_dot4x3_f32(int64_t K, const float *const a[4], const float *b0,
                                 const float *b1, const float *b2, float *d0, float *d1,
                                 float *d2) {
    const int64_t kb = tg_sum_block(K);
    float s[3][4] = {{0}};
    for (int64_t k0 = 0; k0 < K; k0 += kb) {
        const int64_t k1 = TG_MIN(K, k0 + kb);
        float t[3][4] = {{0}};
        for (int64_t k = k0; k < k1; k++)
            for (int r = 0; r < 4; r++) {
                t[0][r] += a[r][k] * b0[k];
                t[1][r] += a[r][k] * b1[k];
                t[2][r] += a[r][k] * b2[k];
            }
        for (int j = 0; j < 3; j++)
            for (int r = 0; r < 4; r++) s[j][r] += t[j][r];
    }
    for (int r = 0; r < 4; r++) { d0[r] = s[0][r]; d1[r] = s[1][r]; d2[r] = s[2][r]; }
}

// Small batches of F16 rows (2 .. MM_SMALL_N - 1 columns): 2 rows x 4 columns per pass, the
// rows read in place and widened in registers, 8 accumulators of 8 lanes; the packed panels
// pay a widening and pack of 16 rows per panel that so few columns do not repay. The two rows
// of a pass come from the two halves of the thread's rows (two read streams, as the decode dots
// read four). F32 rows stay on the panels, which read them in place too and are faster there. Each output is one 8-lane sum over k, then a horizontal sum and a
// scalar tail, whatever rows and columns it is grouped with (a lone last row or partial column
// group repeats its last one), so results do not depend on the tiling.
#define MM_SMALL_N 10

#ifdef TG_AVX2

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

// one F32 / F16 column (decode): the thread's rows in 4 quarters read side by side, 4 streams
// (simd.h tg_dot_rows4_*); rows per thread rounded up to 4, as the scalar tiles
static void tg_mul_mat_decode(const tg_params *p, tg_tensor *dst) {
    const tg_tensor *src0 = dst->src[0], *src1 = dst->src[1];
    const int64_t K = src0->ne[0], M = src0->ne[1];
    const int64_t r2 = src1->ne[2] / src0->ne[2], r3 = src1->ne[3] / src0->ne[3];
    const int is_f16 = src0->type == TG_TYPE_F16;
    const int64_t dr = ((M + p->nth - 1) / p->nth + 3) / 4 * 4;
    const int64_t ir0 = TG_MIN(dr * p->ith, M), ir1 = TG_MIN(ir0 + dr, M);
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
}

#define MM_NB 64   // activation columns per block: K*64 floats stay in L2 across weight rows
#define MM_MB 32   // weight rows per panel: non-F32 rows are widened once, into MM_MB*K floats

// Batches of the portable build (and BF16 / float-activation decode): F16 / BF16 / quantized
// rows widened to F32 in scratch, MM_MB rows at a time, then 4-row x 3-column dot tiles. Rows
// per thread are rounded up to the 4-row block: results do not depend on the thread count.
static void tg_mul_mat_tiles(const tg_params *p, tg_tensor *dst) {
    const tg_tensor *src0 = dst->src[0];
    const tg_tensor *src1 = dst->src[1];
    const int64_t K = src0->ne[0], M = src0->ne[1], N = src1->ne[1];
    const int64_t r2 = src1->ne[2] / src0->ne[2], r3 = src1->ne[3] / src0->ne[3];
    const int is_f16 = src0->type == TG_TYPE_F16;
    const int widen = src0->type != TG_TYPE_F32;
    float *wrows = (float *)p->wdata;                                 // MM_MB*K floats
    int8_t *uw = (int8_t *)(p->wdata + MM_MB * 4 * K);                // unpack scratch: K int8
    float *usc = (float *)(p->wdata + MM_MB * 4 * K + K), *umn = usc + K / 16;
    char *rbuf = (char *)(umn + K / 16);             // a packed row, gathered
    const int64_t dr = ((M + p->nth - 1) / p->nth + 3) / 4 * 4;
    const int64_t ir0 = TG_MIN(dr * p->ith, M), ir1 = TG_MIN(ir0 + dr, M);
    for (int64_t i13 = 0; i13 < src1->ne[3]; i13++)
    for (int64_t i12 = 0; i12 < src1->ne[2]; i12++) {
        const int64_t i03 = i13 / r3, i02 = i12 / r2;
        for (int64_t mb = ir0; mb < ir1; mb += MM_MB) {
        const int64_t mb1 = TG_MIN(ir1, mb + MM_MB);
        if (widen) {
            for (int64_t m = mb; m < mb1; m++) {
                const char *row = tg_weight_row(src0, m, i02, i03, rbuf);
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

// Repacked weights (repack.c) times QACT / QACT_K columns, fewer than PACKED_MAX_N (from about
// there the integer panels, which gather each packed row first, are faster: tools/bench_matmul.py):
// the rows' full groups of 16 split over the threads; a group meets one column (decode) or up to
// PACKED_PASS columns at a time, its weights unpacked once for all of them (a group's rows stay
// in L1 between passes); the rows past the last group (file layout) through the one-row dots, by
// the last thread. Each output is its one-row dot's bit for bit, whatever the column count.
// Scratch: each QACT column's split bytes (TG_SPLIT_BYTES), a pass's float lanes
// (256 floats a column) and outputs (16 a column). ops.py mirrors both constants.
// AVX2 builds take the packed dots one column at a time: from PACKED_MAX_N_AVX2 columns the
// integer panels are faster, and up to there they equal the paired dots (tools/bench_matmul.py).
#define PACKED_MAX_N 80
#define PACKED_MAX_N_AVX2 12
#define PACKED_PASS 32          // columns per pass over a group (their float lanes stay in L1)
static int tg_packed_dots(int type, int act_type, int64_t N) {
#if defined(TG_AVX512)
    if (act_type == TG_TYPE_QACT_K) return type == TG_TYPE_Q6_K && N < PACKED_MAX_N;
    return (type == TG_TYPE_Q4_0 || type == TG_TYPE_Q8_0 || type == TG_TYPE_Q4_K) && N < PACKED_MAX_N;
#elif defined(TG_AVX2)
    return act_type == TG_TYPE_QACT && (type == TG_TYPE_Q4_0 || type == TG_TYPE_Q4_K) && N < PACKED_MAX_N_AVX2;
#else
    (void)type; (void)act_type; (void)N;
    return 0;
#endif
}

int tg_packed_max_cols(void) {
#if defined(TG_AVX512)
    return PACKED_MAX_N;
#elif defined(TG_AVX2)
    return PACKED_MAX_N_AVX2;
#else
    return 0;
#endif
}

#ifdef TG_AVX2
static void tg_mul_mat_packed(const tg_params *p, tg_tensor *dst) {
    const tg_tensor *src0 = dst->src[0], *src1 = dst->src[1];
    const tg_type_traits *tt = tg_get_type_traits(src0->type);
    const int64_t K = src0->ne[0], M = src0->ne[1], N = src1->ne[1], G = M / TG_PACK_ROWS;
    const int64_t cs = TG_SPLIT_BYTES(K);
    const int kact = src1->type == TG_TYPE_QACT_K;
    // Q8_0 has no one-column packed dot: it decodes on the n-column one; the others' one-column
    // dots keep their float lanes in registers
    const int wide = N > 1 || src0->type == TG_TYPE_Q8_0;
    const tg_dot_fn dot1 = kact ? tt->kact_dot : tt->dot_simd ? tt->dot_simd : tt->dot;
    uint8_t *split = (uint8_t *)p->wdata;
    float *acc = (float *)(((uintptr_t)(split + cs * N) + 63) & ~(uintptr_t)63);
    float *outs = acc + 256 * TG_MIN(N, PACKED_PASS);
    ROW_RANGE(G);
    for (int64_t i13 = 0; i13 < src1->ne[3]; i13++)
    for (int64_t i12 = 0; i12 < src1->ne[2]; i12++) {
        if (!kact)
            for (int64_t n = 0; n < N; n++)
                tg_qact_split((const uint8_t *)at(src1, 0, n, i12, i13), K, split + cs * n,
                              (int8_t *)split + cs * n + K, (int32_t *)(split + cs * n + 2 * K));
        const uint8_t *acts[PACKED_MAX_N];
        for (int64_t n = 0; n < N; n++) acts[n] = (const uint8_t *)at(src1, 0, n, i12, i13);
        for (int64_t g = ir0; g < ir1; g++) {
            const uint8_t *gb = (const uint8_t *)src0->data + g * TG_PACK_ROWS * src0->nb[1];
            for (int64_t n0 = 0; wide && n0 < N; n0 += PACKED_PASS) {
                const int nn = (int)TG_MIN(PACKED_PASS, N - n0);
                const uint8_t *sp = split + cs * n0;
                switch (src0->type) {
                    case TG_TYPE_Q4_0: tg_dot16xn_q4_0_packed(K, gb, nn, acts + n0, sp, acc, outs); break;
                    case TG_TYPE_Q4_K: tg_dot16xn_q4_k_packed(K, gb, nn, acts + n0, sp, acc, outs); break;
#ifdef TG_AVX512
                    case TG_TYPE_Q8_0: tg_dot16xn_q8_0_packed(K, gb, nn, acts + n0, sp, acc, outs); break;
                    default:           tg_dot16xn_q6_k_packed(K, gb, nn, acts + n0, acc, outs); break;
#endif
                }
                for (int j = 0; j < nn; j++)
                    memcpy(at(dst, TG_PACK_ROWS * g, n0 + j, i12, i13), outs + 16 * j, 16 * sizeof(float));
            }
            if (wide) continue;
            const uint8_t *act = acts[0], *lo = split;
            const int8_t *hi = (const int8_t *)split + K;
            float *o = (float *)at(dst, TG_PACK_ROWS * g, 0, i12, i13);
            switch (src0->type) {
                case TG_TYPE_Q4_0: tg_dot16_q4_0_packed(K, gb, act, lo, hi, o); break;
                case TG_TYPE_Q4_K: tg_dot16_q4_k_packed(K, gb, act, lo, hi, o); break;
#ifdef TG_AVX512
                default:           tg_dot16_q6_k_packed(K, gb, act, o); break;
#endif
            }
        }
        if (p->ith == p->nth - 1)
            for (int64_t m = G * TG_PACK_ROWS; m < M; m++)
                for (int64_t n = 0; n < N; n++)
                    *(float *)at(dst, m, n, i12, i13) =
                        dot1(K, at(src0, 0, m, 0, 0), (const uint8_t *)at(src1, 0, n, i12, i13));
    }
}
#endif

// ---- the selection -------------------------------------------------------------------------
// The kernel that multiplies `dst`, from its types, its column count and whether the SIMD
// kernels run. What the graph records decides the rest: a QUANTIZE node before a quantized
// weight (ops.mul_mat, by the graph's options) sends it to the integer paths; float columns
// to the float ones. Every path gives each output one fixed order of sums, whatever the
// thread count.
tg_mm_path tg_mul_mat_path(const tg_tensor *dst) {
    const tg_tensor *src0 = dst->src[0], *src1 = dst->src[1];
    const int64_t N = src1->ne[1];
    const int simd = TG_USE_SIMD;
    if (src1->type == TG_TYPE_QACT || src1->type == TG_TYPE_QACT_K) {
        const tg_type_traits *tt = tg_get_type_traits(src0->type);
        if (simd && src0->packed && tg_packed_dots(src0->type, src1->type, N)) return TG_MM_PACKED;
        const int pairs = simd && tt->dot2x4 && N < tt->dot2x4_max_n;
        if (simd && N >= MM_NR && src1->type == TG_TYPE_QACT && !pairs) return TG_MM_QPANELS;
        return TG_MM_QDOTS;
    }
    if (simd && N > 1 && N < MM_SMALL_N && src0->type == TG_TYPE_F16) return TG_MM_SMALL_F16;
    if (simd && N > 1) return TG_MM_PANELS;
    if (N == 1 && (src0->type == TG_TYPE_F32 || src0->type == TG_TYPE_F16)) return TG_MM_DECODE;
    return TG_MM_TILES;
}

// the panels take whole 16-row panels per thread: rows [*ir0, *ir1) of M
static inline void tg_panel_rows(const tg_params *p, int64_t M, int64_t *ir0, int64_t *ir1) {
    const int64_t dr = ((M + p->nth - 1) / p->nth + MM_MR - 1) / MM_MR * MM_MR;
    *ir0 = TG_MIN(dr * p->ith, M);
    *ir1 = TG_MIN(*ir0 + dr, M);
}

void tg_mul_mat(const tg_params *p, tg_tensor *dst) {
    int64_t ir0, ir1;
    switch (tg_mul_mat_path(dst)) {
        case TG_MM_DECODE:    tg_mul_mat_decode(p, dst); break;
        case TG_MM_QDOTS:     tg_mul_mat_qdots(p, dst); break;
        case TG_MM_TILES:     tg_mul_mat_tiles(p, dst); break;
#ifdef TG_AVX2
        case TG_MM_PACKED:    tg_mul_mat_packed(p, dst); break;
        case TG_MM_SMALL_F16: tg_mul_mat_small_f16(p, dst); break;
        case TG_MM_QPANELS:
            tg_panel_rows(p, dst->src[0]->ne[1], &ir0, &ir1);
            tg_mul_mat_qpanels(p, dst, ir0, ir1);
            break;
        case TG_MM_PANELS:
            tg_panel_rows(p, dst->src[0]->ne[1], &ir0, &ir1);
            tg_mul_mat_panels(p, dst, ir0, ir1);
            break;
#endif
        default: (void)ir0; (void)ir1; break;
    }
}
