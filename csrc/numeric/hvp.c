/* Exact Hessian-vector products by forward-over-reverse (Pearlmutter's R-operator).
 *
 * For a direction v on the parameters, H v = d/de grad L(theta + e v) at e = 0. After the
 * ordinary forward, a tangent forward carries the directional derivative of every saved
 * activation (the tangent workspace is laid out by encoder_layout exactly like the primal one,
 * aliases included, so every tangent sits where its primal would). The backward then runs the
 * primal gradient and its tangent together, layer by layer; the tangents of the parameter
 * gradients are H v. The primal gradients of parameters are never formed, so the model's
 * gradient buffer is left alone. The last layer's readout-position shortcut (Tq = 1, see
 * encoder.c) carries over unchanged: no other position reaches the loss; and so does its
 * attention in the input space, without keys or values (tangent_pooled.c), except with RoPE. */
#include "encoder.h"
#include "tangent.h"

#include <string.h>

typedef struct {
    acts a;        /* primal activations and backward scratch */
    acts t;        /* their tangents */
    real *attn;    /* tangent attention scratch */
} hvp_work;

static sf_status hvp_reserve(sf_model *m, long B, long T, int nt, hvp_work *w) {
    const sf_config *c = &m->cfg;
    sf_status st = SF(encoder_reserve)(m, B, T, nt, &w->a); /* validates B, T and the layer count */
    if (st) return st;
    w->t.layer = w->t.layer_storage;
    const size_t primal = SF(encoder_layout)(c, B, T, 0, nt, NULL, &w->a);
    const size_t tangent = SF(encoder_layout)(c, B, T, 0, nt, NULL, &w->t);
    bump extra = {NULL, 0};
    take(&extra, SF(attention_tangent_scratch)(T, T, c->d_model, c->n_heads, nt));
    if ((st = sf_workspace_reserve(&m->work, primal + tangent + extra.used))) return st;
    char *base = m->work.base;
    SF(encoder_layout)(c, B, T, 0, nt, base, &w->a);
    SF(encoder_layout)(c, B, T, 0, nt, base + primal, &w->t);
    w->attn = (real *)(base + primal + tangent);
    w->a.pool_last = 1; /* the last layer's keys and values are never formed (tangent_pooled.c) */
    return SF_OK;
}

/* ---- tangent forward --------------------------------------------------------------------------- */

/* (value, tangent) pairs of a layer: a saved activation and its tangent (s, ts), a weight and the
 * direction's block (w, v), a gradient scratch buffer and its tangent (a, t). */
#define ACT(f) cdual_of(s->f, ts->f)
#define WGT(f, off) cdual_of(w->f + (off), v->f + (off))
#define GRAD(f) dual_of(a->f, t->f)
#define CGRAD(f) cdual_of(a->f, t->f)

/* Layer 0's in-projection tangent on the distinct rows, as the forward ran it (encoder.c): the
 * tangents of the 2T distinct embeddings, their LayerNorm (pre), q|k|v and RoPE, gathered into ts. */
static void distinct_inproj_tangent_forward(const sf_config *c, const params *p, const params *pv, const acts *a,
                                            acts *t, const uint8_t *x, sf_par *par) {
    const layer_params *w = &p->layer[0], *v = &pv->layer[0];
    const long d = c->d_model, B = a->B, T = a->T, U = a->U;
    embed_distinct_rows(t->u_emb, pv->tok, pv->pos, U, T, d, concat_positions(c)); /* a fixed table: no tangent */
    if (c->norm == SF_NORM_PRE)
        SF(layernorm_tangent_forward)(t->u_ain, t->u_mean, t->u_rstd, cdual_of(a->u_emb, t->u_emb), a->u_mean,
                                      a->u_rstd, cdual_of(w->g1, v->g1), v->be1, U, d, par);
    SF(linear_tangent_forward)(t->u_qkv, cdual_of(a->u_ain, t->u_ain), cdual_of(w->w_in, v->w_in), v->b_in, U, d,
                               3 * d, t->wt, par);
    rope_distinct_rows(c, p->rope, t->u_qkv, T, 0, par);
    SF(gather_distinct)(t->layer[0].q, t->layer[0].kv, t->u_qkv, x, B, T, a->layer[0].Tq, d);
}

/* p: parameters, pv: the direction (same layout); a: saved activations, t: their tangents; x: layer
 * 0's tokens when its in-projection runs on the distinct rows (a->U > 0), else NULL. */
