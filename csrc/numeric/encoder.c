/* The encoder model of Hahn & Rofin (2024): embedding halves, L encoder layers, readout at the
 * last position. Forward saves what backward needs; backward mirrors it layer by layer.
 *
 * The output reads only the last position of the last layer, so that layer computes keys and
 * values for every position but queries, attention output, FFN and LayerNorms only for the
 * readout position (Tq = 1). Earlier layers compute every position (Tq = T). */
#include "encoder.h"

#include <string.h>

/* ---- workspace layout ---------------------------------------------------------------------- */

size_t SF(encoder_layout)(const sf_config *c, long B, long T, int nt, char *base, acts *a) {
    bump b = {base, 0};
    const long d = c->d_model, F = c->d_ff, H = c->n_heads, L = c->n_layers, N = B * T;
    const int pre = c->norm == SF_NORM_PRE, post = c->norm == SF_NORM_POST;
    a->B = B, a->T = T;
    real *next_x = take(&b, N * d); /* layer 0 input: the embeddings */
    for (long l = 0; l < L; l++) {
        layer_acts *s = &a->layer[l];
        const long Tq = l == L - 1 ? 1 : T, Nq = B * Tq;
        s->Tq = Tq;
        s->x = next_x;
        s->a_in = pre ? take(&b, N * d) : s->x;
        s->ln1_mean = take(&b, N);
        s->ln1_rstd = take(&b, N);
        s->xq = Tq < T ? take(&b, Nq * d) : s->x;
        s->aq = Tq < T && pre ? take(&b, Nq * d) : (Tq < T ? s->xq : s->a_in);
        s->q = take(&b, Nq * d);
        s->kv = take(&b, N * 2 * d);
        s->p = take(&b, B * H * Tq * T);
        s->ctx = take(&b, Nq * d);
        s->r1 = take(&b, Nq * d);
        s->h = post ? take(&b, Nq * d) : s->r1;
        s->f_in = pre ? take(&b, Nq * d) : s->h;
        s->ln2_mean = take(&b, Nq);
        s->ln2_rstd = take(&b, Nq);
        s->a1 = take(&b, Nq * F);
        s->act = take(&b, Nq * F);
        next_x = take(&b, Nq * d); /* the layer output = next layer's input */
        s->out = next_x;
        s->r2 = post ? take(&b, Nq * d) : s->out;
    }
    a->final_in = next_x;
    a->final_mean = take(&b, B);
    a->final_rstd = take(&b, B);
    a->final_out = c->final_norm ? take(&b, B * d) : a->final_in;
    a->out = take(&b, B);
    /* backward scratch, shared by all layers */
    const long big = N * 2 * d > N * d ? N * 2 * d : N * d;
    a->g_cur = take(&b, N * d);
    a->g_next = take(&b, N * d);
    a->g_r2 = take(&b, N * d);
    a->g_h = take(&b, N * d);
    a->g_f = take(&b, N * (F > d ? F : d));
    a->g_r1 = take(&b, N * d);
    a->g_ctx = take(&b, N * d);
    a->g_q = take(&b, N * d);
    a->g_kv = take(&b, big);
    a->g_ain = take(&b, N * d);
    a->g_aq = take(&b, N * d);
    a->g_out = take(&b, B);
    a->attn_scratch = take(&b, SF(attention_scratch)(T, T, d, H, nt));
    a->wt = take(&b, 3 * d * d > d * F ? 3 * d * d : d * F);
    return b.used;
}

sf_status SF(encoder_reserve)(sf_model *m, long B, long T, int nt, acts *a) {
    const sf_config *c = &m->cfg;
    if (B < 1) return sf_fail(SF_EINVAL, "batch size must be >= 1, got %ld", B);
    if (T < 1 || T > c->n_positions)
        return sf_fail(SF_EINVAL, "sequence length must be in [1, n_positions=%d], got %ld", c->n_positions, T);
    a->layer = a->layer_storage;
    if (c->n_layers > SF_MAX_LAYERS_INLINE) return sf_fail(SF_EINVAL, "at most %d layers", SF_MAX_LAYERS_INLINE);
    size_t bytes = SF(encoder_layout)(c, B, T, nt, NULL, a);
    sf_status st = sf_workspace_reserve(&m->work, bytes);
    if (st) return st;
    SF(encoder_layout)(c, B, T, nt, m->work.base, a);
    return SF_OK;
}

/* ---- parameters ---------------------------------------------------------------------------- */

static real *tensor(real *base, const sf_model *m, int index) { return base + m->tensors[index].offset; }

