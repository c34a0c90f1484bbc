/* Tangents of multi-head attention, one task per (batch, head) as attention.c: each task owns
 * its slices of the outputs, so results never depend on the thread count.
 *
 * Per task, with S = Q K^T / sqrt(dh), P = softmax(S) (rows), ctx = P V:
 *   forward   tS = (tQ K^T + Q tK^T) / sqrt(dh),  tP = P o (tS - rowsum(P o tS)),  tctx = tP V + P tV
 *   backward  dP = dctx V^T,  dS = P o (dP - delta) / sqrt(dh),  delta = rowsum(P o dP), and
 *             tdP = tdctx V^T + dctx tV^T,  t(delta) = rowsum(tP o dP + P o tdP),
 *             tdS = (tP o (dP - delta) + P o (tdP - t(delta))) / sqrt(dh),
 *             tdQ = tdS K + dS tK,  tdK = tdS^T Q + dS^T tQ,  tdV = tP^T dctx + P^T tdctx. */
#include "tangent.h"

static void task_tangent_forward(real *tctx, real *tP, const real *tQ, const real *tKV, const real *P,
                                 const real *Q, const real *KV, long T, long Tq, long d, long dh) {
    sf_par one = {1, 0};
    const real scale = (real)(1.0 / sqrt((double)dh));
    SF(gemm_bt)(Tq, T, dh, tQ, d, 1, KV, 2 * d, tP, T, NULL, 0, &one);
    SF(gemm_bt)(Tq, T, dh, Q, d, 1, tKV, 2 * d, tP, T, NULL, 1, &one);
    for (long i = 0; i < Tq; i++) {
        const real *p = P + i * T;
        real *tp = tP + i * T;
        double s = 0;
        for (long j = 0; j < T; j++) s += (double)p[j] * tp[j];
        const real mean = (real)s;
        for (long j = 0; j < T; j++) tp[j] = p[j] * (tp[j] - mean) * scale;
    }
    SF(gemm)(Tq, dh, T, tP, T, 1, KV + d, 2 * d, tctx, d, NULL, 0, &one);
    SF(gemm)(Tq, dh, T, P, T, 1, tKV + d, 2 * d, tctx, d, NULL, 1, &one);
}

static void task_tangent_backward(real *dQ, real *dKV, real *tdQ, real *tdKV, const real *dctx, const real *tdctx,
                                  const real *P, const real *tP, const real *Q, const real *tQ, const real *KV,
                                  const real *tKV, long T, long Tq, long d, long dh, real *work) {
    sf_par one = {1, 0};
    const real scale = (real)(1.0 / sqrt((double)dh));
    real *dS = work, *tdS = dS + Tq * T;
    SF(gemm_bt)(Tq, T, dh, dctx, d, 1, KV + d, 2 * d, dS, T, NULL, 0, &one);
    SF(gemm_bt)(Tq, T, dh, tdctx, d, 1, KV + d, 2 * d, tdS, T, NULL, 0, &one);
    SF(gemm_bt)(Tq, T, dh, dctx, d, 1, tKV + d, 2 * d, tdS, T, NULL, 1, &one);
    for (long i = 0; i < Tq; i++) { /* softmax backward and its tangent, then the score scale */
        const real *p = P + i * T, *tp = tP + i * T;
        real *g = dS + i * T, *tg = tdS + i * T;
        double s = 0, ts = 0;
        for (long j = 0; j < T; j++) {
            s += (double)g[j] * p[j];
            ts += (double)tg[j] * p[j] + (double)g[j] * tp[j];
        }
        const real dot = (real)s, tdot = (real)ts;
        for (long j = 0; j < T; j++) {
            tg[j] = (tp[j] * (g[j] - dot) + p[j] * (tg[j] - tdot)) * scale;
            g[j] = p[j] * (g[j] - dot) * scale;
        }
    }
    SF(gemm)(Tq, dh, T, dS, T, 1, KV, 2 * d, dQ, d, NULL, 0, &one);
    SF(gemm)(Tq, dh, T, tdS, T, 1, KV, 2 * d, tdQ, d, NULL, 0, &one);
    SF(gemm)(Tq, dh, T, dS, T, 1, tKV, 2 * d, tdQ, d, NULL, 1, &one);
    SF(gemm)(T, dh, Tq, dS, 1, T, Q, d, dKV, 2 * d, NULL, 0, &one);
    SF(gemm)(T, dh, Tq, tdS, 1, T, Q, d, tdKV, 2 * d, NULL, 0, &one);
    SF(gemm)(T, dh, Tq, dS, 1, T, tQ, d, tdKV, 2 * d, NULL, 1, &one);
    SF(gemm)(T, dh, Tq, P, 1, T, dctx, d, dKV + d, 2 * d, NULL, 0, &one);
    SF(gemm)(T, dh, Tq, tP, 1, T, dctx, d, tdKV + d, 2 * d, NULL, 0, &one);
    SF(gemm)(T, dh, Tq, P, 1, T, tdctx, d, tdKV + d, 2 * d, NULL, 1, &one);
}

