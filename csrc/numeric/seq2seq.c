/* The seq2seq model of Hahn & Rofin's scratchpad experiment (TorchModelWithScratchpad):
 *
 *   mem = LN_e(encoder layers([tok(x_t) ; pos(t)]))           every encoder position
 *   z   = LN_d(decoder layers([tok(y_s) ; pos(s)], mem))      causal self-attention, cross-attention
 *   out = z w + b                                              every decoder position
 *
 * The encoder is the encoder stack of encoder.c over every position (with its exact speed-ups:
 * layer 0 on the distinct rows, scores from a table). Decoder layers are built from residual
 * sublayers (attention or FFN, post- or pre-LN), each forward next to its backward. The encoder
 * and decoder share the token and positional tables, so their gradients are the sum of both uses
 * (decoder first, then encoder: a fixed order). */
#include "seq2seq.h"

#include <string.h>

/* ---- parameters: the tensor table in order (model.c builds it) ------------------------------- */

void SF(s2s_params)(const sf_model *m, real *base, s2s_params *p) {
    const sf_config *c = &m->cfg;
    SF(stack_params)(m, base, &p->enc); /* tok, pos, the encoder layers, the final encoder LN */
    int i = sf_embedding_tensors(c) + c->n_layers * sf_layer_slots(c) + sf_final_norm_tensors(c);
#define NEXT (base + m->tensors[i++].offset)
#define SF_S2S_VIEW(slot, field, ...) w->field = sf_slot_present(c, 1, SF_SLOT_##slot) ? NEXT : NULL;
    for (int l = 0; l < c->n_decoder_layers; l++) {
        s2s_layer_w *w = &p->dec[l];
        SF_DECODER_LAYER_TENSORS(SF_S2S_VIEW)
    }
#undef SF_S2S_VIEW
    p->dec_norm.g = NEXT, p->dec_norm.b = sf_final_norm_tensors(c) == 2 ? NEXT : NULL;
    p->w_head = NEXT, p->b_head = NEXT;
#undef NEXT
}

/* ---- workspace layout -------------------------------------------------------------------------- */

/* One sublayer over N rows with input x; attention with Nk key rows and P of np entries, or an FFN
 * (np < 0). Returns its output, the next sublayer's input. */
static real *sub_layout(bump *b, const sf_config *c, s2s_sub *s, real *x, long N, long Nk, long np) {
    const long d = c->d_model, F = c->d_ff;
    const int pre = c->norm == SF_NORM_PRE;
    memset(s, 0, sizeof *s);
    s->x = x;
    s->n_in = pre ? take(b, N * d) : x;
    s->mean = take_means(b, c, N);
    s->rstd = take(b, N);
    if (np >= 0) {
        s->q = take(b, N * d);
        s->kv = take(b, Nk * 2 * d);
        s->p = take(b, np);
        s->ctx = take(b, N * d);
    } else {
        s->a1 = take(b, N * F);
        s->act = take(b, N * F);
    }
    s->r = take(b, N * d);
    s->out = pre ? s->r : take(b, N * d);
    return s->out;
}