void SF(encoder_params)(const sf_model *m, real *base, params *p) {
    const sf_config *c = &m->cfg;
    p->tok = tensor(base, m, 0);
    p->pos = tensor(base, m, 1);
    for (int l = 0; l < c->n_layers; l++) {
        layer_params *q = &p->layer[l];
        q->w_in = tensor(base, m, sf_tensor_index(m, l, 0));
        q->b_in = tensor(base, m, sf_tensor_index(m, l, 1));
        q->w_out = tensor(base, m, sf_tensor_index(m, l, 2));
        q->b_out = tensor(base, m, sf_tensor_index(m, l, 3));
        q->w1 = tensor(base, m, sf_tensor_index(m, l, 4));
        q->b1 = tensor(base, m, sf_tensor_index(m, l, 5));
        q->w2 = tensor(base, m, sf_tensor_index(m, l, 6));
        q->b2 = tensor(base, m, sf_tensor_index(m, l, 7));
        const int has_norm = c->norm != SF_NORM_NONE;
        q->g1 = has_norm ? tensor(base, m, sf_tensor_index(m, l, 8)) : NULL;
        q->be1 = has_norm ? tensor(base, m, sf_tensor_index(m, l, 9)) : NULL;
        q->g2 = has_norm ? tensor(base, m, sf_tensor_index(m, l, 10)) : NULL;
        q->be2 = has_norm ? tensor(base, m, sf_tensor_index(m, l, 11)) : NULL;
    }
    const int n = m->n_tensors;
    p->gf = c->final_norm ? tensor(base, m, n - 4) : NULL;
    p->bf = c->final_norm ? tensor(base, m, n - 3) : NULL;
    p->w_head = tensor(base, m, n - 2);
    p->b_head = tensor(base, m, n - 1);
}

/* ---- forward -------------------------------------------------------------------------------- */

static void layer_forward(const sf_config *c, const layer_params *w, layer_acts *s, long B, long T,
                          real *attn_scratch, real *wt, sf_par *par) {
    const long d = c->d_model, F = c->d_ff, H = c->n_heads, N = B * T, Tq = s->Tq, Nq = B * Tq;
    const int pre = c->norm == SF_NORM_PRE, post = c->norm == SF_NORM_POST;
    if (pre) SF(layernorm_forward)(s->a_in, s->ln1_mean, s->ln1_rstd, s->x, w->g1, w->be1, c->ln_eps, N, d, par);
    if (Tq < T) {
        gather_last(s->xq, s->x, B, T, d);
        if (pre) gather_last(s->aq, s->a_in, B, T, d);
    }
    /* self-attention: q from the query rows, k and v from every row (in_proj rows [0,d) and [d,3d)) */
    SF(linear_forward)(s->q, s->aq, w->w_in, w->b_in, Nq, d, d, wt, par);
    SF(linear_forward)(s->kv, s->a_in, w->w_in + d * d, w->b_in + d, N, d, 2 * d, wt, par);
    SF(attention_forward)(s->ctx, s->p, s->q, s->kv, B, T, Tq, d, H, attn_scratch, par);
    SF(linear_forward)(s->r1, s->ctx, w->w_out, w->b_out, Nq, d, d, wt, par);
    add_into(s->r1, s->xq, Nq * d);
    if (post) SF(layernorm_forward)(s->h, s->ln1_mean, s->ln1_rstd, s->r1, w->g1, w->be1, c->ln_eps, Nq, d, par);
    /* feed-forward */
    if (pre) SF(layernorm_forward)(s->f_in, s->ln2_mean, s->ln2_rstd, s->h, w->g2, w->be2, c->ln_eps, Nq, d, par);
    SF(linear_forward)(s->a1, s->f_in, w->w1, w->b1, Nq, d, F, wt, par);
    SF(activation_forward)(s->act, s->a1, Nq * F, c->activation, par);
    SF(linear_forward)(s->r2, s->act, w->w2, w->b2, Nq, F, d, wt, par);
    add_into(s->r2, s->h, Nq * d);
    if (post) SF(layernorm_forward)(s->out, s->ln2_mean, s->ln2_rstd, s->r2, w->g2, w->be2, c->ln_eps, Nq, d, par);
}

void SF(encoder_forward)(sf_model *m, const uint8_t *x, acts *a, sf_par *par) {
    const sf_config *c = &m->cfg;
    const long B = a->B, T = a->T, d = c->d_model;
    params p;
    p.layer = p.layer_storage;
    SF(encoder_params)(m, (real *)m->params, &p);
    SF(embedding_forward)(a->layer[0].x, x, p.tok, p.pos, B, T, d, par);
    for (int l = 0; l < c->n_layers; l++) layer_forward(c, &p.layer[l], &a->layer[l], B, T, a->attn_scratch, a->wt, par);
    if (c->final_norm)
        SF(layernorm_forward)(a->final_out, a->final_mean, a->final_rstd, a->final_in, p.gf, p.bf, c->ln_eps, B, d, par);
    SF(readout_forward)(a->out, a->final_out, p.w_head, p.b_head, B, d);
}

/* ---- backward ------------------------------------------------------------------------------- */

/* g_out (Nq,d): gradient w.r.t. the layer output. Writes the gradient w.r.t. the layer input
 * (N,d) to g_x and the layer's parameter gradients to gw. */
