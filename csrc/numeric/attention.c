/* Multi-head scaled dot-product attention, one task per (batch, head), unmasked or causal.
 * Each task owns its slices of ctx, P, dQ and dKV, so results never depend on the thread count.
 * A causal mask leaves exact zeros in P, so the backward (and the tangent kernels) need no mask:
 * every term of a masked key carries a factor P = 0. */
#include "kernels.h"

/* ctx, Q (B,Tq,d): queries are the last Tq positions; KV (B,T,2d) = [K | V]; P (B,H,Tq,T).
 * causal: query i (position T - Tq + i) sees keys j <= T - Tq + i. kt: (d/H) * T scratch. */
static void attention_task(real *ctx, real *P, const real *Q, const real *KV, long T, long Tq, long d,
                           long dh, int causal, real *kt) {
    sf_par one = {1, 0};
    const real scale = (real)(1.0 / sqrt((double)dh));
    /* K^T (dh, T) so the score GEMM reads B contiguously */
    for (long j = 0; j < T; j++)
        for (long c = 0; c < dh; c++) kt[c * T + j] = KV[j * 2 * d + c];
    SF(gemm)(Tq, T, dh, Q, d, 1, kt, T, P, T, NULL, 0, &one);
    for (long i = 0; i < Tq; i++) { /* softmax over the visible keys */
        real *p = P + i * T;
        const long seen = causal ? T - Tq + i + 1 : T;
        real mx = p[0] * scale;
        for (long j = 0; j < seen; j++) {
            p[j] *= scale;
            if (p[j] > mx) mx = p[j];
        }
        double s = 0;
        for (long j = 0; j < seen; j++) {
            p[j] = rexp(p[j] - mx);
            s += p[j];
        }
        const real inv = (real)(1.0 / s);
        for (long j = 0; j < seen; j++) p[j] *= inv;
        for (long j = seen; j < T; j++) p[j] = 0;
    }
    SF(gemm)(Tq, dh, T, P, T, 1, KV + d, 2 * d, ctx, d, NULL, 0, &one);
}

long SF(attention_scratch)(long T, long Tq, long d, long H, int nt) {
    return (long)nt * (d / H * T + Tq * T);
}

static int attention_threads(long B, long T, long Tq, long d, long H, const sf_par *par) {
    return B * H > 1 && B * H * Tq * T * d >= 1048576 ? par->nt : 1;
}

void SF(attention_forward)(real *ctx, real *P, const real *Q, const real *KV, long B, long T, long Tq,
                           long d, long H, real *scratch, sf_par *par) {
    SF(attention_forward_ex)(ctx, P, Q, KV, B, T, Tq, d, H, 0, T, scratch, par);
}

void SF(attention_forward_ex)(real *ctx, real *P, const real *Q, const real *KV, long B, long T, long Tq,
                              long d, long H, int causal, long kv_rows, real *scratch, sf_par *par) {
    const long dh = d / H;
    const int nt = attention_threads(B, T, Tq, d, H, par);
    (void)nt; /* unused in a serial build */
#pragma omp parallel num_threads(nt)
    {
        real *kt = scratch + (long)SF_THREAD_ID() * (dh * T + Tq * T);
        if (SF_THREAD_ID() == 0) sf_par_note(par, SF_TEAM_SIZE());
#pragma omp for schedule(static)
        for (long task = 0; task < B * H; task++) {
            const long b = task / H, h = task % H;
            attention_task(ctx + b * Tq * d + h * dh, P + task * Tq * T, Q + b * Tq * d + h * dh,
                           KV + b * kv_rows * 2 * d + h * dh, T, Tq, d, dh, causal, kt);
        }
    }
}

static void attention_task_backward(real *dQ, real *dKV, const real *dctx, const real *P, const real *Q,
                                    const real *KV, long T, long Tq, long d, long dh, real *work) {
    sf_par one = {1, 0};
    const real scale = (real)(1.0 / sqrt((double)dh));
    real *vt = work, *dS = work + dh * T;
    for (long j = 0; j < T; j++)
        for (long c = 0; c < dh; c++) vt[c * T + j] = KV[j * 2 * d + d + c];
    /* dP (Tq,T) = dctx V^T */
    SF(gemm)(Tq, T, dh, dctx, d, 1, vt, T, dS, T, NULL, 0, &one);
    for (long i = 0; i < Tq; i++) { /* softmax backward, then the score scale */
        const real *p = P + i * T;
        real *g = dS + i * T;
        double s = 0;
        for (long j = 0; j < T; j++) s += (double)g[j] * p[j];
        const real dot = (real)s;
        for (long j = 0; j < T; j++) g[j] = p[j] * (g[j] - dot) * scale;
    }
    /* dQ (Tq,dh) = dS K;  dK (T,dh) = dS^T Q;  dV (T,dh) = P^T dctx */
    SF(gemm)(Tq, dh, T, dS, T, 1, KV, 2 * d, dQ, d, NULL, 0, &one);
    SF(gemm)(T, dh, Tq, dS, 1, T, Q, d, dKV, 2 * d, NULL, 0, &one);
    SF(gemm)(T, dh, Tq, P, 1, T, dctx, d, dKV + d, 2 * d, NULL, 0, &one);
}

void SF(attention_backward)(real *dQ, real *dKV, const real *dctx, const real *P, const real *Q,
                            const real *KV, long B, long T, long Tq, long d, long H, real *scratch,
                            sf_par *par) {
    const long dh = d / H;
    const int nt = attention_threads(B, T, Tq, d, H, par);
    (void)nt; /* unused in a serial build */
#pragma omp parallel num_threads(nt)
    {
        real *w = scratch + (long)SF_THREAD_ID() * (dh * T + Tq * T);
#pragma omp for schedule(static)
        for (long task = 0; task < B * H; task++) {
            const long b = task / H, h = task % H;
            attention_task_backward(dQ + b * Tq * d + h * dh, dKV + b * T * 2 * d + h * dh,
                                    dctx + b * Tq * d + h * dh, P + task * Tq * T, Q + b * Tq * d + h * dh,
                                    KV + b * T * 2 * d + h * dh, T, Tq, d, dh, w);
        }
    }
}
