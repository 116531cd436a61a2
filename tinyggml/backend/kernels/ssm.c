// The state-space kernels: ssm_conv, and ssm_scan's three algorithms (the Mamba-1 recurrence
// with A per element, the Mamba-2 recurrence with a scalar A per head, and the chunked
// state-space-duality scan for Mamba-2 prompts). Both ops read and write the recurrent state of
// the ubatch's sequences in place, through the slot in each sequence's seq_info row.
#include "internal.h"
#if defined(__SSE__)
#include <xmmintrin.h>     // _mm_getcsr / _mm_setcsr (gd_chunked)
#endif

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

void tg_ssm_conv(const tg_params *p, tg_tensor *dst) {
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
            // registers
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
// op_params: the algorithm (0 auto, 1 recurrent, 2 chunked), the chunk, the shortest sequence
// chunked under "auto", the chunks' 32-column blocks (AVX-512; GraphOptions.wide_scan)
// ref: mamba_ssm selective_scan_ref; Mamba-2 arXiv 2405.21060 eq. (2) with scalar A per head.
#ifdef TG_AVX2
// Mamba-1 on the state's own layout, [channel][n] (d_state a multiple of 8): per token,
// softplus of the block's 8 dt at once, then per channel d_state/8 vectors of exp(dt*A[c])
// and the state update in place; the 8 channels' output sums are reduced together. Nothing is
// transposed, so a decode step reads and writes each state once. Prompts of 8 tokens or more
// keep the transposed form below, which reloads nothing per token (faster there:
// docs/benchmark-log.md).
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
                __m256 y = _mm256_setzero_ps();
                for (int64_t n = 0; n < ds; n++) {
                    const __m256 da = tg_exp256(_mm256_mul_ps(sp, _mm256_loadu_ps(At + n * 8)));
                    const __m256 sn = _mm256_fmadd_ps(_mm256_loadu_ps(S + n * 8), da,
                                                      _mm256_mul_ps(_mm256_set1_ps(b[n]), dx));
                    _mm256_storeu_ps(S + n * 8, sn);
                    y = _mm256_fmadd_ps(sn, _mm256_set1_ps(cc[n]), y);
                }
                _mm256_storeu_ps(y8, _mm256_fmadd_ps(_mm256_loadu_ps(d8), vx, y));
            } else
#endif
            {
                float sp[8];
                for (int l = 0; l < 8; l++) {
                    sp[l] = tg_softplus_f32(dt8[l]);
                    y8[l] = 0.0f;
                }
                for (int64_t n = 0; n < ds; n++)
                    for (int l = 0; l < 8; l++) {
                        const float sn = S[n * 8 + l] * expf(sp[l] * At[n * 8 + l]) + b[n] * (sp[l] * x8[l]);
                        S[n * 8 + l] = sn;
                        y8[l] += sn * cc[n];
                    }
                for (int l = 0; l < 8; l++) y8[l] += d8[l] * x8[l];
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
            const int64_t kb = tg_sum_block(ds);    // the scalar path: C . s in blocks
            while (n < ds) {
                const int64_t n1 = TG_MIN(ds, (n / kb + 1) * kb);
                float part = 0.0f;
                for (; n < n1; n++) {
                    const float sn = sp[n] * (scalar_a ? da_scalar : dA[n]) + b[n] * xdt;
                    sp[n] = sn;
                    part += sn * c[n];
                }
                sum += part;
            }
            y[pi] = sum + dh * xp[pi];
        }
    }
}

