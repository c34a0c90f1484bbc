/* Cache-blocked, register-tiled matrix multiply: the engine's one GEMM.
 *
 *   C[i, j] (+)= sum_k A(i, k) B(k, j)  (+ bias[j]),   A(i, k) = A[i * sai + k * sak],
 *                                                       B(k, j) = B[k * sbk + j * sbj]
 *
 * A and B have arbitrary strides, so one kernel serves the three shapes of a Linear layer
 * (forward with W packed transposed, dX = dY W, dW = dY^T X) and attention (Q K^T reads K as
 * it is stored). B's block of kc rows is packed into contiguous kc x NR panels (once per block
 * and thread); the micro-kernel then streams both operands from consecutive cache lines.
 *
 * Determinism: every C element is computed by one thread; K is walked in fixed blocks in a
 * fixed order; thread partitions are aligned to the register tile, so an element always goes
 * through the same code path whatever the thread count.
 *
 * CPU paths: this file is compiled once per path (real.h); a vector build (x86-64-v3: 256 bits,
 * x86-64-v4: 512 bits) runs the micro-kernel of gemm_simd.h, the baseline build the portable tile
 * below, and all three give every element the same arithmetic. */
#include "kernels.h"

#include <stdlib.h>
#include <string.h>

#define KC 256 /* depth of one K block: an A panel and a B panel stay in L1/L2 */
#define PACK_LIMIT (1L << 20) /* bytes of a packed B block; wider B is packed one panel at a time */
#define KSPLIT_MIN (16L * KC) /* weight gradients: K split in two halves from this depth ... */
#define KSPLIT_MAX_C 262144L  /* ... when C has at most this many elements */
#define STREAMED (1L << 16)   /* bytes of A and C rows beyond which the next row tile's are prefetched */
#define STREAMED_K (1L << 19) /* ... and the next K block's operands (they come from memory, not cache) */
#define SMALL_B 16384L        /* bytes spanned by a B block read in place whatever the row tiles reusing it */

/* Copy B's block (kc rows from b, columns [0, n)) into contiguous kc x nr panels, the last one
 * partial: a tile then reads its panel from consecutive lines rather than one line per k at
 * stride ldb, which maps a whole panel onto a few L1 sets (and it can read a transposed B). */
static inline void pack_panels(long kc, long n, long nr, const real *b, long sbk, long sbj, real *packed) {
    for (long j = 0; j < n; j += nr, packed += kc * nr) {
        const long w = n - j < nr ? n - j : nr;
        if (sbj == 1 && w == nr) /* nr is a constant after inlining: a few vector moves per k */
            for (long k = 0; k < kc; k++)
                for (long q = 0; q < nr; q++) packed[k * nr + q] = b[k * sbk + j + q];
        else if (sbj == 1)
            for (long k = 0; k < kc; k++) memcpy(packed + k * nr, b + k * sbk + j, sizeof(real) * w);
        else
            for (long q = 0; q < w; q++)
                for (long k = 0; k < kc; k++) packed[k * nr + q] = b[k * sbk + (j + q) * sbj];
    }
}


/* asum (mr) = (first ? 0 : asum) + the sums over the block's kc columns of A's mr rows, in k order
 * (a Linear layer's bias gradient from its weight-gradient GEMM, whose A is dY^T). */
static inline void add_row_sums(double *asum, int first, long mr, long kc, const real *a, long sai, long sak) {
    double s[16] = {0};
    for (long k = 0; k < kc; k++)
        for (long r = 0; r < mr; r++) s[r] += a[r * sai + k * sak];
    for (long r = 0; r < mr; r++) asum[r] = first ? s[r] : asum[r] + s[r];
}

/* Rows [t rows / tiles, (t+1) rows / tiles) of a block of `rows` rows of `width` contiguous elements. */
static inline void prefetch_slice(long t, long tiles, long rows, const real *base, long stride, long width) {
    for (long r = t * rows / tiles; r < (t + 1) * rows / tiles; r++) prefetch_row(base + r * stride, width);
}

