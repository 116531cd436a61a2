// Graph executor: one OpenMP parallel region per graph run, a barrier between nodes.
// The node list holds only nodes that compute (views are removed by the planner).
#include "tg.h"
#ifdef _OPENMP
#include <omp.h>
#endif

int tg_simd_enabled = 1;

int tg_simd_compiled(void) {
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    return 1;
#else
    return 0;
#endif
}

int tg_int_gemm_compiled(void) {
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && defined(__AVX512F__) && \
    defined(__AVX512VL__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
    return 2;   // TG_AVX512 in simd.h: tg_mul_mat_qpanels with vpdpwssd
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    return 1;   // TG_AVX2: tg_mul_mat_qpanels with vpmaddwd + vpaddd
#else
    return 0;
#endif
}

int tg_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

void tg_graph_compute(tg_tensor **nodes, int n_nodes, int n_threads, char *wdata, size_t wsize,
                      double *times) {
#ifdef _OPENMP
    #pragma omp parallel num_threads(n_threads)
    {
        tg_params p;
        p.ith = omp_get_thread_num();
        p.nth = omp_get_num_threads();
        p.wdata = wdata + (size_t)p.ith * wsize;
        p.wsize = wsize;
        for (int i = 0; i < n_nodes; i++) {
            tg_compute_forward(&p, nodes[i]);
            #pragma omp barrier
            if (times && p.ith == 0) times[i] = omp_get_wtime();   // profiling: node end times
        }
    }
#else
    (void)n_threads;
    (void)times;
    tg_params p = {0, 1, wdata, wsize};
    for (int i = 0; i < n_nodes; i++) tg_compute_forward(&p, nodes[i]);
#endif
}

double tg_time_now(void) {
#ifdef _OPENMP
    return omp_get_wtime();
#else
    return 0.0;
#endif
}

// Streaming read bandwidth (bytes/s) of n floats with n_threads, best of reps: the roofline
// reference for decode speed (benchmarks only). streams = 4 reads each thread's range in 4
// quarters side by side, as the decode dots read weight rows (simd.h tg_dot_rows4_*): one
// stream per core does not reach the machine's bandwidth (the reference would flatter any
// reader of several streams); streams = 1 reads it front to back.
#include "simd.h"
double tg_read_bandwidth(const float *buf, int64_t n, int n_threads, int reps, int streams, float *sink) {
    double best = 0.0;
    for (int r = 0; r < reps; r++) {
        float total = 0.0f;
#ifdef _OPENMP
        const double t0 = omp_get_wtime();
        #pragma omp parallel num_threads(n_threads) reduction(+:total)
        {
            const int ith = omp_get_thread_num(), nth = omp_get_num_threads();
#else
        const double t0 = 0.0;
        {
            const int ith = 0, nth = 1;
#endif
            const int64_t dr = (n + nth - 1) / nth, i0 = TG_MIN(dr * ith, n), i1 = TG_MIN(i0 + dr, n);
            if (streams == 4) {
                const int64_t q = (i1 - i0) / 4;
                const float *x[4] = {buf + i0, buf + i0 + q, buf + i0 + 2 * q, buf + i0 + 3 * q};
                float out[4];
                tg_dot_rows4_f32(q, x, buf + i0, out);
                const float *rest = buf + i0 + 4 * q;
                total += out[0] + out[1] + out[2] + out[3] + tg_dot_f32(i1 - i0 - 4 * q, rest, rest);
            } else {
                total += tg_dot_f32(i1 - i0, buf + i0, buf + i0);
            }
        }
#ifdef _OPENMP
        const double dt = omp_get_wtime() - t0;
        if (dt > 0 && n * 4.0 / dt > best) best = n * 4.0 / dt;
#endif
        *sink += total;
    }
    return best;
}
