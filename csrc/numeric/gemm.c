/* Cache-blocked, register-tiled matrix multiply: the engine's one GEMM.
 *
 *   C[i, j] (+)= sum_k A(i, k) * B[k * ldb + j]  (+ bias[j]),   A(i, k) = A[i * sai + k * sak]
 *
 * B is contiguous along j; A has arbitrary strides, so one kernel serves the three shapes of a
 * Linear layer (forward with W packed transposed, dX = dY W, dW = dY^T X) and attention.
 *
 * Determinism: every C element is computed by one thread; K is walked in fixed blocks in a
 * fixed order; thread partitions are aligned to the register tile, so an element always goes
 * through the same code path whatever the thread count.
 *
 * Runtime dispatch: the tile loop is instantiated for AVX-512 (x86-64-v4), AVX2+FMA
 * (x86-64-v3) and the portable baseline with tile sizes that fit each register file; the
 * choice is made once per process from the CPU's features. */
#include "kernels.h"

#include <string.h>

#define KC 256 /* depth of one K block: an A panel and a B panel stay in L1/L2 */

#define DEFINE_GEMM_TILES(NAME, MR, NR_BYTES, ATTR)                                                   \
    ATTR static void NAME(long i0, long i1, long j0, long j1, long K, const real *A, long sai,      \
                          long sak, const real *B, long ldb, real *C, long ldc, const real *bias,    \
                          int accumulate) {                                                          \
        enum { NR = NR_BYTES / (int)sizeof(real) };                                                 \
        for (long kb = 0; kb < K; kb += KC) {                                                        \
            const long kc = K - kb < KC ? K - kb : KC;                                               \
            const int add = accumulate || kb > 0;                                                    \
            const real *bias_here = kb == 0 ? bias : NULL;                                           \
            for (long i = i0; i < i1; i += MR) {                                                     \
                const long mr = i1 - i < MR ? i1 - i : MR;                                           \
                const real *a = A + i * sai + kb * sak;                                              \
                for (long j = j0; j < j1; j += NR) {                                                 \
                    const long nr = j1 - j < NR ? j1 - j : NR;                                       \
                    const real *b = B + kb * ldb + j;                                                \
                    real *c = C + i * ldc + j;                                                       \
                    if (mr == MR && nr == NR) {                                                      \
                        real acc[MR][NR];                                                            \
                        _Pragma("GCC unroll 16") for (int r = 0; r < MR; r++)                        \
                            _Pragma("omp simd") for (int q = 0; q < NR; q++) acc[r][q] = 0;          \
                        for (long k = 0; k < kc; k++) {                                              \
                            const real *bk = b + k * ldb;                                            \
                            _Pragma("GCC unroll 16") for (int r = 0; r < MR; r++) {                  \
                                const real ar = a[r * sai + k * sak];                                \
                                _Pragma("omp simd") for (int q = 0; q < NR; q++) acc[r][q] += ar * bk[q]; \
                            }                                                                        \
                        }                                                                            \
                        _Pragma("GCC unroll 16") for (int r = 0; r < MR; r++) {                      \
                            real *cr = c + r * ldc;                                                  \
                            if (add) {                                                               \
                                _Pragma("omp simd") for (int q = 0; q < NR; q++) cr[q] += acc[r][q]; \
                            } else {                                                                 \
                                _Pragma("omp simd") for (int q = 0; q < NR; q++) cr[q] = acc[r][q];  \
                            }                                                                        \
                            if (bias_here) {                                                         \
                                _Pragma("omp simd") for (int q = 0; q < NR; q++) cr[q] += bias_here[j + q]; \
                            }                                                                        \
                        }                                                                            \
                    } else {                                                                         \
                        gemm_edge(mr, nr, kc, a, sai, sak, b, ldb, c, ldc,                           \
                                  bias_here ? bias_here + j : NULL, add);                            \
                    }                                                                                \
                }                                                                                    \
            }                                                                                        \
        }                                                                                            \
    }