/* Part t of `parts` of the next row tile's A panel (mr x kc, or none: a == NULL) and, when the
 * tile will read them, its C rows (mr x n): start loading them while this row tile computes
 * (large-M shapes otherwise demand-miss them line by line at the start of every row tile). Called
 * once per panel of the row tile: a burst of ~50-100 lines at the row tile's start overflows the
 * L1 miss buffers for a DRAM latency and starves the kernel's stream of B lines from L2; a few
 * lines per panel, with the addresses' divisions pacing them, measured up to 10% faster on tall
 * shapes at 256 bits (a division-free walk measured slower). With more than SPREAD_MAX lines per
 * panel (512 bits, N <= 128: few panels) the divisions cost more than the pacing gains: there the
 * whole row tile's lines go at the first panel, division-free. C that is only written is not
 * prefetched (its stores need no data), nor a transposed A after the first K block (the previous
 * block's prefetch_next_block brought it). */
enum { SPREAD_MAX = 14 };
static inline void prefetch_lines(long t, long parts, long rows, long width, const real *base, long stride, int rw) {
    enum { LINE = 64 / (int)sizeof(real) };
    const long per_row = (width + LINE - 1) / LINE, lines = rows * per_row;
    if (lines > SPREAD_MAX * parts) { /* all at once */
        for (long r = 0; t == 0 && r < rows; r++)
            for (long q = 0; q < width; q += LINE) {
                if (rw) __builtin_prefetch(base + r * stride + q, 1, 2);
                else __builtin_prefetch(base + r * stride + q, 0, 2);
            }
        return;
    }
    for (long l = t * lines / parts; l < (t + 1) * lines / parts; l++)
        if (rw) __builtin_prefetch(base + l / per_row * stride + l % per_row * LINE, 1, 2);
        else __builtin_prefetch(base + l / per_row * stride + l % per_row * LINE, 0, 2);
}

static inline void prefetch_row_tile(long t, long parts, long mr, long kc, const real *a, long sai, long sak,
                                     const real *c, long ldc, long n) {
    if (a && sak == 1) prefetch_lines(t, parts, mr, kc, a, sai, 0);
    else if (a) prefetch_lines(t, parts, kc, mr, a, sak, 0); /* transposed: mr contiguous elements per k */
    if (c) prefetch_lines(t, parts, mr, n, c, ldc, 1);
}

/* Slice t of `tiles` of the next K block (kn deep): all of B's (n columns), and A's when it is
 * stored transposed (m columns; a row-major A is prefetched row tile by row tile). When K is
 * long (weight gradients: K = batch rows) these blocks come from DRAM, and demand misses would
 * leave the FMA units idle for about as long as the block takes to compute. */
static inline void prefetch_next_block(long t, long tiles, long kn, const real *a, long sai, long sak, long m,
                                       const real *b, long sbk, long sbj, long n) {
    if (sai == 1 && sak != 1) prefetch_slice(t, tiles, kn, a, sak, m);
    if (sbj == 1) prefetch_slice(t, tiles, kn, b, sbk, n);
    else prefetch_slice(t, tiles, n, b, sbj, kn);
}

#if SF_CPU_PATH >= 1
#define GEMM_BITS (SF_CPU_PATH == 2 ? 512 : 256)
#include "gemm_simd.h"
#define MR GEMM_MR
#define NR (GEMM_NR_BYTES / (int)sizeof(real))
#define TILE tile_simd
#define EDGE tile_simd_edge
#else /* the baseline build's portable micro-kernel: a 4 x 32-byte tile */
#define MR 4
#define NR (32 / (int)sizeof(real))
#define TILE tile_base
#define EDGE edge_base
#define GEMM_ISA

/* One full MR x NR tile over kc steps of k: c (+)= a b (+ bias). Arithmetic, as the vector paths':
 * one multiply-add per k in k order from zero, then added to C, then the bias. */
