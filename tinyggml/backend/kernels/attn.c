// Attention beside the recurrent state (hybrid models): rotary position embedding, the KV cache
// write, and causal attention over the cache in one pass (flash attention).
//
// Tokens of several sequences sit back to back in a ubatch; seq_info gives each sequence's
// (slot, first token, n tokens) and pos each token's position in its sequence. A sequence's
// keys and values live in its slot of the cache, position by position, so token i attends to
// positions 0..pos[i] of its slot: the causal mask and the sequences' separation in one rule.
#include "internal.h"

// ---------------------------------------------------------------------------------------------
// rope: rotate pairs of the first n_rot values of each head by pos * freq_scale * base^(-2i/n_rot)
// src0: x {hd, nh, n_t} F32 (nb0 == 4, any row strides), src1: pos {n_t} I32, dst: contiguous.
// op_params: n_rot, mode (0: pairs (2i, 2i+1); 2, NEOX: (i, i + n_rot/2)), base, freq_scale.
// The angles are computed in double (cos and sin of angles up to the context length lose
// ~ulp(angle) in float); each token's table is shared by its heads.
void tg_rope(const tg_params *p, tg_tensor *dst) {
    const tg_tensor *x = dst->src[0], *pos = dst->src[1];
    const int64_t hd = x->ne[0], nh = x->ne[1], n_t = x->ne[2];
    const int n_rot = dst->op_params[0], neox = dst->op_params[1] == 2;
    const double base = tg_f32_param(dst, 2), fscale = tg_f32_param(dst, 3);
    float *cs = (float *)p->wdata;               // n_rot/2 cosines, then n_rot/2 sines
    float *sn = cs + n_rot / 2;
    ROW_RANGE(n_t);
    for (int64_t i = ir0; i < ir1; i++) {
        const double pp = (double)((const int32_t *)pos->data)[i] * fscale;
        for (int j = 0; j < n_rot / 2; j++) {
            const double th = pp * pow(base, -2.0 * j / n_rot);
            cs[j] = (float)cos(th);
            sn[j] = (float)sin(th);
        }
        for (int64_t h = 0; h < nh; h++) {
            const float *s = (const float *)at(x, 0, h, i, 0);
            float *d = (float *)at(dst, 0, h, i, 0);
            for (int j = 0; j < n_rot / 2; j++) {
                const int64_t a = neox ? j : 2 * j, b = neox ? j + n_rot / 2 : 2 * j + 1;
                const float x0 = s[a], x1 = s[b];
                d[a] = x0 * cs[j] - x1 * sn[j];
                d[b] = x0 * sn[j] + x1 * cs[j];
            }
            if (d != s)
                for (int64_t j = n_rot; j < hd; j++) d[j] = s[j];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// kv_store: cache[:, :, pos[i], slot of i] = x[:, :, i]
// src0: x {hd, nkv, n_t} F32 (nb0 == 4), src1: seq_info {3, n_s} I32, src2: pos {n_t} I32,
// dst: the cache {hd, nkv, n_ctx, n_slots} F32 | F16, contiguous. Threads split the tokens.
void tg_kv_store(const tg_params *p, tg_tensor *dst) {
    const tg_tensor *x = dst->src[0], *info = dst->src[1], *pos = dst->src[2];
    const int64_t hd = x->ne[0], nkv = x->ne[1], n_t = x->ne[2];
    const int32_t *si = (const int32_t *)info->data, *ps = (const int32_t *)pos->data;
    ROW_RANGE(n_t);
    for (int64_t s = 0; s < info->ne[1]; s++) {
        const int64_t slot = si[3 * s], t0 = si[3 * s + 1], n = si[3 * s + 2];
        for (int64_t i = TG_MAX(t0, ir0); i < TG_MIN(t0 + n, ir1); i++) {
            if (ps[i] < 0 || ps[i] >= dst->ne[2]) continue;     // the runtime bounds positions
            for (int64_t h = 0; h < nkv; h++) {
                const float *src = (const float *)at(x, 0, h, i, 0);
                char *d = at(dst, 0, h, ps[i], slot);
                if (dst->type == TG_TYPE_F16) tg_fp32_to_fp16_row(src, (tg_fp16_t *)d, hd);
                else memcpy(d, src, hd * 4);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// attn: dst[:, h, i] = softmax(scale * q[:, h, i] . K_j) V_j over j = 0..pos[i] of i's slot,
// K_j = k[:, h / (nh/nkv), j, slot], V_j likewise.
// src0: q {hd, nh, n_t} F32 (nb0 == 4), src1, src2: k, v caches {hd, nkv, n_ctx, n_slots}
// F32 | F16 contiguous, src3: seq_info, src4: pos; dst {hd, nh, n_t} contiguous.
//
// A work item is up to TILE tokens of one sequence and one kv head: its rows are the TILE x g
// query vectors that read that head (g = nh / nkv), so each key and value row is read once per
// item. The keys go in blocks of KBLOCK (the same blocks from position 0 whatever the item, so
// a token's result does not depend on which tokens share its ubatch); per row a running max m
// and sum l: each block's scores are computed, the accumulator rescaled once if the block
// raises the max, then exp(s - m) V added. Items go round-robin to the threads (later tiles
// read more keys), each computed by one thread: results do not depend on the thread count.
#define TILE 8        // ops.py ATTN_TILE
#define KBLOCK 64     // ops.py ATTN_KBLOCK
#define PREFETCH 16   // F16 caches: key rows fetched this far ahead

static inline void attn_axpy(float *y, float w, const float *x, int64_t n) {
    int64_t i = 0;
#ifdef TG_AVX2
    if (TG_USE_SIMD) {
        const __m256 vw = _mm256_set1_ps(w);
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(y + i, _mm256_fmadd_ps(vw, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    }
#endif
    for (; i < n; i++) y[i] += w * x[i];
}

static inline void attn_scale(float *y, float w, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] *= w;
}

// exp(v[j] - m) for j < n, in place; returns their sum (eight partial sums on SIMD builds)
static inline float attn_exp(float *v, float m, int64_t n) {
    int64_t j = 0;
    float sum = 0.0f;
#ifdef TG_AVX2
    if (TG_USE_SIMD) {
        const __m256 vm = _mm256_set1_ps(m);
        __m256 acc = _mm256_setzero_ps();
        for (; j + 8 <= n; j += 8) {
            const __m256 e = tg_exp256(_mm256_sub_ps(_mm256_loadu_ps(v + j), vm));
            _mm256_storeu_ps(v + j, e);
            acc = _mm256_add_ps(acc, e);
        }
        sum = tg_hsum256(acc);
    }
#endif
    for (; j < n; j++) sum += v[j] = expf(v[j] - m);
    return sum;
}

static inline float attn_max(const float *v, int64_t n) {
    int64_t j = 0;
    float mx = -INFINITY;
#ifdef TG_AVX2
    if (TG_USE_SIMD && n >= 8) {
        __m256 a = _mm256_loadu_ps(v);
        for (j = 8; j + 8 <= n; j += 8) a = _mm256_max_ps(a, _mm256_loadu_ps(v + j));
        mx = tg_hmax256(a);
    }
#endif
    for (; j < n; j++) mx = v[j] > mx ? v[j] : mx;
    return mx;
}

static inline float attn_dot(const float *a, const float *b, int64_t n) { return tg_dot_f32(n, a, b); }

// s[j] = scale * (q . K_j) for j < n, K_j = K + j * ks. Eight keys at a time when hd is a
// multiple of 8: eight accumulators over q's 8-float chunks, summed into one vector of eight
// scores by two rounds of hadd and a swap of 128-bit halves. Which keys form a group depends
// only on the block start and n (the causal limit of the row's position), never on the
// ubatch, so a token's scores are the same arithmetic however it is batched.
static void attn_scores(float *s, const float *q, const float *K, int64_t ks, int64_t hd,
                        int64_t n, float scale) {
    int64_t j = 0;
#ifdef TG_AVX2
    if (TG_USE_SIMD && tg_attn_wide && hd % 8 == 0) {
        const __m256 vs = _mm256_set1_ps(scale);
        for (; j + 8 <= n; j += 8) {
            const float *k0 = K + j * ks;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
            for (int64_t c = 0; c < hd; c += 8) {
                const __m256 qv = _mm256_loadu_ps(q + c);
                a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + c), a0);
                a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + ks + c), a1);
                a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 2 * ks + c), a2);
                a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 3 * ks + c), a3);
                a4 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 4 * ks + c), a4);
                a5 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 5 * ks + c), a5);
                a6 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 6 * ks + c), a6);
                a7 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 7 * ks + c), a7);
            }
            // hadd(x, y) = [x01 x23 y01 y23 | x45 x67 y45 y67]: twice gives the per-lane-half
            // sums of four keys; adding the two halves gives key j+i in lane i
            const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
            const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));
            const __m256 r = _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
                                           _mm256_permute2f128_ps(u0, u1, 0x31));
            _mm256_storeu_ps(s + j, _mm256_mul_ps(r, vs));
        }
    }