size_t SF(s2s_layout)(const sf_config *c, long B, long T, long S, int nt, char *base, s2s_acts *a) {
    a->enc.layer = a->enc.layer_storage;
    const size_t encoder = SF(encoder_layout)(c, B, T, 1, nt, base, &a->enc);
    a->enc.loss_only = 1;
    bump b = {base ? base + encoder : NULL, 0};
    const long d = c->d_model, F = c->d_ff, H = c->n_heads, Ne = B * T, Nd = B * S;
    a->B = B, a->T = T, a->S = S;
    a->dec = (uint8_t *)take(&b, (Nd + (long)sizeof(real) - 1) / (long)sizeof(real));
    real *y = take(&b, Nd * d);
    for (int l = 0; l < c->n_decoder_layers; l++) {
        y = sub_layout(&b, c, &a->dec_sub[l][S2S_SELF], y, Nd, Nd, B * H * S * S);
        y = sub_layout(&b, c, &a->dec_sub[l][S2S_CROSS], y, Nd, Ne, B * H * S * T);
        y = sub_layout(&b, c, &a->dec_sub[l][S2S_FFN], y, Nd, 0, -1);
    }
    a->z = take(&b, Nd * d);
    a->z_mean = take_means(&b, c, Nd);
    a->z_rstd = take(&b, Nd);
    a->out = take(&b, Nd);
    /* the decoder's backward scratch (the cross-attention's key/value gradient has the memory's rows) */
    a->g_a = take(&b, Nd * d);
    a->g_b = take(&b, Nd * d);
    a->g_r = take(&b, Nd * d);
    a->g_nin = take(&b, Nd * d);
    a->g_ctx = take(&b, Nd * d);
    a->g_q = take(&b, Nd * d);
    a->g_kv = take(&b, (Ne > Nd ? Ne : Nd) * 2 * d);
    a->g_f = take(&b, Nd * (F > d ? F : d));
    a->g_out = take(&b, Nd);
    const long self = SF(attention_scratch)(S, S, d, H, nt), cross = SF(attention_scratch)(T, S, d, H, nt);
    a->attn_scratch = take(&b, self > cross ? self : cross);
    a->wt = take(&b, 3 * d * d > d * F ? 3 * d * d : d * F);
    a->ln_partials = (double *)take(&b, SF(layernorm_partials)(Nd, d) * (long)(sizeof(double) / sizeof(real)));
    return encoder + b.used;
}

sf_status SF(s2s_reserve)(sf_model *m, long B, long T, long S, int nt, s2s_acts *a) {
    const sf_config *c = &m->cfg;
    if (B < 1) return sf_fail(SF_EINVAL, "batch size must be >= 1, got %ld", B);
    if (T < 1 || T > c->n_positions)
        return sf_fail(SF_EINVAL, "the encoder input length must be in [1, n_positions=%d], got %ld", c->n_positions, T);
    if (S < 1 || S > (long)c->n_positions + 1)
        return sf_fail(SF_EINVAL, "the decoder input length must be in [1, n_positions+1=%d], got %ld",
                       c->n_positions + 1, S);
    sf_status st = sf_workspace_reserve(&m->work, SF(s2s_layout)(c, B, T, S, nt, NULL, a));
    if (st) return st;
    SF(s2s_layout)(c, B, T, S, nt, m->work.base, a);
    return SF_OK;
}

void SF(s2s_set_decoder)(s2s_acts *a, const uint8_t *dec, long S_given) {
    for (long b = 0; b < a->B; b++) memcpy(a->dec + b * a->S, dec + b * S_given, (size_t)a->S);
}

/* ---- sublayers: forward next to backward ------------------------------------------------------ */

/* One attention sublayer of the decoder in one pass: its weights (and, in the backward, their
 * gradients), its activations and its shape. Self-attention (causal, with RoPE when the model has it)
 * reads its keys and values from the branch input; cross-attention from the encoder's memory, whose
 * gradient it adds to g_mem. */
typedef struct {
    const s2s_attn_w *w;
    s2s_attn_w *gw;
    const s2s_norm_w *nw;
    s2s_norm_w *gnw;
    s2s_sub *s;
    const real *mem; /* cross-attention: the memory (B*Tk,d); self-attention: NULL */
    real *g_mem;
    long B, Tq, Tk;
    int causal;
    const double *rope; /* the RoPE table, or NULL */
} dec_attention;

