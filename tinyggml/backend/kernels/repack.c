// Weights repacked at load for the decode dots (the idea of ggml-cpu's repack, our own layout).
//
// The rows of a 2-D Q4_0 / Q8_0 / Q4_K / Q6_K weight go in groups of TG_PACK_ROWS = 16: each block's
// bytes are interleaved across the group's rows in granules of 4 bytes (2 for an f16 field),
//   packed[g][c] = for each granule (off, len) of the block: row 0's len bytes, row 1's, ... row 15's
// so one 64-byte load holds the same 4 bytes of 16 rows, and the 16 f16 scales of a block
// are one 32-byte load (one vcvtph2ps). A dot then keeps one int32 lane per row: vpdpbusd
// multiplies 4 weights of each row by 4 activation bytes broadcast to every lane, and no
// horizontal sums are left but the last one. Rows past the last full group stay as they were,
// so the packed tensor has the original's size and strides (row m >= 16 * (M / 16) is at
// m * nb[1] in both). Anything else that reads a packed row gathers it first (tg_weight_row).
//
// The dots (AVX-512 VNNI builds) give each row the result of its one-row dot in quants.c bit
// for bit: the activations are the same QACT / QACT_K rows, the integer sums are the same
// integers, and the float steps are the same operations in the same order, lane for lane
// (the one-row dots' 8 float lanes become 8 accumulators here, added as tg_hsum256 adds them).
// Integer sums: a QACT value q (int16) is 256 hi + lo with hi = q >> 8 (int8) and lo = q & 255
// (uint8), so sum(u q) = 256 sum(u hi) + sum(lo u) for 4-bit weights u in 0..15: vpdpbusd takes
// the weights as the unsigned operand against hi, and as the signed one against lo (Q8_0's
// signed weights: see tg_dot16xn_q8_0_packed). QACT_K (Q6_K) already holds int8 halves; there
// 4 products at a time fit int16 and vpdpwssd applies the group scale, as vpmaddubsw +
// vpmaddwd do in the one-row dot. Batches: the n-column dots unpack each block once for up
// to PACKED_PASS columns (mul_mat.c), each column's steps those of its one-column dot.
#include "internal.h"

// the bytes of one block as granules: f16 fields (the scales) 2 bytes, the rest 4
static int pack_granules(int type, int64_t *off, int64_t *len) {
    const tg_type_traits *tt = tg_get_type_traits(type);
    int half[2] = {-1, -1};
    switch (type) {
        case TG_TYPE_Q4_0: case TG_TYPE_Q8_0: half[0] = 0; break;
        case TG_TYPE_Q4_K: half[0] = 0; half[1] = 2; break;
        case TG_TYPE_Q6_K: half[0] = 208; break;
        default: return 0;
    }
    int n = 0;
    for (int64_t p = 0; p < tt->type_size; n++) {
        off[n] = p;
        len[n] = (p == half[0] || p == half[1]) ? 2 : 4;
        p += len[n];
    }
    return n;
}

#define MAX_GRANULES 64

int tg_pack_supported(int type) {
#if defined(TG_AVX512)
    return type == TG_TYPE_Q4_0 || type == TG_TYPE_Q8_0 || type == TG_TYPE_Q4_K || type == TG_TYPE_Q6_K;
#elif defined(TG_AVX2)
    return type == TG_TYPE_Q4_0 || type == TG_TYPE_Q4_K;
#else
    (void)type;
    return 0;
#endif
}

// M rows of K values (type) at src -> dst, same size; groups split over n_threads
void tg_pack_rows(int type, const uint8_t *src, int64_t K, int64_t M, uint8_t *dst, int n_threads) {
    const tg_type_traits *tt = tg_get_type_traits(type);
    const int64_t ts = tt->type_size, nblk = K / tt->blck_size, rb = nblk * ts;
    const int64_t G = M / TG_PACK_ROWS;
    int64_t off[MAX_GRANULES], len[MAX_GRANULES];
    const int ng = pack_granules(type, off, len);
    #pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t g = 0; g < G; g++) {
        const uint8_t *s = src + g * TG_PACK_ROWS * rb;
        uint8_t *d = dst + g * TG_PACK_ROWS * rb;
        for (int64_t c = 0; c < nblk; c++) {
            uint8_t *dc = d + c * TG_PACK_ROWS * ts;
            for (int j = 0; j < ng; j++) {      // constant sizes: plain moves, not memcpy calls
                uint8_t *o = dc + TG_PACK_ROWS * off[j];
                const uint8_t *i = s + c * ts + off[j];
                if (len[j] == 4)
                    for (int r = 0; r < TG_PACK_ROWS; r++) memcpy(o + 4 * r, i + r * rb, 4);
                else
                    for (int r = 0; r < TG_PACK_ROWS; r++) memcpy(o + 2 * r, i + r * rb, 2);
            }
        }
    }
    memcpy(dst + G * TG_PACK_ROWS * rb, src + G * TG_PACK_ROWS * rb, (M - G * TG_PACK_ROWS) * rb);
}

// row m (in a full group) of a packed tensor's data -> row bytes at out, in the original layout
void tg_unpack_packed_row(int type, const char *data, int64_t K, int64_t m, void *out) {
    const tg_type_traits *tt = tg_get_type_traits(type);
    const int64_t ts = tt->type_size, nblk = K / tt->blck_size, rb = nblk * ts;
    int64_t off[MAX_GRANULES], len[MAX_GRANULES];
    const int ng = pack_granules(type, off, len);
    const int64_t g = m / TG_PACK_ROWS, r = m % TG_PACK_ROWS;
    const char *s = data + g * TG_PACK_ROWS * rb;
    char *o = (char *)out;
    for (int64_t c = 0; c < nblk; c++)
        for (int j = 0; j < ng; j++) {         // constant sizes: plain moves, not memcpy calls
            const char *i = s + c * TG_PACK_ROWS * ts + TG_PACK_ROWS * off[j];
            if (len[j] == 4) memcpy(o + c * ts + off[j], i + 4 * r, 4);
            else memcpy(o + c * ts + off[j], i + 2 * r, 2);
        }
}

