// Peak arithmetic of this machine, the compute roofline for prompt processing:
// FP32 FMA (the float GEMM) and the integer GEMM of quantized batches: vpmaddwd + vpaddd
// (int16 pairs into int32, AVX2) and, where the CPU has AVX-512 VNNI, vpdpwssd, each as 12
// independent chains per thread.
//
//   gcc -O2 -march=native -fopenmp tools/peak_compute.c -o peak_compute && ./peak_compute 2
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define ITERS 400000000L   // per thread, in steps of 12 instructions

// 12 accumulators in named variables (an array would live in memory); the empty asm keeps
// the compiler from folding the chains
#define X12(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11)
#define KEEP() __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5), \
                                "+x"(a6), "+x"(a7), "+x"(a8), "+x"(a9), "+x"(a10), "+x"(a11))

// lane 0 of an accumulator sum (kept in a sink so the chains are not dead code)
static inline int lane0_epi32(__m256i v) { return _mm_cvtsi128_si32(_mm256_castsi256_si128(v)); }

// G operations per second over nth threads that each did per_thread since t0
static double giga_per_s(int nth, double per_thread, double t0) {
    return nth * per_thread / (omp_get_wtime() - t0) / 1e9;
}

static double best_of_3(double (*rate)(int), int nth) {
    double best = 0.0;
    for (int r = 0; r < 3; r++) { const double g = rate(nth); if (g > best) best = g; }
    return best;
}

static double fma_gflops(int nth) {
    float sink = 0.0f;
    const double t0 = omp_get_wtime();
    #pragma omp parallel num_threads(nth) reduction(+:sink)
    {
#define DECL(i) __m256 a##i = _mm256_set1_ps(0.001f * i);
#define STEP(i) a##i = _mm256_fmadd_ps(a##i, b, c);
#define SUM(i) s = _mm256_add_ps(s, a##i);
        X12(DECL)
        const __m256 b = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(1e-7f);
        for (long i = 0; i < ITERS / 12; i++) {
            X12(STEP)
            KEEP();
        }
        __m256 s = _mm256_setzero_ps();
        X12(SUM)
        sink += _mm256_cvtss_f32(s);
#undef DECL
#undef STEP
#undef SUM
    }
    const double g = giga_per_s(nth, (double)ITERS * 8 * 2, t0);
    if (sink == 12345.0f) printf(" ");
    return g;
}

// as the GEMM tile issues them: 2 weight vectors x 4 broadcast activations, 8 distinct
// products into 8 accumulators (13 registers), so no product can be shared or hoisted
static double madd_gmacs(int nth) {
    int sink = 0;
    const double t0 = omp_get_wtime();
    #pragma omp parallel num_threads(nth) reduction(+:sink)
    {
#define X8(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)
#define DECL(i) __m256i a##i = _mm256_set1_epi32(i);
#define STEP(i) a##i = _mm256_add_epi32(a##i, _mm256_madd_epi16((i) & 1 ? w1 : w0, \
                        (i) < 2 ? b0 : (i) < 4 ? b1 : (i) < 6 ? b2 : b3));
#define SUM(i) s = _mm256_add_epi32(s, a##i);
        X8(DECL)
        __m256i w0 = _mm256_set1_epi16(3), w1 = _mm256_set1_epi16(5), b0 = _mm256_set1_epi16(7);
        __m256i b1 = _mm256_set1_epi16(9), b2 = _mm256_set1_epi16(11), b3 = _mm256_set1_epi16(13);
        for (long i = 0; i < ITERS / 8; i++) {
            X8(STEP)
            __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5),
                             "+x"(a6), "+x"(a7), "+x"(w0), "+x"(w1), "+x"(b0), "+x"(b1), "+x"(b2),
                             "+x"(b3));
        }
        __m256i s = _mm256_setzero_si256();
        X8(SUM)
        sink += lane0_epi32(s);
#undef X8
#undef DECL
#undef STEP
#undef SUM
    }
    const double g = giga_per_s(nth, (double)ITERS * 16, t0);
    if (sink == 12345) printf(" ");
    return g;
}

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
static double dpwssd_gmacs(int nth) {
    int sink = 0;
    const double t0 = omp_get_wtime();
    #pragma omp parallel num_threads(nth) reduction(+:sink)
    {
#define DECL(i) __m256i a##i = _mm256_set1_epi32(i);
#define STEP(i) a##i = _mm256_dpwssd_epi32(a##i, b, c);
#define SUM(i) s = _mm256_add_epi32(s, a##i);
        X12(DECL)
        const __m256i b = _mm256_set1_epi16(3), c = _mm256_set1_epi16(5);
        for (long i = 0; i < ITERS / 12; i++) {
            X12(STEP)
            KEEP();
        }
        __m256i s = _mm256_setzero_si256();
        X12(SUM)
        sink += lane0_epi32(s);
#undef DECL
#undef STEP
#undef SUM
    }
    const double g = giga_per_s(nth, (double)ITERS * 16, t0);
    if (sink == 12345) printf(" ");
    return g;
}
#endif

int main(int argc, char **argv) {
    const int nth = argc > 1 ? atoi(argv[1]) : 2;
    printf("FP32 FMA, %d threads: %.1f GFLOP/s (best of 3)\n", nth, best_of_3(fma_gflops, nth));
    double best = best_of_3(madd_gmacs, nth);
    printf("int16 vpmaddwd + vpaddd, %d threads: %.1f G multiply-adds/s = %.1f GOP/s (best of 3)\n",
           nth, best, 2 * best);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    best = best_of_3(dpwssd_gmacs, nth);
    printf("int16 vpdpwssd, %d threads: %.1f G multiply-adds/s = %.1f GOP/s (best of 3)\n",
           nth, best, 2 * best);
#else
    printf("no AVX-512 VNNI: the integer GEMM uses vpmaddwd + vpaddd here\n");
#endif
    return 0;
}