#endif
    for (; j < n; j++) s[j] = attn_dot(q, K + j * ks, hd) * scale;
}

// acc[c] += sum_j w[j] * V_j[c] for c < hd, j < n in order (V_j = V + j * vs): the same
// multiply-adds, element by element, as n axpys, with 64 columns of acc held in registers
// while the keys go by.
static void attn_pv(float *acc, const float *w, const float *V, int64_t vs, int64_t hd, int64_t n) {
    int64_t c = 0;
#ifdef TG_AVX2
    if (TG_USE_SIMD && tg_attn_wide) {
        for (; c + 64 <= hd; c += 64) {
            __m256 a0 = _mm256_loadu_ps(acc + c), a1 = _mm256_loadu_ps(acc + c + 8);
            __m256 a2 = _mm256_loadu_ps(acc + c + 16), a3 = _mm256_loadu_ps(acc + c + 24);
            __m256 a4 = _mm256_loadu_ps(acc + c + 32), a5 = _mm256_loadu_ps(acc + c + 40);
            __m256 a6 = _mm256_loadu_ps(acc + c + 48), a7 = _mm256_loadu_ps(acc + c + 56);
            for (int64_t j = 0; j < n; j++) {
                const __m256 vw = _mm256_broadcast_ss(w + j);
                const float *x = V + j * vs + c;
                a0 = _mm256_fmadd_ps(vw, _mm256_loadu_ps(x), a0);
                a1 = _mm256_fmadd_ps(vw, _mm256_loadu_ps(x + 8), a1);
                a2 = _mm256_fmadd_ps(vw, _mm256_loadu_ps(x + 16), a2);
                a3 = _mm256_fmadd_ps(vw, _mm256_loadu_ps(x + 24), a3);
                a4 = _mm256_fmadd_ps(vw, _mm256_loadu_ps(x + 32), a4);
                a5 = _mm256_fmadd_ps(vw, _mm256_loadu_ps(x + 40), a5);
                a6 = _mm256_fmadd_ps(vw, _mm256_loadu_ps(x + 48), a6);
                a7 = _mm256_fmadd_ps(vw, _mm256_loadu_ps(x + 56), a7);
            }
            _mm256_storeu_ps(acc + c, a0), _mm256_storeu_ps(acc + c + 8, a1);
            _mm256_storeu_ps(acc + c + 16, a2), _mm256_storeu_ps(acc + c + 24, a3);
            _mm256_storeu_ps(acc + c + 32, a4), _mm256_storeu_ps(acc + c + 40, a5);
            _mm256_storeu_ps(acc + c + 48, a6), _mm256_storeu_ps(acc + c + 56, a7);
        }
        for (; c + 8 <= hd; c += 8) {
            __m256 a = _mm256_loadu_ps(acc + c);
            for (int64_t j = 0; j < n; j++)
                a = _mm256_fmadd_ps(_mm256_broadcast_ss(w + j), _mm256_loadu_ps(V + j * vs + c), a);
            _mm256_storeu_ps(acc + c, a);
        }
    }
#endif
    if (c == 0) {
        for (int64_t j = 0; j < n; j++) attn_axpy(acc, w[j], V + j * vs, hd);
        return;
    }
    for (; c < hd; c++) {
        float a = acc[c];
        for (int64_t j = 0; j < n; j++) a = fmaf(w[j], V[j * vs + c], a);
        acc[c] = a;
    }
}