static inline void tile_base(long kc, const real *a, long sai, long sak, const real *b, long ldb, real *c, long ldc,
                             const real *bias, int add) {
    real acc[MR][NR];
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++)
#pragma omp simd
        for (int q = 0; q < NR; q++) acc[r][q] = 0;
    for (long k = 0; k < kc; k++) {
        const real *bk = b + k * ldb;
#pragma GCC unroll 16
        for (int r = 0; r < MR; r++) {
            const real ar = a[r * sai + k * sak];
#pragma omp simd
            for (int q = 0; q < NR; q++) acc[r][q] += ar * bk[q];
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
        real *cr = c + r * ldc;
        if (add) {
#pragma omp simd
            for (int q = 0; q < NR; q++) cr[q] += acc[r][q];
        } else {
#pragma omp simd
            for (int q = 0; q < NR; q++) cr[q] = acc[r][q];
        }
        if (bias) {
#pragma omp simd
            for (int q = 0; q < NR; q++) cr[q] += bias[q];
        }
    }
}

/* A partial tile (mr <= MR rows, nr <= NR columns) at the right or bottom edge, same arithmetic. */
static void edge_base(long mr, long nr, long kc, const real *a, long sai, long sak, const real *b, long ldb, real *c,
                      long ldc, const real *bias, int add) {
    real acc[NR];
    for (long r = 0; r < mr; r++) {
        for (long q = 0; q < nr; q++) acc[q] = 0;
        for (long k = 0; k < kc; k++) {
            const real ar = a[r * sai + k * sak], *bk = b + k * ldb;
#pragma omp simd
            for (long q = 0; q < nr; q++) acc[q] += ar * bk[q];
        }
        real *cr = c + r * ldc;
        for (long q = 0; q < nr; q++) {
            cr[q] = add ? cr[q] + acc[q] : acc[q];
            if (bias) cr[q] += bias[q];
        }
    }
}
#endif

/* The cache-blocked loop over tiles of C rows [i0,i1) x columns [j0,j1): K in KC blocks; per
 * block, B's columns are packed (all at once when the packed block fits PACK_LIMIT and memory
 * is there, else one NR panel at a time in `panel`), then full MR x NR tiles run TILE and partial
 * tiles EDGE. A B contiguous along j and little reused is read in place. Packing
 * moves data only: every element gets the same arithmetic in every case. */
GEMM_ISA static inline __attribute__((always_inline)) void
gemm_tiles_body(const int prefetch, long i0, long i1, long j0, long j1, long K, const real *A, long sai, long sak,
                const real *B, long sbk, long sbj, real *C, long ldc, const real *bias, int accumulate, double *asum) {
    real panel[KC * NR] __attribute__((aligned(64)));
    const long n = j1 - j0, kc0 = K < KC ? K : KC, block = sizeof(real) * kc0 * ((n + NR - 1) / NR) * NR;
    /* B read in place when few row tiles reuse it, or it is one panel, or its block spans at most
     * SMALL_B bytes (which stay in L1 whatever the stride: attention's per-head products) */
    const int in_place = sbj == 1 && (i1 - i0 <= 3 * MR || n <= NR || (long)sizeof(real) * kc0 * sbk <= SMALL_B);
    /* worth prefetching: A and C rows that may not be in L1 (a 192-row chunk's A written by the op
     * before: measured +9-15% at 256 bits); the next K block when the operands exceed L2's half */
    const long bytes = sizeof(real) * (i1 - i0) * (K + n);
    const int streamed = prefetch && bytes > STREAMED, streamed_k = prefetch && bytes > STREAMED_K;
    /* a packed block that fits the panel buffer goes there: no malloc for small products */
    real *packed = in_place ? NULL : block <= (long)sizeof panel ? panel : block <= PACK_LIMIT ? malloc(block) : NULL;
    const long chunk = in_place || packed ? n : NR; /* columns packed at a time */
    for (long kb = 0; kb < K; kb += KC) {
        const long kc = K - kb < KC ? K - kb : KC;
        const int add = accumulate || kb > 0;
        for (long jc = j0; jc < j1; jc += chunk) {
            const long nc = j1 - jc < chunk ? j1 - jc : chunk;
            const real *bc = B + kb * sbk + jc * sbj;
            long ldp = sbk, panel_stride = NR;
            if (!in_place) {
                real *dst = packed ? packed : panel;
                pack_panels(kc, nc, NR, bc, sbk, sbj, dst);
                bc = dst, ldp = NR, panel_stride = kc * NR;
            }
            for (long i = i0; i < i1; i += MR) {
                const long mr = i1 - i < MR ? i1 - i : MR;
                const real *a = A + i * sai + kb * sak;
                if (asum && jc == j0) /* row sums of A, the K block's in k order, blocks added */
                    add_row_sums(asum + i, kb == 0, mr, kc, a, sai, sak);
                if (streamed_k && kb + KC < K) /* the next K block's operands, a slice per row tile */
                    prefetch_next_block((i - i0) / MR, (i1 - i0 + MR - 1) / MR, K - kb - KC < KC ? K - kb - KC : KC,
                                        A + i0 * sai + (kb + KC) * sak, sai, sak, i1 - i0,
                                        B + (kb + KC) * sbk + jc * sbj, sbk, sbj, nc);
                const long panels = (nc + NR - 1) / NR;
                for (long p = 0; p < panels; p++) {
                    const long j = jc + p * NR, nr = j1 - j < NR ? j1 - j : NR;
                    if (streamed && i + MR < i1) /* panel p's share of the next row tile's A and C */
                        prefetch_row_tile(p, panels, i1 - i - MR < MR ? i1 - i - MR : MR, kc,
                                          sak != 1 && kb > 0 ? NULL : a + MR * sai, sai, sak,
                                          add ? C + (i + MR) * ldc + jc : NULL, ldc, nc);
                    const real *b = bc + p * panel_stride, *bj = kb == 0 && bias ? bias + j : NULL;
                    real *c = C + i * ldc + j;
                    if (mr == MR && nr == NR)
                        TILE(kc, a, sai, sak, b, ldp, c, ldc, bj, add);
                    else
                        EDGE(mr, nr, kc, a, sai, sak, b, ldp, c, ldc, bj, add);
                }
            }
        }
    }
    if (packed != panel) free(packed);
}

