/* Embedding, LayerNorm, activations, readout and losses: each forward next to its backward. */
#include "kernels.h"

#include <string.h>

#define PARALLEL_MIN 131072
#define THREADS_FOR(work) ((work) >= PARALLEL_MIN ? par->nt : 1)

/* ---- embedding: X[b,t] = [tok[x[b,t]] ; pos[t]] (concat) or tok[x[b,t]] + pos[t] --------------- */

void SF(embedding_forward)(real *X, const uint8_t *tokens, const real *tok, const real *pos, long B,
                           long T, long d, int concat, sf_par *par) {
    const long h = d / 2;
    if (concat) { /* two copies per row */
#pragma omp parallel for num_threads(THREADS_FOR(B * T * d)) schedule(static)
        for (long r = 0; r < B * T; r++) {
            real *x = X + r * d;
            memcpy(x, tok + tokens[r] * h, h * sizeof(real));
            memcpy(x + h, pos + (r % T) * h, h * sizeof(real));
        }
        return;
    }
#pragma omp parallel for num_threads(THREADS_FOR(B * T * d)) schedule(static)
    for (long r = 0; r < B * T; r++) embed_row(X + r * d, tok, pos, tokens[r], r % T, d, 0);
}

/* Every element is summed in row order on any thread count: positions by thread-owned ranges of
 * t (each sequence's rows of the range are contiguous, so the reads stream), tokens by
 * thread-owned ranges of columns. */
void SF(embedding_backward_add)(real *dtok, real *dpos, const real *dX, const uint8_t *tokens, long B,
                                long T, long V, long d, int concat, sf_par *par) {
    const long w = concat ? d / 2 : d, pos_col = concat ? w : 0; /* table width; where positions sit in a row */
    (void)V; /* tokens index the rows; V documents the table */
#pragma omp parallel num_threads(THREADS_FOR(B * T * d))
    {
        long lo, hi;
        sf_partition(T, 1, SF_THREAD_ID(), SF_TEAM_SIZE(), &lo, &hi);
        for (long b = 0; dpos && b < B; b++)
            for (long t = lo; t < hi; t++) {
                real *g = dpos + t * w;
                const real *s = dX + (b * T + t) * d + pos_col;
#pragma omp simd
                for (long j = 0; j < w; j++) g[j] += s[j];
            }
        sf_partition(w, 16, SF_THREAD_ID(), SF_TEAM_SIZE(), &lo, &hi);
        for (long r = 0; r < B * T && lo < hi; r++) {
            real *g = dtok + tokens[r] * w;
            const real *s = dX + r * d;
#pragma omp simd
            for (long j = lo; j < hi; j++) g[j] += s[j];
        }
    }
}

/* ---- rotary position embedding ------------------------------------------------------------- */

void SF(rope_rows)(real *X, long ld, long rows, long period, long t0, long d, long H, const double *cs, int inverse,
                   sf_par *par) {
    const long half = d / H / 2;
    const real sign = inverse ? -1 : 1;
#pragma omp parallel for num_threads(THREADS_FOR(rows * d * 4)) schedule(static)
    for (long r = 0; r < rows; r++) {
        const double *row_cs = cs + (t0 + r % period) * half * 2;
        for (long h = 0; h < H; h++) {
            real *x1 = X + r * ld + h * 2 * half, *x2 = x1 + half;
            for (long i = 0; i < half; i++) {
                const real c = (real)row_cs[2 * i], sn = sign * (real)row_cs[2 * i + 1], a = x1[i], b = x2[i];
                x1[i] = a * c - b * sn;
                x2[i] = b * c + a * sn;
            }
        }
    }
}

/* ---- LayerNorm over the last dimension (biased variance, eps inside the sqrt) ------------- *
 * and RMSNorm, LayerNorm without centring (x / sqrt(mean(x^2) + eps) * g, torch.nn.RMSNorm):
 * the same kernels, told by a NULL mean (no saved means: nothing is subtracted) and a NULL bias. */

/* One row of LayerNorm: statistics in double (vectorised reductions, fixed order per build). */
SF_VECTOR_ISA static void layernorm_row(real *y, real *mean, real *rstd, const real *x, const real *g,
                                           const real *b, double eps, long d) {
    double s = 0, v = 0;
#pragma omp simd reduction(+ : s)
    for (long j = 0; j < d; j++) s += x[j];
    const double mu = s / d;
#pragma omp simd reduction(+ : v)
    for (long j = 0; j < d; j++) v += (x[j] - mu) * (x[j] - mu);
    const double rs = 1.0 / sqrt(v / d + eps);
    *mean = (real)mu;
    *rstd = (real)rs;
    const real m_ = (real)mu, rs_ = (real)rs;
#pragma omp simd
    for (long j = 0; j < d; j++) y[j] = (x[j] - m_) * rs_ * g[j] + b[j];
}