#ifdef TG_AVX2
// Q4_0 blocks nb8.. (past the last 8) of 16 packed rows added to out[16], in the one-row
// dot's tail order
static void q4_0_tail(int64_t K, const uint8_t *gb, const uint8_t *act, int64_t nb8, float out[16]) {
    const int16_t *q = (const int16_t *)act;
    const float *d = (const float *)(act + 2 * K);
    for (int r = 0; r < 16; r++)
        for (int64_t c = nb8; c < K / 32; c++) {
            const uint8_t *b = gb + 288 * c;
            int s = 0;
            for (int t = 0; t < 4; t++)
                for (int i = 0; i < 4; i++) {
                    const uint8_t x = b[32 + 64 * t + 4 * r + i];
                    s += ((x & 0xF) - 8) * q[32 * c + 4 * t + i] + ((x >> 4) - 8) * q[32 * c + 16 + 4 * t + i];
                }
            tg_fp16_t h;
            memcpy(&h, b + 2 * r, 2);
            out[r] += (float)s * (_cvtsh_ss(h) * d[c]);
        }
}

// Lines first .. first + n - 1 of the packed block at p into L2. The packed K-quant dots call
// it once per part of a superblock for the one four ahead: the hardware prefetcher alone falls
// behind, and a whole superblock into L1 at once (or its parts) holds the few L1 miss buffers
// the loads need (measured: docs/benchmark-log.md, session 20).
static inline __attribute__((always_inline)) void tg_prefetch_l2(const uint8_t *p, int first, int n) {
    for (int c = first; c < first + n; c++) _mm_prefetch((const char *)(p + 64 * c), _MM_HINT_T1);
}

#endif

#ifdef TG_AVX512
// ---- the group dots: 16 packed rows x one activation column -> out[16] -------------------------

// the 16 rows' float lanes a[0..7] summed as tg_hsum256 sums the 8 lanes of one row
static inline void hsum8_rows(const __m512 a[8], float out[16]) {
    const __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[4]), _mm512_add_ps(a[1], a[5])),
                                   _mm512_add_ps(_mm512_add_ps(a[2], a[6]), _mm512_add_ps(a[3], a[7])));
    _mm512_storeu_ps(out, s);
}

static inline __m512i bcast4(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

// a QACT row's int16 values as low bytes (uint8) and high bytes (int8): q = 256 hi + lo; and
// each block's 32 high bytes summed (hsum[K / 32], for the Q8_0 dots)
void tg_qact_split(const uint8_t *act, int64_t K, uint8_t *lo, int8_t *hi, int32_t *hsum) {
    const int16_t *q = (const int16_t *)act;
    for (int64_t k = 0; k < K; k += 32) {
        const __m512i v = _mm512_loadu_si512((const void *)(q + k));
        const __m512i h = _mm512_srai_epi16(v, 8);
        _mm256_storeu_si256((__m256i *)(lo + k), _mm512_cvtepi16_epi8(v));
        _mm256_storeu_si256((__m256i *)(hi + k), _mm512_cvtepi16_epi8(h));
        hsum[k / 32] = _mm512_reduce_add_epi32(_mm512_madd_epi16(h, _mm512_set1_epi16(1)));
    }
}

// Q4_0: a packed block of 16 rows is 288 bytes: the 16 f16 scales, then 4 granules of 64 bytes
// (granule t: bytes 4t..4t+3 of each row's 16: low nibbles = values 4t.., high = 16 + 4t..).
// As tg_dot_q4_0_qact: per block d_a * sum(u q) - 8 d_a sum(q) times d_w, into lane c % 8; the
// blocks past the last 8 through the one-row tail.
void tg_dot16_q4_0_packed(int64_t K, const uint8_t *gb, const uint8_t *act, const uint8_t *lo,
                          const int8_t *hi, float out[16]) {
    const int64_t nb = K / 32, nb8 = nb / 8 * 8;
    const float *d = (const float *)(act + 2 * K), *ds = d + K / 32;
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512 acc[8];
    for (int j = 0; j < 8; j++) acc[j] = _mm512_setzero_ps();
    for (int64_t c0 = 0; c0 < nb8; c0 += 8) {
        #pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            const int64_t c = c0 + j;
            const uint8_t *b = gb + 288 * c;
            _mm_prefetch((const char *)(b + 2048), _MM_HINT_T0);
            _mm_prefetch((const char *)(b + 2048 + 64), _MM_HINT_T0);
            _mm_prefetch((const char *)(b + 2048 + 128), _MM_HINT_T0);
            _mm_prefetch((const char *)(b + 2048 + 192), _MM_HINT_T0);
            _mm_prefetch((const char *)(b + 2048 + 256), _MM_HINT_T0);
            __m512i sl0 = _mm512_setzero_si512(), sh0 = sl0, sl1 = sl0, sh1 = sl0;
            for (int t = 0; t < 4; t++) {
                const __m512i x = _mm512_loadu_si512((const void *)(b + 32 + 64 * t));
                const __m512i wl = _mm512_and_si512(x, m4);
                const __m512i wh = _mm512_and_si512(_mm512_srli_epi16(x, 4), m4);
                const int64_t k = 32 * c + 4 * t;
                sl0 = _mm512_dpbusd_epi32(sl0, bcast4(lo + k), wl);
                sh0 = _mm512_dpbusd_epi32(sh0, wl, bcast4(hi + k));
                sl1 = _mm512_dpbusd_epi32(sl1, bcast4(lo + k + 16), wh);
                sh1 = _mm512_dpbusd_epi32(sh1, wh, bcast4(hi + k + 16));
            }
            const __m512i s = _mm512_add_epi32(_mm512_slli_epi32(_mm512_add_epi32(sh0, sh1), 8),
                                               _mm512_add_epi32(sl0, sl1));
            const __m512 blk = _mm512_fnmadd_ps(_mm512_set1_ps(8.0f), _mm512_set1_ps(ds[2 * c] + ds[2 * c + 1]),
                                                _mm512_mul_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(d[c])));
            const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)b));
            acc[j] = _mm512_fmadd_ps(blk, dw, acc[j]);
        }
    }
    hsum8_rows(acc, out);
    q4_0_tail(K, gb, act, nb8, out);
}

