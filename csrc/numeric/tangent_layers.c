/* Tangent kernels of the linear, LayerNorm, activation, readout and loss layers (see tangent.h
 * for the naming). Each row's sums run serially in a fixed order and parameter-gradient
 * tangents are summed over rows in order by the thread owning the column, so results never
 * depend on the thread count. */
#include "tangent.h"

#define PARALLEL_MIN 32768
#define THREADS_FOR(work) ((work) >= PARALLEL_MIN ? par->nt : 1)

/* ---- linear ---------------------------------------------------------------------------------- */

void SF(linear_tangent_forward)(real *tY, cdual X, cdual W, const real *tb, long M, long in, long out, real *wt,
                                sf_par *par) {
    SF(linear_forward)(tY, X.t, W.v, tb, M, in, out, wt, par);
    for (long o = 0; o < out; o++)
        for (long i = 0; i < in; i++) wt[i * out + o] = W.t[o * in + i];
    SF(gemm)(M, out, in, X.v, in, 1, wt, out, tY, out, NULL, 1, par);
}

void SF(linear_tangent_backward)(dual dX, int accumulate_dx, real *tdW, real *tdb, cdual dY, cdual X, cdual W, long M,
                                 long in, long out, sf_par *par) {
    if (dX.v) SF(gemm)(M, in, out, dY.v, out, 1, W.v, in, dX.v, in, NULL, accumulate_dx, par);
    SF(gemm)(M, in, out, dY.t, out, 1, W.v, in, dX.t, in, NULL, accumulate_dx, par);
    SF(gemm)(M, in, out, dY.v, out, 1, W.t, in, dX.t, in, NULL, 1, par);
    SF(gemm)(out, in, M, dY.t, 1, out, X.v, in, tdW, in, NULL, 0, par);
    SF(gemm)(out, in, M, dY.v, 1, out, X.t, in, tdW, in, NULL, 1, par);
    SF(column_sums)(tdb, dY.t, M, out, out, par);
}

/* ---- LayerNorm ------------------------------------------------------------------------------
 * With xh = (x - mean) r and r = 1/sqrt(var + eps):  t(mean) = mean(tx),
 * t(r) = -r^2 mean(xh tx)  (any eps >= 0), and t(xh) = (tx - t(mean)) r + (x - mean) t(r).
 * RMSNorm (mean NULL, as in layers.c) is the same with mean = t(mean) = 0 and no mean term in the
 * backward (r = 1/sqrt(mean(x^2) + eps) gives the same t(r)); no bias, so tb and tdb are NULL. */

void SF(layernorm_tangent_forward)(real *tY, real *tmean, real *trstd, cdual X_, const real *mean, const real *rstd,
                                   cdual g_, const real *tb, long N, long d, sf_par *par) {
    const real *X = X_.v, *tX = X_.t, *g = g_.v, *tg = g_.t;
#pragma omp parallel for num_threads(THREADS_FOR(N * d)) schedule(static)
    for (long r = 0; r < N; r++) {
        const real *x = X + r * d, *tx = tX + r * d;
        const real m_ = mean ? mean[r] : 0, rs = rstd[r];
        double s = 0, c = 0;
        for (long j = 0; j < d; j++) {
            s += tx[j];
            c += (double)((x[j] - m_) * rs) * tx[j];
        }
        const real tm = mean ? (real)(s / d) : 0, trs = (real)(-(double)rs * rs * c / d);
        if (mean) tmean[r] = tm;
        trstd[r] = trs;
        real *ty = tY + r * d;
        if (tb) {
#pragma omp simd
            for (long j = 0; j < d; j++) {
                const real xh = (x[j] - m_) * rs, txh = (tx[j] - tm) * rs + (x[j] - m_) * trs;
                ty[j] = txh * g[j] + xh * tg[j] + tb[j];
            }
        } else {
#pragma omp simd
            for (long j = 0; j < d; j++) ty[j] = (tx[j] * rs + x[j] * trs) * g[j] + x[j] * rs * tg[j];
        }
    }
}

