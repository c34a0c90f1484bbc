/* The GEMM micro-kernel of the vector paths, one source for two widths (GEMM_BITS): the x86-64-v3
 * build instantiates it with 256-bit vectors (AVX2+FMA, 16 ymm registers), the x86-64-v4 build with
 * 512-bit vectors (AVX-512F, 32 zmm registers); GEMM_ISA is the matching target attribute. A tile is
 * MR rows x 2 vectors of columns held in 2*MR accumulators: per k step 2 loads of B, MR broadcasts of A and 2*MR independent FMAs
 * (enough to hide the FMA latency on both widths).
 *
 *   width   MR   tile (float / double)   registers
 *   256      6   6x16 / 6x8              12 accumulators + 2 B + 1 A of 16
 *   512     14   14x32 / 14x16           28 accumulators + 2 B + 1 A of 32
 *
 * Arithmetic, the same on both widths and in gemm.c's portable tile: per element one fused
 * multiply-add per k, in k order, from zero; then added to C (when accumulating), then the bias.
 * Partial tiles (fewer rows, or columns cut by masks that never touch memory past the edge) run
 * the same code with the row count a compile-time constant, so they keep vector speed (attention
 * at T=20 has a partial tile in every product) and every element its arithmetic; at 256 bits a
 * partial tile with all its columns (fewer rows only) uses the unmasked loads (AVX2's vmaskmov
 * costs more than a load; AVX-512's masked loads do not, and there the variant measured ~3%
 * slower on attention's (20, 64, 20), so 512 bits keep the masked code for every edge).
 *
 * The tile streams its B panel from L1/L2 and broadcasts A in place; gemm.c's tile loop issues the
 * software prefetch of the next row tile's operands a panel's share at a time, outside the k loop
 * (a prefetch list drained inside the k loop, one line every few k steps, measured 3-15% slower
 * at both widths: the extra work in the loop costs more than the pacing gains). */
#ifndef SF_GEMM_SIMD_H
#define SF_GEMM_SIMD_H

#include <immintrin.h>

#if GEMM_BITS == 512
#define GEMM_ISA __attribute__((target("arch=x86-64-v4")))
#define GEMM_MR 14
#define GEMM_VEC_BYTES 64
#if SF_DOUBLE
typedef __m512d vreal;
typedef __mmask8 vmask;
#define V_LOAD _mm512_loadu_pd
#define V_STORE _mm512_storeu_pd
#define V_SET1 _mm512_set1_pd
#define V_FMA _mm512_fmadd_pd
#define V_ADD _mm512_add_pd
#define V_ZERO _mm512_setzero_pd
#define V_MASKLOAD(p, m) _mm512_maskz_loadu_pd(m, p)
#define V_MASKSTORE(p, m, v) _mm512_mask_storeu_pd(p, m, v)
#else
typedef __m512 vreal;
typedef __mmask16 vmask;
#define V_LOAD _mm512_loadu_ps
#define V_STORE _mm512_storeu_ps
#define V_SET1 _mm512_set1_ps
#define V_FMA _mm512_fmadd_ps
#define V_ADD _mm512_add_ps
#define V_ZERO _mm512_setzero_ps
#define V_MASKLOAD(p, m) _mm512_maskz_loadu_ps(m, p)
#define V_MASKSTORE(p, m, v) _mm512_mask_storeu_ps(p, m, v)
#endif
enum { V_LANES = GEMM_VEC_BYTES / (int)sizeof(real) };
/* lanes [0, n) of a vector */
GEMM_ISA static inline vmask lane_mask(long n) { return n <= 0 ? 0 : n >= V_LANES ? (vmask)~0u : (vmask)((1u << n) - 1); }