// Q4_0, 16 rows x n columns: each block's weights unpacked once for every column. Column j's
// steps are those of tg_dot16_q4_0_packed (its integer sums add the same products; its float
// steps are the same operations), so out[16 j + r] is that dot's out[r] bit for bit. Its 8
// float lanes per row live in acc (16 x 8 floats per column) between blocks.
void tg_dot16xn_q4_0_packed(int64_t K, const uint8_t *gb, int n, const uint8_t *const *acts,
                            const uint8_t *split, float *acc, float *out) {
    const int64_t nb = K / 32, nb8 = nb / 8 * 8;
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int j = 0; j < 8 * n; j++) _mm512_storeu_ps(acc + 16 * j, _mm512_setzero_ps());
    for (int64_t c = 0; c < nb8; c++) {
        const uint8_t *b = gb + 288 * c;
        for (int l = 0; l < 288; l += 64) _mm_prefetch((const char *)(b + 4 * 288 + l), _MM_HINT_T0);
        __m512i wl[4], wh[4];
        for (int t = 0; t < 4; t++) {
            const __m512i x = _mm512_loadu_si512((const void *)(b + 32 + 64 * t));
            wl[t] = _mm512_and_si512(x, m4);
            wh[t] = _mm512_and_si512(_mm512_srli_epi16(x, 4), m4);
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)b));
        float *a = acc + 16 * (c % 8);
        for (int j = 0; j < n; j++, a += 128) {
            const uint8_t *lo = split + TG_SPLIT_BYTES(K) * j + 32 * c;
            const int8_t *hi = (const int8_t *)lo + K;
            const float *d = (const float *)(acts[j] + 2 * K), *ds = d + K / 32;
            __m512i sl0 = _mm512_setzero_si512(), sh0 = sl0, sl1 = sl0, sh1 = sl0;
            for (int t = 0; t < 4; t++) {
                sl0 = _mm512_dpbusd_epi32(sl0, bcast4(lo + 4 * t), wl[t]);
                sh0 = _mm512_dpbusd_epi32(sh0, wl[t], bcast4(hi + 4 * t));
                sl1 = _mm512_dpbusd_epi32(sl1, bcast4(lo + 4 * t + 16), wh[t]);
                sh1 = _mm512_dpbusd_epi32(sh1, wh[t], bcast4(hi + 4 * t + 16));
            }
            const __m512i s = _mm512_add_epi32(_mm512_slli_epi32(_mm512_add_epi32(sh0, sh1), 8),
                                               _mm512_add_epi32(sl0, sl1));
            const __m512 blk = _mm512_fnmadd_ps(_mm512_set1_ps(8.0f), _mm512_set1_ps(ds[2 * c] + ds[2 * c + 1]),
                                                _mm512_mul_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(d[c])));
            _mm512_storeu_ps(a, _mm512_fmadd_ps(blk, dw, _mm512_loadu_ps(a)));
        }
    }
    for (int j = 0; j < n; j++) {
        __m512 v[8];
        for (int l = 0; l < 8; l++) v[l] = _mm512_loadu_ps(acc + 128 * j + 16 * l);
        hsum8_rows(v, out + 16 * j);
        q4_0_tail(K, gb, acts[j], nb8, out + 16 * j);
    }
}

// Q8_0, 16 rows x n columns: a packed block of 16 rows is 544 bytes: the 16 f16 scales, then
// 8 granules of 64 bytes (granule t: bytes 4t..4t+3 of each row's 32 int8 values). As
// q8_0_dot_blocks (quants.c): per block the exact sum(w q) times d_w d_a into lane c % 8.
// sum(w q) = 256 sum(w hi) + sum(lo w): vpdpbusd takes lo (unsigned) against w, and w + 128
// (unsigned: w ^ 0x80) against hi, less 128 sum(hi) (tg_qact_split's block sums). Each block's
// weights are loaded once for every column; column j's 8 float lanes per row live in acc
// (128 floats per column). out[16 j + r] is that row's one-row dot bit for bit.
void tg_dot16xn_q8_0_packed(int64_t K, const uint8_t *gb, int n, const uint8_t *const *acts,
                            const uint8_t *split, float *acc, float *out) {
    const int64_t nb = K / 32, cs = TG_SPLIT_BYTES(K);
    const __m512i x80 = _mm512_set1_epi8((char)0x80);
    for (int j = 0; j < 8 * n; j++) _mm512_storeu_ps(acc + 16 * j, _mm512_setzero_ps());
    for (int64_t c = 0; c < nb; c++) {
        const uint8_t *b = gb + 544 * c;
        for (int l = 0; l < 544; l += 64) _mm_prefetch((const char *)(b + 4 * 544 + l), _MM_HINT_T0);
        __m512i w[8], wu[8];
        for (int t = 0; t < 8; t++) {
            w[t] = _mm512_loadu_si512((const void *)(b + 32 + 64 * t));
            wu[t] = _mm512_xor_si512(w[t], x80);
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)b));
        float *a = acc + 16 * (c % 8);
        for (int j = 0; j < n; j++, a += 128) {
            const uint8_t *lo = split + cs * j + 32 * c;
            const int8_t *hi = (const int8_t *)split + cs * j + K + 32 * c;
            const int32_t *hs = (const int32_t *)(split + cs * j + 2 * K);
            const float *d = (const float *)(acts[j] + 2 * K);
            __m512i sl0 = _mm512_setzero_si512(), sh0 = sl0, sl1 = sl0, sh1 = sl0;
            for (int t = 0; t < 8; t += 2) {
                sl0 = _mm512_dpbusd_epi32(sl0, bcast4(lo + 4 * t), w[t]);
                sh0 = _mm512_dpbusd_epi32(sh0, wu[t], bcast4(hi + 4 * t));
                sl1 = _mm512_dpbusd_epi32(sl1, bcast4(lo + 4 * t + 4), w[t + 1]);
                sh1 = _mm512_dpbusd_epi32(sh1, wu[t + 1], bcast4(hi + 4 * t + 4));
            }
            const __m512i sh = _mm512_sub_epi32(_mm512_add_epi32(sh0, sh1), _mm512_set1_epi32(128 * hs[c]));
            const __m512i s = _mm512_add_epi32(_mm512_slli_epi32(sh, 8), _mm512_add_epi32(sl0, sl1));
            _mm512_storeu_ps(a, _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_set1_ps(d[c])),
                                                _mm512_loadu_ps(a)));
        }
    }
    for (int j = 0; j < n; j++) {
        __m512 v[8];
        for (int l = 0; l < 8; l++) v[l] = _mm512_loadu_ps(acc + 128 * j + 16 * l);
        hsum8_rows(v, out + 16 * j);
    }
}

