// Element-wise kernels (cpy, get_rows, add, mul, scale, silu, gate_silu, rms_norm, concat,
// quantize) and tg_compute_forward, the switch that sends a node to its kernel. The big kernels
// live in mul_mat.c and ssm.c (internal.h lists the files).
#include "internal.h"

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
        const char *s = tg_weight_row(src0, id, 0, 0, p->wdata + 2 * ne00);  // gathered if packed
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
// unary ops over rows: scale (op_params[0] = s as f32 bits), silu, relu_sqr, gate_silu (dst =
// src0 * silu(src1), src1 the same shape as src0) and gate_sigmoid (src0 * sigmoid(src1)).
// All F32, any row strides.
enum { UN_SCALE, UN_SILU, UN_GATE, UN_RELU_SQR, UN_GATE_SIG };

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
        const int gated = kind == UN_GATE || kind == UN_GATE_SIG;
        const char *g = gated ? at(src1, 0, i1, i2, i3) : NULL;
        float *d = (float *)at(dst, 0, i1, i2, i3);
        int64_t i = 0;
        const int contig = src0->nb[0] == 4 && dst->nb[0] == 4 && (!gated || src1->nb[0] == 4);
#ifdef TG_AVX2
        if (TG_USE_SIMD && contig) {
            const float *x = (const float *)a;
            for (; i + 8 <= ne0; i += 8) {
                const __m256 vx = _mm256_loadu_ps(x + i);
                __m256 r;
                if (kind == UN_SCALE) r = _mm256_mul_ps(vx, _mm256_set1_ps(s));
                else if (kind == UN_SILU) r = tg_silu256(vx);
                else if (kind == UN_RELU_SQR) { r = _mm256_max_ps(vx, _mm256_setzero_ps()); r = _mm256_mul_ps(r, r); }
                else if (kind == UN_GATE) r = _mm256_mul_ps(vx, tg_silu256(_mm256_loadu_ps((const float *)g + i)));
                else r = _mm256_div_ps(vx, _mm256_add_ps(_mm256_set1_ps(1.0f),
                                       tg_exp256(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_loadu_ps((const float *)g + i)))));
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
            else if (kind == UN_RELU_SQR) r = x > 0.0f ? x * x : 0.0f;
            else if (kind == UN_GATE) r = x * tg_silu_f32(*(const float *)(g + i * src1->nb[0]));
            else r = x / (1.0f + expf(-*(const float *)(g + i * src1->nb[0])));
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
        // the sum of squares in double, as the scalar path: a float sum over a long row would
        // round its growing partial sums (~ ne0/8 ulp of the scale at 8 lanes); the row is read
        // from memory either way
#ifdef TG_AVX2
        if (TG_USE_SIMD) {
            __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
            for (; i + 8 <= ne0; i += 8) {
                const __m256 v = _mm256_loadu_ps(x + i);
                const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
                const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
                acc0 = _mm256_fmadd_pd(lo, lo, acc0);
                acc1 = _mm256_fmadd_pd(hi, hi, acc1);
            }
            double part[4];
            _mm256_storeu_pd(part, _mm256_add_pd(acc0, acc1));
            sum = (part[0] + part[1]) + (part[2] + part[3]);
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
        case TG_OP_MUL_MAT:   tg_mul_mat(p, dst); break;
        case TG_OP_ADD:       tg_binary_f32(p, dst, 0); break;
        case TG_OP_MUL:       tg_binary_f32(p, dst, 1); break;
        case TG_OP_SCALE:     tg_unary_f32(p, dst, UN_SCALE); break;
        case TG_OP_SILU:      tg_unary_f32(p, dst, UN_SILU); break;
        case TG_OP_GATE_SILU: tg_unary_f32(p, dst, UN_GATE); break;
        case TG_OP_RMS_NORM:  tg_rms_norm_f32(p, dst); break;
        case TG_OP_CONCAT:    tg_concat_f32(p, dst); break;
        case TG_OP_SSM_CONV:  tg_ssm_conv(p, dst); break;
        case TG_OP_SSM_SCAN:  tg_ssm_scan(p, dst); break;
        case TG_OP_QUANTIZE:  tg_quantize_f32(p, dst); break;
        case TG_OP_ROPE:      tg_rope(p, dst); break;
        case TG_OP_KV_STORE:  tg_kv_store(p, dst); break;
        case TG_OP_ATTN:      tg_attn(p, dst); break;
        case TG_OP_RELU_SQR:  tg_unary_f32(p, dst, UN_RELU_SQR); break;
        case TG_OP_GATE_SIGMOID: tg_unary_f32(p, dst, UN_GATE_SIG); break;
        case TG_OP_GATED_DELTA: tg_gated_delta(p, dst); break;
        default: break;       // NONE / VIEW: nothing to compute
    }
}
