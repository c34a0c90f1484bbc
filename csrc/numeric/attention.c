/* Multi-head scaled dot-product attention, one task per (batch, head), unmasked or causal.
 * Each task owns its slices of ctx, P, dQ and dKV, so results never depend on the thread count.
 * A causal mask leaves exact zeros in P, so the backward (and the tangent kernels) need no mask:
 * every term of a masked key carries a factor P = 0.
 *
 * Two forms of one task, chosen by the head width dh (a function of the shape, never of the
 * thread count): wide heads use the GEMM (its tiles need dh columns); narrow heads (dh < 16,
 * e.g. the paper's d=4 long-length runs with dh=2) put the keys on the vector axis, holding K, V
 * and their gradients transposed (dh,T) so every loop runs contiguously over T. */
#include "kernels.h"
#include "vexp.h"


static inline real row_max(const real *p, long n) {
    real mx = p[0];
#pragma omp simd reduction(max : mx)
    for (long j = 0; j < n; j++) mx = p[j] > mx ? p[j] : mx;
    return mx;
}

SF_VECTOR_ISA void SF(softmax_row)(real *p, long seen, long T, real scale) {
    for (long j = 0; j < seen; j++) p[j] *= scale;
    SF(softmax_scaled_row)(p, seen, T);
}

SF_VECTOR_ISA void SF(softmax_scaled_row)(real *p, long seen, long T) {
    SF(softmax_scaled_row_max)(p, seen, T, row_max(p, seen));
}

SF_VECTOR_ISA void SF(softmax_scaled_row_max)(real *p, long seen, long T, real mx) {
    for (long j = 0; j < seen; j++) p[j] = vexp(p[j] - mx);
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (long j = 0; j < seen; j++) s += p[j];
    const real inv = (real)(1.0 / s);
    for (long j = 0; j < seen; j++) p[j] *= inv;
    for (long j = seen; j < T; j++) p[j] = 0;
}

SF_VECTOR_ISA void SF(softmax_row_backward)(real *g, const real *p, long T, real scale) {
    const real dot = softmax_dot(g, p, T);
    for (long j = 0; j < T; j++) g[j] = p[j] * (g[j] - dot) * scale;
}

/* xt (dh,T) = the dh columns at X (T rows of stride ld), transposed. */
static void gather_transposed(real *xt, const real *X, long T, long ld, long dh) {
    for (long j = 0; j < T; j++)
        for (long c = 0; c < dh; c++) xt[c * T + j] = X[j * ld + c];
}

/* ---- wide heads: the GEMM -------------------------------------------------------------------- */

/* ctx, Q (B,Tq,d): queries are the last Tq positions; KV (B,T,2d) = [K | V]; P (B,H,Tq,T).
 * causal: query i (position T - Tq + i) sees keys j <= T - Tq + i. */
static void attention_task_wide(real *ctx, real *P, const real *Q, const real *KV, long T, long Tq, long d,
                                long dh, int causal) {
    sf_par one = {1, 0};
    const real scale = score_scale(dh);
    SF(gemm_bt)(Tq, T, dh, Q, d, 1, KV, 2 * d, P, T, NULL, 0, &one); /* S = Q K^T */
    for (long i = 0; i < Tq; i++) SF(softmax_row)(P + i * T, causal ? T - Tq + i + 1 : T, T, scale);
    SF(gemm)(Tq, dh, T, P, T, 1, KV + d, 2 * d, ctx, d, NULL, 0, &one);
}

static void attention_task_wide_backward(real *dQ, real *dKV, const real *dctx, const real *P, const real *Q,
                                         const real *KV, long T, long Tq, long d, long dh, real *work) {
    sf_par one = {1, 0};
    const real scale = score_scale(dh);
    real *dS = work;
    SF(gemm_bt)(Tq, T, dh, dctx, d, 1, KV + d, 2 * d, dS, T, NULL, 0, &one); /* dP (Tq,T) = dctx V^T */
    for (long i = 0; i < Tq; i++) SF(softmax_row_backward)(dS + i * T, P + i * T, T, scale);
    /* dQ (Tq,dh) = dS K;  dK (T,dh) = dS^T Q;  dV (T,dh) = P^T dctx */
    SF(gemm)(Tq, dh, T, dS, T, 1, KV, 2 * d, dQ, d, NULL, 0, &one);
    SF(gemm)(T, dh, Tq, dS, 1, T, Q, d, dKV, 2 * d, NULL, 0, &one);
    SF(gemm)(T, dh, Tq, P, 1, T, dctx, d, dKV + d, 2 * d, NULL, 0, &one);
}

