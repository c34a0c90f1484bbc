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

/* Sublayer k (S2S_SELF, S2S_CROSS, S2S_FFN) of decoder layer l, addressed in the work: its weights
 * and the direction's (w, v), their blocks of H v (hv), its saved activations and their tangents
 * (s, ts); attention: keys from the memory (cross) or the branch input (self, causal, RoPE). */
typedef struct {
    const s2s_attn_w *w, *v;
    s2s_attn_w *hv;
    const s2s_ffn_w *fw, *fv;
    s2s_ffn_w *fhv;
    const s2s_norm_w *nw, *nv;
    s2s_norm_w *nhv;
    const s2s_sub *s;
    s2s_sub *ts;
    long B, Tq, Tk;
    cdual mem;          /* cross-attention: the memory and its tangent; self: NULLs */
    dual g_mem;         /* cross-attention: where its gradient and tangent are added */
    const double *rope; /* self-attention with RoPE: the table */
} sublayer;

static sublayer sublayer_at(const sf_config *c, s2s_hvp_work *w, int l, int k) {
    s2s_acts *a = &w->a, *t = &w->t;
    const int cross = k == S2S_CROSS;
    sublayer u = {.nw = &w->p.dec[l].norm[k], .nv = &w->v.dec[l].norm[k], .nhv = &w->hv.dec[l].norm[k],
                  .s = &a->dec_sub[l][k], .ts = &t->dec_sub[l][k], .B = a->B, .Tq = a->S, .Tk = cross ? a->T : a->S};
    if (k == S2S_FFN) {
        u.fw = &w->p.dec[l].ffn, u.fv = &w->v.dec[l].ffn, u.fhv = &w->hv.dec[l].ffn;
        return u;
    }
    u.w = cross ? &w->p.dec[l].cross : &w->p.dec[l].self;
    u.v = cross ? &w->v.dec[l].cross : &w->v.dec[l].self;
    u.hv = cross ? &w->hv.dec[l].cross : &w->hv.dec[l].self;
    if (cross) {
        u.mem = cdual_of(a->enc.final_out, t->enc.final_out);
        u.g_mem = dual_of(stack_output_grad(c, &a->enc), stack_output_grad(c, &t->enc));
    } else {
        u.rope = w->p.enc.rope;
    }
    return u;
}

#define ACT(f) cdual_of(u->s->f, u->ts->f)
#define GRAD(f) dual_of(a->f, t->f)
#define CGRAD(f) cdual_of(a->f, t->f)
#define NORM_G cdual_of(u->nw->g, u->nv->g)

/* The sublayer's LayerNorm, forward (pre: of its input, post: of x + f) and tangent backward. */
static void norm_tangent_forward(const sf_config *c, const sublayer *u, int pre, long N, sf_par *par) {
    if (pre)
        SF(layernorm_tangent_forward)(u->ts->n_in, u->ts->mean, u->ts->rstd, ACT(x), u->s->mean, u->s->rstd, NORM_G,
                                      u->nv->b, N, c->d_model, par);
    else
        SF(layernorm_tangent_forward)(u->ts->out, u->ts->mean, u->ts->rstd, ACT(r), u->s->mean, u->s->rstd, NORM_G,
                                      u->nv->b, N, c->d_model, par);
}

