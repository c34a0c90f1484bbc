/* Autoregressive decoding of the seq2seq model from SOS.
 *
 * With the cache, the encoder and every decoder layer's cross-attention keys/values are computed
 * once; each step embeds one new position, appends its self-attention key/value to the layer's
 * cache and runs the decoder on that one row (its query sees cache rows 0..t, which is exactly the
 * causal mask). Per step O(B (L d^2 + (t + T) d)) instead of a whole forward. One query per
 * sequence is a matrix-vector product, so the cached attention has its own layout (keys
 * transposed per head) rather than attention.c's GEMMs. The reference recomputes the whole model
 * on [SOS, tokens so far] at every step, as the official autoregressive_answer. */
#include "seq2seq.h"

#include <string.h>
#include <time.h>

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* Checked every 50 ms: nonzero when the caller asks to stop. */
typedef struct {
    sf_stop_hook stop;
    void *ctx;
    double last;
} stop_check;

static int should_stop(stop_check *s) {
    if (!s->stop || now_seconds() - s->last < 0.05) return 0;
    s->last = now_seconds();
    return s->stop(s->ctx);
}

/* ---- the cached decoder ------------------------------------------------------------------------ */

/* Keys are cached transposed per head, kt (B, H, dh, cap), so that one query's scores are axpys
 * along the keys; values per head by row, v (B, H, cap, dh): each (sequence, head) streams two
 * contiguous blocks. cap rows per sequence, the first `filled` valid. */
typedef struct {
    real *kt, *v;
    long cap;
} kv_cache;

/* W^T of every decoder matrix (packed once per call) and the layer's caches. */
typedef struct {
    real *self_in, *self_out, *cross_in, *cross_out, *w1, *w2; /* (d,3d), (d,d), (d,3d), (d,d), (d,F), (F,d) */
    kv_cache self, cross; /* cap = steps (filled one row per step) and T (the encoder memory) */
} layer_cache;

/* Per-step rows (B of each) and scratch. */
typedef struct {
    real *x, *y, *n, *q, *ctx, *r, *mean, *rstd, *a1, *act, *kv, *p, *out;
} step_rows;

static void pack_t(real *dst, const real *W, long out, long in) {
    for (long o = 0; o < out; o++)
        for (long i = 0; i < in; i++) dst[i * out + o] = W[o * in + i];
}

/* Store rows kv (rows, 2d) = [K | V] of sequence b at cache rows t0.. (per row: its keys into the
 * transposed block, its values as a row). */
static void cache_store(kv_cache *c, const real *kv, long b, long t0, long rows, long d, long H) {
    const long dh = d / H;
    for (long r = 0; r < rows; r++) {
        const real *k = kv + r * 2 * d;
        for (long h = 0; h < H; h++) {
            for (long j = 0; j < dh; j++) c->kt[((b * H + h) * dh + j) * c->cap + t0 + r] = k[h * dh + j];
            memcpy(c->v + ((b * H + h) * c->cap + t0 + r) * dh, k + d + h * dh, (size_t)dh * sizeof(real));
        }
    }
}

/* ctx (B,d): one query per sequence, q (B,d), against the first `filled` rows of the cache; per
 * (sequence, head) task, owner-computes, sums in a fixed order. p: B*H*cap scratch. Softmax as
 * attention.c (scaled scores, max shift, double sum). */
static void decode_attention(real *ctx, real *p, const real *q, const kv_cache *c, long filled, long B, long d,
                             long H, sf_par *par) {
    const long dh = d / H;
    const real scale = score_scale(dh);
    const int nt = B * H > 1 && B * filled * d >= 65536 ? par->nt : 1;
    (void)nt; /* unused in a serial build */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (long task = 0; task < B * H; task++) {
        const long b = task / H, h = task % H;
        const real *qh = q + b * d + h * dh, *kt = c->kt + task * dh * c->cap;
        real *s = p + task * c->cap, *out = ctx + b * d + h * dh;
        for (long j = 0; j < filled; j++) s[j] = 0;
        for (long i = 0; i < dh; i++) {
            const real qi = qh[i], *k = kt + i * c->cap;
#pragma omp simd
            for (long j = 0; j < filled; j++) s[j] += qi * k[j];
        }
        SF(softmax_row)(s, filled, filled, scale);
        for (long i = 0; i < dh; i++) out[i] = 0;
        for (long j = 0; j < filled; j++) {
            const real w = s[j], *v = c->v + (task * c->cap + j) * dh;
#pragma omp simd
            for (long i = 0; i < dh; i++) out[i] += w * v[i];
        }
    }
    sf_par_note(par, nt);
}