/* dX = r (u - mean(u) - xh mean(u xh)) with u = g dY; its tangent follows by the product rule. */
void SF(layernorm_tangent_backward)(dual dX_, int accumulate_dx, real *tdg, real *tdb, cdual dY_, cdual X_,
                                    cdual mean_, cdual rstd_, cdual g_, long N, long d, sf_par *par) {
    real *dX = dX_.v, *tdX = dX_.t;
    const real *dY = dY_.v, *tdY = dY_.t, *X = X_.v, *tX = X_.t, *mean = mean_.v, *tmean = mean_.t;
    const real *rstd = rstd_.v, *trstd = rstd_.t, *g = g_.v, *tg = g_.t;
    SF(layernorm_backward)(dX, accumulate_dx ? dX : NULL, NULL, NULL, dY, X, mean, rstd, g, N, d, NULL, par);
#pragma omp parallel num_threads(THREADS_FOR(N * d))
    {
#pragma omp for schedule(static)
        for (long r = 0; r < N; r++) {
            const real *x = X + r * d, *tx = tX + r * d, *dy = dY + r * d, *tdy = tdY + r * d;
            const real m_ = mean ? mean[r] : 0, rs = rstd[r], tm = mean ? tmean[r] : 0, trs = trstd[r];
            double s1 = 0, s2 = 0, t1 = 0, t2 = 0;
            for (long j = 0; j < d; j++) {
                const real xh = (x[j] - m_) * rs, txh = (tx[j] - tm) * rs + (x[j] - m_) * trs;
                const real u = g[j] * dy[j], tu = tg[j] * dy[j] + g[j] * tdy[j];
                s1 += u;
                s2 += (double)u * xh;
                t1 += tu;
                t2 += (double)tu * xh + (double)u * txh;
            }
            const real m1 = mean ? (real)(s1 / d) : 0, m2 = (real)(s2 / d), tm1 = mean ? (real)(t1 / d) : 0,
                       tm2 = (real)(t2 / d);
            real *tdx = tdX + r * d;
#pragma omp simd
            for (long j = 0; j < d; j++) {
                const real xh = (x[j] - m_) * rs, txh = (tx[j] - tm) * rs + (x[j] - m_) * trs;
                const real u = g[j] * dy[j], tu = tg[j] * dy[j] + g[j] * tdy[j];
                const real v = trs * (u - m1 - xh * m2) + rs * (tu - tm1 - txh * m2 - xh * tm2);
                tdx[j] = accumulate_dx ? tdx[j] + v : v;
            }
        }
        /* parameter tangents: columns owned by threads, rows summed in order */
        long lo, hi;
        sf_partition(d, 16, SF_THREAD_ID(), SF_TEAM_SIZE(), &lo, &hi);
        for (long j0 = lo; j0 < hi; j0 += 64) {
            const long w = hi - j0 < 64 ? hi - j0 : 64;
            double ag[64] = {0}, ab[64] = {0};
            for (long r = 0; r < N; r++) {
                const real *x = X + r * d + j0, *tx = tX + r * d + j0, *dy = dY + r * d + j0, *tdy = tdY + r * d + j0;
                const real m_ = mean ? mean[r] : 0, rs = rstd[r], tm = mean ? tmean[r] : 0, trs = trstd[r];
#pragma omp simd
                for (long q = 0; q < w; q++) {
                    const real xh = (x[q] - m_) * rs, txh = (tx[q] - tm) * rs + (x[q] - m_) * trs;
                    ag[q] += (double)tdy[q] * xh + (double)dy[q] * txh;
                    ab[q] += tdy[q];
                }
            }
            for (long q = 0; q < w; q++) {
                tdg[j0 + q] = (real)ag[q];
                if (tdb) tdb[j0 + q] = (real)ab[q];
            }
        }
    }
}