// a packed Q4_K superblock's 6-bit scales and mins, 16 rows per register: u[0], u[1] the
// scales of chunks 0-3, 4-7 and u[2], u[3] their mins, one byte per chunk in each row's lane
static inline __attribute__((always_inline)) void q4_k_scales(const uint8_t *b, __m512i u[4]) {
    const __m512i k1 = _mm512_set1_epi32(0x3f3f3f3f), k2 = _mm512_set1_epi32(0x0f0f0f0f),
                  k3 = _mm512_set1_epi32(0x03030303);
    u[0] = _mm512_loadu_si512((const void *)(b + 64));
    u[1] = _mm512_loadu_si512((const void *)(b + 128));
    u[2] = _mm512_loadu_si512((const void *)(b + 192));
    u[3] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u[2], 4), k2),
                           _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u[1], 6), k3), 4));
    const __m512i mins_lo = _mm512_and_si512(u[1], k1);
    u[1] = _mm512_or_si512(_mm512_and_si512(u[2], k2),
                           _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u[0], 6), k3), 4));
    u[2] = mins_lo;
    u[0] = _mm512_and_si512(u[0], k1);
}

// byte e (0-3) of every lane of v, as floats
static inline __attribute__((always_inline)) __m512 q4_k_byte(__m512i v, int e) {
    return _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(v, 8 * e), _mm512_set1_epi32(0xFF)));
}

// Q4_K: a packed superblock of 16 rows is 2304 bytes: d and dmin (16 f16 each), the 12 scale
// bytes as 3 granules, then 32 granules of qs (granule t: bytes 4t.. of each row: 32-byte group
// h = t / 8 holds chunk 2h in its low nibbles and 2h + 1 in its high). As tg_dot_q4_k_qact:
// chunk j's sum(u q) times (scale_j d_w) d_a into lane j, the mins times the activation half
// sums into another 8 lanes, the two summed apart and subtracted.
void tg_dot16_q4_k_packed(int64_t K, const uint8_t *gb, const uint8_t *act, const uint8_t *lo,
                          const int8_t *hi, float out[16]) {
    const float *d = (const float *)(act + 2 * K), *ds = d + K / 32;
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512 acc[8], macc[8];
    for (int j = 0; j < 8; j++) acc[j] = macc[j] = _mm512_setzero_ps();
    for (int64_t i = 0; i < K; i += 256) {
        const uint8_t *b = gb + 2304 * (i / 256);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)b));
        const __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(b + 32)));
        __m512i u[4];
        q4_k_scales(b, u);
        const int64_t c0 = i / 32;
        for (int h = 0; h < 4; h++) {           // chunks 2h (low nibbles) and 2h + 1 (high)
            // the superblock two ahead, a quarter of its 36 lines per chunk pair, into L1 (into
            // L2 was no faster for this one-column dot; all 36 at once queue behind each other)
            for (int c = 9 * h; c < 9 * h + 9; c++)
                _mm_prefetch((const char *)(b + 2 * 2304 + 64 * c), _MM_HINT_T0);
            __m512i sl0 = _mm512_setzero_si512(), sh0 = sl0, sl1 = sl0, sh1 = sl0;
            #pragma GCC unroll 8
            for (int t = 0; t < 8; t++) {
                const __m512i x = _mm512_loadu_si512((const void *)(b + 256 + 64 * (8 * h + t)));
                const __m512i wl = _mm512_and_si512(x, m4);
                const __m512i wh = _mm512_and_si512(_mm512_srli_epi16(x, 4), m4);
                const int64_t k = i + 64 * h + 4 * t;
                sl0 = _mm512_dpbusd_epi32(sl0, bcast4(lo + k), wl);
                sh0 = _mm512_dpbusd_epi32(sh0, wl, bcast4(hi + k));
                sl1 = _mm512_dpbusd_epi32(sl1, bcast4(lo + k + 32), wh);
                sh1 = _mm512_dpbusd_epi32(sh1, wh, bcast4(hi + k + 32));
            }
            const __m512i s[2] = {_mm512_add_epi32(_mm512_slli_epi32(sh0, 8), sl0),
                                  _mm512_add_epi32(_mm512_slli_epi32(sh1, 8), sl1)};
            for (int e = 0; e < 2; e++) {
                const int j = 2 * h + e;
                const __m512 sc = q4_k_byte(u[j / 4], j % 4), mn = q4_k_byte(u[2 + j / 4], j % 4);
                const float pairs = ds[2 * (c0 + j)] + ds[2 * (c0 + j) + 1];
                macc[j] = _mm512_fmadd_ps(_mm512_mul_ps(mn, dmin), _mm512_set1_ps(pairs), macc[j]);
                acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[e]),
                                         _mm512_mul_ps(_mm512_mul_ps(sc, dw), _mm512_set1_ps(d[c0 + j])), acc[j]);
            }
        }
    }
    float a[16], m[16];
    hsum8_rows(acc, a);
    hsum8_rows(macc, m);
    for (int r = 0; r < 16; r++) out[r] = a[r] - m[r];
}