static void layer_tangent_forward(const sf_config *c, const params *p, const params *pv, int l, const acts *a, acts *t,
                                  const uint8_t *x, real *attn, sf_par *par) {
    const layer_params *w = &p->layer[l], *v = &pv->layer[l];
    const layer_acts *s = &a->layer[l];
    layer_acts *ts = &t->layer[l];
    real *wt = t->wt;
    const long d = c->d_model, F = c->d_ff, H = c->n_heads, B = a->B, T = a->T, N = B * T, Tq = s->Tq, Nq = B * Tq;
    const int pre = c->norm == SF_NORM_PRE, post = c->norm == SF_NORM_POST;
    if (Tq < T) gather_last(ts->xq, ts->x, B, T, d);
    if (x) {
        distinct_inproj_tangent_forward(c, p, pv, a, t, x, par);
    } else {
        if (pre)
            SF(layernorm_tangent_forward)(ts->a_in, ts->ln1_mean, ts->ln1_rstd, ACT(x), s->ln1_mean, s->ln1_rstd,
                                          WGT(g1, 0), v->be1, N, d, par);
        if (Tq < T && pre) gather_last(ts->aq, ts->a_in, B, T, d);
        SF(linear_tangent_forward)(ts->q, ACT(aq), WGT(w_in, 0), v->b_in, Nq, d, d, wt, par);
        rope_heads(c, p->rope, ts->q, d, B, Tq, T, 0, par); /* RoPE is linear: the tangents turn with the values */
        if (!s->pooled) {
            SF(linear_tangent_forward)(ts->kv, ACT(a_in), WGT(w_in, d * d), v->b_in + d, N, d, 2 * d, wt, par);
            rope_heads(c, p->rope, ts->kv, 2 * d, B, T, T, 0, par);
        }
    }
    if (s->pooled) SF(pooled_attention_tangent_forward)(c, w, v, s, ts, a, t, par);
    else SF(attention_tangent_forward)(ts->ctx, ts->p, ACT(q), ACT(kv), s->p, B, T, Tq, d, H, attn, par);
    SF(linear_tangent_forward)(ts->r1, ACT(ctx), WGT(w_out, 0), v->b_out, Nq, d, d, wt, par);
    add_into(ts->r1, ts->xq, Nq * d);
    if (post)
        SF(layernorm_tangent_forward)(ts->h, ts->ln1_mean, ts->ln1_rstd, ACT(r1), s->ln1_mean, s->ln1_rstd, WGT(g1, 0),
                                      v->be1, Nq, d, par);
    if (pre)
        SF(layernorm_tangent_forward)(ts->f_in, ts->ln2_mean, ts->ln2_rstd, ACT(h), s->ln2_mean, s->ln2_rstd,
                                      WGT(g2, 0), v->be2, Nq, d, par);
    SF(linear_tangent_forward)(ts->a1, ACT(f_in), WGT(w1, 0), v->b1, Nq, d, F, wt, par);
    SF(activation_tangent_forward)(ts->act, ts->a1, s->a1, Nq * F, c->activation, par);
    SF(linear_tangent_forward)(ts->r2, ACT(act), WGT(w2, 0), v->b2, Nq, F, d, wt, par);
    add_into(ts->r2, ts->h, Nq * d);
    if (post)
        SF(layernorm_tangent_forward)(ts->out, ts->ln2_mean, ts->ln2_rstd, ACT(r2), s->ln2_mean, s->ln2_rstd,
                                      WGT(g2, 0), v->be2, Nq, d, par);
}

void SF(stack_tangent_forward)(const sf_config *c, const params *p, const params *v, const uint8_t *x, acts *a,
                               acts *t, real *attn, sf_par *par) {
    const long B = a->B, T = a->T, d = c->d_model;
    /* linear in the learned tables (a fixed table has no tangent) */
    SF(embedding_forward)(t->layer[0].x, x, v->tok, v->pos, B, T, d, concat_positions(c), par);
    for (int l = 0; l < c->n_layers; l++)
        layer_tangent_forward(c, p, v, l, a, t, l == 0 && a->U ? x : NULL, attn, par);
    if (c->final_norm)
        SF(layernorm_tangent_forward)(t->final_out, t->final_mean, t->final_rstd, cdual_of(a->final_in, t->final_in),
                                      a->final_mean, a->final_rstd, cdual_of(p->gf, v->gf), v->bf, a->Nf, d, par);
}

/* ---- backward with tangents ------------------------------------------------------------------ */