/* Decoder layer l's self- or cross-attention; g: the gradients' views (NULL in the forward). */
static dec_attention decoder_attention(const s2s_params *p, s2s_params *g, s2s_acts *a, int l, int cross, real *g_mem) {
    const s2s_layer_w *w = &p->dec[l];
    return (dec_attention){cross ? &w->cross : &w->self,
                           !g ? NULL : cross ? &g->dec[l].cross : &g->dec[l].self,
                           &w->norm[cross ? 1 : 0],
                           g ? &g->dec[l].norm[cross ? 1 : 0] : NULL,
                           &a->dec_sub[l][cross ? S2S_CROSS : S2S_SELF],
                           cross ? a->enc.final_out : NULL,
                           cross ? g_mem : NULL,
                           a->B,
                           a->S,
                           cross ? a->T : a->S,
                           !cross,
                           cross ? NULL : p->enc.rope};
}

static void attn_forward(const sf_config *c, const dec_attention *at, s2s_acts *a, sf_par *par) {
    const s2s_attn_w *w = at->w;
    s2s_sub *s = at->s;
    const long d = c->d_model, H = c->n_heads, B = at->B, Tq = at->Tq, Tk = at->Tk, Nq = B * Tq;
    const int pre = c->norm == SF_NORM_PRE;
    if (pre) SF(layernorm_forward)(s->n_in, s->mean, s->rstd, s->x, at->nw->g, at->nw->b, c->ln_eps, Nq, d, par);
    SF(linear_forward)(s->q, s->n_in, w->w_in, w->b_in, Nq, d, d, a->wt, par);
    SF(linear_forward)(s->kv, at->mem ? at->mem : s->n_in, w->w_in + d * d, w->b_in + d, B * Tk, d, 2 * d, a->wt, par);
    rope_heads(c, at->rope, s->q, d, B, Tq, Tq, 0, par);
    rope_heads(c, at->rope, s->kv, 2 * d, B, Tk, Tk, 0, par);
    SF(attention_forward_ex)(s->ctx, s->p, s->q, s->kv, B, Tk, Tq, d, H, at->causal, Tk, a->attn_scratch, par);
    SF(linear_forward)(s->r, s->ctx, w->w_out, w->b_out, Nq, d, d, a->wt, par);
    add_into(s->r, s->x, Nq * d);
    if (!pre) SF(layernorm_forward)(s->out, s->mean, s->rstd, s->r, at->nw->g, at->nw->b, c->ln_eps, Nq, d, par);
}

/* g_out (Nq,d) -> g_x (Nq,d) overwritten (g_x != g_out), the weights' gradients into at->gw, at->gnw. */
static void attn_backward(const sf_config *c, const dec_attention *at, const real *g_out, real *g_x, s2s_acts *a,
                          sf_par *par) {
    const s2s_attn_w *w = at->w;
    s2s_attn_w *gw = at->gw;
    const s2s_sub *s = at->s;
    const long d = c->d_model, H = c->n_heads, B = at->B, Tq = at->Tq, Tk = at->Tk, Nq = B * Tq;
    const int pre = c->norm == SF_NORM_PRE;
    const real *g_r = g_out;
    if (!pre) {
        SF(layernorm_backward)(a->g_r, NULL, at->gnw->g, at->gnw->b, g_out, s->r, s->mean, s->rstd, at->nw->g, Nq, d,
                               a->ln_partials, par);
        g_r = a->g_r;
    }
    SF(linear_backward)(a->g_ctx, 0, gw->w_out, gw->b_out, g_r, s->ctx, w->w_out, Nq, d, d, par);
    SF(attention_backward)(a->g_q, a->g_kv, a->g_ctx, s->p, s->q, s->kv, B, Tk, Tq, d, H, a->attn_scratch, par);
    rope_heads(c, at->rope, a->g_q, d, B, Tq, Tq, 1, par);
    rope_heads(c, at->rope, a->g_kv, 2 * d, B, Tk, Tk, 1, par);
    real *g_nin = pre ? a->g_nin : g_x;
    if (at->mem) {
        SF(linear_backward)(at->g_mem, 1, gw->w_in + d * d, gw->b_in + d, a->g_kv, at->mem, w->w_in + d * d, B * Tk,
                            d, 2 * d, par);
        SF(linear_backward)(g_nin, 0, gw->w_in, gw->b_in, a->g_q, s->n_in, w->w_in, Nq, d, d, par);
    } else {
        SF(linear_backward)(g_nin, 0, gw->w_in + d * d, gw->b_in + d, a->g_kv, s->n_in, w->w_in + d * d, Nq, d,
                            2 * d, par);
        SF(linear_backward)(g_nin, 1, gw->w_in, gw->b_in, a->g_q, s->n_in, w->w_in, Nq, d, d, par);
    }
    if (pre)
        SF(layernorm_backward)(g_x, NULL, at->gnw->g, at->gnw->b, g_nin, s->x, s->mean, s->rstd, at->nw->g, Nq, d,
                               a->ln_partials, par);
    add_into(g_x, g_r, Nq * d); /* the residual path */
}