/* ---- narrow heads: keys on the vector axis ---------------------------------------------------- */

/* Same contract as the wide task; work: 2 dh T. */
SF_VECTOR_ISA static void attention_task_narrow(real *ctx, real *P, const real *Q, const real *KV, long T, long Tq,
                                                   long d, long dh, int causal, real *work) {
    const real scale = score_scale(dh);
    real *kt = work, *vt = work + dh * T;
    gather_transposed(kt, KV, T, 2 * d, dh);
    gather_transposed(vt, KV + d, T, 2 * d, dh);
    for (long i = 0; i < Tq; i++) {
        real *s = P + i * T;
        const real *q = Q + i * d;
        for (long j = 0; j < T; j++) s[j] = 0;
        for (long c = 0; c < dh; c++) { /* the same multiply-adds, in the same order, as the GEMM */
            const real qc = q[c], *k = kt + c * T;
#pragma omp simd
            for (long j = 0; j < T; j++) s[j] += qc * k[j];
        }
        SF(softmax_row)(s, causal ? T - Tq + i + 1 : T, T, scale);
        for (long c = 0; c < dh; c++) {
            const real *v = vt + c * T;
            real acc = 0;
#pragma omp simd reduction(+ : acc)
            for (long j = 0; j < T; j++) acc += s[j] * v[j];
            ctx[i * d + c] = acc;
        }
    }
}

/* Same contract as the wide backward; work: 4 dh T + T. */
SF_VECTOR_ISA static void attention_task_narrow_backward(real *dQ, real *dKV, const real *dctx, const real *P,
                                                            const real *Q, const real *KV, long T, long Tq, long d,
                                                            long dh, real *work) {
    const real scale = score_scale(dh);
    real *kt = work, *vt = kt + dh * T, *dkt = vt + dh * T, *dvt = dkt + dh * T, *g = dvt + dh * T;
    gather_transposed(kt, KV, T, 2 * d, dh);
    gather_transposed(vt, KV + d, T, 2 * d, dh);
    for (long j = 0; j < 2 * dh * T; j++) dkt[j] = 0;
    for (long i = 0; i < Tq; i++) {
        const real *p = P + i * T, *q = Q + i * d, *dc = dctx + i * d;
        for (long j = 0; j < T; j++) g[j] = 0;
        for (long c = 0; c < dh; c++) { /* dP row = dctx V^T */
            const real dcc = dc[c], *v = vt + c * T;
#pragma omp simd
            for (long j = 0; j < T; j++) g[j] += dcc * v[j];
        }
        SF(softmax_row_backward)(g, p, T, scale);
        for (long c = 0; c < dh; c++) {
            const real *k = kt + c * T;
            real *dk = dkt + c * T, *dv = dvt + c * T, acc = 0;
            const real qc = q[c], dcc = dc[c];
#pragma omp simd reduction(+ : acc)
            for (long j = 0; j < T; j++) {
                acc += g[j] * k[j];
                dk[j] += qc * g[j];
                dv[j] += dcc * p[j];
            }
            dQ[i * d + c] = acc;
        }
    }
    for (long j = 0; j < T; j++)
        for (long c = 0; c < dh; c++) dKV[j * 2 * d + c] = dkt[c * T + j], dKV[j * 2 * d + d + c] = dvt[c * T + j];
}

/* ---- the batched entry points ----------------------------------------------------------------- */

long SF(attention_scratch)(long T, long Tq, long d, long H, int nt) {
    const long dh = d / H;
    /* wide: dP (Tq,T); the tabled backward's dP (T,T), reused for dV (T,dh), and V (T,dh); the
     * folded forward's value rows (T,d) */
    const long wide = T * (Tq > dh ? Tq : dh) + T * dh;
    return (long)nt * (dh < SF_NARROW_HEAD ? 4 * dh * T + T : (wide > T * d ? wide : T * d));
}

