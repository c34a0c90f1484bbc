/* Exact Hessian-vector products of the seq2seq model's teacher-forced loss, by forward-over-reverse
 * as hvp.c does for the encoder model (see there): a tangent forward over a second workspace laid
 * out by s2s_layout, then the backward of seq2seq.c run together with its tangent, sublayer by
 * sublayer, with the tangent kernels of tangent.h; the encoder is the stack's own tangent passes
 * (hvp.c). The causal mask needs nothing: masked probabilities are exact zeros, and so are their
 * tangents. The gradient buffer is not touched. */
#include "seq2seq.h"
#include "tangent.h"

#include <string.h>

typedef struct {
    s2s_acts a;   /* primal activations and backward scratch */
    s2s_acts t;   /* their tangents */
    real *attn;   /* tangent attention scratch */
    s2s_params p, v, hv;
} s2s_hvp_work;

static long max3(long a, long b, long c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

static sf_status hvp_reserve(sf_model *m, long B, long T, long S, int nt, s2s_hvp_work *w) {
    const sf_config *c = &m->cfg;
    sf_status st = SF(s2s_reserve)(m, B, T, S, nt, &w->a); /* validates the lengths */
    if (st) return st;
    const long d = c->d_model, H = c->n_heads;
    const size_t primal = SF(s2s_layout)(c, B, T, S, nt, NULL, &w->a);
    bump extra = {NULL, 0};
    take(&extra, max3(SF(attention_tangent_scratch)(T, T, d, H, nt), SF(attention_tangent_scratch)(S, S, d, H, nt),
                      SF(attention_tangent_scratch)(T, S, d, H, nt)));
    if ((st = sf_workspace_reserve(&m->work, 2 * primal + extra.used))) return st;
    char *base = m->work.base;
    SF(s2s_layout)(c, B, T, S, nt, base, &w->a);
    SF(s2s_layout)(c, B, T, S, nt, base + primal, &w->t);
    w->a.enc.loss_only = 0; /* the tangents need layer 0's keys and values */
    w->attn = (real *)(base + 2 * primal);
    return SF_OK;
}

/* ---- sublayers: tangent forward next to tangent backward ---------------------------------------- */

/* w, nw: parameters; v, nv: the direction; s, ts: saved activations and their tangents; mem, tmem:
 * the cross-attention memory and its tangent (NULL: self-attention). */
static void attn_tangent_forward(const sf_config *c, const s2s_attn_w *w, const s2s_attn_w *v, const s2s_norm_w *nw,
                                 const s2s_norm_w *nv, const s2s_sub *s, s2s_sub *ts, const real *mem,
                                 const real *tmem, long B, long Tq, long Tk, const double *rope, real *attn, real *wt,
                                 sf_par *par) {
    const long d = c->d_model, H = c->n_heads, Nq = B * Tq;
    const int pre = c->norm == SF_NORM_PRE;
    if (pre)
        SF(layernorm_tangent_forward)(ts->n_in, ts->mean, ts->rstd, ts->x, s->x, s->mean, s->rstd, nw->g, nv->g, nv->b,
                                      Nq, d, par);
    SF(linear_tangent_forward)(ts->q, ts->n_in, s->n_in, w->w_in, v->w_in, v->b_in, Nq, d, d, wt, par);
    SF(linear_tangent_forward)(ts->kv, mem ? tmem : ts->n_in, mem ? mem : s->n_in, w->w_in + d * d, v->w_in + d * d,
                               v->b_in + d, B * Tk, d, 2 * d, wt, par);
    rope_heads(c, rope, ts->q, d, B, Tq, Tq, 0, par); /* RoPE is linear: the tangents turn with the values */
    rope_heads(c, rope, ts->kv, 2 * d, B, Tk, Tk, 0, par);
    SF(attention_tangent_forward)(ts->ctx, ts->p, ts->q, ts->kv, s->p, s->q, s->kv, B, Tk, Tq, d, H, attn, par);
    SF(linear_tangent_forward)(ts->r, ts->ctx, s->ctx, w->w_out, v->w_out, v->b_out, Nq, d, d, wt, par);
    add_into(ts->r, ts->x, Nq * d);
    if (!pre)
        SF(layernorm_tangent_forward)(ts->out, ts->mean, ts->rstd, ts->r, s->r, s->mean, s->rstd, nw->g, nv->g, nv->b,
                                      Nq, d, par);
}

/* Mirrors seq2seq.c's attn_backward: (g_out, tg_out) -> (g_x, tg_x); the memory's gradient and
 * tangent are added to (g_mem, tg_mem); the sublayer's blocks of H v go to hv, hnw. */
static void attn_tangent_backward(const sf_config *c, const s2s_attn_w *w, const s2s_attn_w *v, s2s_attn_w *hv,
                                  const s2s_norm_w *nw, const s2s_norm_w *nv, s2s_norm_w *hnw, const s2s_sub *s,
                                  const s2s_sub *ts, const real *mem, const real *tmem, real *g_mem, real *tg_mem,
                                  const real *g_out, const real *tg_out, real *g_x, real *tg_x, long B, long Tq,
                                  long Tk, const double *rope, s2s_acts *a, s2s_acts *t, real *attn, sf_par *par) {
    const long d = c->d_model, H = c->n_heads, Nq = B * Tq;
    const int pre = c->norm == SF_NORM_PRE;
    const real *g_r = g_out, *tg_r = tg_out;
    if (!pre) {
        SF(layernorm_tangent_backward)(a->g_r, t->g_r, 0, hnw->g, hnw->b, g_out, tg_out, s->r, ts->r, s->mean, s->rstd,
                                       ts->mean, ts->rstd, nw->g, nv->g, Nq, d, par);
        g_r = a->g_r, tg_r = t->g_r;
    }
    SF(linear_tangent_backward)(a->g_ctx, t->g_ctx, 0, hv->w_out, hv->b_out, g_r, tg_r, s->ctx, ts->ctx, w->w_out,
                                v->w_out, Nq, d, d, par);
    SF(attention_tangent_backward)(a->g_q, a->g_kv, t->g_q, t->g_kv, a->g_ctx, t->g_ctx, s->p, ts->p, s->q, ts->q,
                                   s->kv, ts->kv, B, Tk, Tq, d, H, attn, par);
    for (int k = 0; k < 2; k++) { /* the gradients and their tangents back through RoPE */
        rope_heads(c, rope, (k ? t : a)->g_q, d, B, Tq, Tq, 1, par);
        rope_heads(c, rope, (k ? t : a)->g_kv, 2 * d, B, Tk, Tk, 1, par);
    }
    real *g_nin = pre ? a->g_nin : g_x, *tg_nin = pre ? t->g_nin : tg_x;
    if (mem) {
        SF(linear_tangent_backward)(g_mem, tg_mem, 1, hv->w_in + d * d, hv->b_in + d, a->g_kv, t->g_kv, mem, tmem,
                                    w->w_in + d * d, v->w_in + d * d, B * Tk, d, 2 * d, par);
        SF(linear_tangent_backward)(g_nin, tg_nin, 0, hv->w_in, hv->b_in, a->g_q, t->g_q, s->n_in, ts->n_in, w->w_in,
                                    v->w_in, Nq, d, d, par);
    } else {
        SF(linear_tangent_backward)(g_nin, tg_nin, 0, hv->w_in + d * d, hv->b_in + d, a->g_kv, t->g_kv, s->n_in,
                                    ts->n_in, w->w_in + d * d, v->w_in + d * d, Nq, d, 2 * d, par);
        SF(linear_tangent_backward)(g_nin, tg_nin, 1, hv->w_in, hv->b_in, a->g_q, t->g_q, s->n_in, ts->n_in, w->w_in,
                                    v->w_in, Nq, d, d, par);
    }
    if (pre)
        SF(layernorm_tangent_backward)(g_x, tg_x, 0, hnw->g, hnw->b, g_nin, tg_nin, s->x, ts->x, s->mean, s->rstd,
                                       ts->mean, ts->rstd, nw->g, nv->g, Nq, d, par);
    add_into(g_x, g_r, Nq * d);
    add_into(tg_x, tg_r, Nq * d);
}

static void ffn_tangent_forward(const sf_config *c, const s2s_ffn_w *w, const s2s_ffn_w *v, const s2s_norm_w *nw,
                                const s2s_norm_w *nv, const s2s_sub *s, s2s_sub *ts, long N, real *wt, sf_par *par) {
    const long d = c->d_model, F = c->d_ff;
    const int pre = c->norm == SF_NORM_PRE;
    if (pre)
        SF(layernorm_tangent_forward)(ts->n_in, ts->mean, ts->rstd, ts->x, s->x, s->mean, s->rstd, nw->g, nv->g, nv->b,
                                      N, d, par);
    SF(linear_tangent_forward)(ts->a1, ts->n_in, s->n_in, w->w1, v->w1, v->b1, N, d, F, wt, par);
    SF(activation_tangent_forward)(ts->act, ts->a1, s->a1, N * F, c->activation, par);
    SF(linear_tangent_forward)(ts->r, ts->act, s->act, w->w2, v->w2, v->b2, N, F, d, wt, par);
    add_into(ts->r, ts->x, N * d);
    if (!pre)
        SF(layernorm_tangent_forward)(ts->out, ts->mean, ts->rstd, ts->r, s->r, s->mean, s->rstd, nw->g, nv->g, nv->b,
                                      N, d, par);
}

static void ffn_tangent_backward(const sf_config *c, const s2s_ffn_w *w, const s2s_ffn_w *v, s2s_ffn_w *hv,
                                 const s2s_norm_w *nw, const s2s_norm_w *nv, s2s_norm_w *hnw, const s2s_sub *s,
                                 const s2s_sub *ts, const real *g_out, const real *tg_out, real *g_x, real *tg_x,
                                 long N, s2s_acts *a, s2s_acts *t, sf_par *par) {
    const long d = c->d_model, F = c->d_ff;
    const int pre = c->norm == SF_NORM_PRE;
    const real *g_r = g_out, *tg_r = tg_out;
    if (!pre) {
        SF(layernorm_tangent_backward)(a->g_r, t->g_r, 0, hnw->g, hnw->b, g_out, tg_out, s->r, ts->r, s->mean, s->rstd,
                                       ts->mean, ts->rstd, nw->g, nv->g, N, d, par);
        g_r = a->g_r, tg_r = t->g_r;
    }
    SF(linear_tangent_backward)(a->g_f, t->g_f, 0, hv->w2, hv->b2, g_r, tg_r, s->act, ts->act, w->w2, v->w2, N, F, d,
                                par);
    SF(activation_tangent_backward)(a->g_f, t->g_f, a->g_f, t->g_f, s->a1, ts->a1, N * F, c->activation, par);
    real *g_nin = pre ? a->g_nin : g_x, *tg_nin = pre ? t->g_nin : tg_x;
    SF(linear_tangent_backward)(g_nin, tg_nin, 0, hv->w1, hv->b1, a->g_f, t->g_f, s->n_in, ts->n_in, w->w1, v->w1, N,
                                d, F, par);
    if (pre)
        SF(layernorm_tangent_backward)(g_x, tg_x, 0, hnw->g, hnw->b, g_nin, tg_nin, s->x, ts->x, s->mean, s->rstd,
                                       ts->mean, ts->rstd, nw->g, nv->g, N, d, par);
    add_into(g_x, g_r, N * d);
    add_into(tg_x, tg_r, N * d);
}

/* ---- the model ------------------------------------------------------------------------------------ */

static void tangent_forward(const sf_model *m, const uint8_t *x, s2s_hvp_work *w, sf_par *par) {
    const sf_config *c = &m->cfg;
    s2s_acts *a = &w->a, *t = &w->t;
    const s2s_params *p = &w->p, *v = &w->v;
    const long B = a->B, T = a->T, S = a->S, d = c->d_model, Ld = c->n_decoder_layers;
    const real *mem = a->enc.final_out, *tmem = t->enc.final_out;
    SF(stack_tangent_forward)(c, &p->enc, &v->enc, x, &a->enc, &t->enc, w->attn, par);
    SF(embedding_forward)(t->dec_sub[0][S2S_SELF].x, a->dec, v->enc.tok, v->enc.pos, B, S, d, concat_positions(c),
                          par);
    for (long l = 0; l < Ld; l++) {
        const s2s_layer_w *pw = &p->dec[l], *vw = &v->dec[l];
        const s2s_sub *s = a->dec_sub[l];
        s2s_sub *ts = t->dec_sub[l];
        attn_tangent_forward(c, &pw->self, &vw->self, &pw->norm[0], &vw->norm[0], &s[S2S_SELF], &ts[S2S_SELF], NULL,
                             NULL, B, S, S, p->enc.rope, w->attn, t->wt, par);
        attn_tangent_forward(c, &pw->cross, &vw->cross, &pw->norm[1], &vw->norm[1], &s[S2S_CROSS], &ts[S2S_CROSS], mem,
                             tmem, B, S, T, NULL, w->attn, t->wt, par);
        ffn_tangent_forward(c, &pw->ffn, &vw->ffn, &pw->norm[2], &vw->norm[2], &s[S2S_FFN], &ts[S2S_FFN], B * S, t->wt,
                            par);
    }
    SF(layernorm_tangent_forward)(t->z, t->z_mean, t->z_rstd, t->dec_sub[Ld - 1][S2S_FFN].out,
                                  a->dec_sub[Ld - 1][S2S_FFN].out, a->z_mean, a->z_rstd, p->dec_norm.g, v->dec_norm.g,
                                  v->dec_norm.b, B * S, d, par);
    SF(readout_tangent_forward)(t->out, t->z, a->z, p->w_head, v->w_head, v->b_head, B * S, d);
}

/* Needs a->g_out from the loss and the tangent forward; writes H v into w->hv's views. */
static void tangent_backward(const sf_model *m, const uint8_t *x, s2s_hvp_work *w, sf_loss loss, sf_par *par) {
    const sf_config *c = &m->cfg;
    s2s_acts *a = &w->a, *t = &w->t;
    const s2s_params *p = &w->p, *v = &w->v;
    s2s_params *hv = &w->hv;
    const long B = a->B, T = a->T, S = a->S, d = c->d_model, Ne = B * T, Nd = B * S;
    const int Ld = c->n_decoder_layers;
    const real *mem = a->enc.final_out, *tmem = t->enc.final_out;
    SF(loss_tangent)(t->g_out, a->out, t->out, Nd, loss);
    SF(readout_tangent_backward)(a->g_b, t->g_b, hv->w_head, hv->b_head, a->g_out, t->g_out, a->z, t->z, p->w_head,
                                 v->w_head, Nd, d);
    SF(layernorm_tangent_backward)(a->g_a, t->g_a, 0, hv->dec_norm.g, hv->dec_norm.b, a->g_b, t->g_b,
                                   a->dec_sub[Ld - 1][S2S_FFN].out, t->dec_sub[Ld - 1][S2S_FFN].out, a->z_mean,
                                   a->z_rstd, t->z_mean, t->z_rstd, p->dec_norm.g, v->dec_norm.g, Nd, d, par);
    real *g_mem = stack_output_grad(c, &a->enc), *tg_mem = stack_output_grad(c, &t->enc);
    memset(g_mem, 0, (size_t)(Ne * d) * sizeof(real));
    memset(tg_mem, 0, (size_t)(Ne * d) * sizeof(real));
    real *g_out = a->g_a, *g_in = a->g_b, *tg_out = t->g_a, *tg_in = t->g_b, *tmp;
#define SWAP (tmp = g_out, g_out = g_in, g_in = tmp, tmp = tg_out, tg_out = tg_in, tg_in = tmp)
    for (int l = Ld - 1; l >= 0; l--) {
        const s2s_layer_w *pw = &p->dec[l], *vw = &v->dec[l];
        s2s_layer_w *hw = &hv->dec[l];
        const s2s_sub *s = a->dec_sub[l], *ts = t->dec_sub[l];
        ffn_tangent_backward(c, &pw->ffn, &vw->ffn, &hw->ffn, &pw->norm[2], &vw->norm[2], &hw->norm[2], &s[S2S_FFN],
                             &ts[S2S_FFN], g_out, tg_out, g_in, tg_in, Nd, a, t, par);
        SWAP;
        attn_tangent_backward(c, &pw->cross, &vw->cross, &hw->cross, &pw->norm[1], &vw->norm[1], &hw->norm[1],
                              &s[S2S_CROSS], &ts[S2S_CROSS], mem, tmem, g_mem, tg_mem, g_out, tg_out, g_in, tg_in, B,
                              S, T, NULL, a, t, w->attn, par);
        SWAP;
        attn_tangent_backward(c, &pw->self, &vw->self, &hw->self, &pw->norm[0], &vw->norm[0], &hw->norm[0],
                              &s[S2S_SELF], &ts[S2S_SELF], NULL, NULL, NULL, NULL, g_out, tg_out, g_in, tg_in, B, S, S,
                              p->enc.rope, a, t, w->attn, par);
        SWAP;
    }
#undef SWAP
    /* the shared tables: decoder use, then the encoder stack's (as seq2seq.c) */
    zero_embedding_grads(m, &hv->enc);
    SF(embedding_backward_add)(hv->enc.tok, hv->enc.pos, tg_out, a->dec, B, S, 3, d, concat_positions(c), par);
    SF(stack_tangent_backward)(c, &p->enc, &v->enc, &hv->enc, x, &a->enc, &t->enc, w->attn, par);
}

/* ---- entry point ------------------------------------------------------------------------------------ */

sf_status SF(seq2seq_hvp)(sf_model *m, const sf_seq_data *d, int n_batches, sf_loss loss, const void *v_, int k,
                          void *hv_, double *loss_out, int nt, sf_stop_hook stop, void *stop_ctx) {
    const real *v = v_;
    real *hv = hv_;
    const long P = m->n_params;
    const int B = d->rows / n_batches;
    sf_par par = {sf_resolve_threads(nt), 1};
    s2s_hvp_work *w = calloc(1, sizeof *w); /* large: views of three parameter sets, two workspaces */
    if (!w) return sf_fail(SF_ENOMEM, "out of memory for the HVP's bookkeeping");
    sf_status st = hvp_reserve(m, B, d->T, d->L, par.nt, w);
    real *one = NULL; /* with several batches each H_b v is formed here, then averaged into hv in batch order */
    if (!st && n_batches > 1) {
        if (!(st = sf_check_budget((size_t)P * sizeof(real), "the HVP's per-batch product")) &&
            !(one = sf_alloc((size_t)P * sizeof(real))))
            st = sf_fail(SF_ENOMEM, "could not allocate the HVP's per-batch product");
    }
    if (st) {
        free(w);
        return st;
    }
    SF(s2s_params)(m, (real *)m->params, &w->p);
    double total = 0;
    for (int b = 0; b < n_batches && st == SF_OK; b++) {
        const uint8_t *xb = d->x + (size_t)b * B * d->T;
        SF(s2s_set_decoder)(&w->a, d->dec + (size_t)b * B * d->S, d->S);
        SF(s2s_encode)(m, &w->p, xb, &w->a, &par);
        SF(s2s_decode)(m, &w->p, &w->a, &par);
        total += SF(loss_forward_backward)(w->a.g_out, w->a.out, (const real *)d->y + (size_t)b * B * d->L,
                                           (long)B * d->L, loss);
        for (int i = 0; i < k; i++) {
            if (stop && stop(stop_ctx)) {
                st = sf_fail(SF_EINTR, "interrupted at direction %d of %d, batch %d of %d", i, k, b, n_batches);
                break;
            }
            real *out = hv + (size_t)i * P;
            SF(s2s_params)(m, (real *)(v + (size_t)i * P), &w->v);
            SF(s2s_params)(m, n_batches > 1 ? one : out, &w->hv);
            tangent_forward(m, xb, w, &par);
            tangent_backward(m, xb, w, loss, &par);
            if (n_batches > 1) running_mean_add(out, one, P, b, n_batches); /* out = sum_b H_b v / n_batches */
        }
    }
    if (loss_out) *loss_out = total / n_batches;
    sf_free(one);
    free(w);
    m->last_threads = par.used;
    return st;
}