static void attn_tangent_forward(const sf_config *c, const sublayer *u, real *attn, real *wt, sf_par *par) {
    const long d = c->d_model, H = c->n_heads, B = u->B, Tq = u->Tq, Tk = u->Tk, Nq = B * Tq;
    const int pre = c->norm == SF_NORM_PRE;
    const s2s_attn_w *w = u->w, *v = u->v;
    s2s_sub *ts = u->ts;
    if (pre) norm_tangent_forward(c, u, 1, Nq, par);
    SF(linear_tangent_forward)(ts->q, ACT(n_in), cdual_of(w->w_in, v->w_in), v->b_in, Nq, d, d, wt, par);
    SF(linear_tangent_forward)(ts->kv, u->mem.v ? u->mem : ACT(n_in), cdual_of(w->w_in + d * d, v->w_in + d * d),
                               v->b_in + d, B * Tk, d, 2 * d, wt, par);
    rope_heads(c, u->rope, ts->q, d, B, Tq, Tq, 0, par); /* RoPE is linear: the tangents turn with the values */
    rope_heads(c, u->rope, ts->kv, 2 * d, B, Tk, Tk, 0, par);
    SF(attention_tangent_forward)(ts->ctx, ts->p, ACT(q), ACT(kv), u->s->p, B, Tk, Tq, d, H, attn, par);
    SF(linear_tangent_forward)(ts->r, ACT(ctx), cdual_of(w->w_out, v->w_out), v->b_out, Nq, d, d, wt, par);
    add_into(ts->r, ts->x, Nq * d);
    if (!pre) norm_tangent_forward(c, u, 0, Nq, par);
}

/* Mirrors seq2seq.c's attn_backward: g_out -> g_x (with tangents); cross-attention adds the
 * memory's gradient and tangent to u->g_mem; the blocks of H v go to u->hv, u->nhv. */
static void attn_tangent_backward(const sf_config *c, const sublayer *u, cdual g_out, dual g_x, s2s_acts *a,
                                  s2s_acts *t, real *attn, sf_par *par) {
    const long d = c->d_model, H = c->n_heads, B = u->B, Tq = u->Tq, Tk = u->Tk, Nq = B * Tq;
    const int pre = c->norm == SF_NORM_PRE;
    const s2s_attn_w *w = u->w, *v = u->v;
    s2s_attn_w *hv = u->hv;
    cdual g_r = g_out;
    if (!pre) {
        SF(layernorm_tangent_backward)(GRAD(g_r), 0, u->nhv->g, u->nhv->b, g_out, ACT(r), ACT(mean), ACT(rstd), NORM_G,
                                       Nq, d, par);
        g_r = CGRAD(g_r);
    }
    SF(linear_tangent_backward)(GRAD(g_ctx), 0, hv->w_out, hv->b_out, g_r, ACT(ctx), cdual_of(w->w_out, v->w_out), Nq,
                                d, d, par);
    SF(attention_tangent_backward)(GRAD(g_q), GRAD(g_kv), CGRAD(g_ctx), ACT(p), ACT(q), ACT(kv), B, Tk, Tq, d, H, attn,
                                   par);
    for (int k = 0; k < 2; k++) { /* the gradients and their tangents back through RoPE */
        rope_heads(c, u->rope, (k ? t : a)->g_q, d, B, Tq, Tq, 1, par);
        rope_heads(c, u->rope, (k ? t : a)->g_kv, 2 * d, B, Tk, Tk, 1, par);
    }
    const dual g_nin = pre ? GRAD(g_nin) : g_x;
    const cdual w_kv = cdual_of(w->w_in + d * d, v->w_in + d * d), w_q = cdual_of(w->w_in, v->w_in);
    if (u->mem.v) {
        SF(linear_tangent_backward)(u->g_mem, 1, hv->w_in + d * d, hv->b_in + d, CGRAD(g_kv), u->mem, w_kv, B * Tk, d,
                                    2 * d, par);
        SF(linear_tangent_backward)(g_nin, 0, hv->w_in, hv->b_in, CGRAD(g_q), ACT(n_in), w_q, Nq, d, d, par);
    } else {
        SF(linear_tangent_backward)(g_nin, 0, hv->w_in + d * d, hv->b_in + d, CGRAD(g_kv), ACT(n_in), w_kv, Nq, d,
                                    2 * d, par);
        SF(linear_tangent_backward)(g_nin, 1, hv->w_in, hv->b_in, CGRAD(g_q), ACT(n_in), w_q, Nq, d, d, par);
    }
    if (pre)
        SF(layernorm_tangent_backward)(g_x, 0, u->nhv->g, u->nhv->b, cdual_of(g_nin.v, g_nin.t), ACT(x), ACT(mean),
                                       ACT(rstd), NORM_G, Nq, d, par);
    add_into(g_x.v, g_r.v, Nq * d);
    add_into(g_x.t, g_r.t, Nq * d);
}

