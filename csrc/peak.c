/* A small FMA-throughput kernel: the machine's measured floating-point peak, so benchmarks can
 * report what fraction of it a job reaches. Independent accumulators hide the FMA latency; the
 * vector width is the widest this CPU supports (512 bits with AVX-512), whichever path the engine
 * runs, so "of peak" never flatters a narrower path. */
#include "engine.h"
#include "threads.h"

#include <time.h>

#define ACCS 12

#define DEFINE_FMA_LOOP(NAME, T, BYTES, ATTR)                                                        \
    ATTR static double NAME(long iters) {                                                          \
        typedef T vec __attribute__((vector_size(BYTES)));                                         \
        vec acc[ACCS], a, b;                                                                       \
        for (unsigned i = 0; i < BYTES / sizeof(T); i++) a[i] = (T)1.0000001, b[i] = (T)1e-9;      \
        for (int k = 0; k < ACCS; k++) acc[k] = b * (T)(k + 1);                                    \
        for (long it = 0; it < iters; it++) {                                                      \
            _Pragma("GCC unroll 12") for (int k = 0; k < ACCS; k++) acc[k] = acc[k] * a + b;       \
            __asm__ volatile("" : "+x"(a)); /* keep the loop from being folded */                   \
        }                                                                                          \
        double s = 0;                                                                              \
        for (int k = 0; k < ACCS; k++)                                                             \
            for (unsigned i = 0; i < BYTES / sizeof(T); i++) s += acc[k][i];                       \
        return s;                                                                                  \
    }

#if defined(__GNUC__) && __GNUC__ >= 12 && !defined(__clang__) && defined(__x86_64__)
DEFINE_FMA_LOOP(fma_v4_f32, float, 64, __attribute__((target("arch=x86-64-v4"))))
DEFINE_FMA_LOOP(fma_v4_f64, double, 64, __attribute__((target("arch=x86-64-v4"))))
DEFINE_FMA_LOOP(fma_v3_f32, float, 32, __attribute__((target("arch=x86-64-v3"))))
DEFINE_FMA_LOOP(fma_v3_f64, double, 32, __attribute__((target("arch=x86-64-v3"))))
#define SF_PEAK_DISPATCH 1
#endif
DEFINE_FMA_LOOP(fma_base_f32, float, 16, )
DEFINE_FMA_LOOP(fma_base_f64, double, 16, )

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* FLOPs per iteration, vector bits and the loop for the widest path this CPU runs (2 FLOPs per FMA lane). */
static double (*pick(int dbl, double *flops_per_iter, int *bits))(long) {
    const int widest = sf_widest_vector_bits();
    int bytes = 16;
    double (*fn)(long) = dbl ? fma_base_f64 : fma_base_f32;
#ifdef SF_PEAK_DISPATCH
    if (widest == 512) bytes = 64, fn = dbl ? fma_v4_f64 : fma_v4_f32;
    else if (widest == 256) bytes = 32, fn = dbl ? fma_v3_f64 : fma_v3_f32;
#endif
    (void)widest;
    *flops_per_iter = 2.0 * ACCS * bytes / (dbl ? 8 : 4);
    *bits = 8 * bytes;
    return fn;
}

double sf_measure_peak_gflops(int dtype_double, int n_threads, double seconds_budget, int *vector_bits) {
    double per_iter;
    int bits;
    double (*fn)(long) = pick(dtype_double, &per_iter, &bits);
    if (vector_bits) *vector_bits = bits;
    const int nt = sf_resolve_threads(n_threads);
    long iters = 1 << 16;
    volatile double sink = 0;
    for (;;) { /* size the run to the time budget on one thread */
        const double t0 = seconds();
        sink += fn(iters);
        if (seconds() - t0 > seconds_budget / 8 || iters > (1L << 40)) break;
        iters *= 2;
    }
    /* the best of 5 timed team runs after an untimed one: a core that was idle (or a virtual CPU
     * the host had parked) runs slow for its first tens of milliseconds */
    double best = 0;
    for (int rep = 0; rep <= 5; rep++) {
        const double t0 = seconds();
        double part[512] = {0};
#pragma omp parallel num_threads(nt)
        { part[SF_THREAD_ID()] = fn(iters); }
        sink += part[0];
        const double rate = nt * iters * per_iter / (seconds() - t0) / 1e9;
        if (rep > 0 && rate > best) best = rate;
    }
    (void)sink;
    return best;
}