#ifdef TG_AVX2
// Four heads with scalar A over one sequence, token by token, side by side: each head's
// arithmetic is tg_scan_head_recurrent's SIMD path in the same order (bit for bit), but the n
// loop updates a row of all four states, so a thread reads and writes four streams at once
// instead of one (one stream per core is latency-bound, as simd.h's decode rows). Needs
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
// vectors of 8 columns) += sum_{k < K} A[r * ar + k * ak] * B[k * ldb + 8 v], in k order, in
// tg_sum_block(K) blocks (each summed from zero, then added to acc). A is addressed by a row
// and a k stride, so row-major (ak = 1) and column-major (ar = 1) operands are read where they
// lie.
static inline __attribute__((always_inline)) void tg_tile_fma(
        int mr, int nv, int64_t K, const float *A, int64_t ar, int64_t ak, const float *B,
        int64_t ldb, __m256 acc[6][2]) {
    const int64_t kb = tg_sum_block(K);
    for (int64_t k0 = 0; k0 < K; k0 += kb) {
        const int64_t k1 = TG_MIN(K, k0 + kb);
        __m256 part[6][2];
        for (int r = 0; r < mr; r++)
            for (int v = 0; v < nv; v++) part[r][v] = _mm256_setzero_ps();
        for (int64_t k = k0; k < k1; k++) {
            __m256 b[2];
            for (int v = 0; v < nv; v++) b[v] = _mm256_loadu_ps(B + k * ldb + 8 * v);
            for (int r = 0; r < mr; r++) {
                const __m256 a = _mm256_broadcast_ss(A + r * ar + k * ak);
                for (int v = 0; v < nv; v++) part[r][v] = _mm256_fmadd_ps(a, b[v], part[r][v]);
            }
        }
        for (int r = 0; r < mr; r++)
            for (int v = 0; v < nv; v++) acc[r][v] = _mm256_add_ps(acc[r][v], part[r][v]);
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

// sum_{k < K} a[k * as] * b[k * bs] in tg_sum_block(K) blocks: the scalar paths' products
static inline float tg_dot_strided(int64_t K, const float *a, int64_t as, const float *b, int64_t bs) {
    const int64_t kb = tg_sum_block(K);
    float sum = 0.0f;
    for (int64_t k0 = 0; k0 < K; k0 += kb) {
        const int64_t k1 = TG_MIN(K, k0 + kb);
        float part = 0.0f;
        for (int64_t k = k0; k < k1; k++) part += a[k * as] * b[k * bs];
        sum += part;
    }
    return sum;
}

#ifdef TG_AVX2
// TILE(mr) over rows [0, n) in tiles of 6 rows, the index in i; the last partial tile's mr is a
// constant through the switch, so every tile's accumulators stay registers
#define TG_TILES_OF_6(i, n, TILE) do { \
        for (i = 0; i + 6 <= (n); i += 6) TILE(6); \
        switch ((n) - i) { \
            case 5: TILE(5); break; \
            case 4: TILE(4); break; \
            case 3: TILE(3); break; \
            case 2: TILE(2); break; \
            case 1: TILE(1); break; \
            default: break; \
        } \
    } while (0)

// rows [0, M) of one block of 8 nv columns (nv a constant at every call)
static inline __attribute__((always_inline)) void tg_gemm_rows(
        int nv, int64_t M, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
        float *C, int64_t ldc) {
#define TILE(mr) tg_gemm_tile(mr, nv, K, A + i * lda, lda, B, ldb, C + i * ldc, ldc)
    int64_t i;
    TG_TILES_OF_6(i, M, TILE);
#undef TILE
}
#endif

static void tg_gemm(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                    const float *B, int64_t ldb, float *C, int64_t ldc) {
    for (int64_t j0 = 0; j0 < N; j0 += 16) {
        const int64_t nj = TG_MIN(16, N - j0);
#ifdef TG_AVX2
        if (TG_USE_SIMD && nj == 16) {
            tg_gemm_rows(2, M, K, A, lda, B + j0, ldb, C + j0, ldc);
            continue;
        }
        if (TG_USE_SIMD && nj == 8) {       // chunks that are not a multiple of 16
            tg_gemm_rows(1, M, K, A, lda, B + j0, ldb, C + j0, ldc);
            continue;
        }
#endif
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < nj; j++) C[i * ldc + j0 + j] = tg_dot_strided(K, A + i * lda, 1, B + j0 + j, ldb);
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
#define YTILE(mr) tg_ssd_ytile(mr, nv, ds, C + t * ldc, ldc, S, lds, ecs + t, t + (mr), M + t * ldm, \
                                  ldm, X, ldx, Y + t * ldy, ldy)
#define STILE(mr) tg_ssd_stile(mr, nv, Lc, Bn + n, ldb, Xw, ldw, decay, S + n * lds, lds)
    int64_t t, n;
    TG_TILES_OF_6(t, Lc, YTILE);     // the rows of a tile read M up to their last token
    TG_TILES_OF_6(n, ds, STILE);
#undef YTILE
#undef STILE
}