static void ffn_tangent_forward(const sf_config *c, const sublayer *u, real *wt, sf_par *par) {
    const long d = c->d_model, F = c->d_ff, N = u->B * u->Tq;
    const int pre = c->norm == SF_NORM_PRE;
    const s2s_ffn_w *w = u->fw, *v = u->fv;
    s2s_sub *ts = u->ts;
    if (pre) norm_tangent_forward(c, u, 1, N, par);
    SF(linear_tangent_forward)(ts->a1, ACT(n_in), cdual_of(w->w1, v->w1), v->b1, N, d, F, wt, par);
    SF(activation_tangent_forward)(ts->act, ts->a1, u->s->a1, N * F, c->activation, par);
    SF(linear_tangent_forward)(ts->r, ACT(act), cdual_of(w->w2, v->w2), v->b2, N, F, d, wt, par);
    add_into(ts->r, ts->x, N * d);
    if (!pre) norm_tangent_forward(c, u, 0, N, par);
}

static void ffn_tangent_backward(const sf_config *c, const sublayer *u, cdual g_out, dual g_x, s2s_acts *a,
                                 s2s_acts *t, sf_par *par) {
    const long d = c->d_model, F = c->d_ff, N = u->B * u->Tq;
    const int pre = c->norm == SF_NORM_PRE;
    const s2s_ffn_w *w = u->fw, *v = u->fv;
    s2s_ffn_w *hv = u->fhv;
    cdual g_r = g_out;
    if (!pre) {
        SF(layernorm_tangent_backward)(GRAD(g_r), 0, u->nhv->g, u->nhv->b, g_out, ACT(r), ACT(mean), ACT(rstd), NORM_G,
                                       N, d, par);
        g_r = CGRAD(g_r);
    }
    SF(linear_tangent_backward)(GRAD(g_f), 0, hv->w2, hv->b2, g_r, ACT(act), cdual_of(w->w2, v->w2), N, F, d, par);
    SF(activation_tangent_backward)(GRAD(g_f), CGRAD(g_f), ACT(a1), N * F, c->activation, par);
    const dual g_nin = pre ? GRAD(g_nin) : g_x;
    SF(linear_tangent_backward)(g_nin, 0, hv->w1, hv->b1, CGRAD(g_f), ACT(n_in), cdual_of(w->w1, v->w1), N, d, F, par);
    if (pre)
        SF(layernorm_tangent_backward)(g_x, 0, u->nhv->g, u->nhv->b, cdual_of(g_nin.v, g_nin.t), ACT(x), ACT(mean),
                                       ACT(rstd), NORM_G, N, d, par);
    add_into(g_x.v, g_r.v, N * d);
    add_into(g_x.t, g_r.t, N * d);
}

#undef ACT
#undef NORM_G

/* ---- the model ------------------------------------------------------------------------------------ */