/* One attention sublayer of a decoding step: its weights (in_proj and out_proj packed transposed),
 * its norm, its cache; self-attention appends each step's key and value (turned by RoPE when the
 * model has it), cross-attention reads the memory's, stored once. */
typedef struct {
    const s2s_attn_w *w;
    const real *wt_in, *wt_out;
    const s2s_norm_w *nw;
    kv_cache *kv;
    const double *rope;
    int self;
} step_sublayer;

static step_sublayer step_attention(const s2s_params *p, layer_cache *k, int l, int cross) {
    const s2s_layer_w *w = &p->dec[l];
    return cross ? (step_sublayer){&w->cross, k->cross_in, k->cross_out, &w->norm[1], &k->cross, NULL, 0}
                 : (step_sublayer){&w->self, k->self_in, k->self_out, &w->norm[0], &k->self, p->enc.rope, 1};
}

/* y (B,d) = one attention sublayer on the rows x: queries from these rows, keys/values from the
 * cache's first `filled` rows; self-attention first appends this row's key/value at row t. */
static void step_attn(const sf_config *c, const step_sublayer *sub, const real *x, real *y, long filled, long t,
                      long B, step_rows *s, sf_par *par) {
    const long d = c->d_model, H = c->n_heads;
    const int pre = c->norm == SF_NORM_PRE;
    const s2s_attn_w *w = sub->w;
    const s2s_norm_w *nw = sub->nw;
    const real *n = x;
    if (pre) SF(layernorm_forward)(s->n, s->mean, s->rstd, x, nw->g, nw->b, c->ln_eps, B, d, par), n = s->n;
    SF(gemm)(B, d, d, n, d, 1, sub->wt_in, 3 * d, s->q, d, w->b_in, 0, par);
    if (sub->self) { /* this row sits at position t: its query and key turn by t under RoPE */
        SF(gemm)(B, 2 * d, d, n, d, 1, sub->wt_in + d, 3 * d, s->kv, 2 * d, w->b_in + d, 0, par);
        if (sub->rope) {
            SF(rope_rows)(s->q, d, B, 1, t, d, H, sub->rope, 0, par);
            SF(rope_rows)(s->kv, 2 * d, B, 1, t, d, H, sub->rope, 0, par);
        }
        for (long b = 0; b < B; b++) cache_store(sub->kv, s->kv + b * 2 * d, b, t, 1, d, H);
    }
    decode_attention(s->ctx, s->p, s->q, sub->kv, filled, B, d, H, par);
    SF(gemm)(B, d, d, s->ctx, d, 1, sub->wt_out, d, s->r, d, w->b_out, 0, par);
    add_into(s->r, x, B * d);
    if (pre) memcpy(y, s->r, (size_t)(B * d) * sizeof(real));
    else SF(layernorm_forward)(y, s->mean, s->rstd, s->r, nw->g, nw->b, c->ln_eps, B, d, par);
}

static void step_ffn(const sf_config *c, const s2s_ffn_w *w, const real *wt1, const real *wt2, const s2s_norm_w *nw,
                     const real *x, real *y, long B, step_rows *s, sf_par *par) {
    const long d = c->d_model, F = c->d_ff;
    const int pre = c->norm == SF_NORM_PRE;
    const real *n = x;
    if (pre) SF(layernorm_forward)(s->n, s->mean, s->rstd, x, nw->g, nw->b, c->ln_eps, B, d, par), n = s->n;
    SF(gemm)(B, F, d, n, d, 1, wt1, F, s->a1, F, w->b1, 0, par);
    SF(activation_forward)(s->act, s->a1, B * F, c->activation, par);
    SF(gemm)(B, d, F, s->act, F, 1, wt2, d, s->r, d, w->b2, 0, par);
    add_into(s->r, x, B * d);
    if (pre) memcpy(y, s->r, (size_t)(B * d) * sizeof(real));
    else SF(layernorm_forward)(y, s->mean, s->rstd, s->r, nw->g, nw->b, c->ln_eps, B, d, par);
}