#ifdef TG_AVX512
// The same block over 32 columns in 512-bit registers (TG_WIDE: GraphOptions.wide_scan; fewer
// loads per multiply-add than two 16-column blocks): each column sees tg_ssd_block's operations
// in its order (the same tg_sum_block blocks of k, the same multiply-adds), so the results are
// the same bit for bit.
static inline __attribute__((always_inline)) void tg_tile_fma_z(
        int mr, int64_t K, const float *A, int64_t ar, int64_t ak, const float *B, int64_t ldb,
        __m512 acc[6][2]) {
    const int64_t kb = tg_sum_block(K);
    for (int64_t k0 = 0; k0 < K; k0 += kb) {
        const int64_t k1 = TG_MIN(K, k0 + kb);
        __m512 part[6][2];
        for (int r = 0; r < mr; r++) part[r][0] = part[r][1] = _mm512_setzero_ps();
        for (int64_t k = k0; k < k1; k++) {
            const __m512 b0 = _mm512_loadu_ps(B + k * ldb), b1 = _mm512_loadu_ps(B + k * ldb + 16);
            for (int r = 0; r < mr; r++) {
                const __m512 a = _mm512_set1_ps(A[r * ar + k * ak]);
                part[r][0] = _mm512_fmadd_ps(a, b0, part[r][0]);
                part[r][1] = _mm512_fmadd_ps(a, b1, part[r][1]);
            }
        }
        for (int r = 0; r < mr; r++) {
            acc[r][0] = _mm512_add_ps(acc[r][0], part[r][0]);
            acc[r][1] = _mm512_add_ps(acc[r][1], part[r][1]);
        }
    }
}

static inline __attribute__((always_inline)) void tg_ssd_ytile_z(
        int mr, int64_t ds, const float *C, int64_t ldc, const float *S, int64_t lds,
        const float *ecs, int64_t ks, const float *M, int64_t ldm, const float *X, int64_t ldx,
        float *Y, int64_t ldy) {
    __m512 acc[6][2];
    for (int r = 0; r < mr; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    tg_tile_fma_z(mr, ds, C, ldc, 1, S, lds, acc);
    for (int r = 0; r < mr; r++) {
        const __m512 e = _mm512_set1_ps(ecs[r]);
        acc[r][0] = _mm512_mul_ps(acc[r][0], e);
        acc[r][1] = _mm512_mul_ps(acc[r][1], e);
    }
    tg_tile_fma_z(mr, ks, M, ldm, 1, X, ldx, acc);
    for (int r = 0; r < mr; r++) {
        _mm512_storeu_ps(Y + r * ldy, acc[r][0]);
        _mm512_storeu_ps(Y + r * ldy + 16, acc[r][1]);
    }
}

static inline __attribute__((always_inline)) void tg_ssd_stile_z(
        int mr, int64_t Lc, const float *Bn, int64_t ldb, const float *Xw, int64_t ldw, float decay,
        float *S, int64_t lds) {
    __m512 acc[6][2];
    const __m512 vd = _mm512_set1_ps(decay);
    for (int r = 0; r < mr; r++) {
        acc[r][0] = _mm512_mul_ps(vd, _mm512_loadu_ps(S + r * lds));
        acc[r][1] = _mm512_mul_ps(vd, _mm512_loadu_ps(S + r * lds + 16));
    }
    tg_tile_fma_z(mr, Lc, Bn, 1, ldb, Xw, ldw, acc);
    for (int r = 0; r < mr; r++) {
        _mm512_storeu_ps(S + r * lds, acc[r][0]);
        _mm512_storeu_ps(S + r * lds + 16, acc[r][1]);
    }
}

static void tg_ssd_block_z(int64_t Lc, int64_t ds, const float *C, int64_t ldc, const float *Bn,
                           int64_t ldb, const float *ecs, const float *M, int64_t ldm, const float *X,
                           int64_t ldx, const float *Xw, int64_t ldw, float decay, float *S,
                           int64_t lds, float *Y, int64_t ldy) {
#define YTILE(mr) tg_ssd_ytile_z(mr, ds, C + t * ldc, ldc, S, lds, ecs + t, t + (mr), M + t * ldm, \
                                  ldm, X, ldx, Y + t * ldy, ldy)
#define STILE(mr) tg_ssd_stile_z(mr, Lc, Bn + n, ldb, Xw, ldw, decay, S + n * lds, lds)
    int64_t t, n;
    TG_TILES_OF_6(t, Lc, YTILE);     // the rows of a tile read M up to their last token
    TG_TILES_OF_6(n, ds, STILE);
#undef YTILE
#undef STILE
}
#endif
#endif