// The query heads of one token that read the same kv head share its causal limit: they go
// ROWS at a time, each key and value chunk loaded once for all of them. Every row's arithmetic
// is attn_scores' and attn_pv's, bit for bit: the scores of the 8-key groups are the same eight
// lane sums reduced by the same tree (((x0+x1)+(x2+x3)) + ((x4+x5)+(x6+x7)) per key, whichever
// keys share a register), the keys after the last group the same dots; each output column adds
// w_j V_j in j order with one fused multiply-add, as there.
#define ROWS 4        // ops.py ATTN_ROWS
// Where the row tiles run: decode items everywhere (one token: its heads are all the rows
// there are, and the F16 rows are read in place); prompt items on AVX-512 builds only. With
// AVX2's 16 registers the tiles take 2 rows per pass and their 4-key reductions cost more than
// the loads they save: a prompt's attention ran 4-5% slower that way (tools/bench_attn.py,
// 64-token blocks at depth 4096, an AVX2 build alternated), so there each row goes alone.
#ifdef TG_AVX512
#define ROW_TILES_IN_PROMPTS 1
#else
#define ROW_TILES_IN_PROMPTS 0
#endif
#define KG 4          // keys per pass of the scores
#ifdef TG_AVX512
#define SR 4          // rows per pass of the scores: SR x KG accumulators in AVX-512VL's 32 ymm
#define PVR 4         // rows per pass of the value sums (4 x 4 accumulators)
#else
#define SR 2          // in AVX2's 16 (a pass per two rows still loads each key once for both)
#define PVR 2
#endif