static size_t cache_layout(const sf_config *c, long B, long T, long steps, char *base, layer_cache *lc,
                           step_rows *s) {
    bump b = {base, 0};
    const long d = c->d_model, F = c->d_ff, H = c->n_heads, cap = steps > T ? steps : T;
    for (int l = 0; l < c->n_decoder_layers; l++) {
        layer_cache *k = &lc[l];
        k->self_in = take(&b, 3 * d * d), k->self_out = take(&b, d * d);
        k->cross_in = take(&b, 3 * d * d), k->cross_out = take(&b, d * d);
        k->w1 = take(&b, d * F), k->w2 = take(&b, F * d);
        k->self.cap = steps, k->self.kt = take(&b, B * d * steps), k->self.v = take(&b, B * steps * d);
        k->cross.cap = T, k->cross.kt = take(&b, B * d * T), k->cross.v = take(&b, B * T * d);
    }
    s->x = take(&b, B * d), s->y = take(&b, B * d), s->n = take(&b, B * d), s->q = take(&b, B * d);
    s->ctx = take(&b, B * d), s->r = take(&b, B * d), s->mean = take_means(&b, c, B), s->rstd = take(&b, B);
    s->a1 = take(&b, B * F), s->act = take(&b, B * F), s->kv = take(&b, B * T * 2 * d);
    s->p = take(&b, B * H * cap), s->out = take(&b, B);
    return b.used;
}

/* Emits output t of every row and the token fed back at t + 1. */
static void emit(uint8_t *tokens, real *outputs, uint8_t *cur, const real *out, long B, long t, long steps,
                 double threshold) {
    for (long b = 0; b < B; b++) {
        cur[b] = (uint8_t)(out[b] > threshold);
        tokens[b * steps + t] = cur[b];
        if (outputs) outputs[b * steps + t] = out[b];
    }
}

static sf_status generate_cached(sf_model *m, const uint8_t *x, long B, long T, long steps, double threshold,
                                 uint8_t *tokens, real *outputs, sf_par *par, stop_check *sc) {
    const sf_config *c = &m->cfg;
    const long d = c->d_model, F = c->d_ff, H = c->n_heads, Ld = c->n_decoder_layers;
    s2s_acts a;
    sf_status st = SF(s2s_reserve)(m, B, T, 1, par->nt, &a); /* the encoder's workspace */
    if (st) return st;
    layer_cache lc[SF_MAX_LAYERS];
    step_rows s;
    const size_t bytes = cache_layout(c, B, T, steps, NULL, lc, &s);
    if ((st = sf_check_budget(bytes + (size_t)B, "the key/value cache"))) return st;
    char *block = sf_alloc(bytes);
    uint8_t *cur = malloc((size_t)B);
    if (!block || !cur) {
        sf_free(block);
        free(cur);
        return sf_fail(SF_ENOMEM, "could not allocate %.3g GB of key/value cache", bytes / 1e9);
    }
    cache_layout(c, B, T, steps, block, lc, &s);
    s2s_params p;
    SF(s2s_params)(m, (real *)m->params, &p);
    SF(s2s_encode)(m, &p, x, &a, par);
    for (long l = 0; l < Ld; l++) { /* pack the weights; the memory's keys and values, once */
        const s2s_layer_w *w = &p.dec[l];
        layer_cache *k = &lc[l];
        pack_t(k->self_in, w->self.w_in, 3 * d, d), pack_t(k->self_out, w->self.w_out, d, d);
        pack_t(k->cross_in, w->cross.w_in, 3 * d, d), pack_t(k->cross_out, w->cross.w_out, d, d);
        pack_t(k->w1, w->ffn.w1, F, d), pack_t(k->w2, w->ffn.w2, d, F);
        SF(gemm)(B * T, 2 * d, d, a.enc.final_out, d, 1, k->cross_in + d, 3 * d, s.kv, 2 * d, w->cross.b_in + d, 0, par);
        for (long b = 0; b < B; b++) cache_store(&k->cross, s.kv + b * T * 2 * d, b, 0, T, d, H);
    }
    memset(cur, SF_SOS, (size_t)B);
    for (long t = 0; t < steps; t++) {
        if (should_stop(sc)) {
            st = sf_fail(SF_EINTR, "interrupted after %ld of %ld decoding steps", t, steps);
            break;
        }
        for (long b = 0; b < B; b++) /* token cur[b] at position t */
            embed_row(s.x + b * d, p.enc.tok, position_table(&p.enc), cur[b], t, d, concat_positions(c));
        for (long l = 0; l < Ld; l++) {
            const s2s_layer_w *w = &p.dec[l];
            layer_cache *k = &lc[l];
            const step_sublayer self = step_attention(&p, k, (int)l, 0), cross = step_attention(&p, k, (int)l, 1);
            step_attn(c, &self, s.x, s.y, t + 1, t, B, &s, par);
            step_attn(c, &cross, s.y, s.x, T, t, B, &s, par);
            step_ffn(c, &w->ffn, k->w1, k->w2, &w->norm[2], s.x, s.y, B, &s, par);
            memcpy(s.x, s.y, (size_t)(B * d) * sizeof(real));
        }
        SF(layernorm_forward)(s.y, s.mean, s.rstd, s.x, p.dec_norm.g, p.dec_norm.b, c->ln_eps, B, d, par);
        SF(readout_forward)(s.out, s.y, p.w_head, p.b_head, B, d);
        emit(tokens, outputs, cur, s.out, B, t, steps, threshold);
    }
    sf_free(block);
    free(cur);
    return st;
}