static void layer_backward(const sf_config *c, const layer_params *w, layer_params *gw, const layer_acts *s,
                           acts *a, const real *g_out, real *g_x, long B, long T, sf_par *par) {
    const long d = c->d_model, F = c->d_ff, H = c->n_heads, N = B * T, Tq = s->Tq, Nq = B * Tq;
    const int pre = c->norm == SF_NORM_PRE, post = c->norm == SF_NORM_POST;
    /* out = LN2(r2) (post) or r2 */
    const real *g_r2 = g_out;
    if (post) {
        SF(layernorm_backward)(a->g_r2, 0, gw->g2, gw->be2, g_out, s->r2, s->ln2_mean, s->ln2_rstd, w->g2, Nq, d, par);
        g_r2 = a->g_r2;
    }
    /* r2 = h + linear2(act(linear1(f_in))) */
    memcpy(a->g_h, g_r2, (size_t)(Nq * d) * sizeof(real));
    SF(linear_backward)(a->g_f, 0, gw->w2, gw->b2, g_r2, s->act, w->w2, Nq, F, d, par);
    SF(activation_backward)(a->g_f, a->g_f, s->a1, Nq * F, c->activation, par);
    if (pre) {
        SF(linear_backward)(a->g_ctx, 0, gw->w1, gw->b1, a->g_f, s->f_in, w->w1, Nq, d, F, par);
        SF(layernorm_backward)(a->g_h, 1, gw->g2, gw->be2, a->g_ctx, s->h, s->ln2_mean, s->ln2_rstd, w->g2, Nq, d, par);
    } else {
        SF(linear_backward)(a->g_h, 1, gw->w1, gw->b1, a->g_f, s->f_in, w->w1, Nq, d, F, par);
    }
    /* h = LN1(r1) (post) or r1; r1 = xq + out_proj(attention) */
    const real *g_r1 = a->g_h;
    if (post) {
        SF(layernorm_backward)(a->g_r1, 0, gw->g1, gw->be1, a->g_h, s->r1, s->ln1_mean, s->ln1_rstd, w->g1, Nq, d, par);
        g_r1 = a->g_r1;
    }
    SF(linear_backward)(a->g_ctx, 0, gw->w_out, gw->b_out, g_r1, s->ctx, w->w_out, Nq, d, d, par);
    SF(attention_backward)(a->g_q, a->g_kv, a->g_ctx, s->p, s->q, s->kv, B, T, Tq, d, H, a->attn_scratch, par);
    /* in_proj: weight rows [0,d) from the queries, [d,3d) from keys and values */
    real *g_ain = pre ? a->g_ain : g_x;
    SF(linear_backward)(g_ain, 0, gw->w_in + d * d, gw->b_in + d, a->g_kv, s->a_in, w->w_in + d * d, N, d, 2 * d, par);
    if (Tq == T) {
        SF(linear_backward)(g_ain, 1, gw->w_in, gw->b_in, a->g_q, s->aq, w->w_in, Nq, d, d, par);
    } else {
        SF(linear_backward)(a->g_aq, 0, gw->w_in, gw->b_in, a->g_q, s->aq, w->w_in, Nq, d, d, par);
        scatter_add_last(g_ain, a->g_aq, B, T, d);
    }
    if (pre) SF(layernorm_backward)(g_x, 0, gw->g1, gw->be1, g_ain, s->x, s->ln1_mean, s->ln1_rstd, w->g1, N, d, par);
    /* the residual path from xq */
    if (Tq == T) add_into(g_x, g_r1, N * d);
    else scatter_add_last(g_x, g_r1, B, T, d);
}

void SF(encoder_backward)(sf_model *m, const uint8_t *x, acts *a, sf_par *par) {
    const sf_config *c = &m->cfg;
    const long B = a->B, T = a->T, d = c->d_model, L = c->n_layers;
    params p, g;
    p.layer = p.layer_storage;
    g.layer = g.layer_storage;
    SF(encoder_params)(m, (real *)m->params, &p);
    SF(encoder_params)(m, (real *)m->grads, &g);
    /* readout and final norm */
    real *g_last = a->g_cur;
    SF(readout_backward)(c->final_norm ? a->g_next : g_last, g.w_head, g.b_head, a->g_out, a->final_out, p.w_head, B, d);
    if (c->final_norm)
        SF(layernorm_backward)(g_last, 0, g.gf, g.bf, a->g_next, a->final_in, a->final_mean, a->final_rstd, p.gf, B, d, par);
    real *g_out = a->g_cur, *g_in = a->g_next;
    for (long l = L - 1; l >= 0; l--) {
        layer_backward(c, &p.layer[l], &g.layer[l], &a->layer[l], a, g_out, g_in, B, T, par);
        real *t = g_out;
        g_out = g_in;
        g_in = t;
    }
    SF(embedding_backward)(g.tok, g.pos, g_out, x, B, T, c->n_positions, d, par);
}