#ifdef TG_AVX2
// eight values of a row of F32 (half = 0) or F16 (half = 1, widened exactly in registers)
static inline __attribute__((always_inline)) __m256 attn_load8(const char *p, int half) {
    return half ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)) : _mm256_loadu_ps((const float *)p);
}

// the 8-key groups' scores, keys [0, n8); K rows ksb bytes apart. Read in place (half), key
// and value rows PREFETCH ahead are fetched as the keys go by (while npf rows remain).
static inline __attribute__((always_inline)) void attn_scores_tile(
        int nr, int half, float *const s[ROWS], const float *const q[ROWS], const char *K,
        const char *V, int64_t ksb, int64_t hd, int64_t n8, int64_t npf, float scale) {
    const __m128 vs = _mm_set1_ps(scale);
    const int64_t eb = half ? 2 : 4;
    for (int64_t j = 0; j < n8; j += KG) {
        if (half)
            for (int u = 0; u < KG; u++)
                if (j + u + PREFETCH < npf)
                    for (int64_t b = 0; b < hd * 2; b += 64) {
                        _mm_prefetch(K + (j + u + PREFETCH) * ksb + b, _MM_HINT_T0);
                        _mm_prefetch(V + (j + u + PREFETCH) * ksb + b, _MM_HINT_T0);
                    }
        __m256 a[SR][KG];
        for (int r = 0; r < nr; r++)
            for (int u = 0; u < KG; u++) a[r][u] = _mm256_setzero_ps();
        for (int64_t c = 0; c < hd; c += 8) {
            __m256 kv[KG];
            for (int u = 0; u < KG; u++) kv[u] = attn_load8(K + (j + u) * ksb + c * eb, half);
            for (int r = 0; r < nr; r++) {
                const __m256 qv = _mm256_loadu_ps(q[r] + c);
                for (int u = 0; u < KG; u++) a[r][u] = _mm256_fmadd_ps(qv, kv[u], a[r][u]);
            }
        }
        for (int r = 0; r < nr; r++) {
            // [X_lo for the 4 keys | X_hi for the 4 keys], X_lo = (x0+x1)+(x2+x3)
            const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a[r][0], a[r][1]), _mm256_hadd_ps(a[r][2], a[r][3]));
            const __m128 t = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
            _mm_storeu_ps(s[r] + j, _mm_mul_ps(t, vs));
        }
    }
}
#endif