/* Layer 0's in-projection backward with tangents on the distinct rows (encoder.c's
 * distinct_inproj_backward): the gradients of q|k|v and their tangents summed per distinct row,
 * back through RoPE, the projection (its blocks of H v) and LayerNorm (pre), into u_gemb of a and t
 * (the tangent's goes to the embedding tables: stack_tangent_backward). */
static void distinct_inproj_tangent_backward(const sf_config *c, const params *p, const params *pv, layer_params *hv,
                                             acts *a, acts *t, const uint8_t *x, sf_par *par) {
    const layer_params *w = &p->layer[0], *v = &pv->layer[0];
    const long d = c->d_model, T = a->T, U = a->U;
    SF(sum_by_distinct_row)(a, &a->layer[0], x, d, par);
    SF(sum_by_distinct_row)(t, &a->layer[0], x, d, par);
    rope_distinct_rows(c, p->rope, a->u_grad, T, 1, par); /* per distinct row: its position turns back */
    rope_distinct_rows(c, p->rope, t->u_grad, T, 1, par);
    SF(linear_tangent_backward)(dual_of(a->u_gain, t->u_gain), 0, hv->w_in, hv->b_in, cdual_of(a->u_grad, t->u_grad),
                                cdual_of(a->u_ain, t->u_ain), cdual_of(w->w_in, v->w_in), U, d, 3 * d, par);
    if (c->norm == SF_NORM_PRE)
        SF(layernorm_tangent_backward)(dual_of(a->u_gemb, t->u_gemb), 0, hv->g1, hv->be1,
                                       cdual_of(a->u_gain, t->u_gain), cdual_of(a->u_emb, t->u_emb),
                                       cdual_of(a->u_mean, t->u_mean), cdual_of(a->u_rstd, t->u_rstd),
                                       cdual_of(w->g1, v->g1), U, d, par);
}

/* Mirrors encoder.c's layer_backward. g_out (Nq,d): the gradient w.r.t. the layer output and its
 * tangent; writes g_x (N,d) for the layer input and the layer's blocks of H v to hv. a and t hold
 * the primal and tangent scratch; x as in layer_tangent_forward (then g_x keeps the residual path). */