// Q4_K, 16 rows x n columns: each chunk's weights and scales unpacked once for every column;
// column j's steps are tg_dot16_q4_k_packed's (out[16 j + r] its out[r] bit for bit), its
// 8 + 8 float lanes per row in acc (256 floats per column) between superblocks.
void tg_dot16xn_q4_k_packed(int64_t K, const uint8_t *gb, int n, const uint8_t *const *acts,
                            const uint8_t *split, float *acc, float *out) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int j = 0; j < 16 * n; j++) _mm512_storeu_ps(acc + 16 * j, _mm512_setzero_ps());
    for (int64_t i = 0; i < K; i += 256) {
        const uint8_t *b = gb + 2304 * (i / 256);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)b));
        const __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(b + 32)));
        __m512i u[4];
        q4_k_scales(b, u);
        const int64_t c0 = i / 32;
        for (int h = 0; h < 4; h++) {
            tg_prefetch_l2(b + 4 * 2304, 9 * h, 9);            // a quarter of its 36 lines
            __m512i wl[8], wh[8];
            for (int t = 0; t < 8; t++) {
                const __m512i x = _mm512_loadu_si512((const void *)(b + 256 + 64 * (8 * h + t)));
                wl[t] = _mm512_and_si512(x, m4);
                wh[t] = _mm512_and_si512(_mm512_srli_epi16(x, 4), m4);
            }
            __m512 scw[2], mnw[2];
            for (int e = 0; e < 2; e++) {
                const int jj = 2 * h + e;
                const __m512 sc = q4_k_byte(u[jj / 4], jj % 4), mn = q4_k_byte(u[2 + jj / 4], jj % 4);
                scw[e] = _mm512_mul_ps(sc, dw);
                mnw[e] = _mm512_mul_ps(mn, dmin);
            }
            for (int j = 0; j < n; j++) {
                const uint8_t *lo = split + TG_SPLIT_BYTES(K) * j + i + 64 * h;
                const int8_t *hi = (const int8_t *)lo + K;
                const float *d = (const float *)(acts[j] + 2 * K), *ds = d + K / 32;
                __m512i sl0 = _mm512_setzero_si512(), sh0 = sl0, sl1 = sl0, sh1 = sl0;
                for (int t = 0; t < 8; t++) {
                    sl0 = _mm512_dpbusd_epi32(sl0, bcast4(lo + 4 * t), wl[t]);
                    sh0 = _mm512_dpbusd_epi32(sh0, wl[t], bcast4(hi + 4 * t));
                    sl1 = _mm512_dpbusd_epi32(sl1, bcast4(lo + 4 * t + 32), wh[t]);
                    sh1 = _mm512_dpbusd_epi32(sh1, wh[t], bcast4(hi + 4 * t + 32));
                }
                const __m512i s[2] = {_mm512_add_epi32(_mm512_slli_epi32(sh0, 8), sl0),
                                      _mm512_add_epi32(_mm512_slli_epi32(sh1, 8), sl1)};
                for (int e = 0; e < 2; e++) {
                    const int jj = 2 * h + e;
                    float *a = acc + 256 * j + 16 * jj, *m = a + 128;
                    const float pairs = ds[2 * (c0 + jj)] + ds[2 * (c0 + jj) + 1];
                    _mm512_storeu_ps(m, _mm512_fmadd_ps(mnw[e], _mm512_set1_ps(pairs), _mm512_loadu_ps(m)));
                    _mm512_storeu_ps(a, _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[e]),
                                                        _mm512_mul_ps(scw[e], _mm512_set1_ps(d[c0 + jj])),
                                                        _mm512_loadu_ps(a)));
                }
            }
        }
    }
    for (int j = 0; j < n; j++) {
        __m512 v[8], w[8];
        float a[16], m[16];
        for (int l = 0; l < 8; l++) {
            v[l] = _mm512_loadu_ps(acc + 256 * j + 16 * l);
            w[l] = _mm512_loadu_ps(acc + 256 * j + 128 + 16 * l);
        }
        hsum8_rows(v, a);
        hsum8_rows(w, m);
        for (int r = 0; r < 16; r++) out[16 * j + r] = a[r] - m[r];
    }
}

// lane l's share (7 of 53 lines) of the packed Q6_K superblock four ahead (tg_prefetch_l2)
static inline __attribute__((always_inline)) void tg_q6_k_prefetch(const uint8_t *b, int l) {
    tg_prefetch_l2(b + 4 * 3360, 7 * l, TG_MIN(7, 53 - 7 * l));
}

// a packed Q6_K superblock's 16 int8 scales, 16 rows per register: as int16 pairs [scale, 0]
// (sv, for vpdpwssd) and as floats (sf)
static inline __attribute__((always_inline)) void q6_k_scales(const uint8_t *b, __m512i sv[16], __m512 sf[16]) {
    for (int g = 0; g < 16; g++) {
        const __m512i x = _mm512_loadu_si512((const void *)(b + 3072 + 64 * (g / 4)));
        const __m512i s = _mm512_srai_epi32(_mm512_slli_epi32(x, 24 - 8 * (g % 4)), 24);
        sf[g] = _mm512_cvtepi32_ps(s);
        sv[g] = _mm512_and_si512(s, _mm512_set1_epi32(0xFFFF));
    }
}

// lane l of half h of a packed Q6_K superblock: values 32 k + 4 l.. (k = 0-3) of 16 rows as
// unsigned 6-bit bytes, w[k]
static inline __attribute__((always_inline)) void q6_k_weights(const uint8_t *b, int l, int h, __m512i w[4]) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    const __m512i L0 = _mm512_loadu_si512((const void *)(b + 64 * (16 * h + l)));
    const __m512i L1 = _mm512_loadu_si512((const void *)(b + 64 * (16 * h + 8 + l)));
    const __m512i H = _mm512_loadu_si512((const void *)(b + 64 * (32 + 8 * h + l)));
    w[0] = _mm512_or_si512(_mm512_and_si512(L0, m4), _mm512_and_si512(_mm512_slli_epi16(H, 4), m30));
    w[1] = _mm512_or_si512(_mm512_and_si512(L1, m4), _mm512_and_si512(_mm512_slli_epi16(H, 2), m30));
    w[2] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(L0, 4), m4), _mm512_and_si512(H, m30));
    w[3] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(L1, 4), m4),
                           _mm512_and_si512(_mm512_srli_epi16(H, 2), m30));
}