static int attention_threads(long B, long T, long Tq, long d, long H, const sf_par *par) {
    return B * H > 1 && B * H * Tq * T * d >= 1048576 ? par->nt : 1;
}

void SF(attention_forward)(real *ctx, real *P, const real *Q, const real *KV, long B, long T, long Tq,
                           long d, long H, real *scratch, sf_par *par) {
    SF(attention_forward_ex)(ctx, P, Q, KV, B, T, Tq, d, H, 0, T, scratch, par);
}

void SF(for_each_head_task)(long tasks, int nt, real *scratch, long per_thread, head_task_fn fn, const void *args,
                            sf_par *par) {
    (void)nt; /* unused in a serial build */
#pragma omp parallel num_threads(nt)
    {
        real *work = scratch ? scratch + (long)SF_THREAD_ID() * per_thread : NULL;
        if (SF_THREAD_ID() == 0) sf_par_note(par, SF_TEAM_SIZE());
#pragma omp for schedule(static)
        for (long task = 0; task < tasks; task++) fn(args, task, work);
    }
}

typedef struct {
    real *ctx, *P, *dQ, *dKV;
    const real *Q, *KV, *dctx, *Pc;
    long T, Tq, d, H, kv_rows;
    int causal;
} attention_args;

static void forward_task(const void *args, long task, real *work) {
    const attention_args *a = args;
    const long dh = a->d / a->H;
    const head_slices s = head_slices_of(task, a->H, a->Tq, a->T, a->kv_rows, a->d);
    if (dh < SF_NARROW_HEAD)
        attention_task_narrow(a->ctx + s.q, a->P + s.p, a->Q + s.q, a->KV + s.kv, a->T, a->Tq, a->d, dh, a->causal,
                              work);
    else attention_task_wide(a->ctx + s.q, a->P + s.p, a->Q + s.q, a->KV + s.kv, a->T, a->Tq, a->d, dh, a->causal);
}

void SF(attention_forward_ex)(real *ctx, real *P, const real *Q, const real *KV, long B, long T, long Tq,
                              long d, long H, int causal, long kv_rows, real *scratch, sf_par *par) {
    const attention_args args = {.ctx = ctx, .P = P, .Q = Q, .KV = KV, .T = T, .Tq = Tq, .d = d, .H = H,
                                 .kv_rows = kv_rows, .causal = causal};
    SF(for_each_head_task)(B * H, attention_threads(B, T, Tq, d, H, par), scratch, SF(attention_scratch)(T, Tq, d, H, 1),
                           forward_task, &args, par);
}

static void backward_task(const void *args, long task, real *work) {
    const attention_args *a = args;
    const long dh = a->d / a->H;
    const head_slices s = head_slices_of(task, a->H, a->Tq, a->T, a->T, a->d);
    if (dh < SF_NARROW_HEAD)
        attention_task_narrow_backward(a->dQ + s.q, a->dKV + s.kv, a->dctx + s.q, a->Pc + s.p, a->Q + s.q, a->KV + s.kv,
                                       a->T, a->Tq, a->d, dh, work);
    else
        attention_task_wide_backward(a->dQ + s.q, a->dKV + s.kv, a->dctx + s.q, a->Pc + s.p, a->Q + s.q, a->KV + s.kv,
                                     a->T, a->Tq, a->d, dh, work);
}

void SF(attention_backward)(real *dQ, real *dKV, const real *dctx, const real *P, const real *Q,
                            const real *KV, long B, long T, long Tq, long d, long H, real *scratch,
                            sf_par *par) {
    const attention_args args = {.dQ = dQ, .dKV = dKV, .dctx = dctx, .Pc = P, .Q = Q, .KV = KV, .T = T, .Tq = Tq,
                                 .d = d, .H = H};
    SF(for_each_head_task)(B * H, attention_threads(B, T, Tq, d, H, par), scratch, SF(attention_scratch)(T, Tq, d, H, 1),
                           backward_task, &args, par);
}
