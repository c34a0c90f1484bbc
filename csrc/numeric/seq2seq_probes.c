/* Probes of the seq2seq model's internals: LayerNorm blowup of every LayerNorm of the encoder and
 * the decoder (norm3 and the final ones included) over every position, and the official hooks'
 * subset (paper.md §9.6: norm1 and norm2 of each layer, the last layer of each stack at its last
 * position only); the attention-logit scale of every attention module. */
#include "probes.h"
#include "seq2seq.h"

/* The input of a decoder sublayer's LayerNorm: x + f(x) (post) or x (pre). */
static const real *ln_input(const sf_config *c, const s2s_sub *s) { return c->norm == SF_NORM_PRE ? s->x : s->r; }

sf_status SF(seq2seq_ln_blowup)(sf_model *m, const sf_seq_data *d, int theory, double *maxs, double *means, int nt) {
    const sf_config *c = &m->cfg;
    if (!theory && c->d_model < 2) return sf_fail(SF_EINVAL, "the unbiased std needs d_model >= 2");
    sf_par par = {sf_resolve_threads(nt), 1};
    s2s_acts a;
    sf_status st = SF(s2s_reserve)(m, d->rows, d->T, d->S, par.nt, &a);
    if (st) return st;
    s2s_params p;
    SF(s2s_params)(m, (real *)m->params, &p);
    SF(s2s_set_decoder)(&a, d->dec, d->S);
    SF(s2s_encode)(m, &p, d->x, &a, &par);
    SF(s2s_decode)(m, &p, &a, &par);
    const long B = d->rows, T = d->T, S = d->S, dm = c->d_model, Le = c->n_layers, Ld = c->n_decoder_layers;
    long row = 0;
#define STATS(X, len, t0) (SF(inv_std_stats)(maxs + row * B, means + row * B, X, B, len, t0, dm, theory, c, &par), row++)
    for (long l = 0; l < Le; l++)
        for (int k = 0; k < 2; k++) STATS(layer_norm_input(c, &a.enc.layer[l], k), T, 0);
    STATS(a.enc.final_in, T, 0);
    for (long l = 0; l < Ld; l++)
        for (int k = 0; k < 3; k++) STATS(ln_input(c, &a.dec_sub[l][k]), S, 0);
    STATS(a.dec_sub[Ld - 1][S2S_FFN].out, S, 0);
    for (long l = 0; l < Le; l++)
        for (int k = 0; k < 2; k++) STATS(layer_norm_input(c, &a.enc.layer[l], k), T, l == Le - 1 ? T - 1 : 0);
    for (long l = 0; l < Ld; l++)
        for (int k = 0; k < 2; k++) STATS(ln_input(c, &a.dec_sub[l][k]), S, l == Ld - 1 ? S - 1 : 0);
#undef STATS
    m->last_threads = par.used;
    return SF_OK;
}

/* ---- attention-logit scale ----------------------------------------------------------------------- */

sf_status SF(seq2seq_attention_logits)(sf_model *m, const sf_seq_data *d, double *maxs, double *means, int nt) {
    const sf_config *c = &m->cfg;
    sf_par par = {sf_resolve_threads(nt), 1};
    s2s_acts a;
    sf_status st = SF(s2s_reserve)(m, d->rows, d->T, d->S, par.nt, &a);
    if (st) return st;
    a.enc.loss_only = 0; /* the probe reads layer 0's keys */
    const long B = d->rows, T = d->T, S = d->S, H = c->n_heads, tasks = B * H;
    if ((st = sf_check_budget((size_t)tasks * 2 * sizeof(double), "the attention-logit probe"))) return st;
    double *stats = sf_alloc((size_t)tasks * 2 * sizeof(double));
    if (!stats) return sf_fail(SF_ENOMEM, "could not allocate the attention-logit probe's per-task results");
    s2s_params p;
    SF(s2s_params)(m, (real *)m->params, &p);
    SF(s2s_set_decoder)(&a, d->dec, d->S);
    SF(s2s_encode)(m, &p, d->x, &a, &par);
    SF(s2s_decode)(m, &p, &a, &par);
    long row = 0; /* encoder self-attention, decoder self-attention (causal), cross-attention */
    for (long l = 0; l < c->n_layers; l++, row++) {
        const layer_acts *s = &a.enc.layer[l];
        SF(module_logits)(c, maxs + row * H, means + row * H, stats, s->q, s->kv, B, T, T, 0, &par);
    }
    for (long k = S2S_SELF; k <= S2S_CROSS; k++)
        for (long l = 0; l < c->n_decoder_layers; l++, row++) {
            const s2s_sub *s = &a.dec_sub[l][k];
            SF(module_logits)(c, maxs + row * H, means + row * H, stats, s->q, s->kv, B, S, k == S2S_SELF ? S : T,
                              k == S2S_SELF, &par);
        }
    sf_free(stats);
    m->last_threads = par.used;
    return SF_OK;
}