// Q6_K x QACT_K: a packed superblock of 16 rows is 3360 bytes: ql as 32 granules, qh as 16,
// the 16 int8 scales as 4, then d (16 f16). As tg_dot_q6_k_kact: lane l (values 4l..4l+3 of
// every 32) sums scale * (4 products) over the superblock in int32, hi and lo apart; then
// 256 hi + lo and the -32 offset in float, into lane l.
void tg_dot16_q6_k_packed(int64_t K, const uint8_t *gb, const uint8_t *act, float out[16]) {
    const float *d = (const float *)(act + 2 * K), *qs = d + K / 256;
    const __m512i zero = _mm512_setzero_si512();
    __m512 acc[8];
    for (int j = 0; j < 8; j++) acc[j] = _mm512_setzero_ps();
    for (int64_t i = 0; i < K; i += 256) {
        const int64_t sb = i / 256;
        const uint8_t *b = gb + 3360 * sb;
        const int8_t *ah = (const int8_t *)act + 2 * i, *al = ah + 256;
        __m512i sv[16];
        __m512 sf[16];
        q6_k_scales(b, sv, sf);
        const __m512 dd = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(b + 3328))),
                                        _mm512_set1_ps(d[sb]));
        for (int l = 0; l < 8; l++) {
            tg_q6_k_prefetch(b, l);
            __m512i sh = zero, sl = zero;
            for (int h = 0; h < 2; h++) {
                __m512i w[4];
                q6_k_weights(b, l, h, w);
                for (int k = 0; k < 4; k++) {
                    const int g = 8 * h + 2 * k + (l >= 4);
                    const int64_t v = 128 * h + 32 * k + 4 * l;
                    sh = _mm512_dpwssd_epi32(sh, _mm512_dpbusd_epi32(zero, w[k], bcast4(ah + v)), sv[g]);
                    sl = _mm512_dpwssd_epi32(sl, _mm512_dpbusd_epi32(zero, w[k], bcast4(al + v)), sv[g]);
                }
            }
            const __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sh), _mm512_set1_ps(256.0f), _mm512_cvtepi32_ps(sl));
            const __m512 off = _mm512_fmadd_ps(sf[l], _mm512_set1_ps(qs[16 * sb + l]),
                                               _mm512_mul_ps(sf[8 + l], _mm512_set1_ps(qs[16 * sb + 8 + l])));
            acc[l] = _mm512_fmadd_ps(_mm512_fnmadd_ps(_mm512_set1_ps(32.0f), off, v), dd, acc[l]);
        }
    }
    hsum8_rows(acc, out);
}
// Q6_K, 16 rows x n QACT_K columns: each superblock's scales and each lane's weights unpacked
// once for every column; column j's steps are tg_dot16_q6_k_packed's (out[16 j + r] its out[r]
// bit for bit), its 8 float lanes per row in acc (128 floats per column) between superblocks.
void tg_dot16xn_q6_k_packed(int64_t K, const uint8_t *gb, int n, const uint8_t *const *acts,
                            float *acc, float *out) {
    const __m512i zero = _mm512_setzero_si512();
    for (int j = 0; j < 8 * n; j++) _mm512_storeu_ps(acc + 16 * j, _mm512_setzero_ps());
    for (int64_t i = 0; i < K; i += 256) {
        const int64_t sb = i / 256;
        const uint8_t *b = gb + 3360 * sb;
        __m512i sv[16];
        __m512 sf[16];
        q6_k_scales(b, sv, sf);
        const __m512 dh = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(b + 3328)));
        for (int l = 0; l < 8; l++) {
            tg_q6_k_prefetch(b, l);
            __m512i w[2][4];
            for (int h = 0; h < 2; h++) {
                q6_k_weights(b, l, h, w[h]);
            }
            for (int j = 0; j < n; j++) {
                const float *d = (const float *)(acts[j] + 2 * K), *qs = d + K / 256;
                const int8_t *ah = (const int8_t *)acts[j] + 2 * i, *al = ah + 256;
                __m512i sh = zero, sl = zero;
                for (int h = 0; h < 2; h++)
                    for (int k = 0; k < 4; k++) {
                        const int g = 8 * h + 2 * k + (l >= 4);
                        const int64_t v = 128 * h + 32 * k + 4 * l;
                        sh = _mm512_dpwssd_epi32(sh, _mm512_dpbusd_epi32(zero, w[h][k], bcast4(ah + v)), sv[g]);
                        sl = _mm512_dpwssd_epi32(sl, _mm512_dpbusd_epi32(zero, w[h][k], bcast4(al + v)), sv[g]);
                    }
                const __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sh), _mm512_set1_ps(256.0f), _mm512_cvtepi32_ps(sl));
                const __m512 off = _mm512_fmadd_ps(sf[l], _mm512_set1_ps(qs[16 * sb + l]),
                                                   _mm512_mul_ps(sf[8 + l], _mm512_set1_ps(qs[16 * sb + 8 + l])));
                const __m512 dd = _mm512_mul_ps(dh, _mm512_set1_ps(d[sb]));
                float *a = acc + 128 * j + 16 * l;
                _mm512_storeu_ps(a, _mm512_fmadd_ps(_mm512_fnmadd_ps(_mm512_set1_ps(32.0f), off, v), dd,
                                                    _mm512_loadu_ps(a)));
            }
        }
    }
    for (int j = 0; j < n; j++) {
        __m512 v[8];
        for (int l = 0; l < 8; l++) v[l] = _mm512_loadu_ps(acc + 128 * j + 16 * l);
        hsum8_rows(v, out + 16 * j);
    }
}
#endif

#if defined(TG_AVX2) && !defined(TG_AVX512)
// ---- AVX2 without VNNI: the same layout met 8 rows per register -------------------------------
// Q4_0 and Q4_K. A group's granule of 64 bytes is two 32-byte halves of 8 rows each; each block
// (superblock) is met by both halves in turn while its lines are in L1. vpmaddubsw stands in for vpdpbusd: its int16 pair sums saturate, so they
// are added in int16 only as far as they cannot (a pair of nibbles u <= 15 times a high byte:
// |2 * 15 * 128| = 3840, 8 of them 30720; times a low byte <= 255: 7650, 4 of them 30600), then
// widened to int32 by vpmaddwd with ones, where row r's two int16 lanes become its int32 lane.
// The integer sums are exact and the float steps those of the AVX2 one-row dots in quants.c
// lane for lane, so each row gets its one-row dot bit for bit. TG_KEEP holds the int16 sums in
// registers granule by granule (else GCC spills every product: 20-30% slower).

static inline __m256i bcast4_8(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

// the rows' float lanes a[0..7] summed as tg_hsum256 sums one row's 8 lanes
static inline void hsum8_rows8(const __m256 a[8], float out[8]) {
    const __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a[0], a[4]), _mm256_add_ps(a[1], a[5])),
                                   _mm256_add_ps(_mm256_add_ps(a[2], a[6]), _mm256_add_ps(a[3], a[7])));
    _mm256_storeu_ps(out, s);
}