// the same for columns [p0, p1) one at a time (the scalar build, and SIMD tails)
static void tg_ssd_columns(int64_t p0, int64_t p1, int64_t Lc, int64_t ds, const float *C,
                           int64_t ldc, const float *Bn, int64_t ldb, const float *ecs,
                           const float *M, int64_t ldm, const float *X, int64_t ldx,
                           const float *Xw, int64_t ldw, float decay, float *S, int64_t lds,
                           float *Y, int64_t ldy) {
    for (int64_t pc = p0; pc < p1; pc++) {
        for (int64_t t = 0; t < Lc; t++) {
            const float a = tg_dot_strided(ds, C + t * ldc, 1, S + pc, lds);
            Y[t * ldy + pc] = a * ecs[t] + tg_dot_strided(t + 1, M + t * ldm, 1, X + pc, ldx);
        }
        for (int64_t n = 0; n < ds; n++)
            S[n * lds + pc] = decay * S[n * lds + pc] + tg_dot_strided(Lc, Bn + n, ldb, Xw + pc, ldw);
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
#ifdef TG_AVX512
                for (; TG_WIDE(dst->op_params[3]) && pc + 32 <= hd; pc += 32)
                    tg_ssd_block_z(Lc, ds, Cc, ldc, Bc, ldb, ecs, M, L, xc + pc, ldx, Xw + pc, hd,
                                   decay, S + pc, hd, yc + pc, ldy);
#endif
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

void tg_ssm_scan(const tg_params *p, tg_tensor *dst) {
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
// gated_delta: the gated delta rule (ops.py gated_delta has the recurrence). src0: state {d_k,
// d_v, n_v_heads, n_slots} (row j of a head: its value channel j over the keys), src1, src2:
// q, k {d_k, n_k_heads, n_t}, src3: v {d_v, n_v_heads, n_t}, src4, src5: alpha, b {n_v_heads,
// n_t}, src6: A, src7: dt_bias {n_v_heads}, src8: seq_info; op_params: the L2 norm's eps, the
// algorithm (ssm_scan's codes), the chunk, the shortest sequence chunked under "auto", the
// chunks' 32-column blocks (ssm_scan's).
// A work item is one (sequence, value head). Token by token (decode, short sequences): one pass
// over the state per token (each row decayed, read against k, corrected, read against q).
// Chunked (prompts): gd_chunked below. Items go round-robin to the threads; each head's
// arithmetic is the same whatever the thread count.

// row *= decay; returns row . k
static inline float gd_decay_dot(float *row, float decay, const float *k, int64_t n) {
    int64_t c = 0;
    float m = 0.0f;
#ifdef TG_AVX2
    if (TG_USE_SIMD) {
        const __m256 vd = _mm256_set1_ps(decay);
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        for (; c + 16 <= n; c += 16) {
            const __m256 r0 = _mm256_mul_ps(_mm256_loadu_ps(row + c), vd);
            const __m256 r1 = _mm256_mul_ps(_mm256_loadu_ps(row + c + 8), vd);
            _mm256_storeu_ps(row + c, r0), _mm256_storeu_ps(row + c + 8, r1);
            a0 = _mm256_fmadd_ps(r0, _mm256_loadu_ps(k + c), a0);
            a1 = _mm256_fmadd_ps(r1, _mm256_loadu_ps(k + c + 8), a1);
        }
        m = tg_hsum256(_mm256_add_ps(a0, a1));
    }
#endif
    for (; c < n; c++) {
        row[c] *= decay;
        m += row[c] * k[c];
    }
    return m;
}

// row += d * k; returns row . q
static inline float gd_axpy_dot(float *row, float d, const float *k, const float *q, int64_t n) {
    int64_t c = 0;
    float y = 0.0f;
#ifdef TG_AVX2
    if (TG_USE_SIMD) {
        const __m256 vd = _mm256_set1_ps(d);
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        for (; c + 16 <= n; c += 16) {
            const __m256 r0 = _mm256_fmadd_ps(vd, _mm256_loadu_ps(k + c), _mm256_loadu_ps(row + c));
            const __m256 r1 = _mm256_fmadd_ps(vd, _mm256_loadu_ps(k + c + 8), _mm256_loadu_ps(row + c + 8));
            _mm256_storeu_ps(row + c, r0), _mm256_storeu_ps(row + c + 8, r1);
            a0 = _mm256_fmadd_ps(r0, _mm256_loadu_ps(q + c), a0);
            a1 = _mm256_fmadd_ps(r1, _mm256_loadu_ps(q + c + 8), a1);
        }
        y = tg_hsum256(_mm256_add_ps(a0, a1));
    }
#endif
    for (; c < n; c++) {
        row[c] += d * k[c];
        y += row[c] * q[c];
    }
    return y;
}

// Chunked form for one (sequence, value head) (the WY form of Yang et al., arXiv 2412.06464).
// With decay_t = exp(g_t), G_t = g_0 + ... + g_t over the chunk (in double, so exp(G_t - G_s)
// keeps float accuracy), gamma_t = exp(G_t), S_0 the state entering the chunk, and u_t = beta_t
// (v_t - decay_t S_{t-1} k_t) what token t adds (S_t = decay_t S_{t-1} + u_t k_t^T):
//   u_t  = beta_t (v_t - gamma_t S_0 k_t) - beta_t sum_{s<t} exp(G_t - G_s) (k_t . k_s) u_s
//   y_t  = gamma_t S_0 q_t + sum_{s<=t} exp(G_t - G_s) (q_t . k_s) u_s
//   S_Lc = gamma_last S_0 + sum_s exp(G_last - G_s) u_s k_s^T
// u comes by forward substitution, row by row; y and the new state are exactly the chunked
// scan's two products (C -> q, B -> k, x -> u, M[t][s] = exp(G_t - G_s) q_t . k_s, Xw[s] =
// exp(G_last - G_s) u_s), so they run on its tiles with the state transposed, ST[c][j] (key
// channel c, value channel j), for the whole sequence.
// Scratch (floats, L = chunk rounded up to 8): ST [d_k d_v, rounded to 8], KQ [2L][d_k] (the
// chunk's Lc normalized k rows, then its q rows from row Lc), KT [d_k][L], G2 [2L][L] (k_t .
// k_s, then q_t . k_s from row Lc), PK [L][d_v] (S_0 k_t), U, Uw [L][d_v], M [L][L], gam,
// beta, w, e [L], cs [L] doubles: ops.py _delta_wsize.
// Fast decays underflow: gamma_t and the weights exp(G_last - G_s) reach the smallest floats
// within a chunk, and products of them are subnormal, which x86 cores compute in microcode
// (a 512-token prompt ran 10x slower). Subnormal results and inputs are taken as zero here
// (MXCSR FTZ and DAZ, the caller's mode restored): values under 2^-126 of a state whose
// tokens are L2-normed. Not inlined, so that no caller's arithmetic moves inside the mode.
static __attribute__((noinline)) void gd_chunked(const tg_params *p, const tg_tensor *dst, float *S, int64_t h, int64_t t0, int64_t n) {
    const tg_tensor *st = dst->src[0], *q = dst->src[1], *k = dst->src[2], *v = dst->src[3];
    const tg_tensor *al = dst->src[4], *b = dst->src[5];
    const float A = ((const float *)dst->src[6]->data)[h], dtb = ((const float *)dst->src[7]->data)[h];
    const int64_t dk = st->ne[0], dv = st->ne[1], kh = h % q->ne[1];
    const int64_t chunk = dst->op_params[2], L = (chunk + 7) / 8 * 8;
    const float eps = tg_f32_param(dst, 0), qscale = 1.0f / sqrtf((float)dk);
    float *ST = (float *)(((uintptr_t)p->wdata + 63) & ~(uintptr_t)63);
    float *KQ = ST + (dk * dv + 7) / 8 * 8, *KT = KQ + 2 * L * dk, *G2 = KT + dk * L;
    float *PK = G2 + 2 * L * L, *U = PK + L * dv, *Uw = U + L * dv, *M = Uw + L * dv;
    float *gam = M + L * L, *beta = gam + L, *w = beta + L, *e = w + L;
    double *cs = (double *)(e + L);
    const int64_t ldy = dst->nb[2] / 4;
#if defined(__SSE__)
    const unsigned int csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040);                        // FTZ | DAZ
#endif
    tg_transpose(S, dk, ST, dv, dv, dk);
    for (int64_t c0 = 0; c0 < n; c0 += chunk) {
        const int64_t Lc = TG_MIN(chunk, n - c0), tc = t0 + c0;
        float *Kn = KQ, *Qn = KQ + Lc * dk;          // 2 Lc contiguous rows: one product
        double acc = 0.0;
        for (int64_t t = 0; t < Lc; t++) {
            const float *qr = (const float *)at(q, 0, kh, tc + t, 0), *kr = (const float *)at(k, 0, kh, tc + t, 0);
            const float iq = qscale / sqrtf(tg_dot_f32(dk, qr, qr) + eps);
            const float ik = 1.0f / sqrtf(tg_dot_f32(dk, kr, kr) + eps);
            for (int64_t c = 0; c < dk; c++) Qn[t * dk + c] = qr[c] * iq, Kn[t * dk + c] = kr[c] * ik;
            const float a = *(const float *)at(al, h, tc + t, 0, 0), bb = *(const float *)at(b, h, tc + t, 0, 0);
            acc += (double)(A * tg_softplus_f32(a + dtb));
            cs[t] = acc;
            beta[t] = 1.0f / (1.0f + expf(-bb));
        }
        const double last = cs[Lc - 1];
        for (int64_t t = 0; t < Lc; t++) gam[t] = (float)cs[t], w[t] = (float)(last - cs[t]);
        tg_row_map(gam, Lc, ROW_EXP);
        tg_row_map(w, Lc, ROW_EXP);
        // G2 = [K; Q] K^T (columns past Lc read zeros), PK = K S_0^T
        if (Lc < L) memset(KT, 0, dk * L * 4);
        tg_transpose(Kn, dk, KT, L, Lc, dk);
        tg_gemm(2 * Lc, L, dk, KQ, dk, KT, L, G2, L);
        tg_gemm(Lc, dv, dk, Kn, dk, ST, dv, PK, dv);
        for (int64_t t = 0; t < Lc; t++) {
            // e[s] = exp(G_t - G_s), s <= t; M's row t; u_t by forward substitution
            for (int64_t s = 0; s <= t; s++) e[s] = (float)(cs[t] - cs[s]);
            tg_row_map(e, t + 1, ROW_EXP);
            float *m = M + t * L;
            const float *qk = G2 + (Lc + t) * L, *kk = G2 + t * L;
            const float bt = beta[t], gt = gam[t];
            // e[s] becomes u_s's coefficient. (t < L always: the bound spelled out keeps GCC's
            // loop analysis in AVX2-only builds from warning of an overflow it cannot rule out.)
            for (int64_t s = 0; s < TG_MIN(t, L); s++) {
                m[s] = e[s] * qk[s];
                e[s] *= bt * kk[s];
            }
            m[t] = e[t] * qk[t];
            for (int64_t s = t + 1; s < Lc; s++) m[s] = 0.0f;
            const float *vr = (const float *)at(v, 0, h, tc + t, 0), *pk = PK + t * dv;
            float *u = U + t * dv;
            int64_t j = 0;
#ifdef TG_AVX2
            if (TG_USE_SIMD) {
                const __m256 vb = _mm256_set1_ps(bt), vg = _mm256_set1_ps(gt);
                for (; j + 32 <= dv; j += 32) {     // 4 vectors of u_t in registers over s
                    __m256 r[4];
                    for (int i = 0; i < 4; i++)
                        r[i] = _mm256_mul_ps(vb, _mm256_fnmadd_ps(vg, _mm256_loadu_ps(pk + j + 8 * i),
                                                                  _mm256_loadu_ps(vr + j + 8 * i)));
                    for (int64_t s = 0; s < t; s++) {
                        const __m256 c = _mm256_broadcast_ss(e + s);
                        for (int i = 0; i < 4; i++)
                            r[i] = _mm256_fnmadd_ps(c, _mm256_loadu_ps(U + s * dv + j + 8 * i), r[i]);
                    }
                    for (int i = 0; i < 4; i++) _mm256_storeu_ps(u + j + 8 * i, r[i]);
                }
                for (; j + 8 <= dv; j += 8) {
                    __m256 r = _mm256_mul_ps(vb, _mm256_fnmadd_ps(vg, _mm256_loadu_ps(pk + j), _mm256_loadu_ps(vr + j)));
                    for (int64_t s = 0; s < t; s++)
                        r = _mm256_fnmadd_ps(_mm256_broadcast_ss(e + s), _mm256_loadu_ps(U + s * dv + j), r);
                    _mm256_storeu_ps(u + j, r);
                }
            }
#endif
            for (; j < dv; j++) {
                float r = bt * (vr[j] - gt * pk[j]);
                for (int64_t s = 0; s < t; s++) r -= e[s] * U[s * dv + j];
                u[j] = r;
            }
        }
        for (int64_t s = 0; s < Lc; s++)
            for (int64_t j = 0; j < dv; j++) Uw[s * dv + j] = w[s] * U[s * dv + j];
        float *y = (float *)at(dst, 0, h, tc, 0);
        const float decay = (float)exp(last);
        int64_t pc = 0;
#ifdef TG_AVX2
        if (TG_USE_SIMD) {
#ifdef TG_AVX512
            for (; TG_WIDE(dst->op_params[4]) && pc + 32 <= dv; pc += 32)
                tg_ssd_block_z(Lc, dk, Qn, dk, Kn, dk, gam, M, L, U + pc, dv, Uw + pc, dv, decay, ST + pc, dv, y + pc, ldy);
#endif
            for (; pc + 16 <= dv; pc += 16)
                tg_ssd_block(2, Lc, dk, Qn, dk, Kn, dk, gam, M, L, U + pc, dv, Uw + pc, dv, decay, ST + pc, dv, y + pc, ldy);
            for (; pc + 8 <= dv; pc += 8)
                tg_ssd_block(1, Lc, dk, Qn, dk, Kn, dk, gam, M, L, U + pc, dv, Uw + pc, dv, decay, ST + pc, dv, y + pc, ldy);
        }
#endif
        tg_ssd_columns(pc, dv, Lc, dk, Qn, dk, Kn, dk, gam, M, L, U, dv, Uw, dv, decay, ST, dv, y, ldy);
    }
    tg_transpose(ST, dv, S, dk, dk, dv);
#if defined(__SSE__)
    _mm_setcsr(csr);
#endif
}

void tg_gated_delta(const tg_params *p, tg_tensor *dst) {
    const tg_tensor *st = dst->src[0], *q = dst->src[1], *k = dst->src[2], *v = dst->src[3];
    const tg_tensor *al = dst->src[4], *b = dst->src[5], *info = dst->src[8];
    const float *A = (const float *)dst->src[6]->data, *dtb = (const float *)dst->src[7]->data;
    const int64_t dk = st->ne[0], dv = st->ne[1], nh = st->ne[2], nk = q->ne[1];
    const float eps = tg_f32_param(dst, 0), qscale = 1.0f / sqrtf((float)dk);
    const int algo = dst->op_params[1], min_len = dst->op_params[3];
    const int32_t *si = (const int32_t *)info->data;
    float *qn = (float *)p->wdata, *kn = qn + dk;
    int64_t item = 0;
    for (int64_t sq = 0; sq < info->ne[1]; sq++) {
        const int64_t slot = si[3 * sq], t0 = si[3 * sq + 1], n = si[3 * sq + 2];
        for (int64_t h = 0; h < nh; h++) {
            if (n <= 0 || item++ % p->nth != p->ith) continue;
            float *S = (float *)(st->data + slot * st->nb[3] + h * st->nb[2]);
            if (algo == 2 || (algo == 0 && n >= min_len)) {
                gd_chunked(p, dst, S, h, t0, n);
                continue;
            }
            const int64_t kh = h % nk;
            for (int64_t i = t0; i < t0 + n; i++) {
                const float *qr = (const float *)at(q, 0, kh, i, 0), *kr = (const float *)at(k, 0, kh, i, 0);
                const float *vr = (const float *)at(v, 0, h, i, 0);
                const float iq = qscale / sqrtf(tg_dot_f32(dk, qr, qr) + eps);
                const float ik = 1.0f / sqrtf(tg_dot_f32(dk, kr, kr) + eps);
                for (int64_t c = 0; c < dk; c++) qn[c] = qr[c] * iq, kn[c] = kr[c] * ik;
                const float a = *(const float *)at(al, h, i, 0, 0), bb = *(const float *)at(b, h, i, 0, 0);
                const float decay = expf(A[h] * tg_softplus_f32(a + dtb[h]));
                const float beta = 1.0f / (1.0f + expf(-bb));
                float *y = (float *)at(dst, 0, h, i, 0);
                for (int64_t j = 0; j < dv; j++) {
                    float *row = S + j * dk;
                    const float m = gd_decay_dot(row, decay, kn, dk);
                    y[j] = gd_axpy_dot(row, (vr[j] - m) * beta, kn, qn, dk);
                }
            }
        }
    }
}