static void layer_tangent_backward(const sf_config *c, const params *p, const params *pv, params *phv, int l, acts *a,
                                   acts *t, const uint8_t *x, cdual g_out, dual g_x, real *attn, sf_par *par) {
    const layer_params *w = &p->layer[l], *v = &pv->layer[l];
    layer_params *hv = &phv->layer[l];
    const layer_acts *s = &a->layer[l], *ts = &t->layer[l];
    const long d = c->d_model, F = c->d_ff, H = c->n_heads, B = a->B, T = a->T, N = B * T, Tq = s->Tq, Nq = B * Tq;
    const int pre = c->norm == SF_NORM_PRE, post = c->norm == SF_NORM_POST;
    /* out = LN2(r2) (post) or r2 */
    cdual g_r2 = g_out;
    if (post) {
        SF(layernorm_tangent_backward)(GRAD(g_r2), 0, hv->g2, hv->be2, g_out, ACT(r2), ACT(ln2_mean), ACT(ln2_rstd),
                                       WGT(g2, 0), Nq, d, par);
        g_r2 = CGRAD(g_r2);
    }
    /* r2 = h + linear2(act(linear1(f_in))) */
    memcpy(a->g_h, g_r2.v, (size_t)(Nq * d) * sizeof(real));
    memcpy(t->g_h, g_r2.t, (size_t)(Nq * d) * sizeof(real));
    SF(linear_tangent_backward)(GRAD(g_f), 0, hv->w2, hv->b2, g_r2, ACT(act), WGT(w2, 0), Nq, F, d, par);
    SF(activation_tangent_backward)(GRAD(g_f), CGRAD(g_f), ACT(a1), Nq * F, c->activation, par);
    if (pre) {
        SF(linear_tangent_backward)(GRAD(g_ctx), 0, hv->w1, hv->b1, CGRAD(g_f), ACT(f_in), WGT(w1, 0), Nq, d, F, par);
        SF(layernorm_tangent_backward)(GRAD(g_h), 1, hv->g2, hv->be2, CGRAD(g_ctx), ACT(h), ACT(ln2_mean),
                                       ACT(ln2_rstd), WGT(g2, 0), Nq, d, par);
    } else {
        SF(linear_tangent_backward)(GRAD(g_h), 1, hv->w1, hv->b1, CGRAD(g_f), ACT(f_in), WGT(w1, 0), Nq, d, F, par);
    }
    /* h = LN1(r1) (post) or r1; r1 = xq + out_proj(attention) */
    cdual g_r1 = CGRAD(g_h);
    if (post) {
        SF(layernorm_tangent_backward)(GRAD(g_r1), 0, hv->g1, hv->be1, CGRAD(g_h), ACT(r1), ACT(ln1_mean),
                                       ACT(ln1_rstd), WGT(g1, 0), Nq, d, par);
        g_r1 = CGRAD(g_r1);
    }
    SF(linear_tangent_backward)(GRAD(g_ctx), 0, hv->w_out, hv->b_out, g_r1, ACT(ctx), WGT(w_out, 0), Nq, d, d, par);
    const dual g_ain = pre ? GRAD(g_ain) : g_x; /* the attention inputs' gradient */
    if (s->pooled)
        SF(pooled_attention_tangent_backward)(c, w, v, hv, s, ts, a, t, g_ain.v, g_ain.t, par);
    else
        SF(attention_tangent_backward)(GRAD(g_q), GRAD(g_kv), CGRAD(g_ctx), ACT(p), ACT(q), ACT(kv), B, T, Tq, d, H,
                                       attn, par);
    if (x) { /* layer 0 on the distinct rows: g_x keeps only the residual path */
        distinct_inproj_tangent_backward(c, p, pv, hv, a, t, x, par);
        for (int k = 0; k < 2; k++) {
            real *dst = k ? g_x.t : g_x.v;
            const real *src = k ? g_r1.t : g_r1.v;
            if (Tq == T) {
                memcpy(dst, src, (size_t)(N * d) * sizeof(real));
            } else {
                memset(dst, 0, (size_t)(N * d) * sizeof(real));
                scatter_add_last(dst, src, B, T, d);
            }
        }
        return;
    }
    for (int k = 0; k < 2; k++) { /* the gradients and their tangents back through RoPE */
        rope_heads(c, p->rope, (k ? t : a)->g_q, d, B, Tq, T, 1, par);
        if (!s->pooled) rope_heads(c, p->rope, (k ? t : a)->g_kv, 2 * d, B, T, T, 1, par);
    }
    /* in_proj: weight rows [0,d) from the queries, [d,3d) from keys and values (pooled: done) */
    if (!s->pooled)
        SF(linear_tangent_backward)(g_ain, 0, hv->w_in + d * d, hv->b_in + d, CGRAD(g_kv), ACT(a_in), WGT(w_in, d * d),
                                    N, d, 2 * d, par);
    if (Tq == T) {
        SF(linear_tangent_backward)(g_ain, 1, hv->w_in, hv->b_in, CGRAD(g_q), ACT(aq), WGT(w_in, 0), Nq, d, d, par);
    } else {
        SF(linear_tangent_backward)(GRAD(g_aq), 0, hv->w_in, hv->b_in, CGRAD(g_q), ACT(aq), WGT(w_in, 0), Nq, d, d,
                                    par);
        scatter_add_last(g_ain.v, a->g_aq, B, T, d);
        scatter_add_last(g_ain.t, t->g_aq, B, T, d);
    }
    if (pre)
        SF(layernorm_tangent_backward)(g_x, 0, hv->g1, hv->be1, cdual_of(g_ain.v, g_ain.t), ACT(x), ACT(ln1_mean),
                                       ACT(ln1_rstd), WGT(g1, 0), N, d, par);
    /* the residual path from xq */
    if (Tq == T) {
        add_into(g_x.v, g_r1.v, N * d);
        add_into(g_x.t, g_r1.t, N * d);
    } else {
        scatter_add_last(g_x.v, g_r1.v, B, T, d);
        scatter_add_last(g_x.t, g_r1.t, B, T, d);
    }
}

void SF(stack_tangent_backward)(const sf_config *c, const params *p, const params *v, params *hv, const uint8_t *x,
                                acts *a, acts *t, real *attn, sf_par *par) {
    const long B = a->B, T = a->T, d = c->d_model, L = c->n_layers;
    if (c->final_norm)
        SF(layernorm_tangent_backward)(GRAD(g_cur), 0, hv->gf, hv->bf, CGRAD(g_next), cdual_of(a->final_in, t->final_in),
                                       cdual_of(a->final_mean, t->final_mean), cdual_of(a->final_rstd, t->final_rstd),
                                       cdual_of(p->gf, v->gf), a->Nf, d, par);
    dual g_out = GRAD(g_cur), g_in = GRAD(g_next);
    for (long l = L - 1; l >= 0; l--) {
        layer_tangent_backward(c, p, v, hv, l, a, t, l == 0 && a->U ? x : NULL, cdual_of(g_out.v, g_out.t), g_in, attn,
                               par);
        const dual swap = g_out;
        g_out = g_in, g_in = swap;
    }
    SF(embedding_backward_add)(hv->tok, hv->pos, g_out.t, x, B, T, 2, d, concat_positions(c), par);
    add_distinct_rows_grad(hv->tok, hv->pos, t->u_gemb, a->U, T, d, concat_positions(c)); /* layer 0's distinct rows */
}