// as the AVX-512 tg_qact_split above
void tg_qact_split(const uint8_t *act, int64_t K, uint8_t *lo, int8_t *hi, int32_t *hsum) {
    const int16_t *q = (const int16_t *)act;
    const __m256i ff = _mm256_set1_epi16(0xFF), ones = _mm256_set1_epi16(1);
    for (int64_t k = 0; k < K; k += 32) {
        const __m256i v0 = _mm256_loadu_si256((const __m256i *)(q + k));
        const __m256i v1 = _mm256_loadu_si256((const __m256i *)(q + k + 16));
        const __m256i h0 = _mm256_srai_epi16(v0, 8), h1 = _mm256_srai_epi16(v1, 8);
        // the packs interleave 128-bit lanes (v0 lo, v1 lo, v0 hi, v1 hi): 0xD8 restores k order
        const __m256i l = _mm256_packus_epi16(_mm256_and_si256(v0, ff), _mm256_and_si256(v1, ff));
        const __m256i h = _mm256_packs_epi16(h0, h1);
        _mm256_storeu_si256((__m256i *)(lo + k), _mm256_permute4x64_epi64(l, 0xD8));
        _mm256_storeu_si256((__m256i *)(hi + k), _mm256_permute4x64_epi64(h, 0xD8));
        const __m256i s = _mm256_add_epi32(_mm256_madd_epi16(h0, ones), _mm256_madd_epi16(h1, ones));
        const __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        const __m128i s2 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
        hsum[k / 32] = _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 1)));
    }
}

// Q4_0 block at b, half h (rows 8h..8h+7) times one column's bytes lo / hi of that block: each
// row's exact sum(u q)
static inline __attribute__((always_inline)) __m256i q4_0_block8(const uint8_t *b, int h, const uint8_t *lo,
                                                                const int8_t *hi) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256i L[2], H = _mm256_setzero_si256();
    for (int t = 0; t < 4; t++) {
        const __m256i x = _mm256_loadu_si256((const __m256i *)(b + 32 + 64 * t + 32 * h));
        const __m256i wl = _mm256_and_si256(x, m4);
        const __m256i wh = _mm256_and_si256(_mm256_srli_epi16(x, 4), m4);
        const __m256i l = _mm256_add_epi16(_mm256_maddubs_epi16(bcast4_8(lo + 4 * t), wl),
                                           _mm256_maddubs_epi16(bcast4_8(lo + 4 * t + 16), wh));
        L[t / 2] = t % 2 ? _mm256_add_epi16(L[t / 2], l) : l;
        H = _mm256_add_epi16(H, _mm256_add_epi16(_mm256_maddubs_epi16(wl, bcast4_8(hi + 4 * t)),
                                                 _mm256_maddubs_epi16(wh, bcast4_8(hi + 4 * t + 16))));
        TG_KEEP(L[t / 2]);
        TG_KEEP(H);
    }
    const __m256i ones = _mm256_set1_epi16(1);
    return _mm256_add_epi32(_mm256_slli_epi32(_mm256_madd_epi16(H, ones), 8),
                            _mm256_add_epi32(_mm256_madd_epi16(L[0], ones), _mm256_madd_epi16(L[1], ones)));
}

// Q4_0, 16 rows x one column: as tg_dot_q4_0_qact (AVX2), per block d_a * sum(u q) - 8 d_a
// sum(q) times d_w into lane c % 8, the blocks past the last 8 through the one-row tail
void tg_dot16_q4_0_packed(int64_t K, const uint8_t *gb, const uint8_t *act, const uint8_t *lo,
                          const int8_t *hi, float out[16]) {
    const int64_t nb = K / 32, nb8 = nb / 8 * 8;
    const float *d = (const float *)(act + 2 * K), *ds = d + K / 32;
    __m256 acc[2][8];           // in memory: 16 registers would leave none for the products
    for (int j = 0; j < 8; j++) acc[0][j] = acc[1][j] = _mm256_setzero_ps();
    for (int64_t c = 0; c < nb8; c++) {
        const uint8_t *b = gb + 288 * c;
        for (int l = 0; l < 288; l += 64) _mm_prefetch((const char *)(b + 2048 + l), _MM_HINT_T0);
        const __m256 dc = _mm256_set1_ps(d[c]), qs = _mm256_set1_ps(ds[2 * c] + ds[2 * c + 1]);
        for (int h = 0; h < 2; h++) {
            const __m256i s = q4_0_block8(b, h, lo + 32 * c, hi + 32 * c);
            const __m256 blk = _mm256_fnmadd_ps(_mm256_set1_ps(8.0f), qs, _mm256_mul_ps(_mm256_cvtepi32_ps(s), dc));
            const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + 16 * h)));
            acc[h][c % 8] = _mm256_fmadd_ps(blk, dw, acc[h][c % 8]);
        }
    }
    hsum8_rows8(acc[0], out);
    hsum8_rows8(acc[1], out + 8);
    q4_0_tail(K, gb, act, nb8, out);
}

// a packed Q4_K superblock's 6-bit scales and mins for half h: as q4_k_scales (AVX-512), 8 rows
static inline __attribute__((always_inline)) void q4_k_scales8(const uint8_t *b, int h, __m256i u[4]) {
    const __m256i k1 = _mm256_set1_epi32(0x3f3f3f3f), k2 = _mm256_set1_epi32(0x0f0f0f0f),
                  k3 = _mm256_set1_epi32(0x03030303);
    u[0] = _mm256_loadu_si256((const __m256i *)(b + 64 + 32 * h));
    u[1] = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * h));
    u[2] = _mm256_loadu_si256((const __m256i *)(b + 192 + 32 * h));
    u[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(u[2], 4), k2),
                           _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u[1], 6), k3), 4));
    const __m256i mins_lo = _mm256_and_si256(u[1], k1);
    u[1] = _mm256_or_si256(_mm256_and_si256(u[2], k2),
                           _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u[0], 6), k3), 4));
    u[2] = mins_lo;
    u[0] = _mm256_and_si256(u[0], k1);
}

