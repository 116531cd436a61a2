# Extern-only declarations of the C backend (kernels/tg.h); no matching .pyx.
from libc.stdint cimport int32_t, int64_t, uint8_t

cdef extern from "tg.h" nogil:
    enum:
        TG_MAX_SRC
        TG_MAX_PARAMS

    ctypedef struct tg_tensor:
        int32_t type
        int32_t op
        int32_t packed
        int64_t ne[4]
        int64_t nb[4]
        tg_tensor *src[TG_MAX_SRC]
        int32_t op_params[TG_MAX_PARAMS]
        char *data

    int tg_simd_enabled
    int tg_attn_wide
    int tg_simd_compiled()
    int tg_int_gemm_compiled()
    int tg_pack_supported(int type)
    int tg_cpu_vendor()
    int tg_amx_ready()
    int tg_packed_max_cols()
    void tg_pack_rows(int type, const uint8_t *src, int64_t K, int64_t M, uint8_t *dst, int n_threads)
    int tg_mul_mat_path(const tg_tensor *dst)
    int tg_type_info(int type, const char **name, int64_t *blck_size, int64_t *type_size,
                     int *is_quantized)
    int tg_max_threads()
    double tg_read_bandwidth(const float *buf, int64_t n, int n_threads, int reps, int streams, float *sink)
    void tg_graph_compute(tg_tensor **nodes, int n_nodes, int n_threads, char *wdata, size_t wsize,
                          double *times)
    double tg_time_now()
    long tg_spin_ns
