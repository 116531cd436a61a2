// Quantized weight types: unpack, dequantize, activation quantization, integer dot (quants.c).
#ifndef TG_QUANTS_H
#define TG_QUANTS_H
#include "simd.h"

typedef void (*tg_unpack_fn)(const uint8_t *block, int8_t *w, float *sc, float *mn);
// one weight row x one activation row (QACT or QACT_K) of K values
typedef float (*tg_dot_fn)(int64_t K, const void *row, const uint8_t *act);
// four weight rows x one activation row: out[r] equals the one-row dot of rows[r] bit for bit
typedef void (*tg_dot4_fn)(int64_t K, const void *const rows[4], const uint8_t *act, float out[4]);
// four weight rows x two activation rows: out[2 r + j] equals the one-row dot bit for bit
typedef void (*tg_dot2x4_fn)(int64_t K, const void *const rows[4], const uint8_t *act0,
                             const uint8_t *act1, float out[8]);

// What the kernels know of a tensor type (ggml's type_traits): its block, and for a quantized
// weight type how to unpack it and which fused dots it has. mul_mat.c picks among the dots; a
// type without fused dots goes through tg_unpack_row + tg_dot_unpacked_qact.
typedef struct tg_type_traits {
    const char *name;        // as gguf-py's GGMLQuantizationType, lower case
    int type;                // enum tg_type
    int64_t blck_size;       // values per block
    int64_t type_size;       // bytes per block
    int is_quantized;        // a weight type with an unpack function
    int has_min;             // its blocks carry a min / offset term
    int scale_group;         // values per weight scale: 16 or 32
    tg_unpack_fn unpack;     // a block -> x[i] = sc[i/16] * w[i] - mn[i/16]
    tg_dot_fn dot;           // QACT column, both paths
    tg_dot_fn dot_simd;      // QACT column, SIMD only (NULL in the portable build)
    tg_dot4_fn dot4;         // 4 rows x QACT column, both paths
    tg_dot4_fn dot4_simd;    // 4 rows x QACT column, SIMD only
    tg_dot2x4_fn dot2x4;     // 4 rows x 2 QACT columns, SIMD only ...
    int dot2x4_max_n;        // ... for batches under this many columns (above: the panels)
    tg_dot_fn kact_dot;      // QACT_K column (split int16: decode of Q6_K), both paths
    tg_dot4_fn kact_dot4;
} tg_type_traits;

const tg_type_traits *tg_get_type_traits(int type);   // NULL for a type the kernels do not read
int64_t tg_row_bytes(int type, int64_t n);   // bytes of n values (F32, F16, BF16; quantized: n % block == 0)
// K values of a quantized row -> int8 w[K], float sc[K/16], float mn[K/16]
void tg_unpack_row(int type, const void *row, int64_t K, int8_t *w, float *sc, float *mn);
// K values of a quantized or BF16 row -> float y[K] (w, sc, mn: scratch as above)
void tg_dequantize_row(int type, const void *row, int64_t K, float *y, int8_t *w, float *sc, float *mn);
// K floats -> one QACT row: int16 q[K] | float d[K/32] | float ds[K/16]  (K % 32 == 0)
void tg_quantize_act_row(const float *x, int64_t K, uint8_t *out);
// K floats -> one QACT_K row (K % 256 == 0): per superblock int8 hi[256] | lo[256] with
// q = 256 hi + lo, then float d[K/256], then float sums of q per 16 values
void tg_quantize_kact_row(const float *x, int64_t K, uint8_t *out);
float tg_dot_q6_k_kact(int64_t K, const void *row, const uint8_t *act);
float tg_dot_unpacked_qact(int64_t K, const int8_t *w, const float *sc, const float *mn,
                          const uint8_t *act, int has_min);
