/* The AVX2+FMA micro-kernel of gemm.c (x86-64-v3 path), in intrinsics: a 6 x 2-vector tile
 * (6x16 floats, 6x8 doubles) held in 12 of the 16 ymm registers, so each k step is 2 loads of
 * B, 6 broadcasts of A and 12 independent FMAs (enough to hide the FMA latency; the generic
 * C loop's 4x2 tile is not). Same arithmetic as the generic tile: one fused multiply-add per k,
 * in k order, from zero, then added to C and the bias; tests compare every path with NumPy. */
#ifndef SF_GEMM_AVX2_H
#define SF_GEMM_AVX2_H

#include <immintrin.h>

#define AVX2_MR 6
#define AVX2_NR_BYTES 64

#if SF_DOUBLE
typedef __m256d vreal;
#define V_LOAD _mm256_loadu_pd
#define V_STORE _mm256_storeu_pd
#define V_SET1 _mm256_set1_pd
#define V_FMA _mm256_fmadd_pd
#define V_ADD _mm256_add_pd
#define V_ZERO _mm256_setzero_pd
#else
typedef __m256 vreal;
#define V_LOAD _mm256_loadu_ps
#define V_STORE _mm256_storeu_ps
#define V_SET1 _mm256_set1_ps
#define V_FMA _mm256_fmadd_ps
#define V_ADD _mm256_add_ps
#define V_ZERO _mm256_setzero_ps
#endif
#define V_LANES ((int)(32 / sizeof(real)))
#if SF_DOUBLE
#define V_MASKLOAD _mm256_maskload_pd
#define V_MASKSTORE _mm256_maskstore_pd
/* lanes [0, n) of a vector set */
static inline __attribute__((target("arch=x86-64-v3"))) __m256i lane_mask(long n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}
#else
#define V_MASKLOAD _mm256_maskload_ps
#define V_MASKSTORE _mm256_maskstore_ps
static inline __attribute__((target("arch=x86-64-v3"))) __m256i lane_mask(long n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 8 ? n : 8)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#endif

/* c (6 x 2*V_LANES, row stride ldc) (+)= sum_k a(r,k) b[k*ldb + q] (+ bias[q]) */
__attribute__((target("arch=x86-64-v3"))) static inline void tile_avx2(long kc, const real *a, long sai, long sak,
                                                                      const real *b, long ldb, real *c, long ldc,
                                                                      const real *bias, int add) {
    vreal c00 = V_ZERO(), c01 = V_ZERO(), c10 = V_ZERO(), c11 = V_ZERO(), c20 = V_ZERO(), c21 = V_ZERO();
    vreal c30 = V_ZERO(), c31 = V_ZERO(), c40 = V_ZERO(), c41 = V_ZERO(), c50 = V_ZERO(), c51 = V_ZERO();
    for (long k = 0; k < kc; k++) {
        const vreal b0 = V_LOAD(b + k * ldb), b1 = V_LOAD(b + k * ldb + V_LANES);
        const real *ak = a + k * sak;
        vreal ar = V_SET1(ak[0]);
        c00 = V_FMA(ar, b0, c00), c01 = V_FMA(ar, b1, c01);
        ar = V_SET1(ak[sai]);
        c10 = V_FMA(ar, b0, c10), c11 = V_FMA(ar, b1, c11);
        ar = V_SET1(ak[2 * sai]);
        c20 = V_FMA(ar, b0, c20), c21 = V_FMA(ar, b1, c21);
        ar = V_SET1(ak[3 * sai]);
        c30 = V_FMA(ar, b0, c30), c31 = V_FMA(ar, b1, c31);
        ar = V_SET1(ak[4 * sai]);
        c40 = V_FMA(ar, b0, c40), c41 = V_FMA(ar, b1, c41);
        ar = V_SET1(ak[5 * sai]);
        c50 = V_FMA(ar, b0, c50), c51 = V_FMA(ar, b1, c51);
    }
    const vreal acc[AVX2_MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    for (int r = 0; r < AVX2_MR; r++) {
        real *cr = c + r * ldc;
        for (int h = 0; h < 2; h++) {
            vreal v = add ? V_ADD(V_LOAD(cr + h * V_LANES), acc[r][h]) : acc[r][h];
            if (bias) v = V_ADD(v, V_LOAD(bias + h * V_LANES));
            V_STORE(cr + h * V_LANES, v);
        }
    }
}

/* A partial tile (mr <= 6 rows, nr <= 2 vectors of columns) with the same arithmetic: masked loads
 * and stores (which never touch memory past the edge); rows past mr repeat row 0 and are not
 * stored. So partial tiles (T=20 attention has one in every product) run at vector speed. */
__attribute__((target("arch=x86-64-v3"))) static void tile_avx2_edge(long mr, long nr, long kc, const real *a, long sai,
                                                                    long sak, const real *b, long ldb, real *c,
                                                                    long ldc, const real *bias, int add) {
    const __m256i m0 = lane_mask(nr), m1 = lane_mask(nr - V_LANES);
    const long s1 = mr > 1 ? sai : 0, s2 = mr > 2 ? 2 * sai : 0, s3 = mr > 3 ? 3 * sai : 0, s4 = mr > 4 ? 4 * sai : 0,
               s5 = mr > 5 ? 5 * sai : 0;
    vreal c00 = V_ZERO(), c01 = V_ZERO(), c10 = V_ZERO(), c11 = V_ZERO(), c20 = V_ZERO(), c21 = V_ZERO();
    vreal c30 = V_ZERO(), c31 = V_ZERO(), c40 = V_ZERO(), c41 = V_ZERO(), c50 = V_ZERO(), c51 = V_ZERO();
    for (long k = 0; k < kc; k++) {
        const vreal b0 = V_MASKLOAD(b + k * ldb, m0), b1 = V_MASKLOAD(b + k * ldb + V_LANES, m1);
        const real *ak = a + k * sak;
        vreal ar = V_SET1(ak[0]);
        c00 = V_FMA(ar, b0, c00), c01 = V_FMA(ar, b1, c01);
        ar = V_SET1(ak[s1]);
        c10 = V_FMA(ar, b0, c10), c11 = V_FMA(ar, b1, c11);
        ar = V_SET1(ak[s2]);
        c20 = V_FMA(ar, b0, c20), c21 = V_FMA(ar, b1, c21);
        ar = V_SET1(ak[s3]);
        c30 = V_FMA(ar, b0, c30), c31 = V_FMA(ar, b1, c31);
        ar = V_SET1(ak[s4]);
        c40 = V_FMA(ar, b0, c40), c41 = V_FMA(ar, b1, c41);
        ar = V_SET1(ak[s5]);
        c50 = V_FMA(ar, b0, c50), c51 = V_FMA(ar, b1, c51);
    }
    const vreal acc[AVX2_MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    const __m256i mask[2] = {m0, m1};
    for (int r = 0; r < mr; r++) {
        real *cr = c + r * ldc;
        for (int h = 0; h < 2; h++) {
            vreal v = add ? V_ADD(V_MASKLOAD(cr + h * V_LANES, mask[h]), acc[r][h]) : acc[r][h];
            if (bias) v = V_ADD(v, V_MASKLOAD(bias + h * V_LANES, mask[h]));
            V_MASKSTORE(cr + h * V_LANES, mask[h], v);
        }
    }
}

#endif
