/* Tangents of the pooled last layer (encoder.c's pooled_attention_forward and _backward), for the
 * HVP: the last layer of the encoder model attends from its readout position only, so its
 * attention runs in the input space, without keys or values, in the HVP as in the loss. Per
 * sequence and head, with rows a_j (the attention inputs), query q, W_k and W_v the head's key and
 * value rows of the in-projection:
 *
 *   forward   pq = W_k^T q,  s_j = scale pq . a_j,  p = softmax(s),  pa = sum_j p_j a_j,
 *             ctx = W_v pa + b_v
 *   tangent   tpq = tW_k^T q + W_k^T tq,  ts_j = scale (tpq . a_j + pq . ta_j),
 *             tp = p o (ts - p . ts),  tpa = sum_j tp_j a_j + p_j ta_j,  tctx = tW_v pa + W_v tpa + tb_v
 *   backward  gpa = W_v^T gctx,  gp_j = gpa . a_j,  gs = p o (gp - p . gp) scale,
 *             ga_j = p_j gpa + gs_j pq,  gpq = sum_j gs_j a_j,  gq = W_k gpq,
 *             gW_v = gctx pa^T,  gb_v = gctx,  gW_k = q gpq^T,  gb_k = 0 (it cancels in the softmax)
 *
 * and the tangent of every backward line (product rule). One task per sequence (its heads add into
 * the same rows, in order), so the bits never depend on the thread count. */
#include "encoder.h"
#include "tangent.h"

/* One (sequence, head): tp (T), the probabilities' tangent, and tpa (d); rows, trows (T,d). */
SF_VECTOR_ISA static void pool_head_tangent(real *tp, real *tpa, const real *p, const real *pq, const real *tpq, const real *rows,
                              const real *trows, long T, long d, real scale) {
    double mean = 0;
    for (long j = 0; j < T; j++) {
        const real *r = rows + j * d, *tr = trows + j * d;
        real acc = 0;
#pragma omp simd reduction(+ : acc)
        for (long k = 0; k < d; k++) acc += tpq[k] * r[k] + pq[k] * tr[k];
        tp[j] = acc * scale;
        mean += (double)p[j] * tp[j];
    }
    for (long j = 0; j < T; j++) tp[j] = p[j] * (tp[j] - (real)mean);
    for (long k = 0; k < d; k++) tpa[k] = 0;
    for (long j = 0; j < T; j++) {
        const real *r = rows + j * d, *tr = trows + j * d, tpj = tp[j], pj = p[j];
#pragma omp simd
        for (long k = 0; k < d; k++) tpa[k] += tpj * r[k] + pj * tr[k];
    }
}

void SF(pooled_attention_tangent_forward)(const sf_config *c, const layer_params *w, const layer_params *v,
                                          const layer_acts *s, layer_acts *ts, const acts *a, acts *t, sf_par *par) {
    const long d = c->d_model, H = c->n_heads, dh = d / H, B = a->B, T = a->T;
    const real scale = score_scale(dh);
    for (long h = 0; h < H; h++) { /* tpq = tW_k^T q + W_k^T tq */
        const long k_row = (d + h * dh) * d;
        SF(gemm)(B, d, dh, s->q + h * dh, d, 1, v->w_in + k_row, d, t->pool_q + h * d, H * d, NULL, 0, par);
        SF(gemm)(B, d, dh, ts->q + h * dh, d, 1, w->w_in + k_row, d, t->pool_q + h * d, H * d, NULL, 1, par);
    }
    const int nt = B * H * T * d >= 131072 ? par->nt : 1;
    (void)nt; /* unused in a serial build */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (long task = 0; task < B * H; task++)
        pool_head_tangent(ts->p + task * T, t->pool_a + task * d, s->p + task * T, a->pool_q + task * d,
                          t->pool_q + task * d, s->a_in + task / H * T * d, ts->a_in + task / H * T * d, T, d, scale);
    sf_par_note(par, nt);
    for (long h = 0; h < H; h++) { /* tctx = tW_v pa + W_v tpa + tb_v */
        const long v_row = (2 * d + h * dh) * d;
        SF(gemm_bt)(B, dh, d, a->pool_a + h * d, H * d, 1, v->w_in + v_row, d, ts->ctx + h * dh, d,
                    v->b_in + 2 * d + h * dh, 0, par);
        SF(gemm_bt)(B, dh, d, t->pool_a + h * d, H * d, 1, w->w_in + v_row, d, ts->ctx + h * dh, d, NULL, 1, par);
    }
}

/* One (sequence, head) of the backward with its tangent, given gpa and tgpa (d): g_rows and
 * tg_rows (T,d) +=, gpq and tgpq (d) overwritten; gp, tgp (T): scratch for gp_j and its tangent. */