/* One row of RMSNorm (the mean square in double). */
SF_VECTOR_ISA static void rmsnorm_row(real *y, real *rstd, const real *x, const real *g, double eps, long d) {
    double v = 0;
#pragma omp simd reduction(+ : v)
    for (long j = 0; j < d; j++) v += (double)x[j] * x[j];
    const real rs = (real)(1.0 / sqrt(v / d + eps));
    *rstd = rs;
#pragma omp simd
    for (long j = 0; j < d; j++) y[j] = x[j] * rs * g[j];
}

/* Y, X (N,d); mean (N, or NULL: RMSNorm), rstd (N) saved for backward; g (d), b (d, NULL with RMSNorm) */
void SF(layernorm_forward)(real *Y, real *mean, real *rstd, const real *X, const real *g, const real *b,
                           double eps, long N, long d, sf_par *par) {
#pragma omp parallel for num_threads(THREADS_FOR(N * d)) schedule(static)
    for (long r = 0; r < N; r++) {
        if (mean) layernorm_row(Y + r * d, mean + r, rstd + r, X + r * d, g, b, eps, d);
        else rmsnorm_row(Y + r * d, rstd + r, X + r * d, g, eps, d);
    }
}

/* dx (d) = residual (d, or NULL) + the LayerNorm input gradient of one row (centre = 0: RMSNorm's,
 * with m_ = 0: no mean to differentiate through). */
SF_VECTOR_ISA static void layernorm_row_backward(real *dx, const real *residual, const real *dy, const real *x,
                                                    real m_, real rs, const real *g, long d, int centre) {
    double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
    for (long j = 0; j < d; j++) {
        const double gdy = (double)g[j] * dy[j];
        s1 += gdy;
        s2 += gdy * ((x[j] - m_) * rs);
    }
    const real m1 = centre ? (real)(s1 / d) : 0, m2 = (real)(s2 / d);
    if (residual) {
#pragma omp simd
        for (long j = 0; j < d; j++) dx[j] = residual[j] + rs * (g[j] * dy[j] - m1 - (x[j] - m_) * rs * m2);
    } else {
#pragma omp simd
        for (long j = 0; j < d; j++) dx[j] = rs * (g[j] * dy[j] - m1 - (x[j] - m_) * rs * m2);
    }
}

/* ag (d) += dy x_hat, ab (d) += dy for one row: its part of the parameter gradients. */
SF_VECTOR_ISA static void layernorm_row_params(double *ag, double *ab, const real *dy, const real *x, real m_,
                                                  real rs, long d) {
#pragma omp simd
    for (long j = 0; j < d; j++) {
        ag[j] += (double)dy[j] * ((x[j] - m_) * rs);
        ab[j] += dy[j];
    }
}

enum { LN_CHUNK = 64 }; /* rows per partial sum of the parameter gradients */

long SF(layernorm_partials)(long N, long d) { return (N + LN_CHUNK - 1) / LN_CHUNK * 2 * d; }

/* dX (N,d) = residual (N,d: dX itself to accumulate, another gradient, or NULL) + d/dX (mean NULL:
 * RMSNorm); dg, db (d) overwritten (may be NULL), summed in the same pass as the rows (X and dY are read
 * once): per chunk of LN_CHUNK rows a partial sum, in row order, in partials
 * (layernorm_partials(N, d) doubles; NULL when dg and db are), then the chunks' partials in chunk
 * order. Chunks depend on N only, so any thread count gives the same bits. */
