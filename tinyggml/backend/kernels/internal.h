// What every kernel file shares: the kernel signature, work splitting, element addressing,
// and the entry points of the kernel files (ops.c dispatches to them).
//
// A kernel is void tg_<op>(const tg_params *p, tg_tensor *dst): it reads its sources from
// dst->src[], splits its own work by p->ith / p->nth (dr = (nr + nth - 1)/nth; ir0 = dr*ith;
// ir1 = MIN(ir0 + dr, nr)), and allocates nothing (scratch: p->wdata, sized by ops.py's wsize).
// Shapes are in ggml order: {ne0, ne1, ...}, ne0 innermost; nb[] are byte strides. Every SIMD
// block (TG_AVX2) has a scalar twin used when TG_USE_SIMD is 0.
//
//   ops.c      element-wise kernels, get_rows, quantize, and the dispatch switch
//   mul_mat.c  mul_mat: decode dots, small batches, float and integer panels (tg_mul_mat_path)
//   ssm.c      ssm_conv, the recurrent scans (Mamba-1, Mamba-2), the chunked SSD scan and the
//              gated delta rule (Qwen3.5's linear attention)
//   attn.c     rope, kv_store and the causal attention over the KV cache (hybrid models)
//   quants.c   the type table, weight unpacking, activation quantization, integer dots
#ifndef TG_INTERNAL_H
#define TG_INTERNAL_H

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

// Row m of weight t in its file layout: a packed row (repack.c: rows in groups of
// TG_PACK_ROWS, 2-D weights only) is gathered into buf (nb[1] bytes), any other is read in place.
#define TG_PACK_ROWS 16
void tg_unpack_packed_row(int type, const char *data, int64_t K, int64_t m, void *out);
static inline const char *tg_weight_row(const tg_tensor *t, int64_t m, int64_t i2, int64_t i3, void *buf) {
    if (t->packed && m < t->ne[1] / TG_PACK_ROWS * TG_PACK_ROWS) {
        tg_unpack_packed_row(t->type, t->data, t->ne[0], m, buf);
        return (const char *)buf;
    }
    return at(t, 0, m, i2, i3);
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

// dst[j, i] = src[i, j] for i < rows, j < cols (row-major, leading dims lds, ldd); 8x8 blocks
// in registers.
static inline void tg_transpose(const float *src, int64_t lds, float *dst, int64_t ldd, int64_t rows,
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


void tg_mul_mat(const tg_params *p, tg_tensor *dst);    // mul_mat.c
void tg_ssm_conv(const tg_params *p, tg_tensor *dst);   // ssm.c
void tg_ssm_scan(const tg_params *p, tg_tensor *dst);   // ssm.c
void tg_gated_delta(const tg_params *p, tg_tensor *dst); // ssm.c
void tg_rope(const tg_params *p, tg_tensor *dst);       // attn.c
void tg_kv_store(const tg_params *p, tg_tensor *dst);   // attn.c
void tg_attn(const tg_params *p, tg_tensor *dst);       // attn.c

#endif