SF_VECTOR_ISA static void pool_head_tangent_backward(real *g_rows, real *tg_rows, real *gpq, real *tgpq, real *gp,
                                                     real *tgp, const real *p, const real *tp, const real *gpa,
                                                     const real *tgpa, const real *pq, const real *tpq,
                                                     const real *rows, const real *trows, long T, long d, real scale) {
    double dot = 0, tdot = 0;
    for (long j = 0; j < T; j++) {
        const real *r = rows + j * d, *tr = trows + j * d;
        real g = 0, tg = 0;
#pragma omp simd reduction(+ : g, tg)
        for (long k = 0; k < d; k++) {
            g += gpa[k] * r[k];
            tg += tgpa[k] * r[k] + gpa[k] * tr[k];
        }
        gp[j] = g, tgp[j] = tg;
        dot += (double)p[j] * g;
        tdot += (double)tp[j] * g + (double)p[j] * tg;
    }
    for (long k = 0; k < d; k++) gpq[k] = tgpq[k] = 0;
    for (long j = 0; j < T; j++) {
        const real *r = rows + j * d, *tr = trows + j * d;
        const real pj = p[j], tpj = tp[j], gs = pj * (gp[j] - (real)dot) * scale,
                   tgs = (tpj * (gp[j] - (real)dot) + pj * (tgp[j] - (real)tdot)) * scale;
        real *gr = g_rows + j * d, *tgr = tg_rows + j * d;
#pragma omp simd
        for (long k = 0; k < d; k++) {
            gr[k] += pj * gpa[k] + gs * pq[k];
            tgr[k] += tpj * gpa[k] + pj * tgpa[k] + tgs * pq[k] + gs * tpq[k];
            gpq[k] += gs * r[k];
            tgpq[k] += tgs * r[k] + gs * tr[k];
        }
    }
}

void SF(pooled_attention_tangent_backward)(const sf_config *c, const layer_params *w, const layer_params *v,
                                           layer_params *hv, const layer_acts *s, const layer_acts *ts, acts *a,
                                           acts *t, real *g_ain, real *tg_ain, sf_par *par) {
    const long d = c->d_model, H = c->n_heads, dh = d / H, B = a->B, T = a->T;
    const real scale = score_scale(dh);
    for (long h = 0; h < H; h++) {
        const long v_row = (2 * d + h * dh) * d;
        const real *gctx = a->g_ctx + h * dh, *tgctx = t->g_ctx + h * dh;
        /* gpa = W_v^T gctx, tgpa = W_v^T tgctx + tW_v^T gctx */
        SF(gemm)(B, d, dh, gctx, d, 1, w->w_in + v_row, d, a->g_pool_a + h * d, H * d, NULL, 0, par);
        SF(gemm)(B, d, dh, tgctx, d, 1, w->w_in + v_row, d, t->g_pool_a + h * d, H * d, NULL, 0, par);
        SF(gemm)(B, d, dh, gctx, d, 1, v->w_in + v_row, d, t->g_pool_a + h * d, H * d, NULL, 1, par);
        /* t(gW_v) = tgctx^T pa + gctx^T tpa */
        SF(gemm)(dh, d, B, tgctx, 1, d, a->pool_a + h * d, H * d, hv->w_in + v_row, d, NULL, 0, par);
        SF(gemm)(dh, d, B, gctx, 1, d, t->pool_a + h * d, H * d, hv->w_in + v_row, d, NULL, 1, par);
    }
    SF(column_sums)(hv->b_in + 2 * d, t->g_ctx, B, d, d, par);
    for (long k = 0; k < d; k++) hv->b_in[d + k] = 0;
    const int nt = B * H * T * d >= 131072 ? par->nt : 1;
    (void)nt; /* unused in a serial build */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (long b = 0; b < B; b++) {
        real *g_rows = g_ain + b * T * d, *tg_rows = tg_ain + b * T * d, gp[T], tgp[T];
        for (long i = 0; i < T * d; i++) g_rows[i] = tg_rows[i] = 0;
        for (long h = 0; h < H; h++) {
            const long task = b * H + h;
            pool_head_tangent_backward(g_rows, tg_rows, a->g_pool_q + task * d, t->g_pool_q + task * d, gp, tgp,
                                       s->p + task * T, ts->p + task * T, a->g_pool_a + task * d,
                                       t->g_pool_a + task * d, a->pool_q + task * d, t->pool_q + task * d,
                                       s->a_in + b * T * d, ts->a_in + b * T * d, T, d, scale);
        }
    }
    sf_par_note(par, nt);
    for (long h = 0; h < H; h++) {
        const long k_row = (d + h * dh) * d;
        /* gq = W_k gpq, tgq = W_k tgpq + tW_k gpq; t(gW_k) = tq^T gpq + q^T tgpq */
        SF(gemm_bt)(B, dh, d, a->g_pool_q + h * d, H * d, 1, w->w_in + k_row, d, a->g_q + h * dh, d, NULL, 0, par);
        SF(gemm_bt)(B, dh, d, t->g_pool_q + h * d, H * d, 1, w->w_in + k_row, d, t->g_q + h * dh, d, NULL, 0, par);
        SF(gemm_bt)(B, dh, d, a->g_pool_q + h * d, H * d, 1, v->w_in + k_row, d, t->g_q + h * dh, d, NULL, 1, par);
        SF(gemm)(dh, d, B, ts->q + h * dh, 1, d, a->g_pool_q + h * d, H * d, hv->w_in + k_row, d, NULL, 0, par);
        SF(gemm)(dh, d, B, s->q + h * dh, 1, d, t->g_pool_q + h * d, H * d, hv->w_in + k_row, d, NULL, 1, par);
    }
}