// s[r][j] = scale * (q_r . K_j) for rows r < nr, keys j < n, on the row tiles (tiles) or row
// by row. K: F32 rows ksb bytes apart, or (half) F16 rows read in place, which only the tiles
// take (tmp: one widened row).
static void attn_scores_rows(int tiles, int nr, int half, float *const s[ROWS], const float *const q[ROWS],
                             const char *K, const char *V, int64_t ksb, int64_t hd, int64_t n,
                             int64_t npf, float scale, float *tmp) {
#ifdef TG_AVX2
    if (tiles && TG_USE_SIMD && tg_attn_wide && hd % 8 == 0) {
        const int64_t n8 = n / 8 * 8;
        for (int r0 = 0; r0 < nr; r0 += SR) {
            const int m = nr - r0 < SR ? nr - r0 : SR;
#define TILE_NR(nr_, h_) attn_scores_tile(nr_, h_, s + r0, q + r0, K, V, ksb, hd, n8, npf, scale)
            switch (m * 2 + half) {  // rows and half as constants: the accumulators stay registers
#if SR == 4
                case 9: TILE_NR(4, 1); break;
                case 8: TILE_NR(4, 0); break;
                case 7: TILE_NR(3, 1); break;
                case 6: TILE_NR(3, 0); break;
#endif
                case 5: TILE_NR(2, 1); break;
                case 4: TILE_NR(2, 0); break;
                case 3: TILE_NR(1, 1); break;
                default: TILE_NR(1, 0); break;
            }
#undef TILE_NR
        }
        for (int64_t j = n8; j < n; j++) {
            const float *kj = (const float *)(K + j * ksb);
            if (half) {
                tg_fp16_to_fp32_row((const tg_fp16_t *)(K + j * ksb), tmp, hd);
                kj = tmp;
            }
            for (int r = 0; r < nr; r++) s[r][j] = attn_dot(q[r], kj, hd) * scale;
        }
        return;
    }
#endif
    for (int r = 0; r < nr; r++) attn_scores(s[r], q[r], (const float *)K, ksb / 4, hd, n, scale);
}

#ifdef TG_AVX2
// columns [c0, c0 + 8 nv) of rows r < nr: acc[r][c] += sum_j w[r][j] V_j[c], j in order
static inline __attribute__((always_inline)) void attn_pv_tile(
        int nr, int nv, int half, float *const acc[PVR], const float *const w[PVR], const char *V,
        int64_t vsb, int64_t c0, int64_t n) {
    const int64_t eb = half ? 2 : 4;
    __m256 a[PVR][4];
    for (int r = 0; r < nr; r++)
        for (int u = 0; u < nv; u++) a[r][u] = _mm256_loadu_ps(acc[r] + c0 + 8 * u);
    for (int64_t j = 0; j < n; j++) {
        __m256 x[4];
        for (int u = 0; u < nv; u++) x[u] = attn_load8(V + j * vsb + (c0 + 8 * u) * eb, half);
        for (int r = 0; r < nr; r++) {
            const __m256 b = _mm256_broadcast_ss(w[r] + j);
            for (int u = 0; u < nv; u++) a[r][u] = _mm256_fmadd_ps(b, x[u], a[r][u]);
        }
    }
    for (int r = 0; r < nr; r++)
        for (int u = 0; u < nv; u++) _mm256_storeu_ps(acc[r] + c0 + 8 * u, a[r][u]);
}