/* ---- the reference: the whole model at every step -------------------------------------------------- */

static sf_status generate_full(sf_model *m, const uint8_t *x, long B, long T, long steps, double threshold,
                               uint8_t *tokens, real *outputs, sf_par *par, stop_check *sc) {
    s2s_acts a;
    sf_status st = SF(s2s_reserve)(m, B, T, steps, par->nt, &a); /* the largest step: later layouts fit */
    if (st) return st;
    uint8_t *dec = malloc((size_t)(B * steps)), *cur = malloc((size_t)B);
    if (!dec || !cur) {
        free(dec);
        free(cur);
        return sf_fail(SF_ENOMEM, "out of memory for the decoder inputs");
    }
    for (long b = 0; b < B; b++) dec[b * steps] = SF_SOS;
    s2s_params p;
    SF(s2s_params)(m, (real *)m->params, &p);
    real *out = NULL;
    for (long t = 0; t < steps && st == SF_OK; t++) {
        if (should_stop(sc)) {
            st = sf_fail(SF_EINTR, "interrupted after %ld of %ld decoding steps", t, steps);
            break;
        }
        SF(s2s_reserve)(m, B, T, t + 1, par->nt, &a); /* fits: no allocation */
        SF(s2s_set_decoder)(&a, dec, steps);
        SF(s2s_encode)(m, &p, x, &a, par);
        SF(s2s_decode)(m, &p, &a, par);
        out = a.out;
        for (long b = 0; b < B; b++) out[b] = out[b * (t + 1) + t]; /* row b's last output (b <= b(t+1)+t) */
        emit(tokens, outputs, cur, out, B, t, steps, threshold);
        if (t + 1 < steps)
            for (long b = 0; b < B; b++) dec[b * steps + t + 1] = cur[b];
    }
    free(dec);
    free(cur);
    return st;
}

sf_status SF(generate)(sf_model *m, const uint8_t *x, int B, int T, int steps, int cache, double threshold,
                       uint8_t *tokens, void *outputs, int nt, sf_stop_hook stop, void *stop_ctx) {
    if (steps < 1 || steps > m->cfg.n_positions + 1)
        return sf_fail(SF_EINVAL, "steps must be in [1, n_positions+1=%d], got %d", m->cfg.n_positions + 1, steps);
    sf_par par = {sf_resolve_threads(nt), 1};
    stop_check sc = {stop, stop_ctx, now_seconds()};
    sf_status st = cache ? generate_cached(m, x, B, T, steps, threshold, tokens, outputs, &par, &sc)
                         : generate_full(m, x, B, T, steps, threshold, tokens, outputs, &par, &sc);
    if (par.used > m->last_threads || st == SF_OK) m->last_threads = par.used;
    return st;
}
