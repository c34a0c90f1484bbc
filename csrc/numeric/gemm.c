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

/* A partial tile (mr <= MR rows, nr <= NR columns) at the right or bottom edge, with the same
 * arithmetic as a full tile; compiled per path so that it uses the same instructions (FMA). */
#define DEFINE_TILE_EDGE(NAME, NR_BYTES, ATTR)                                                         \
    ATTR static void NAME(long mr, long nr, long kc, const real *a, long sai, long sak, const real *b,  \
                          long ldb, real *c, long ldc, const real *bias, int add) {                     \
        real acc[NR_BYTES / sizeof(real)];                                                              \
        for (long r = 0; r < mr; r++) {                                                                 \
            for (long q = 0; q < nr; q++) acc[q] = 0;                                                   \
            for (long k = 0; k < kc; k++) {                                                             \
                const real ar = a[r * sai + k * sak], *bk = b + k * ldb;                                \
                _Pragma("omp simd") for (long q = 0; q < nr; q++) acc[q] += ar * bk[q];                 \
            }                                                                                           \
            real *cr = c + r * ldc;                                                                     \
            for (long q = 0; q < nr; q++) {                                                             \
                cr[q] = add ? cr[q] + acc[q] : acc[q];                                                  \
                if (bias) cr[q] += bias[q];                                                             \
            }                                                                                           \
        }                                                                                               \
    }

/* One full MR x NR tile over kc steps of k: c (+)= a b (+ bias). The portable micro-kernel;
 * arithmetic: one multiply-add per k in k order from zero, then added to C, then the bias. */
#define DEFINE_TILE_GENERIC(NAME, MR, NR_BYTES, ATTR)                                                  \
    ATTR static inline void NAME(long kc, const real *a, long sai, long sak, const real *b, long ldb,  \
                                 real *c, long ldc, const real *bias, int add) {                        \
        enum { NR = NR_BYTES / (int)sizeof(real) };                                                     \
        real acc[MR][NR];                                                                               \
        _Pragma("GCC unroll 16") for (int r = 0; r < MR; r++)                                           \
            _Pragma("omp simd") for (int q = 0; q < NR; q++) acc[r][q] = 0;                             \
        for (long k = 0; k < kc; k++) {                                                                 \
            const real *bk = b + k * ldb;                                                               \
            _Pragma("GCC unroll 16") for (int r = 0; r < MR; r++) {                                     \
                const real ar = a[r * sai + k * sak];                                                   \
                _Pragma("omp simd") for (int q = 0; q < NR; q++) acc[r][q] += ar * bk[q];               \
            }                                                                                           \
        }                                                                                               \
        _Pragma("GCC unroll 16") for (int r = 0; r < MR; r++) {                                         \
            real *cr = c + r * ldc;                                                                     \
            if (add) {                                                                                  \
                _Pragma("omp simd") for (int q = 0; q < NR; q++) cr[q] += acc[r][q];                    \
            } else {                                                                                    \
                _Pragma("omp simd") for (int q = 0; q < NR; q++) cr[q] = acc[r][q];                     \
            }                                                                                           \
            if (bias) {                                                                                 \
                _Pragma("omp simd") for (int q = 0; q < NR; q++) cr[q] += bias[q];                      \
            }                                                                                           \
        }                                                                                               \
    }

/* The cache-blocked loop over tiles of C rows [i0,i1) x columns [j0,j1): K in KC blocks, full
 * MR x NR tiles by TILE, partial tiles by EDGE. */
#define DEFINE_GEMM_TILES(NAME, MR, NR_BYTES, ATTR, TILE, EDGE)                                              \
    ATTR static void NAME(long i0, long i1, long j0, long j1, long K, const real *A, long sai,         \
                          long sak, const real *B, long ldb, real *C, long ldc, const real *bias,       \
                          int accumulate) {                                                             \
        enum { NR = NR_BYTES / (int)sizeof(real) };                                                     \
        for (long kb = 0; kb < K; kb += KC) {                                                           \
            const long kc = K - kb < KC ? K - kb : KC;                                                  \
            const int add = accumulate || kb > 0;                                                       \
            const real *bias_here = kb == 0 ? bias : NULL;                                              \
            for (long i = i0; i < i1; i += MR) {                                                        \
                const long mr = i1 - i < MR ? i1 - i : MR;                                              \
                const real *a = A + i * sai + kb * sak;                                                 \
                for (long j = j0; j < j1; j += NR) {                                                    \
                    const long nr = j1 - j < NR ? j1 - j : NR;                                          \
                    const real *b = B + kb * ldb + j, *bj = bias_here ? bias_here + j : NULL;           \
                    real *c = C + i * ldc + j;                                                          \
                    if (mr == MR && nr == NR)                                                           \
                        TILE(kc, a, sai, sak, b, ldb, c, ldc, bj, add);                                 \
                    else                                                                                \
                        EDGE(mr, nr, kc, a, sai, sak, b, ldb, c, ldc, bj, add);                         \
                }                                                                                       \
            }                                                                                           \
        }                                                                                               \
    }