// Q4_K chunk pair g of half h (at q: 8 granules 64 bytes apart) times one column's bytes lo / hi
// of those 64 values: each row's exact sum(u q) of chunk 2g (low nibbles) and 2g + 1 (high)
static inline __attribute__((always_inline)) void q4_k_pair8(const uint8_t *q, const uint8_t *lo,
                                                            const int8_t *hi, __m256i s[2]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    __m256i La[2], Lb[2], Ha = _mm256_setzero_si256(), Hb = Ha;
    for (int t = 0; t < 8; t++) {
        const __m256i x = _mm256_loadu_si256((const __m256i *)(q + 64 * t));
        const __m256i wl = _mm256_and_si256(x, m4);
        const __m256i wh = _mm256_and_si256(_mm256_srli_epi16(x, 4), m4);
        const __m256i a = _mm256_maddubs_epi16(bcast4_8(lo + 4 * t), wl);
        const __m256i c = _mm256_maddubs_epi16(bcast4_8(lo + 4 * t + 32), wh);
        La[t / 4] = t % 4 ? _mm256_add_epi16(La[t / 4], a) : a;
        Lb[t / 4] = t % 4 ? _mm256_add_epi16(Lb[t / 4], c) : c;
        Ha = _mm256_add_epi16(Ha, _mm256_maddubs_epi16(wl, bcast4_8(hi + 4 * t)));
        Hb = _mm256_add_epi16(Hb, _mm256_maddubs_epi16(wh, bcast4_8(hi + 4 * t + 32)));
        TG_KEEP(La[t / 4]);
        TG_KEEP(Lb[t / 4]);
        TG_KEEP(Ha);
        TG_KEEP(Hb);
    }
    s[0] = _mm256_add_epi32(_mm256_slli_epi32(_mm256_madd_epi16(Ha, ones), 8),
                            _mm256_add_epi32(_mm256_madd_epi16(La[0], ones), _mm256_madd_epi16(La[1], ones)));
    s[1] = _mm256_add_epi32(_mm256_slli_epi32(_mm256_madd_epi16(Hb, ones), 8),
                            _mm256_add_epi32(_mm256_madd_epi16(Lb[0], ones), _mm256_madd_epi16(Lb[1], ones)));
}

// Q4_K, 16 rows x one column: as tg_dot_q4_k_qact, chunk j's sum(u q) times (scale_j d_w) d_a
// into lane j, the mins times the activation half sums into another 8 lanes, the two summed
// apart and subtracted. Per superblock and half, the 8 chunks' scale_j d_w and min_j dmin are
// made first (16 vectors, in memory).
void tg_dot16_q4_k_packed(int64_t K, const uint8_t *gb, const uint8_t *act, const uint8_t *lo,
                          const int8_t *hi, float out[16]) {
    const float *d = (const float *)(act + 2 * K), *ds = d + K / 32;
    __m256 acc[2][8], macc[2][8];
    for (int j = 0; j < 8; j++) acc[0][j] = acc[1][j] = macc[0][j] = macc[1][j] = _mm256_setzero_ps();
    for (int64_t i = 0; i < K; i += 256) {
        const uint8_t *b = gb + 2304 * (i / 256);
        const int64_t c0 = i / 32;
        for (int h = 0; h < 2; h++) {
            tg_prefetch_l2(b + 4 * 2304, 18 * h, 18);         // half of its 36 lines
            const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + 16 * h)));
            const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + 32 + 16 * h)));
            __m256i u[4];
            q4_k_scales8(b, h, u);
            __m256 scw[8], mnw[8];
            for (int j = 0; j < 8; j++) {
                const __m256i m8 = _mm256_set1_epi32(0xFF);
                scw[j] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(u[j / 4], 8 * (j % 4)), m8)), dw);
                mnw[j] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(u[2 + j / 4], 8 * (j % 4)), m8)), dmin);
            }
            for (int g = 0; g < 4; g++) {       // chunks 2g (low nibbles) and 2g + 1 (high)
                __m256i s[2];
                q4_k_pair8(b + 256 + 64 * 8 * g + 32 * h, lo + i + 64 * g, hi + i + 64 * g, s);
                for (int e = 0; e < 2; e++) {
                    const int j = 2 * g + e;
                    const float pairs = ds[2 * (c0 + j)] + ds[2 * (c0 + j) + 1];
                    macc[h][j] = _mm256_fmadd_ps(mnw[j], _mm256_set1_ps(pairs), macc[h][j]);
                    acc[h][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[e]),
                                                _mm256_mul_ps(scw[j], _mm256_set1_ps(d[c0 + j])), acc[h][j]);
                }
            }
        }
    }
    float a[16], m[16];
    for (int h = 0; h < 2; h++) {
        hsum8_rows8(acc[h], a + 8 * h);
        hsum8_rows8(macc[h], m + 8 * h);
    }
    for (int r = 0; r < 16; r++) out[r] = a[r] - m[r];
}

// n columns: each column through its one-column dot in turn (the group's rows stay in L1 or L2
// between columns); out[16 j + r] is row r's one-row dot with column j
typedef void (*tg_dot16_fn)(int64_t K, const uint8_t *gb, const uint8_t *act, const uint8_t *lo,
                            const int8_t *hi, float out[16]);

static void each_column(tg_dot16_fn dot, int64_t K, const uint8_t *gb, int n, const uint8_t *const *acts,
                        const uint8_t *split, float *out) {
    for (int j = 0; j < n; j++) {
        const uint8_t *lo = split + TG_SPLIT_BYTES(K) * j;
        dot(K, gb, acts[j], lo, (const int8_t *)lo + K, out + 16 * j);
    }
}

void tg_dot16xn_q4_0_packed(int64_t K, const uint8_t *gb, int n, const uint8_t *const *acts,
                            const uint8_t *split, float *acc, float *out) {
    (void)acc;
    each_column(tg_dot16_q4_0_packed, K, gb, n, acts, split, out);
}

void tg_dot16xn_q4_k_packed(int64_t K, const uint8_t *gb, int n, const uint8_t *const *acts,
                            const uint8_t *split, float *acc, float *out) {
    (void)acc;
    each_column(tg_dot16_q4_k_packed, K, gb, n, acts, split, out);
}
#endif
