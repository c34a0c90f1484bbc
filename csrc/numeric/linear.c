/* Linear layers (PyTorch layout: W is (out, in)) on top of the one GEMM. */
#include "kernels.h"

#include <stdlib.h>

/* Below this many elements a row or column loop runs on the calling thread. */
#define PARALLEL_MIN 131072

void SF(transpose_weight)(real *wt, const real *W, long out, long in) {
    for (long o = 0; o < out; o++)
        for (long i = 0; i < in; i++) wt[i * out + o] = W[o * in + i];
}

void SF(linear_forward)(real *Y, const real *X, const real *W, const real *b, long M, long in, long out,
                        real *wt, sf_par *par) {
    SF(transpose_weight)(wt, W, out, in); /* the GEMM's B operand, contiguous along the output features */
    SF(gemm)(M, out, in, X, in, 1, wt, out, Y, out, b, 0, par);
}

void SF(linear_backward)(real *dX, int accumulate_dx, real *dW, real *db, const real *dY, const real *X,
                         const real *W, long M, long in, long out, sf_par *par) {
    if (dX) SF(gemm)(M, in, out, dY, out, 1, W, in, dX, in, NULL, accumulate_dx, par);
    double *sums = dW && db ? malloc(sizeof(double) * out) : NULL; /* the bias gradient from dW's GEMM */
    if (dW) {
        if (sums) SF(gemm_row_sums)(out, in, M, dY, 1, out, X, in, dW, in, sums, par);
        else SF(gemm)(out, in, M, dY, 1, out, X, in, dW, in, NULL, 0, par);
    }
    if (sums) {
        for (long o = 0; o < out; o++) db[o] = (real)sums[o];
    } else if (db) {
        SF(column_sums)(db, dY, M, out, out, par);
    }
    free(sums);
}

void SF(column_sums)(real *out, const real *Y, long M, long N, long ldy, sf_par *par) {
    enum { W = 64 };
    const long blocks = (N + W - 1) / W;
    const int nt = M * N >= PARALLEL_MIN && blocks > 1 ? par->nt : 1;
    (void)nt; /* unused in a serial build */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (long blk = 0; blk < blocks; blk++) {
        const long j0 = blk * W, w = N - j0 < W ? N - j0 : W;
        double acc[W] = {0};
        for (long r = 0; r < M; r++) {
            const real *y = Y + r * ldy + j0;
#pragma omp simd
            for (long q = 0; q < w; q++) acc[q] += y[q];
        }
        for (long q = 0; q < w; q++) out[j0 + q] = (real)acc[q];
    }
}