/* ---- activations ----------------------------------------------------------------------------- */

#define INV_SQRT_2PI R(0.39894228040143267794)
#define SQRT_2_PI R(0.79788456080286535588)
#define GELU_C R(0.044715)

/* act''(x); act' is activation_backward's */
static inline real second_derivative(real x, sf_activation act) {
    if (act == SF_ACT_RELU) return 0;
    if (act == SF_ACT_GELU) return INV_SQRT_2PI * rexp(R(-0.5) * x * x) * (2 - x * x);
    /* tanh form: phi = x (1 + t) / 2, t = tanh(s), s = c (x + a x^3) */
    const real t = rtanh(SQRT_2_PI * (x + GELU_C * x * x * x));
    const real s1 = SQRT_2_PI * (1 + 3 * GELU_C * x * x), s2 = 6 * SQRT_2_PI * GELU_C * x;
    return (1 - t * t) * (s1 + R(0.5) * x * (s2 - 2 * t * s1 * s1));
}

void SF(activation_tangent_forward)(real *tY, const real *tX, const real *X, long n, sf_activation act,
                                    sf_par *par) {
    SF(activation_backward)(tY, tX, X, n, act, par);
}

void SF(activation_tangent_backward)(dual dX, cdual dY, cdual X, long n, sf_activation act, sf_par *par) {
    SF(activation_backward)(dX.t, dY.t, X.v, n, act, par);
    if (act != SF_ACT_RELU) {
#pragma omp parallel for num_threads(THREADS_FOR(n * 4)) schedule(static)
        for (long i = 0; i < n; i++) dX.t[i] += second_derivative(X.v[i], act) * X.t[i] * dY.v[i];
    }
    SF(activation_backward)(dX.v, dY.v, X.v, n, act, par); /* last: dX may alias dY */
}

/* ---- readout and loss ------------------------------------------------------------------------ */

void SF(readout_tangent_forward)(real *tout, cdual X, cdual w, const real *tb, long B, long d) {
    for (long i = 0; i < B; i++) {
        const real *x = X.v + i * d, *tx = X.t + i * d;
        double s = 0;
        for (long j = 0; j < d; j++) s += (double)tx[j] * w.v[j] + (double)x[j] * w.t[j];
        tout[i] = (real)(s + tb[0]);
    }
}

void SF(readout_tangent_backward)(dual dX_, real *tdw, real *tdb, cdual dout_, cdual X_, cdual w_, long B, long d) {
    real *dX = dX_.v, *tdX = dX_.t;
    const real *dout = dout_.v, *tdout = dout_.t, *X = X_.v, *tX = X_.t, *w = w_.v, *tw = w_.t;
    double sb = 0;
    for (long i = 0; i < B; i++) {
        for (long j = 0; j < d; j++) {
            dX[i * d + j] = dout[i] * w[j];
            tdX[i * d + j] = tdout[i] * w[j] + dout[i] * tw[j];
        }
        sb += tdout[i];
    }
    for (long j = 0; j < d; j++) {
        double s = 0;
        for (long i = 0; i < B; i++) s += (double)tdout[i] * X[i * d + j] + (double)dout[i] * tX[i * d + j];
        tdw[j] = (real)s;
    }
    tdb[0] = (real)sb;
}

void SF(loss_tangent)(real *tdout, const real *out, const real *tout, long B, sf_loss loss) {
    for (long i = 0; i < B; i++) {
        if (loss == SF_LOSS_MSE) {
            tdout[i] = (real)(2.0 * tout[i] / B);
        } else { /* sigmoid'(z) = e^-|z| / (1 + e^-|z|)^2, stable for any z */
            const double e = exp(-fabs((double)out[i]));
            tdout[i] = (real)(e / ((1 + e) * (1 + e)) * tout[i] / B);
        }
    }
}