static inline __attribute__((always_inline)) void attn_pv_pass(
        int nr, int half, float *const acc[PVR], const float *const w[PVR], const char *V, int64_t vsb,
        int64_t hd, int64_t n) {
    int64_t c = 0;
    for (; c + 32 <= hd; c += 32) attn_pv_tile(nr, 4, half, acc, w, V, vsb, c, n);
    for (; c + 8 <= hd; c += 8) attn_pv_tile(nr, 1, half, acc, w, V, vsb, c, n);
    for (int r = 0; r < nr; r++)
        for (int64_t cc = c; cc < hd; cc++) {
            float a = acc[r][cc];
            for (int64_t j = 0; j < n; j++) {
                const char *vj = V + j * vsb;
                const float x = half ? tg_fp16_to_fp32(((const tg_fp16_t *)vj)[cc]) : ((const float *)vj)[cc];
                a = fmaf(w[r][j], x, a);
            }
            acc[r][cc] = a;
        }
}
#endif

// acc[r] += sum_j w[r][j] V_j for rows r < nr; tiles and V as in attn_scores_rows
static void attn_pv_rows(int tiles, int nr, int half, float *const acc[ROWS], const float *const w[ROWS],
                         const char *V, int64_t vsb, int64_t hd, int64_t n) {
#ifdef TG_AVX2
    if (tiles && TG_USE_SIMD && tg_attn_wide && hd >= 8) {
        for (int r0 = 0; r0 < nr; r0 += PVR) {
            const int m = nr - r0 < PVR ? nr - r0 : PVR;
            float *const *a = acc + r0;
            const float *const *ww = w + r0;
#define PASS(m_) (half ? attn_pv_pass(m_, 1, a, ww, V, vsb, hd, n) : attn_pv_pass(m_, 0, a, ww, V, vsb, hd, n))
#if PVR == 4
            if (m == 4) { PASS(4); continue; }
            if (m == 3) { PASS(3); continue; }
#endif
            if (m == 2) PASS(2);
            else PASS(1);
#undef PASS
        }
        return;
    }
#endif
    for (int r = 0; r < nr; r++) attn_pv(acc[r], w[r], (const float *)V, vsb / 4, hd, n);
}