static void tangent_forward(const sf_model *m, const uint8_t *x, s2s_hvp_work *w, sf_par *par) {
    const sf_config *c = &m->cfg;
    s2s_acts *a = &w->a, *t = &w->t;
    const s2s_params *p = &w->p, *v = &w->v;
    const long B = a->B, S = a->S, d = c->d_model, Ld = c->n_decoder_layers;
    SF(stack_tangent_forward)(c, &p->enc, &v->enc, x, &a->enc, &t->enc, w->attn, par);
    SF(embedding_forward)(t->dec_sub[0][S2S_SELF].x, a->dec, v->enc.tok, v->enc.pos, B, S, d, concat_positions(c),
                          par);
    for (int l = 0; l < Ld; l++) {
        sublayer self = sublayer_at(c, w, l, S2S_SELF), cross = sublayer_at(c, w, l, S2S_CROSS),
                 ffn = sublayer_at(c, w, l, S2S_FFN);
        attn_tangent_forward(c, &self, w->attn, t->wt, par);
        attn_tangent_forward(c, &cross, w->attn, t->wt, par);
        ffn_tangent_forward(c, &ffn, t->wt, par);
    }
    SF(layernorm_tangent_forward)(t->z, t->z_mean, t->z_rstd, cdual_of(a->dec_sub[Ld - 1][S2S_FFN].out,
                                  t->dec_sub[Ld - 1][S2S_FFN].out), a->z_mean, a->z_rstd,
                                  cdual_of(p->dec_norm.g, v->dec_norm.g), v->dec_norm.b, B * S, d, par);
    SF(readout_tangent_forward)(t->out, CGRAD(z), cdual_of(p->w_head, v->w_head), v->b_head, B * S, d);
}

/* Needs a->g_out from the loss and the tangent forward; writes H v into w->hv's views. */
static void tangent_backward(const sf_model *m, const uint8_t *x, s2s_hvp_work *w, sf_loss loss, sf_par *par) {
    const sf_config *c = &m->cfg;
    s2s_acts *a = &w->a, *t = &w->t;
    const s2s_params *p = &w->p, *v = &w->v;
    s2s_params *hv = &w->hv;
    const long B = a->B, T = a->T, S = a->S, d = c->d_model, Ne = B * T, Nd = B * S;
    const int Ld = c->n_decoder_layers;
    SF(loss_tangent)(t->g_out, a->out, t->out, Nd, loss);
    SF(readout_tangent_backward)(GRAD(g_b), hv->w_head, hv->b_head, CGRAD(g_out), CGRAD(z),
                                 cdual_of(p->w_head, v->w_head), Nd, d);
    SF(layernorm_tangent_backward)(GRAD(g_a), 0, hv->dec_norm.g, hv->dec_norm.b, CGRAD(g_b),
                                   cdual_of(a->dec_sub[Ld - 1][S2S_FFN].out, t->dec_sub[Ld - 1][S2S_FFN].out),
                                   CGRAD(z_mean), CGRAD(z_rstd), cdual_of(p->dec_norm.g, v->dec_norm.g), Nd, d, par);
    memset(stack_output_grad(c, &a->enc), 0, (size_t)(Ne * d) * sizeof(real)); /* the cross-attentions add to it */
    memset(stack_output_grad(c, &t->enc), 0, (size_t)(Ne * d) * sizeof(real));
    dual g_out = GRAD(g_a), g_in = GRAD(g_b);
    for (int l = Ld - 1; l >= 0; l--) {
        const sublayer self = sublayer_at(c, w, l, S2S_SELF), cross = sublayer_at(c, w, l, S2S_CROSS),
                       ffn = sublayer_at(c, w, l, S2S_FFN);
        dual swap;
#define NEXT (swap = g_out, g_out = g_in, g_in = swap)
        ffn_tangent_backward(c, &ffn, cdual_of(g_out.v, g_out.t), g_in, a, t, par);
        NEXT;
        attn_tangent_backward(c, &cross, cdual_of(g_out.v, g_out.t), g_in, a, t, w->attn, par);
        NEXT;
        attn_tangent_backward(c, &self, cdual_of(g_out.v, g_out.t), g_in, a, t, w->attn, par);
        NEXT;
#undef NEXT
    }
    /* the shared tables: decoder use, then the encoder stack's (as seq2seq.c) */
    zero_embedding_grads(m, &hv->enc);
    SF(embedding_backward_add)(hv->enc.tok, hv->enc.pos, g_out.t, a->dec, B, S, 3, d, concat_positions(c), par);
    SF(stack_tangent_backward)(c, &p->enc, &v->enc, &hv->enc, x, &a->enc, &t->enc, w->attn, par);
}

#undef GRAD
#undef CGRAD

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