#else /* 256 bits: AVX2 + FMA */
#define GEMM_ISA __attribute__((target("arch=x86-64-v3")))
#define GEMM_MR 6
#define GEMM_VEC_BYTES 32
typedef __m256i vmask;
#if SF_DOUBLE
typedef __m256d vreal;
#define V_LOAD _mm256_loadu_pd
#define V_STORE _mm256_storeu_pd
#define V_SET1 _mm256_set1_pd
#define V_FMA _mm256_fmadd_pd
#define V_ADD _mm256_add_pd
#define V_ZERO _mm256_setzero_pd
#define V_MASKLOAD(p, m) _mm256_maskload_pd(p, m)
#define V_MASKSTORE(p, m, v) _mm256_maskstore_pd(p, m, v)
GEMM_ISA static inline vmask lane_mask(long n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}
#else
typedef __m256 vreal;
#define V_LOAD _mm256_loadu_ps
#define V_STORE _mm256_storeu_ps
#define V_SET1 _mm256_set1_ps
#define V_FMA _mm256_fmadd_ps
#define V_ADD _mm256_add_ps
#define V_ZERO _mm256_setzero_ps
#define V_MASKLOAD(p, m) _mm256_maskload_ps(p, m)
#define V_MASKSTORE(p, m, v) _mm256_maskstore_ps(p, m, v)
GEMM_ISA static inline vmask lane_mask(long n) {
    const int lanes = n < 0 ? 0 : n > 8 ? 8 : (int)n;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#endif
enum { V_LANES = GEMM_VEC_BYTES / (int)sizeof(real) };
#endif

#define GEMM_NR_BYTES (2 * GEMM_VEC_BYTES) /* two vectors of columns */

/* c (rows x 2*V_LANES, row stride ldc) (+)= sum_k a(r,k) b[k*ldb + q] (+ bias[q]), for the first nr
 * columns when `masked` (columns past nr are neither read nor written). rows and masked are
 * compile-time constants at every call, so the accumulators stay in registers. */
GEMM_ISA static inline __attribute__((always_inline)) void tile_rows(const int rows, const int masked, long nr, long kc,
                                                            const real *a, long sai, long sak, const real *b, long ldb,
                                                            real *c, long ldc, const real *bias, int add) {
    const vmask m0 = lane_mask(masked ? nr : V_LANES), m1 = lane_mask(masked ? nr - V_LANES : V_LANES);
    vreal acc[GEMM_MR][2];
#pragma GCC unroll 16
    for (int r = 0; r < rows; r++) acc[r][0] = V_ZERO(), acc[r][1] = V_ZERO();
    for (long k = 0; k < kc; k++) {
        const real *bk = b + k * ldb, *ak = a + k * sak;
        const vreal b0 = masked ? V_MASKLOAD(bk, m0) : V_LOAD(bk);
        const vreal b1 = masked ? V_MASKLOAD(bk + V_LANES, m1) : V_LOAD(bk + V_LANES);
#pragma GCC unroll 16
        for (int r = 0; r < rows; r++) {
            const vreal ar = V_SET1(ak[r * sai]);
            acc[r][0] = V_FMA(ar, b0, acc[r][0]);
            acc[r][1] = V_FMA(ar, b1, acc[r][1]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < rows; r++) {
        real *cr = c + r * ldc;
        for (int h = 0; h < 2; h++) {
            real *ch = cr + h * V_LANES;
            const vmask mh = h ? m1 : m0;
            vreal v = acc[r][h];
            if (add) v = V_ADD(masked ? V_MASKLOAD(ch, mh) : V_LOAD(ch), v);
            if (bias) v = V_ADD(v, masked ? V_MASKLOAD(bias + h * V_LANES, mh) : V_LOAD(bias + h * V_LANES));
            if (masked) V_MASKSTORE(ch, mh, v);
            else V_STORE(ch, v);
        }
    }
}

/* A full GEMM_MR x 2-vector tile. */
GEMM_ISA static void tile_simd(long kc, const real *a, long sai, long sak, const real *b, long ldb, real *c, long ldc,
                      const real *bias, int add) {
    tile_rows(GEMM_MR, 0, 2 * V_LANES, kc, a, sai, sak, b, ldb, c, ldc, bias, add);
}

/* A partial tile: mr <= GEMM_MR rows, nr <= 2 vectors of columns. */
GEMM_ISA static void tile_simd_edge(long mr, long nr, long kc, const real *a, long sai, long sak, const real *b, long ldb,
                           real *c, long ldc, const real *bias, int add) {
#define EDGE_ROWS(R)                                                                                                  \
    case R:                                                                                                           \
        if (GEMM_BITS == 256 && nr == 2 * V_LANES) tile_rows(R, 0, nr, kc, a, sai, sak, b, ldb, c, ldc, bias, add);   \
        else tile_rows(R, 1, nr, kc, a, sai, sak, b, ldb, c, ldc, bias, add);                                         \
        break;
    switch (mr) {
        EDGE_ROWS(1) EDGE_ROWS(2) EDGE_ROWS(3) EDGE_ROWS(4) EDGE_ROWS(5) EDGE_ROWS(6)
#if GEMM_MR > 6
        EDGE_ROWS(7) EDGE_ROWS(8) EDGE_ROWS(9) EDGE_ROWS(10) EDGE_ROWS(11) EDGE_ROWS(12) EDGE_ROWS(13) EDGE_ROWS(14)
#endif
    }
#undef EDGE_ROWS
}

#endif