void tg_attn(const tg_params *p, tg_tensor *dst) {
    const tg_tensor *q = dst->src[0], *k = dst->src[1], *v = dst->src[2];
    const tg_tensor *info = dst->src[3], *pos = dst->src[4];
    const int64_t hd = q->ne[0], nh = q->ne[1], nkv = k->ne[1], g = nh / nkv;
    const float scale = tg_f32_param(dst, 0);
    const int32_t *si = (const int32_t *)info->data, *ps = (const int32_t *)pos->data;
    const int f16 = k->type == TG_TYPE_F16;
    // one token per item (decode): F16 rows are read in place, widened in registers (no
    // widened copy to write and read back; a prompt's items share the copy among their tokens)
#ifdef TG_AVX2
    const int direct_ok = f16 && TG_USE_SIMD && tg_attn_wide && hd % 8 == 0;
#else
    const int direct_ok = 0;
#endif
    const int64_t R = TILE * g;
    float *acc = (float *)p->wdata;            // R x hd
    float *mx = acc + R * hd, *sum = mx + R;   // R each
    float *s = sum + R;                        // ROWS x KBLOCK scores
    float *kb = s + ROWS * KBLOCK, *vb = kb + KBLOCK * hd;   // F16 caches: a block of rows widened
    int64_t item = 0;
    for (int64_t sq = 0; sq < info->ne[1]; sq++) {
        const int64_t slot = si[3 * sq], t0 = si[3 * sq + 1], n = si[3 * sq + 2];
        for (int64_t i0 = t0; i0 < t0 + n; i0 += TILE) {
            const int64_t i1 = TG_MIN(i0 + TILE, t0 + n), nt = i1 - i0;
            const int direct = direct_ok && nt == 1, tiles = nt == 1 || ROW_TILES_IN_PROMPTS;
            for (int64_t h = 0; h < nkv; h++, item++) {
                if (item % p->nth != p->ith) continue;
                int64_t kmax = -1;                                    // the last key any row reads
                for (int64_t i = i0; i < i1; i++) kmax = TG_MAX(kmax, (int64_t)ps[i]);
                kmax = TG_MIN(kmax, k->ne[2] - 1);
                memset(acc, 0, R * hd * 4);
                for (int64_t r = 0; r < nt * g; r++) { mx[r] = -INFINITY; sum[r] = 0.0f; }
                for (int64_t j0 = 0; j0 <= kmax; j0 += KBLOCK) {
                    const int64_t nk = TG_MIN(KBLOCK, kmax + 1 - j0);
                    const float *K = (const float *)at(k, 0, h, j0, slot);
                    const float *V = (const float *)at(v, 0, h, j0, slot);
                    int64_t kstride = k->nb[2] / 4;                   // floats between key rows
                    if (f16 && !direct) {
                        for (int64_t j = 0; j < nk; j++) {
#ifdef TG_AVX2
                            // the rows of one kv head are strided (the other heads' rows lie
                            // between): fetch ahead of the hardware prefetcher
                            const int64_t jp = TG_MIN(j0 + j + PREFETCH, k->ne[2] - 1);
                            const char *pk = at(k, 0, h, jp, slot), *pv = at(v, 0, h, jp, slot);
                            for (int64_t b = 0; b < hd * 2; b += 64) {
                                _mm_prefetch(pk + b, _MM_HINT_T0);
                                _mm_prefetch(pv + b, _MM_HINT_T0);
                            }
#endif
                            tg_fp16_to_fp32_row((const tg_fp16_t *)at(k, 0, h, j0 + j, slot), kb + j * hd, hd);
                            tg_fp16_to_fp32_row((const tg_fp16_t *)at(v, 0, h, j0 + j, slot), vb + j * hd, hd);
                        }
                        K = kb, V = vb, kstride = hd;
                    }
                    const int64_t rowb = direct ? k->nb[2] : kstride * 4;   // bytes between rows
                    for (int64_t i = i0; i < i1; i++) {
                        const int64_t lim = TG_MIN(nk, (int64_t)ps[i] - j0 + 1);   // causal
                        if (lim <= 0) continue;
                        for (int64_t e0 = 0; e0 < g; e0 += ROWS) {    // the token's heads, ROWS at a time
                            const int nr = (int)TG_MIN(ROWS, g - e0);
                            float *sr[ROWS], *ar[ROWS];
                            const float *qr[ROWS];
                            for (int u = 0; u < nr; u++) {
                                sr[u] = s + u * KBLOCK;
                                ar[u] = acc + ((i - i0) * g + e0 + u) * hd;
                                qr[u] = (const float *)at(q, 0, h * g + e0 + u, i, 0);
                            }
                            attn_scores_rows(tiles, nr, direct, sr, qr, (const char *)K, (const char *)V, rowb, hd,
                                             lim, k->ne[2] - j0, scale, kb);
                            for (int u = 0; u < nr; u++) {
                                const int64_t r = (i - i0) * g + e0 + u;
                                const float bmax = attn_max(sr[u], lim);
                                if (bmax > mx[r]) {            // rescale what the earlier blocks added
                                    if (mx[r] != -INFINITY) {
                                        const float c = expf(mx[r] - bmax);
                                        sum[r] *= c;
                                        attn_scale(ar[u], c, hd);
                                    }
                                    mx[r] = bmax;
                                }
                                sum[r] += attn_exp(sr[u], mx[r], lim);
                            }
                            attn_pv_rows(tiles, nr, direct, ar, (const float *const *)sr, (const char *)V, rowb, hd, lim);
                        }
                    }
                }
                for (int64_t i = i0; i < i1; i++)
                    for (int64_t e = 0; e < g; e++) {
                        const int64_t r = (i - i0) * g + e;
                        float *d = (float *)at(dst, 0, h * g + e, i, 0);
                        const float inv = sum[r] > 0.0f ? 1.0f / sum[r] : 0.0f;
                        for (int64_t c = 0; c < hd; c++) d[c] = acc[r * hd + c] * inv;
                    }
            }
        }
    }
}
#undef TILE
#undef KBLOCK
#undef PREFETCH
#undef ROWS
#undef KG
#undef SR
#undef PVR
#undef ROW_TILES_IN_PROMPTS