// fused row dots for the most common types (no unpack buffer)
float tg_dot_q4_0_qact(int64_t K, const void *row, const uint8_t *act);
float tg_dot_q8_0_qact(int64_t K, const void *row, const uint8_t *act);
// four rows x one QACT row: out[r] equals the one-row dot of rows[r] bit for bit
void tg_dot4_q4_0_qact(int64_t K, const void *const rows[4], const uint8_t *act, float out[4]);
void tg_dot4_q8_0_qact(int64_t K, const void *const rows[4], const uint8_t *act, float out[4]);
void tg_dot4_q6_k_kact(int64_t K, const void *const rows[4], const uint8_t *act, float out[4]);
// four Q4_0 rows x two QACT rows: out[2 r + j] equals tg_dot_q4_0_qact(K, rows[r], act_j) bit for bit
void tg_dot2x4_q4_0_qact(int64_t K, const void *const rows[4], const uint8_t *act0, const uint8_t *act1,
                         float out[8]);
// four Q8_0 rows x two QACT rows: out[2 r + j] equals tg_dot_q8_0_qact(K, rows[r], act_j) bit for bit
void tg_dot2x4_q8_0_qact(int64_t K, const void *const rows[4], const uint8_t *act0, const uint8_t *act1,
                         float out[8]);
#ifdef TG_AVX2
float tg_dot_q4_k_qact(int64_t K, const void *row, const uint8_t *act);   // SIMD only
float tg_dot_q6_k_qact(int64_t K, const void *row, const uint8_t *act);
void tg_dot4_q4_k_qact(int64_t K, const void *const rows[4], const uint8_t *act, float out[4]);
// four Q4_K rows x two QACT rows: out[2 r + j] equals tg_dot_q4_k_qact(K, rows[r], act_j) bit for bit
void tg_dot2x4_q4_k_qact(int64_t K, const void *const rows[4], const uint8_t *act0, const uint8_t *act1,
                         float out[8]);
#endif
#ifdef TG_AVX2
// repack.c (AVX2 builds: Q4_0 and Q4_K; AVX-512 VNNI builds: also Q8_0 and Q6_K): 16 packed rows (the group at gb) x one QACT column (lo / hi: its bytes, tg_qact_split)
// or QACT_K column -> out[16], each bit for bit the row's one-row dot above
// (and hsum: the high bytes' sum per block of 32); a column's split takes TG_SPLIT_BYTES(K)
#define TG_SPLIT_BYTES(K) (2 * (K) + (K) / 8)
void tg_qact_split(const uint8_t *act, int64_t K, uint8_t *lo, int8_t *hi, int32_t *hsum);
void tg_dot16_q4_0_packed(int64_t K, const uint8_t *gb, const uint8_t *act, const uint8_t *lo,
                          const int8_t *hi, float out[16]);
void tg_dot16_q4_k_packed(int64_t K, const uint8_t *gb, const uint8_t *act, const uint8_t *lo,
                          const int8_t *hi, float out[16]);
void tg_dot16_q6_k_packed(int64_t K, const uint8_t *gb, const uint8_t *act, float out[16]);
// 16 packed rows x n columns (activations at acts[j], split bytes at split + TG_SPLIT_BYTES(K) j):
// out[16 j + r] (16 n floats) is row r's one-row dot with column j, bit for bit; acc: scratch
// of 256 n floats
void tg_dot16xn_q4_0_packed(int64_t K, const uint8_t *gb, int n, const uint8_t *const *acts,
                            const uint8_t *split, float *acc, float *out);
void tg_dot16xn_q8_0_packed(int64_t K, const uint8_t *gb, int n, const uint8_t *const *acts,
                            const uint8_t *split, float *acc, float *out);
void tg_dot16xn_q4_k_packed(int64_t K, const uint8_t *gb, int n, const uint8_t *const *acts,
                            const uint8_t *split, float *acc, float *out);
void tg_dot16xn_q6_k_packed(int64_t K, const uint8_t *gb, int n, const uint8_t *const *acts,
                            float *acc, float *out);
#endif
#endif