static void ffn_forward(const sf_config *c, const s2s_ffn_w *w, const s2s_norm_w *nw, s2s_sub *s, long N,
                        s2s_acts *a, sf_par *par) {
    const long d = c->d_model, F = c->d_ff;
    const int pre = c->norm == SF_NORM_PRE;
    if (pre) SF(layernorm_forward)(s->n_in, s->mean, s->rstd, s->x, nw->g, nw->b, c->ln_eps, N, d, par);
    SF(linear_forward)(s->a1, s->n_in, w->w1, w->b1, N, d, F, a->wt, par);
    SF(activation_forward)(s->act, s->a1, N * F, c->activation, par);
    SF(linear_forward)(s->r, s->act, w->w2, w->b2, N, F, d, a->wt, par);
    add_into(s->r, s->x, N * d);
    if (!pre) SF(layernorm_forward)(s->out, s->mean, s->rstd, s->r, nw->g, nw->b, c->ln_eps, N, d, par);
}

static void ffn_backward(const sf_config *c, const s2s_ffn_w *w, s2s_ffn_w *gw, const s2s_norm_w *nw,
                         s2s_norm_w *gnw, const s2s_sub *s, const real *g_out, real *g_x, long N, s2s_acts *a,
                         sf_par *par) {
    const long d = c->d_model, F = c->d_ff;
    const int pre = c->norm == SF_NORM_PRE;
    const real *g_r = g_out;
    if (!pre) {
        SF(layernorm_backward)(a->g_r, NULL, gnw->g, gnw->b, g_out, s->r, s->mean, s->rstd, nw->g, N, d,
                               a->ln_partials, par);
        g_r = a->g_r;
    }
    SF(linear_backward)(a->g_f, 0, gw->w2, gw->b2, g_r, s->act, w->w2, N, F, d, par);
    SF(activation_backward)(a->g_f, a->g_f, s->a1, N * F, c->activation, par);
    real *g_nin = pre ? a->g_nin : g_x;
    SF(linear_backward)(g_nin, 0, gw->w1, gw->b1, a->g_f, s->n_in, w->w1, N, d, F, par);
    if (pre)
        SF(layernorm_backward)(g_x, NULL, gnw->g, gnw->b, g_nin, s->x, s->mean, s->rstd, nw->g, N, d,
                               a->ln_partials, par);
    add_into(g_x, g_r, N * d);
}

/* ---- the model ----------------------------------------------------------------------------------- */

void SF(s2s_encode)(const sf_model *m, const s2s_params *p, const uint8_t *x, s2s_acts *a, sf_par *par) {
    SF(stack_forward)(&m->cfg, &p->enc, x, &a->enc, par);
}