/* Two copies of the tile loop: products too small to prefetch for (attention's per-head ones, a
 * few hundred ns each) run one without the prefetch code (measured 3-4% faster at 512 bits). */
GEMM_ISA static void gemm_tiles(long i0, long i1, long j0, long j1, long K, const real *A, long sai, long sak,
                                const real *B, long sbk, long sbj, real *C, long ldc, const real *bias,
                                int accumulate, double *asum) {
    if ((long)sizeof(real) * (i1 - i0) * (K + j1 - j0) > STREAMED)
        gemm_tiles_body(1, i0, i1, j0, j1, K, A, sai, sak, B, sbk, sbj, C, ldc, bias, accumulate, asum);
    else
        gemm_tiles_body(0, i0, i1, j0, j1, K, A, sai, sak, B, sbk, sbj, C, ldc, bias, accumulate, asum);
}

/* Weight gradients (small C, K = the batch's rows) in two fixed halves of K: C (+)= the first
 * half's product (+ bias), then + the second's, computed into a buffer (so are A's row sums).
 * The halves depend on the shape only, so the arithmetic is the same on one thread (one after
 * the other) as on two (one each: each reads half of both operands, instead of both threads
 * streaming all of B). Returns 0 (nothing done) if the buffer cannot be had. */
static int gemm_split_k(long M, long N, long K, const real *A, long sai, long sak,
                        const real *B, long sbk, long sbj, real *C, long ldc, const real *bias, int accumulate,
                        double *asum, int nt, sf_par *par) {
    const long k0 = (K / 2 + KC - 1) / KC * KC;
    const long m2 = asum ? M : 0; /* the second half's row sums first, so both arrays are aligned */
    double *buf = malloc(sizeof(double) * m2 + sizeof(real) * M * N), *asum2 = asum ? buf : NULL;
    if (!buf) return 0;
    real *part = (real *)(buf + m2);
    (void)nt; /* unused in a serial build */
#pragma omp parallel num_threads(nt)
    {
        const int t = SF_THREAD_ID(), p = SF_TEAM_SIZE();
        if (t == 0) sf_par_note(par, p);
        if (t == 0) gemm_tiles(0, M, 0, N, k0, A, sai, sak, B, sbk, sbj, C, ldc, bias, accumulate, asum);
        if (t == (p > 1))
            gemm_tiles(0, M, 0, N, K - k0, A + k0 * sak, sai, sak, B + k0 * sbk, sbk, sbj, part, N, NULL, 0, asum2);
#pragma omp barrier
        long lo, hi;
        sf_partition(M, 1, t, p, &lo, &hi);
        for (long i = lo; i < hi; i++) {
            for (long j = 0; j < N; j++) C[i * ldc + j] += part[i * N + j];
            if (asum) asum[i] += asum2[i];
        }
    }
    free(buf);
    return 1;
}