long SF(attention_tangent_scratch)(long T, long Tq, long d, long H, int nt) {
    return (long)nt * 2 * Tq * T;
}

/* the same team-size rule as attention.c */
static int tangent_threads(long B, long T, long Tq, long d, long H, const sf_par *par) {
    return B * H > 1 && B * H * Tq * T * d >= 65536 ? par->nt : 1;
}

void SF(attention_tangent_forward)(real *tctx, real *tP, cdual Q_, cdual KV_, const real *P, long B, long T, long Tq,
                                   long d, long H, real *scratch, sf_par *par) {
    const real *Q = Q_.v, *tQ = Q_.t, *KV = KV_.v, *tKV = KV_.t;
    const long dh = d / H;
    const int nt = tangent_threads(B, T, Tq, d, H, par);
    (void)nt, (void)scratch; /* unused in a serial build; the forward needs no scratch */
#pragma omp parallel num_threads(nt)
    {
        if (SF_THREAD_ID() == 0) sf_par_note(par, SF_TEAM_SIZE());
#pragma omp for schedule(static)
        for (long task = 0; task < B * H; task++) {
            const long b = task / H, h = task % H, q = b * Tq * d + h * dh, kv = b * T * 2 * d + h * dh;
            task_tangent_forward(tctx + q, tP + task * Tq * T, tQ + q, tKV + kv, P + task * Tq * T, Q + q, KV + kv,
                                 T, Tq, d, dh);
        }
    }
}

void SF(attention_tangent_backward)(dual dQ_, dual dKV_, cdual dctx_, cdual P_, cdual Q_, cdual KV_, long B, long T,
                                    long Tq, long d, long H, real *scratch, sf_par *par) {
    real *dQ = dQ_.v, *tdQ = dQ_.t, *dKV = dKV_.v, *tdKV = dKV_.t;
    const real *dctx = dctx_.v, *tdctx = dctx_.t, *P = P_.v, *tP = P_.t, *Q = Q_.v, *tQ = Q_.t, *KV = KV_.v,
               *tKV = KV_.t;
    const long dh = d / H, per_thread = 2 * Tq * T;
    const int nt = tangent_threads(B, T, Tq, d, H, par);
    (void)nt; /* unused in a serial build */
#pragma omp parallel num_threads(nt)
    {
        real *work = scratch + (long)SF_THREAD_ID() * per_thread;
        if (SF_THREAD_ID() == 0) sf_par_note(par, SF_TEAM_SIZE());
#pragma omp for schedule(static)
        for (long task = 0; task < B * H; task++) {
            const long b = task / H, h = task % H, q = b * Tq * d + h * dh, kv = b * T * 2 * d + h * dh;
            const long pp = task * Tq * T;
            task_tangent_backward(dQ + q, dKV + kv, tdQ + q, tdKV + kv, dctx + q, tdctx + q, P + pp, tP + pp, Q + q,
                                  tQ + q, KV + kv, tKV + kv, T, Tq, d, dh, work);
        }
    }
}