void SF(s2s_decode)(const sf_model *m, const s2s_params *p, s2s_acts *a, sf_par *par) {
    const sf_config *c = &m->cfg;
    const long B = a->B, S = a->S, d = c->d_model;
    SF(embedding_forward)(a->dec_sub[0][S2S_SELF].x, a->dec, p->enc.tok, position_table(&p->enc), B, S, d,
                          concat_positions(c), par);
    for (int l = 0; l < c->n_decoder_layers; l++) {
        const dec_attention self = decoder_attention(p, NULL, a, l, 0, NULL);
        const dec_attention cross = decoder_attention(p, NULL, a, l, 1, NULL);
        attn_forward(c, &self, a, par);
        attn_forward(c, &cross, a, par);
        ffn_forward(c, &p->dec[l].ffn, &p->dec[l].norm[2], &a->dec_sub[l][S2S_FFN], B * S, a, par);
    }
    SF(layernorm_forward)(a->z, a->z_mean, a->z_rstd, a->dec_sub[c->n_decoder_layers - 1][S2S_FFN].out,
                          p->dec_norm.g, p->dec_norm.b, c->ln_eps, B * S, d, par);
    SF(readout_forward)(a->out, a->z, p->w_head, p->b_head, B * S, d);
}

void SF(s2s_backward)(sf_model *m, const uint8_t *x, s2s_acts *a, sf_par *par) {
    const sf_config *c = &m->cfg;
    const long B = a->B, T = a->T, S = a->S, d = c->d_model, Ne = B * T, Nd = B * S;
    s2s_params p, g;
    SF(s2s_params)(m, (real *)m->params, &p);
    SF(s2s_params)(m, (real *)m->grads, &g);
    /* readout and the final decoder LN */
    SF(readout_backward)(a->g_b, g.w_head, g.b_head, a->g_out, a->z, p.w_head, Nd, d);
    const int Ld = c->n_decoder_layers;
    SF(layernorm_backward)(a->g_a, NULL, g.dec_norm.g, g.dec_norm.b, a->g_b, a->dec_sub[Ld - 1][S2S_FFN].out,
                           a->z_mean, a->z_rstd, p.dec_norm.g, Nd, d, a->ln_partials, par);
    real *g_mem = stack_output_grad(c, &a->enc); /* the cross-attentions add the memory's gradient */
    memset(g_mem, 0, (size_t)(Ne * d) * sizeof(real));
    real *g_out = a->g_a, *g_in = a->g_b, *t;
#define SWAP (t = g_out, g_out = g_in, g_in = t)
    for (int l = Ld - 1; l >= 0; l--) {
        const s2s_layer_w *w = &p.dec[l];
        s2s_layer_w *gw = &g.dec[l];
        const s2s_sub *s = a->dec_sub[l];
        ffn_backward(c, &w->ffn, &gw->ffn, &w->norm[2], &gw->norm[2], &s[S2S_FFN], g_out, g_in, Nd, a, par);
        SWAP;
        const dec_attention cross = decoder_attention(&p, &g, a, l, 1, g_mem);
        attn_backward(c, &cross, g_out, g_in, a, par);
        SWAP;
        const dec_attention self = decoder_attention(&p, &g, a, l, 0, NULL);
        attn_backward(c, &self, g_out, g_in, a, par);
        SWAP;
    }
#undef SWAP
    /* the shared tables: decoder use, then the encoder stack's */
    zero_embedding_grads(m, &g.enc);
    SF(embedding_backward_add)(g.enc.tok, g.enc.pos, g_out, a->dec, B, S, 3, d, concat_positions(c), par);
    SF(stack_backward)(c, &p.enc, &g.enc, x, &a->enc, par);
}

double SF(s2s_batch_loss)(sf_model *m, const s2s_params *p, const sf_seq_data *d, int b, int B, sf_loss loss,
                          int grad, s2s_acts *a, sf_par *par) {
    const uint8_t *x = d->x + (size_t)b * B * d->T;
    SF(s2s_set_decoder)(a, d->dec + (size_t)b * B * d->S, d->S);
    SF(s2s_encode)(m, p, x, a, par);
    SF(s2s_decode)(m, p, a, par);
    const real *y = (const real *)d->y + (size_t)b * B * d->L;
    const double value = SF(loss_forward_backward)(grad ? a->g_out : NULL, a->out, y, (long)B * d->L, loss);
    if (grad) SF(s2s_backward)(m, x, a, par);
    return value;
}