typedef void (*gemm_tiles_fn)(long, long, long, long, long, const real *, long, long, const real *,
                              long, real *, long, const real *, int);

#ifdef SF_X86_DISPATCH
#include "gemm_avx2.h"
#define V4 __attribute__((target("arch=x86-64-v4")))
#define V3 __attribute__((target("arch=x86-64-v3")))
DEFINE_TILE_GENERIC(tile_v4, 8, 128, V4)
DEFINE_TILE_EDGE(edge_v4, 128, V4)
DEFINE_GEMM_TILES(gemm_tiles_v4, 8, 128, V4, tile_v4, edge_v4)
DEFINE_GEMM_TILES(gemm_tiles_v3, AVX2_MR, AVX2_NR_BYTES, V3, tile_avx2, tile_avx2_edge)
#endif
DEFINE_TILE_GENERIC(tile_base, 4, 32, )
DEFINE_TILE_EDGE(edge_base, 32, )
DEFINE_GEMM_TILES(gemm_tiles_base, 4, 32, , tile_base, edge_base)

typedef struct {
    const char *name;
    gemm_tiles_fn tiles;
    long rows, cols; /* register tile */
} gemm_path;

/* Fastest first; gemm_on_path can run any supported one (the kernel tests run them all). */
static const gemm_path paths[] = {
#ifdef SF_X86_DISPATCH
    {"x86-64-v4", gemm_tiles_v4, 8, 128 / sizeof(real)},
    {"x86-64-v3", gemm_tiles_v3, AVX2_MR, AVX2_NR_BYTES / sizeof(real)},
#endif
    {"baseline", gemm_tiles_base, 4, 32 / sizeof(real)},
};
enum { N_PATHS = sizeof paths / sizeof paths[0] };

static int path_supported(const gemm_path *p) {
#ifdef SF_X86_DISPATCH
    __builtin_cpu_init();
    if (p->tiles == gemm_tiles_v4) return __builtin_cpu_supports("x86-64-v4");
    if (p->tiles == gemm_tiles_v3) return __builtin_cpu_supports("x86-64-v3");
#endif
    return 1;
}

static const gemm_path *best_path(void) {
    static const gemm_path *best; /* a benign race: every thread computes the same pointer */
    if (!best) {
        const gemm_path *p = paths;
        while (!path_supported(p)) p++;
        best = p;
    }
    return best;
}

const char *SF(gemm_path)(void) { return best_path()->name; }

static void gemm_run(const gemm_path *path, long M, long N, long K, const real *A, long sai, long sak,
                     const real *B, long ldb, real *C, long ldc, const real *bias, int accumulate, sf_par *par) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* empty sum */
        for (long i = 0; i < M; i++)
            for (long j = 0; j < N; j++) C[i * ldc + j] = (accumulate ? C[i * ldc + j] : 0) + (bias ? bias[j] : 0);
        return;
    }
    int nt = par->nt;
    if ((double)M * N * K < 1048576.0) nt = 1; /* ~20 us of work: not worth a fork/join */
    /* Split rows when there are enough of them, else columns (small-M weight gradients). Parts are
     * aligned to the register tile, so no element changes code path with the thread count. */
    const int by_rows = M >= (long)nt * path->rows * 2 || N < (long)nt * path->cols * 2;
    if (nt == 1) {
        path->tiles(0, M, 0, N, K, A, sai, sak, B, ldb, C, ldc, bias, accumulate);
        sf_par_note(par, 1);
        return;
    }
#pragma omp parallel num_threads(nt)
    {
        long lo, hi;
        int t = SF_THREAD_ID(), p = SF_TEAM_SIZE();
        if (t == 0) sf_par_note(par, p);
        if (by_rows) {
            sf_partition(M, path->rows, t, p, &lo, &hi);
            if (lo < hi) path->tiles(lo, hi, 0, N, K, A, sai, sak, B, ldb, C, ldc, bias, accumulate);
        } else {
            sf_partition(N, path->cols, t, p, &lo, &hi);
            if (lo < hi) path->tiles(0, M, lo, hi, K, A, sai, sak, B, ldb, C, ldc, bias, accumulate);
        }
    }
}

void SF(gemm)(long M, long N, long K, const real *A, long sai, long sak, const real *B, long ldb,
              real *C, long ldc, const real *bias, int accumulate, sf_par *par) {
    gemm_run(best_path(), M, N, K, A, sai, sak, B, ldb, C, ldc, bias, accumulate, par);
}

int SF(gemm_on_path)(const char *name, long M, long N, long K, const void *A, long sai, long sak, const void *B,
                     long ldb, void *C, long ldc, const void *bias, int accumulate, sf_par *par) {
    for (int i = 0; i < N_PATHS; i++)
        if (!strcmp(paths[i].name, name)) {
            if (!path_supported(&paths[i])) return -1;
            gemm_run(&paths[i], M, N, K, A, sai, sak, B, ldb, C, ldc, bias, accumulate, par);
            return 0;
        }
    return -1;
}
