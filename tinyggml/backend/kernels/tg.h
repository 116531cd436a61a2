// tinyggml CPU backend: the C side of a compiled graph.
//
// A plan is a flat array of tg_tensor structs (leafs and nodes) plus the list of nodes in
// execution order. tg_graph_compute() runs all nodes inside one OpenMP parallel region; each
// kernel splits its own work by p->ith / p->nth (ggml style) and a barrier separates nodes.
// Kernels never allocate: per-thread scratch comes from p->wdata (sized by the planner).
#ifndef TG_H
#define TG_H

#include <stddef.h>
#include <stdint.h>

// Tensor types: the GGUF / ggml numbering (gguf.GGMLQuantizationType).
enum tg_type {
    TG_TYPE_F32 = 0,
    TG_TYPE_F16 = 1,
    TG_TYPE_Q4_0 = 2,
    TG_TYPE_Q4_1 = 3,
    TG_TYPE_Q5_0 = 6,
    TG_TYPE_Q5_1 = 7,
    TG_TYPE_Q8_0 = 8,
    TG_TYPE_Q2_K = 10,
    TG_TYPE_Q3_K = 11,
    TG_TYPE_Q4_K = 12,
    TG_TYPE_Q5_K = 13,
    TG_TYPE_Q6_K = 14,
    TG_TYPE_I32 = 26,
    TG_TYPE_BF16 = 30,
    TG_TYPE_QACT = 1000,  // internal: activations quantized for integer dots (quants.c)
    TG_TYPE_QACT_K = 1001, // internal: split int16 activations for Q6_K decode dots (quants.c)
};

// Op ids. Keep in sync with tinyggml/ops.py (test_op_table_complete checks it).
enum tg_op {
    TG_OP_NONE = 0,      // leaf: weight, input or state (external data)
    TG_OP_VIEW,          // view / reshape / permute / transpose: metadata only, skipped
    TG_OP_CPY,           // dst = src0 (any strides, F32)
    TG_OP_GET_ROWS,      // dst[:, i] = src0[:, ids[i]]
    TG_OP_MUL_MAT,       // dst = src0^T @ src1 (ggml convention)
    TG_OP_ADD,           // dst = src0 + src1 (src1 broadcast)
    TG_OP_MUL,           // dst = src0 * src1 (src1 broadcast)
    TG_OP_SCALE,         // dst = src0 * s
    TG_OP_SILU,          // dst = src0 * sigmoid(src0)
    TG_OP_RMS_NORM,      // per row of ne0: src0 / sqrt(mean(src0^2) + eps)
    TG_OP_CONCAT,        // concatenate src0, src1 along dim op_params[0]
    TG_OP_SSM_CONV,      // causal depthwise conv over sequences, conv state updated in place
    TG_OP_SSM_SCAN,      // selective scan over sequences, ssm state updated in place
    TG_OP_GATE_SILU,     // dst = src0 * silu(src1)
    TG_OP_QUANTIZE,      // dst (QACT rows) = src0 (F32 rows), once per mul_mat with quantized weights
    TG_OP_ROPE,          // rotary position embedding by each token's position
    TG_OP_KV_STORE,      // keys / values of the ubatch into their sequences' cache, in place
    TG_OP_ATTN,          // causal attention of each token over its sequence's cache
    TG_OP_RELU_SQR,      // dst = max(src0, 0)^2
    TG_OP_GATE_SIGMOID,  // dst = src0 * sigmoid(src1)
    TG_OP_GATED_DELTA,   // gated delta rule over sequences (linear attention), state updated in place
    TG_OP_COUNT,
};

#define TG_MAX_SRC 10
#define TG_MAX_PARAMS 8

typedef struct tg_tensor {
    int32_t type;
    int32_t op;
    int32_t packed;      // a weight whose rows are repacked in groups of 16 (repack.c)
    int64_t ne[4];       // elements per dim, ne[0] innermost
    int64_t nb[4];       // byte strides
    struct tg_tensor *src[TG_MAX_SRC];
    int32_t op_params[TG_MAX_PARAMS];
    char *data;
} tg_tensor;

typedef struct tg_params {
    int ith, nth;        // this thread, number of threads
    char *wdata;         // this thread's scratch
    size_t wsize;        // bytes of scratch per thread
} tg_params;

// 1 = use the SIMD kernels where compiled in; 0 = force the portable scalar path.
extern int tg_simd_enabled;
extern int tg_attn_wide;       // attn: scores eight keys at a time, values in registers (1) or key by key
int tg_simd_compiled(void);   // 1 when built with AVX2+FMA+F16C
int tg_int_gemm_compiled(void);
// Weights repacked at load (repack.c): 1 when this build has the packed dots for `type`
int tg_pack_supported(int type);
int tg_cpu_vendor(void);      // 1 Intel, 2 AMD, 0 another or unknown (cpuid)
// 1 when this build has the AMX integer GEMM and the kernel lets the process use the tiles
// (asked once: arch_prctl ARCH_REQ_XCOMP_PERM); 0 otherwise
int tg_amx_ready(void);
// batches under this many columns take the repacked dots (0: this build has none)
int tg_packed_max_cols(void);
// M rows of K values of `type` at src -> the packed layout at dst (the same size)
void tg_pack_rows(int type, const uint8_t *src, int64_t K, int64_t M, uint8_t *dst, int n_threads);   // batched quantized mul_mat on integer panels: 2 VNNI, 1 AVX2, 0 none

// The kernels of a mul_mat node (mul_mat.c tg_mul_mat_path, which documents them).
typedef enum tg_mm_path {
    TG_MM_DECODE,      // one F32 / F16 column: 4 rows side by side
    TG_MM_QDOTS,       // QACT / QACT_K columns under 6: integer dots
    TG_MM_QPANELS,     // QACT batches: integer panels (SIMD)
    TG_MM_SMALL_F16,   // F16 rows, 2-9 columns: register tiles (SIMD)
    TG_MM_PANELS,      // float batches: packed 16 x 6 panels (SIMD)
    TG_MM_TILES,       // the portable build's batches: 4 x 3 dot tiles
    TG_MM_PACKED,      // repacked weights x QACT / QACT_K columns: 16-row VNNI dots (repack.c)
} tg_mm_path;
tg_mm_path tg_mul_mat_path(const tg_tensor *dst);

// What the kernels know of each tensor type (quants.c): see quants.h.
typedef struct tg_type_traits tg_type_traits;
const tg_type_traits *tg_get_type_traits(int type);
// name, block size and bytes per block of a type, for Python (0 when the kernels do not read it)
int tg_type_info(int type, const char **name, int64_t *blck_size, int64_t *type_size,
                 int *is_quantized);

void tg_compute_forward(const tg_params *p, tg_tensor *dst);
// times: NULL, or n_nodes doubles that receive each node's end time (profiling)
void tg_graph_compute(tg_tensor **nodes, int n_nodes, int n_threads,
                      char *wdata, size_t wsize_per_thread, double *times);
double tg_time_now(void);
// how long a thread that reaches the barrier between nodes early spins before it sleeps
extern long tg_spin_ns;
int tg_max_threads(void);
double tg_read_bandwidth(const float *buf, int64_t n, int n_threads, int reps, int streams, float *sink);

#endif