/* Partial tiles at the right and bottom edges. */
static void gemm_edge(long mr, long nr, long kc, const real *a, long sai, long sak, const real *b,
                      long ldb, real *c, long ldc, const real *bias, int add) {
    for (long r = 0; r < mr; r++) {
        real *cr = c + r * ldc;
        for (long q = 0; q < nr; q++) {
            real s = 0;
            for (long k = 0; k < kc; k++) s += a[r * sai + k * sak] * b[k * ldb + q];
            cr[q] = add ? cr[q] + s : s;
            if (bias) cr[q] += bias[q];
        }
    }
}

typedef void (*gemm_tiles_fn)(long, long, long, long, long, const real *, long, long, const real *,
                              long, real *, long, const real *, int);

#if defined(__GNUC__) && __GNUC__ >= 12 && !defined(__clang__) && defined(__x86_64__) && !defined(__AVX512F__)
#define SF_X86_DISPATCH 1
DEFINE_GEMM_TILES(gemm_tiles_v4, 8, 128, __attribute__((target("arch=x86-64-v4"))))
DEFINE_GEMM_TILES(gemm_tiles_v3, 4, 64, __attribute__((target("arch=x86-64-v3"))))
#endif
DEFINE_GEMM_TILES(gemm_tiles_base, 4, 32, )

static gemm_tiles_fn tiles_fn;
static long tile_rows, tile_cols;
static const char *path_name;

static void choose_path(void) {
    if (tiles_fn) return;
#ifdef SF_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) {
        tile_rows = 8, tile_cols = 128 / sizeof(real), path_name = "x86-64-v4";
        tiles_fn = gemm_tiles_v4;
        return;
    }
    if (__builtin_cpu_supports("x86-64-v3")) {
        tile_rows = 4, tile_cols = 64 / sizeof(real), path_name = "x86-64-v3";
        tiles_fn = gemm_tiles_v3;
        return;
    }
#endif
    tile_rows = 4, tile_cols = 32 / sizeof(real), path_name = "baseline";
    tiles_fn = gemm_tiles_base;
}

const char *SF(gemm_path)(void) {
    choose_path();
    return path_name;
}

void SF(gemm)(long M, long N, long K, const real *A, long sai, long sak, const real *B, long ldb,
              real *C, long ldc, const real *bias, int accumulate, sf_par *par) {
    if (M <= 0 || N <= 0) return;
    choose_path();
    if (K <= 0) { /* empty sum */
        for (long i = 0; i < M; i++)
            for (long j = 0; j < N; j++) C[i * ldc + j] = (accumulate ? C[i * ldc + j] : 0) + (bias ? bias[j] : 0);
        return;
    }
    int nt = par->nt;
    if ((double)M * N * K < 1048576.0) nt = 1; /* ~20 us of work: not worth a fork/join */
    /* Split rows when there are enough of them, else columns (small-M weight gradients). */
    const int by_rows = M >= (long)nt * tile_rows * 2 || N < (long)nt * tile_cols * 2;
    if (nt == 1) {
        tiles_fn(0, M, 0, N, K, A, sai, sak, B, ldb, C, ldc, bias, accumulate);
        sf_par_note(par, 1);
        return;
    }
#pragma omp parallel num_threads(nt)
    {
        long lo, hi;
        int t = SF_THREAD_ID(), p = SF_TEAM_SIZE();
        if (t == 0) sf_par_note(par, p);
        if (by_rows) {
            sf_partition(M, tile_rows, t, p, &lo, &hi);
            if (lo < hi) tiles_fn(lo, hi, 0, N, K, A, sai, sak, B, ldb, C, ldc, bias, accumulate);
        } else {
            sf_partition(N, tile_cols, t, p, &lo, &hi);
            if (lo < hi) tiles_fn(0, M, lo, hi, K, A, sai, sak, B, ldb, C, ldc, bias, accumulate);
        }
    }
}
