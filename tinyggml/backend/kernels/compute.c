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

int tg_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

void tg_graph_compute(tg_tensor **nodes, int n_nodes, int n_threads, char *wdata, size_t wsize) {
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
        }
    }
#else
    (void)n_threads;
    tg_params p = {0, 1, wdata, wsize};
    for (int i = 0; i < n_nodes; i++) tg_compute_forward(&p, nodes[i]);
#endif
}