void SF(layernorm_backward)(real *dX, const real *residual, real *dg, real *db, const real *dY,
                            const real *X, const real *mean, const real *rstd, const real *g, long N,
                            long d, double *partials, sf_par *par) {
    const long chunks = (N + LN_CHUNK - 1) / LN_CHUNK;
    const int params = dg || db;
#pragma omp parallel num_threads(THREADS_FOR(N * d))
    {
#pragma omp for schedule(static)
        for (long c = 0; c < chunks; c++) {
            double *ag = params ? partials + c * 2 * d : NULL, *ab = params ? ag + d : NULL;
            for (long j = 0; params && j < 2 * d; j++) ag[j] = 0;
            for (long r = c * LN_CHUNK; r < N && r < (c + 1) * LN_CHUNK; r++) {
                const real m_ = mean ? mean[r] : 0;
                layernorm_row_backward(dX + r * d, residual ? residual + r * d : NULL, dY + r * d, X + r * d, m_,
                                       rstd[r], g, d, mean != NULL);
                if (params) layernorm_row_params(ag, ab, dY + r * d, X + r * d, m_, rstd[r], d);
            }
        }
        long lo, hi;
        sf_partition(d, 16, SF_THREAD_ID(), SF_TEAM_SIZE(), &lo, &hi);
        for (long j0 = lo; params && j0 < hi; j0 += 64) {
            const long w = hi - j0 < 64 ? hi - j0 : 64;
            double sg[64] = {0}, sb[64] = {0};
            for (long c = 0; c < chunks; c++)
                for (long q = 0; q < w; q++) {
                    sg[q] += partials[c * 2 * d + j0 + q];
                    sb[q] += partials[c * 2 * d + d + j0 + q];
                }
            for (long q = 0; q < w; q++) {
                if (dg) dg[j0 + q] = (real)sg[q];
                if (db) db[j0 + q] = (real)sb[q];
            }
        }
    }
}

/* ---- activations --------------------------------------------------------------------------- */

#define SQRT1_2 R(0.70710678118654752440)
#define INV_SQRT_2PI R(0.39894228040143267794)
#define SQRT_2_PI R(0.79788456080286535588)
#define GELU_C R(0.044715)

void SF(activation_forward)(real *Y, const real *X, long n, sf_activation act, sf_par *par) {
#pragma omp parallel for num_threads(THREADS_FOR(n * 4)) schedule(static)
    for (long i = 0; i < n; i++) {
        const real x = X[i];
        if (act == SF_ACT_RELU) Y[i] = x > 0 ? x : 0;
        else if (act == SF_ACT_GELU) Y[i] = R(0.5) * x * (1 + rerf(x * SQRT1_2));
        else Y[i] = R(0.5) * x * (1 + rtanh(SQRT_2_PI * (x + GELU_C * x * x * x)));
    }
}

/* dX (n) = dY * act'(X) */
void SF(activation_backward)(real *dX, const real *dY, const real *X, long n, sf_activation act,
                             sf_par *par) {
#pragma omp parallel for num_threads(THREADS_FOR(n * 4)) schedule(static)
    for (long i = 0; i < n; i++) {
        const real x = X[i];
        real dydx;
        if (act == SF_ACT_RELU) {
            dydx = x > 0 ? 1 : 0;
        } else if (act == SF_ACT_GELU) {
            dydx = R(0.5) * (1 + rerf(x * SQRT1_2)) + x * INV_SQRT_2PI * rexp(R(-0.5) * x * x);
        } else {
            const real t = rtanh(SQRT_2_PI * (x + GELU_C * x * x * x));
            dydx = R(0.5) * (1 + t) + R(0.5) * x * (1 - t * t) * SQRT_2_PI * (1 + 3 * GELU_C * x * x);
        }
        dX[i] = dY[i] * dydx;
    }
}

/* ---- readout: one scalar per sequence ------------------------------------------------------ */

void SF(readout_forward)(real *out, const real *X, const real *w, const real *b, long B, long d) {
    for (long i = 0; i < B; i++) {
        const real *x = X + i * d;
        real s = 0;
        for (long j = 0; j < d; j++) s += x[j] * w[j];
        out[i] = s + b[0];
    }
}

/* dX (B,d), dw (d), db (1) overwritten */
void SF(readout_backward)(real *dX, real *dw, real *db, const real *dout, const real *X, const real *w,
                          long B, long d) {
    double sb = 0;
    for (long i = 0; i < B; i++) {
        for (long j = 0; j < d; j++) dX[i * d + j] = dout[i] * w[j];
        sb += dout[i];
    }
    for (long j = 0; j < d; j++) {
        double s = 0;
        for (long i = 0; i < B; i++) s += (double)dout[i] * X[i * d + j];
        dw[j] = (real)s;
    }
    db[0] = (real)sb;
}

/* ---- losses (mean over the batch) ------------------------------------------------------------ */

double SF(loss_forward_backward)(real *dout, const real *out, const real *y, long B, sf_loss loss) {
    double total = 0;
    for (long i = 0; i < B; i++) {
        const double z = out[i], t = y[i];
        if (loss == SF_LOSS_MSE) {
            total += (z - t) * (z - t);
            if (dout) dout[i] = (real)(2.0 * (z - t) / B);
        } else {
            total += (z > 0 ? z : 0) - z * t + log1p(exp(-fabs(z)));
            if (dout) dout[i] = (real)((1.0 / (1.0 + exp(-z)) - t) / B);
        }
    }
    return total / B;
}
