// Graph executor: one OpenMP parallel region per graph run, a barrier between nodes.
// The node list holds only nodes that compute (views are removed by the planner).
#define _GNU_SOURCE
#include "tg.h"
#include <limits.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define TG_PAUSE() _mm_pause()
#else
#define TG_PAUSE() ((void)0)
#endif

int tg_simd_enabled = 1;
int tg_attn_wide = 1;

int tg_simd_compiled(void) {
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    return 1;
#else
    return 0;
#endif
}

int tg_cpu_vendor(void) {
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return 0;
    char v[13];
    memcpy(v, &b, 4);
    memcpy(v + 4, &d, 4);
    memcpy(v + 8, &c, 4);
    v[12] = 0;
    if (strcmp(v, "GenuineIntel") == 0) return 1;
    if (strcmp(v, "AuthenticAMD") == 0) return 2;
#endif
    return 0;
}

int tg_amx_ready(void) {
#if defined(__AMX_TILE__) && defined(__AMX_INT8__) && defined(__linux__) && defined(__AVX512VNNI__)
    static atomic_int state;         // 0 not asked, 1 granted, -1 refused
    int s = atomic_load(&state);
    if (s == 0) {
        // ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18): per process, idempotent
        s = syscall(SYS_arch_prctl, 0x1023, 18) == 0 ? 1 : -1;
        atomic_store(&state, s);
    }
    return s == 1;
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

// The barrier between nodes. A thread that arrives early spins for tg_spin_ns (the usual gap
// between threads finishing a node is a few microseconds), then sleeps on a futex until the last
// thread arrives. Sleeping matters on a shared machine: when another process has taken the core
// of a thread still working, a spinning waiter would hold its own core until the scheduler's
// next time slice, while a sleeping one leaves the core idle and the scheduler moves the
// preempted thread onto it. Without futexes (not Linux) the waiter yields instead of sleeping.
long tg_spin_ns = 50000;

// Each counter on its own cache line: the waiters poll phase while the others add to arrived.
typedef struct tg_barrier {
    _Alignas(64) atomic_int arrived;   // threads at the barrier in this phase
    _Alignas(64) atomic_int phase;     // bumped by the last thread to arrive: the futex word
    _Alignas(64) atomic_int sleepers;  // threads asleep on phase (woken only if any)
} tg_barrier;

static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void barrier_sleep(atomic_int *word, int value) {
#if defined(__linux__)
    syscall(SYS_futex, (int *)word, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
#else
    (void)word;
    (void)value;
    sched_yield();
#endif
}

static void barrier_wake(atomic_int *word) {
#if defined(__linux__)
    syscall(SYS_futex, (int *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#else
    (void)word;
#endif
}

static void tg_barrier_wait(tg_barrier *b, int nth) {
    if (nth == 1) return;
    const int phase = atomic_load_explicit(&b->phase, memory_order_acquire);
    if (atomic_fetch_add_explicit(&b->arrived, 1, memory_order_acq_rel) == nth - 1) {
        atomic_store_explicit(&b->arrived, 0, memory_order_relaxed);
        atomic_fetch_add(&b->phase, 1);                    // seq_cst: ordered before the load below
        if (atomic_load(&b->sleepers) > 0) barrier_wake(&b->phase);
        return;
    }
    if (tg_spin_ns > 0) {
        const int64_t until = now_ns() + tg_spin_ns;
        for (;;) {
            for (int i = 0; i < 32; i++) {
                if (atomic_load_explicit(&b->phase, memory_order_acquire) != phase) return;
                TG_PAUSE();
            }
            if (now_ns() > until) break;
        }
    }
    // seq_cst increment, then the phase check: either the last thread sees this sleeper and
    // wakes it, or this thread sees the new phase (the futex also refuses to sleep on a stale
    // value).
    atomic_fetch_add(&b->sleepers, 1);
    while (atomic_load(&b->phase) == phase) barrier_sleep(&b->phase, phase);
    atomic_fetch_sub(&b->sleepers, 1);
}

void tg_graph_compute(tg_tensor **nodes, int n_nodes, int n_threads, char *wdata, size_t wsize,
                      double *times) {
#ifdef _OPENMP
    tg_barrier barrier;
    atomic_init(&barrier.arrived, 0);
    atomic_init(&barrier.phase, 0);
    atomic_init(&barrier.sleepers, 0);
    #pragma omp parallel num_threads(n_threads)
    {
        tg_params p;
        p.ith = omp_get_thread_num();
        p.nth = omp_get_num_threads();
        p.wdata = wdata + (size_t)p.ith * wsize;
        p.wsize = wsize;
        for (int i = 0; i < n_nodes; i++) {
            tg_compute_forward(&p, nodes[i]);
            tg_barrier_wait(&barrier, p.nth);
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