/* The encoder model: the stack and its readout. */
static void tangent_forward(sf_model *m, const uint8_t *x, const params *p, const params *v, hvp_work *w,
                            sf_par *par) {
    acts *a = &w->a, *t = &w->t;
    SF(stack_tangent_forward)(&m->cfg, p, v, x, a, t, w->attn, par);
    SF(readout_tangent_forward)(t->out, cdual_of(a->final_out, t->final_out), cdual_of(p->w_head, v->w_head),
                                v->b_head, a->B, m->cfg.d_model);
}

/* Needs a->g_out from the loss and the tangent forward; writes H v to hv (parameter layout). */
static void tangent_backward(sf_model *m, const uint8_t *x, const params *p, const params *v, params *hv,
                             hvp_work *w, sf_loss loss, sf_par *par) {
    const sf_config *c = &m->cfg;
    acts *a = &w->a, *t = &w->t;
    const long B = a->B, d = c->d_model;
    SF(loss_tangent)(t->g_out, a->out, t->out, B, loss);
    SF(readout_tangent_backward)(dual_of(stack_output_grad(c, a), stack_output_grad(c, t)), hv->w_head, hv->b_head,
                                 CGRAD(g_out), cdual_of(a->final_out, t->final_out), cdual_of(p->w_head, v->w_head), B,
                                 d);
    zero_embedding_grads(m, hv);
    SF(stack_tangent_backward)(c, p, v, hv, x, a, t, w->attn, par);
}

#undef ACT
#undef WGT
#undef GRAD
#undef CGRAD

/* ---- entry point --------------------------------------------------------------------------------- */

sf_status SF(hvp)(sf_model *m, const sf_seq_data *d, int n_batches, sf_loss loss, const void *v_, int k, void *hv_,
                  double *loss_out, int nt, sf_stop_hook stop, void *stop_ctx) {
    const uint8_t *x = d->x;
    const int B = d->rows / n_batches, T = d->T;
    const real *y = d->y, *v = v_;
    real *hv = hv_;
    const long P = m->n_params;
    sf_par par = {sf_resolve_threads(nt), 1};
    hvp_work w;
    sf_status st = hvp_reserve(m, B, T, par.nt, &w);
    if (st) return st;
    /* with several batches each H_b v is formed here, then averaged into hv in batch order */
    real *one = NULL;
    if (n_batches > 1) {
        if ((st = sf_check_budget((size_t)P * sizeof(real), "the HVP's per-batch product"))) return st;
        if (!(one = sf_alloc((size_t)P * sizeof(real))))
            return sf_fail(SF_ENOMEM, "could not allocate the HVP's per-batch product");
    }
    params p, pv, ph;
    SF(encoder_params)(m, (real *)m->params, &p);
    double total = 0;
    for (int b = 0; b < n_batches && st == SF_OK; b++) {
        const uint8_t *xb = x + (size_t)b * B * T;
        SF(encoder_forward)(m, xb, &w.a, &par);
        total += SF(loss_forward_backward)(w.a.g_out, w.a.out, y + (size_t)b * B, B, loss);
        for (int i = 0; i < k; i++) {
            if (stop && stop(stop_ctx)) {
                st = sf_fail(SF_EINTR, "interrupted at direction %d of %d, batch %d of %d", i, k, b, n_batches);
                break;
            }
            real *out = hv + (size_t)i * P;
            SF(encoder_params)(m, (real *)(v + (size_t)i * P), &pv);
            SF(encoder_params)(m, n_batches > 1 ? one : out, &ph);
            tangent_forward(m, xb, &p, &pv, &w, &par);
            tangent_backward(m, xb, &p, &pv, &ph, &w, loss, &par);
            if (n_batches > 1) running_mean_add(out, one, P, b, n_batches); /* out = sum_b H_b v / n_batches */
        }
    }
    if (loss_out) *loss_out = total / n_batches;
    sf_free(one);
    m->last_threads = par.used;
    return st;
}