/* C (M,N) (+)= op(A) op(B) (+ bias); asum (M, or NULL) = the row sums of op(A), in double. */
static void gemm_run(long M, long N, long K, const real *A, long sai, long sak,
                     const real *B, long sbk, long sbj, real *C, long ldc, const real *bias, int accumulate,
                     double *asum, sf_par *par) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* empty sum */
        for (long i = 0; i < M; i++) {
            for (long j = 0; j < N; j++) C[i * ldc + j] = (accumulate ? C[i * ldc + j] : 0) + (bias ? bias[j] : 0);
            if (asum) asum[i] = 0;
        }
        return;
    }
    int nt = par->nt;
    if ((double)M * N * K < 1048576.0) nt = 1; /* ~20 us of work: not worth a fork/join */
    if (K >= KSPLIT_MIN && M * N <= KSPLIT_MAX_C &&
        gemm_split_k(M, N, K, A, sai, sak, B, sbk, sbj, C, ldc, bias, accumulate, asum, nt, par))
        return;
    /* Split rows when there are enough of them, else columns (small-M weight gradients). Parts are
     * aligned to the register tile, so no element changes code path with the thread count; A's row
     * sums come from the part holding column 0. */
    const int by_rows = M >= (long)nt * MR * 2 || N < (long)nt * NR * 2;
    if (nt == 1) {
        gemm_tiles(0, M, 0, N, K, A, sai, sak, B, sbk, sbj, C, ldc, bias, accumulate, asum);
        sf_par_note(par, 1);
        return;
    }
#pragma omp parallel num_threads(nt)
    {
        long lo, hi;
        int t = SF_THREAD_ID(), p = SF_TEAM_SIZE();
        if (t == 0) sf_par_note(par, p);
        if (by_rows) {
            sf_partition(M, MR, t, p, &lo, &hi);
            if (lo < hi) gemm_tiles(lo, hi, 0, N, K, A, sai, sak, B, sbk, sbj, C, ldc, bias, accumulate, asum);
        } else {
            sf_partition(N, NR, t, p, &lo, &hi);
            if (lo < hi)
                gemm_tiles(0, M, lo, hi, K, A, sai, sak, B, sbk, sbj, C, ldc, bias, accumulate, lo == 0 ? asum : NULL);
        }
    }
}

void SF(gemm)(long M, long N, long K, const real *A, long sai, long sak, const real *B, long ldb,
              real *C, long ldc, const real *bias, int accumulate, sf_par *par) {
    gemm_run(M, N, K, A, sai, sak, B, ldb, 1, C, ldc, bias, accumulate, NULL, par);
}

void SF(gemm_row_sums)(long M, long N, long K, const real *A, long sai, long sak, const real *B, long ldb, real *C,
                       long ldc, double *asum, sf_par *par) {
    gemm_run(M, N, K, A, sai, sak, B, ldb, 1, C, ldc, NULL, 0, asum, par);
}

void SF(gemm_bt)(long M, long N, long K, const real *A, long sai, long sak, const real *Bt, long ldbt,
                 real *C, long ldc, const real *bias, int accumulate, sf_par *par) {
    gemm_run(M, N, K, A, sai, sak, Bt, 1, ldbt, C, ldc, bias, accumulate, NULL, par);
}

void SF(gemm_strided)(long M, long N, long K, const void *A, long sai, long sak, const void *B, long sbk, long sbj,
                      void *C, long ldc, const void *bias, int accumulate, sf_par *par) {
    gemm_run(M, N, K, A, sai, sak, B, sbk, sbj, C, ldc, bias, accumulate, NULL, par);
}
