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

/* The operands of every (sequence, head) task: gradients and values with their tangents. */
typedef struct {
    real *tctx, *tP;
    dual dQ, dKV;
    cdual dctx, P, Q, KV;
    long T, Tq, d, H;
} tangent_args;

static void task_tangent_forward(const void *args, long task, real *work) {
    const tangent_args *a = args;
    const long T = a->T, Tq = a->Tq, d = a->d, dh = d / a->H;
    const head_slices sl = head_slices_of(task, a->H, Tq, T, T, d);
    real *tctx = a->tctx + sl.q, *tP = a->tP + sl.p;
    const real *tQ = a->Q.t + sl.q, *tKV = a->KV.t + sl.kv, *P = a->P.v + sl.p, *Q = a->Q.v + sl.q,
               *KV = a->KV.v + sl.kv;
    (void)work; /* the forward needs no scratch */
    sf_par one = {1, 0};
    const real scale = score_scale(dh);
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

static void task_tangent_backward(const void *args, long task, real *work) {
    const tangent_args *a = args;
    const long T = a->T, Tq = a->Tq, d = a->d, dh = d / a->H;
    const head_slices sl = head_slices_of(task, a->H, Tq, T, T, d);
    real *dQ = a->dQ.v + sl.q, *tdQ = a->dQ.t + sl.q, *dKV = a->dKV.v + sl.kv, *tdKV = a->dKV.t + sl.kv;
    const real *dctx = a->dctx.v + sl.q, *tdctx = a->dctx.t + sl.q, *P = a->P.v + sl.p, *tP = a->P.t + sl.p,
               *Q = a->Q.v + sl.q, *tQ = a->Q.t + sl.q, *KV = a->KV.v + sl.kv, *tKV = a->KV.t + sl.kv;
    sf_par one = {1, 0};
    const real scale = score_scale(dh);
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

void SF(attention_tangent_forward)(real *tctx, real *tP, cdual Q, cdual KV, const real *P, long B, long T, long Tq,
                                   long d, long H, real *scratch, sf_par *par) {
    const tangent_args args = {.tctx = tctx, .tP = tP, .P = cdual_of(P, NULL), .Q = Q, .KV = KV, .T = T, .Tq = Tq,
                               .d = d, .H = H};
    (void)scratch;
    SF(for_each_head_task)(B * H, tangent_threads(B, T, Tq, d, H, par), NULL, 0, task_tangent_forward, &args, par);
}

void SF(attention_tangent_backward)(dual dQ, dual dKV, cdual dctx, cdual P, cdual Q, cdual KV, long B, long T,
                                    long Tq, long d, long H, real *scratch, sf_par *par) {
    const tangent_args args = {.dQ = dQ, .dKV = dKV, .dctx = dctx, .P = P, .Q = Q, .KV = KV, .T = T, .Tq = Tq, .d = d,
                               .H = H};
    SF(for_each_head_task)(B * H, tangent_threads(B, T, Tq, d, H, par), scratch, 2 * Tq * T, task_tangent_backward,
                           &args, par);
}
