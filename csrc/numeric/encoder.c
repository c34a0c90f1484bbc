/* The encoder stack (embedding halves, L encoder layers, optional final LayerNorm) and the encoder
 * model of Hahn & Rofin (2024) built on it: the stack read out at the last position. The seq2seq
 * model runs its encoder through the same stack. Forward saves what backward needs; backward
 * mirrors it layer by layer.
 *
 * The encoder model's output reads only the last position of the last layer, so that layer
 * computes keys and values for every position but queries, attention output, FFN and LayerNorms
 * only for the readout position (Tq = 1). Earlier layers, and every layer of the seq2seq memory,
 * compute every position (Tq = T). */
#include "encoder.h"

#include <string.h>

/* ---- workspace layout ---------------------------------------------------------------------- */

size_t SF(encoder_layout)(const sf_config *c, long B, long T, int every_position, int nt, char *base, acts *a) {
    bump b = {base, 0};
    const long d = c->d_model, F = c->d_ff, H = c->n_heads, L = c->n_layers, N = B * T;
    const int pre = c->norm == SF_NORM_PRE, post = c->norm == SF_NORM_POST;
    a->B = B, a->T = T, a->Nf = every_position ? N : B;
    real *next_x = take(&b, N * d); /* layer 0 input: the embeddings */
    for (long l = 0; l < L; l++) {
        layer_acts *s = &a->layer[l];
        const long Tq = l == L - 1 && !every_position ? 1 : T, Nq = B * Tq;
        s->Tq = Tq;
        s->x = next_x;
        s->a_in = pre ? take(&b, N * d) : s->x;
        s->ln1_mean = take_means(&b, c, N);
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
        s->ln2_mean = take_means(&b, c, Nq);
        s->ln2_rstd = take(&b, Nq);
        s->a1 = take(&b, Nq * F);
        s->act = take(&b, Nq * F);
        next_x = take(&b, Nq * d); /* the layer output = next layer's input */
        s->out = next_x;
        s->r2 = post ? take(&b, Nq * d) : s->out;
    }
    a->final_in = next_x;
    a->final_mean = take_means(&b, c, a->Nf);
    a->final_rstd = take(&b, a->Nf);
    a->final_out = c->final_norm ? take(&b, a->Nf * d) : a->final_in;
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
    a->U = B > 2 || d / H >= SF_NARROW_HEAD ? 2 * T : 0;
    a->u_emb = take(&b, a->U * d);
    a->u_ain = pre ? take(&b, a->U * d) : a->u_emb;
    a->u_mean = take_means(&b, c, a->U);
    a->u_rstd = take(&b, a->U);
    a->u_qkv = take(&b, a->U * 3 * d);
    a->u_grad = take(&b, a->U * 3 * d);
    a->u_gain = take(&b, a->U * d);
    a->u_gemb = pre ? take(&b, a->U * d) : a->u_gain;
    a->u_sum = (double *)take(&b, a->U * 3 * d * (long)(sizeof(double) / sizeof(real)));
    const long table = d / H >= SF_NARROW_HEAD ? H * a->U * a->U : 0;
    a->s_tab = table ? take(&b, table) : NULL;
    const long groups = table ? SF(score_table_groups)(B, T, H) : 0;
    a->ds_tab = table ? take(&b, table * groups) : NULL;
    a->dv_sum = table ? (double *)take(&b, groups * a->U * d * (long)(sizeof(double) / sizeof(real))) : NULL;
    a->u_vw = table ? take(&b, H * a->U * d) : NULL;
    a->forward_only = a->loss_only = a->pool_last = 0;
    a->pool_q = take(&b, B * H * d);
    a->pool_a = take(&b, B * H * d);
    a->g_pool_q = take(&b, B * H * d);
    a->g_pool_a = take(&b, B * H * d);
    a->attn_scratch = take(&b, SF(attention_scratch)(T, T, d, H, nt));
    a->ln_partials = (double *)take(&b, SF(layernorm_partials)(N, d) * (long)(sizeof(double) / sizeof(real)));
    a->wt = take(&b, 3 * d * d > d * d + 2 * d * F ? 3 * d * d : d * d + 2 * d * F);
    return b.used;
}

sf_status SF(encoder_reserve)(sf_model *m, long B, long T, int nt, acts *a) {
    const sf_config *c = &m->cfg;
    if (B < 1) return sf_fail(SF_EINVAL, "batch size must be >= 1, got %ld", B);
    if (T < 1 || T > c->n_positions)
        return sf_fail(SF_EINVAL, "sequence length must be in [1, n_positions=%d], got %ld", c->n_positions, T);
    a->layer = a->layer_storage;
    if (c->n_layers > SF_MAX_LAYERS_INLINE) return sf_fail(SF_EINVAL, "at most %d layers", SF_MAX_LAYERS_INLINE);
    size_t bytes = SF(encoder_layout)(c, B, T, 0, nt, NULL, a);
    sf_status st = sf_workspace_reserve(&m->work, bytes);
    if (st) return st;
    SF(encoder_layout)(c, B, T, 0, nt, m->work.base, a);
    return SF_OK;
}

/* ---- parameters ---------------------------------------------------------------------------- */

static real *tensor(real *base, const sf_model *m, int index) { return base + m->tensors[index].offset; }

void SF(stack_params)(const sf_model *m, real *base, params *p) {
    const sf_config *c = &m->cfg;
    p->layer = p->layer_storage;
    p->tok = tensor(base, m, 0);
    p->pos = sf_embedding_tensors(c) == 2 ? tensor(base, m, 1) : NULL;
    p->fixed_pos = m->sinusoid;
    p->rope = m->rope;
    for (int l = 0; l < c->n_layers; l++) { /* a slot the configuration lacks has a NULL view */
        layer_params *q = &p->layer[l];
#define SF_LAYER_VIEW(slot, field, ...)                                                                               \
    q->field = sf_slot_present(c, 0, SF_SLOT_##slot) ? tensor(base, m, sf_tensor_index(m, l, SF_SLOT_##slot)) : NULL;
        SF_ENCODER_LAYER_TENSORS(SF_LAYER_VIEW)
#undef SF_LAYER_VIEW
    }
    const int final = sf_embedding_tensors(c) + c->n_layers * sf_layer_slots(c);
    p->gf = c->final_norm ? tensor(base, m, final) : NULL;
    p->bf = c->final_norm && sf_final_norm_tensors(c) == 2 ? tensor(base, m, final + 1) : NULL;
    p->w_head = p->b_head = NULL;
}

void SF(encoder_params)(const sf_model *m, real *base, params *p) {
    SF(stack_params)(m, base, p);
    p->w_head = tensor(base, m, m->n_tensors - 2);
    p->b_head = tensor(base, m, m->n_tensors - 1);
}

/* ---- forward -------------------------------------------------------------------------------- */

/* Layer 0's q (Nq,d) and kv (N,2d) from the U distinct attention inputs: each row is the one the
 * full GEMM would give, bit for bit (the GEMM's arithmetic per element does not depend on M).
 * Tabled: only the score table a->s_tab (the attention reads the values from the distinct rows). */
static void distinct_inproj_forward(const sf_config *c, const params *p, layer_acts *s, acts *a, const uint8_t *x,
                                    sf_par *par) {
    const long d = c->d_model, B = a->B, T = a->T, Tq = s->Tq, U = a->U, H = c->n_heads, dh = d / H;
    const layer_params *w = &p->layer[0];
    embed_distinct_rows(a->u_emb, p->tok, position_table(p), U, T, d, concat_positions(c));
    if (c->norm == SF_NORM_PRE)
        SF(layernorm_forward)(a->u_ain, a->u_mean, a->u_rstd, a->u_emb, w->g1, w->be1, c->ln_eps, U, d, par);
    SF(linear_forward)(a->u_qkv, a->u_ain, w->w_in, w->b_in, U, d, 3 * d, a->wt, par);
    rope_distinct_rows(c, p->rope, a->u_qkv, T, 0, par);
    if (s->tabled) {
        for (long hd = 0; hd < H; hd++) /* s_tab[h] = Q_h K_h^T over the distinct rows */
            SF(gemm_bt)(U, U, dh, a->u_qkv + hd * dh, 3 * d, 1, a->u_qkv + d + hd * dh, 3 * d, a->s_tab + hd * U * U, U,
                        NULL, 0, par);
        for (long hd = 0; s->folded && hd < H; hd++) /* u_vw[h] = V_h W_out,h^T (attention_table.c) */
            SF(gemm_bt)(U, d, dh, a->u_qkv + 2 * d + hd * dh, 3 * d, 1, w->w_out + hd * dh, d, a->u_vw + hd * U * d, d,
                        NULL, 0, par);
        return; /* the attention reads the values from u_qkv, or u_vw */
    }
    SF(gather_distinct)(s->q, s->kv, a->u_qkv, x, B, T, Tq, d);
}

void SF(gather_distinct)(real *q, real *kv, const real *u_qkv, const uint8_t *x, long B, long T, long Tq, long d) {
    for (long b = 0; b < B; b++)
        for (long t = 0; t < T; t++) {
            const real *src = u_qkv + (x[b * T + t] * T + t) * 3 * d;
            memcpy(kv + (b * T + t) * 2 * d, src + d, (size_t)(2 * d) * sizeof(real));
            if (t >= T - Tq) memcpy(q + (b * Tq + t - (T - Tq)) * d, src, (size_t)d * sizeof(real));
        }
}

/* The last layer's attention (one query per sequence) with no keys or values: per head h, the
 * score of position j is q_h . (W_kh a_j + b_kh) = (W_kh^T q_h) . a_j + q_h . b_kh, whose last
 * term is the same for every j and cancels in the softmax; and since the probabilities sum to
 * 1, the context is W_vh (sum_j p_j a_j) + b_vh. Per position that is 2 H d multiply-adds
 * instead of the 2 d^2 of projecting keys and values (and the backward, 3 H d instead of 4 d^2).
 * The HVP and the attention-logit probe use the keys and values. s->p holds the same
 * probabilities. */
/* One (sequence, head): p (T) = softmax(scale * rows qk), pooled (d) = p^T rows; rows (T,d). */
SF_VECTOR_ISA static void pool_head(real *p, real *pooled, const real *qk, const real *rows, long T, long d,
                                       real scale) {
    for (long j = 0; j < T; j++) {
        const real *r = rows + j * d;
        real acc = 0;
#pragma omp simd reduction(+ : acc)
        for (long k = 0; k < d; k++) acc += qk[k] * r[k];
        p[j] = acc;
    }
    SF(softmax_row)(p, T, T, scale);
    for (long k = 0; k < d; k++) pooled[k] = 0;
    for (long j = 0; j < T; j++) {
        const real pj = p[j], *r = rows + j * d;
#pragma omp simd
        for (long k = 0; k < d; k++) pooled[k] += pj * r[k];
    }
}

static void pooled_attention_forward(const sf_config *c, const layer_params *w, layer_acts *s, acts *a,
                                     sf_par *par) {
    const long d = c->d_model, H = c->n_heads, dh = d / H, B = a->B, T = a->T;
    const real scale = score_scale(dh);
    for (long h = 0; h < H; h++) /* pool_q (B,H,d): W_kh^T q_h */
        SF(gemm)(B, d, dh, s->q + h * dh, d, 1, w->w_in + (d + h * dh) * d, d, a->pool_q + h * d, H * d, NULL, 0, par);
    const int nt = B * H * T * d >= 131072 ? par->nt : 1;
    (void)nt; /* unused in a serial build */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (long task = 0; task < B * H; task++)
        pool_head(s->p + task * T, a->pool_a + task * d, a->pool_q + task * d, s->a_in + task / H * T * d, T, d,
                  scale);
    real *wvt = a->wt; /* W_v^T (d,d), so each head's columns are a contiguous B operand */
    const real *wv = w->w_in + 2 * d * d;
    for (long o = 0; o < d; o++)
        for (long i = 0; i < d; i++) wvt[i * d + o] = wv[o * d + i];
    for (long h = 0; h < H; h++)
        SF(gemm)(B, dh, d, a->pool_a + h * d, H * d, 1, wvt + h * dh, d, s->ctx + h * dh, d, w->b_in + 2 * d + h * dh,
                 0, par);
    sf_par_note(par, nt);
}

enum { TAIL_ROWS = 192 }; /* a multiple of every GEMM path's row tile (4, 6, 8) */

/* The layer after its attention, for Nq rows: out-projection (folded: the attention's) +
 * residual, LN1 (post-norm) or LN2 (pre-norm), the FFN + residual, LN2 (post-norm). Run op by op
 * over all rows, each op would stream its arrays from memory; run chunk by chunk (TAIL_ROWS rows,
 * one thread each), a chunk's arrays stay in cache from one op to the next. Every op's arithmetic
 * per row is the same either way, and so are the bits. wt: room for W_out^T, W1^T and W2^T. */
static void layer_tail_forward(const sf_config *c, const layer_params *w, layer_acts *s, long Nq, real *wt,
                               sf_par *par) {
    const long d = c->d_model, F = c->d_ff, chunks = (Nq + TAIL_ROWS - 1) / TAIL_ROWS;
    const int pre = c->norm == SF_NORM_PRE, post = c->norm == SF_NORM_POST;
    real *wt_out = wt, *wt1 = wt + d * d, *wt2 = wt1 + d * F;
    if (!s->folded) SF(transpose_weight)(wt_out, w->w_out, d, d);
    SF(transpose_weight)(wt1, w->w1, F, d);
    SF(transpose_weight)(wt2, w->w2, d, F);
    const int nt = chunks > 1 && Nq * (d + F) >= 65536 ? par->nt : 1;
    (void)nt; /* unused in a serial build */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (long chunk = 0; chunk < chunks; chunk++) {
        const long r = chunk * TAIL_ROWS, n = Nq - r < TAIL_ROWS ? Nq - r : TAIL_ROWS, rd = r * d;
        sf_par one = {1, 0};
        if (!s->folded) SF(gemm)(n, d, d, s->ctx + rd, d, 1, wt_out, d, s->r1 + rd, d, w->b_out, 0, &one);
        add_into(s->r1 + rd, s->xq + rd, n * d);
        if (post)
            SF(layernorm_forward)(s->h + rd, rows_from(s->ln1_mean, r), s->ln1_rstd + r, s->r1 + rd, w->g1, w->be1, c->ln_eps, n,
                                  d, &one);
        if (pre)
            SF(layernorm_forward)(s->f_in + rd, rows_from(s->ln2_mean, r), s->ln2_rstd + r, s->h + rd, w->g2, w->be2, c->ln_eps,
                                  n, d, &one);
        SF(gemm)(n, F, d, s->f_in + rd, d, 1, wt1, F, s->a1 + r * F, F, w->b1, 0, &one);
        SF(activation_forward)(s->act + r * F, s->a1 + r * F, n * F, c->activation, &one);
        SF(gemm)(n, d, F, s->act + r * F, F, 1, wt2, d, s->r2 + rd, d, w->b2, 0, &one);
        add_into(s->r2 + rd, s->h + rd, n * d);
        if (post)
            SF(layernorm_forward)(s->out + rd, rows_from(s->ln2_mean, r), s->ln2_rstd + r, s->r2 + rd, w->g2, w->be2, c->ln_eps, n,
                                  d, &one);
    }
    sf_par_note(par, nt);
}

/* x: layer 0's tokens when its in-projection runs on the distinct rows (a->U > 0), else NULL. */
static void layer_forward(const sf_config *c, const params *p, int l, acts *a, const uint8_t *x, sf_par *par) {
    const layer_params *w = &p->layer[l];
    layer_acts *s = &a->layer[l];
    const long d = c->d_model, H = c->n_heads, B = a->B, T = a->T, N = B * T, Tq = s->Tq, Nq = B * Tq;
    const int pre = c->norm == SF_NORM_PRE;
    real *wt = a->wt;
    /* (the pooled form needs keys linear in the inputs: not with RoPE) */
    const int pooled =
        Tq == 1 && l == c->n_layers - 1 && !p->rope && (a->forward_only || ((a->loss_only || a->pool_last) && !x));
    /* every row's LN1 (pre-norm): not on layer 0's distinct rows, which normalise their own, unless
     * the pooled form reads the rows */
    const int every_row_norm = pre && (!x || pooled);
    if (every_row_norm)
        SF(layernorm_forward)(s->a_in, s->ln1_mean, s->ln1_rstd, s->x, w->g1, w->be1, c->ln_eps, N, d, par);
    if (Tq < T) {
        gather_last(s->xq, s->x, B, T, d);
        if (every_row_norm) gather_last(s->aq, s->a_in, B, T, d);
    }
    /* self-attention: q from the query rows, k and v from every row (in_proj rows [0,d) and [d,3d)) */
    s->pooled = pooled;
    s->tabled = x && Tq == T && a->s_tab && (a->forward_only || a->loss_only);
    s->folded = s->tabled && a->forward_only;
    if (x) {
        distinct_inproj_forward(c, p, s, a, x, par);
    } else {
        SF(linear_forward)(s->q, s->aq, w->w_in, w->b_in, Nq, d, d, wt, par);
        rope_heads(c, p->rope, s->q, d, B, Tq, T, 0, par);
        if (!pooled) {
            SF(linear_forward)(s->kv, s->a_in, w->w_in + d * d, w->b_in + d, N, d, 2 * d, wt, par);
            rope_heads(c, p->rope, s->kv, 2 * d, B, T, T, 0, par);
        }
    }
    if (pooled) pooled_attention_forward(c, w, s, a, par);
    else if (s->folded)
        SF(attention_forward_folded)(s->r1, s->p, a->s_tab, x, a->u_vw, w->b_out, B, T, d, H, a->attn_scratch, par);
    else if (s->tabled)
        SF(attention_forward_tabled)(s->ctx, s->p, a->s_tab, x, a->u_qkv + 2 * d, 3 * d, B, T, d, H, a->attn_scratch,
                                     par);
    else SF(attention_forward)(s->ctx, s->p, s->q, s->kv, B, T, Tq, d, H, a->attn_scratch, par);
    layer_tail_forward(c, w, s, Nq, wt, par);
}

void SF(stack_forward)(const sf_config *c, const params *p, const uint8_t *x, acts *a, sf_par *par) {
    const long B = a->B, T = a->T, d = c->d_model;
    SF(embedding_forward)(a->layer[0].x, x, p->tok, position_table(p), B, T, d, concat_positions(c), par);
    for (int l = 0; l < c->n_layers; l++) layer_forward(c, p, l, a, l == 0 && a->U ? x : NULL, par);
    if (c->final_norm)
        SF(layernorm_forward)(a->final_out, a->final_mean, a->final_rstd, a->final_in, p->gf, p->bf, c->ln_eps, a->Nf,
                              d, par);
}

void SF(encoder_forward)(sf_model *m, const uint8_t *x, acts *a, sf_par *par) {
    params p;
    SF(encoder_params)(m, (real *)m->params, &p);
    SF(stack_forward)(&m->cfg, &p, x, a, par);
    SF(readout_forward)(a->out, a->final_out, p.w_head, p.b_head, a->B, m->cfg.d_model);
}

/* ---- backward ------------------------------------------------------------------------------- */

/* a->u_grad (U,3d) = [g_q | g_kv] summed over the rows of each distinct (token, position) in
 * double, in row order; threads own column ranges, so the sums do not depend on the thread count.
 * Tabled, the score table gives q and k, and the attention's backward the values' sums. */
void SF(sum_by_distinct_row)(acts *a, const layer_acts *s, const uint8_t *x, long d, sf_par *par) {
    const long B = a->B, T = a->T, Tq = s->Tq, U = a->U, W = 3 * d;
    if (s->tabled) {
        for (long u = 0; u < U; u++)
            for (long j = 0; j < d; j++) a->u_grad[u * W + 2 * d + j] = (real)a->dv_sum[u * d + j];
        return;
    }
#pragma omp parallel num_threads(B * T * W >= 131072 ? par->nt : 1)
    {
        long lo, hi;
        sf_partition(W, 16, SF_THREAD_ID(), SF_TEAM_SIZE(), &lo, &hi);
        for (long u = 0; u < U; u++)
            for (long j = lo; j < hi; j++) a->u_sum[u * W + j] = 0;
        for (long b = 0; b < B; b++)
            for (long t = 0; t < T; t++) {
                double *acc = a->u_sum + (x[b * T + t] * T + t) * W;
                const real *kv = a->g_kv + (b * T + t) * 2 * d; /* columns [d, 3d) */
                for (long j = lo > d ? lo : d; j < hi; j++) acc[j] += kv[j - d];
                if (t >= T - Tq && lo < d) {
                    const real *q = a->g_q + (b * Tq + t - (T - Tq)) * d;
                    for (long j = lo; j < (hi < d ? hi : d); j++) acc[j] += q[j];
                }
            }
        for (long u = 0; u < U; u++)
            for (long j = lo; j < hi; j++) a->u_grad[u * W + j] = (real)a->u_sum[u * W + j];
    }
}

/* Layer 0's in-projection backward on the distinct rows: its weight and bias gradients, and
 * a->u_gemb (U,d), the gradient w.r.t. the distinct embeddings (added by encoder_backward). */
static void distinct_inproj_backward(const sf_config *c, const params *p, layer_params *gw, const layer_acts *s,
                                     acts *a, const uint8_t *x, sf_par *par) {
    const long d = c->d_model, U = a->U, H = c->n_heads, dh = d / H, T = a->T;
    const layer_params *w = &p->layer[0];
    SF(sum_by_distinct_row)(a, s, x, d, par);
    for (long h = 0; s->tabled && h < H; h++) { /* s_tab[h] = Q_h K_h^T: dQ_h = dS K_h, dK_h = dS^T Q_h */
        const real *ds = a->ds_tab + h * U * U, *q = a->u_qkv + h * dh, *k = a->u_qkv + d + h * dh;
        SF(gemm)(U, dh, U, ds, U, 1, k, 3 * d, a->u_grad + h * dh, 3 * d, NULL, 0, par);
        SF(gemm)(U, dh, U, ds, 1, U, q, 3 * d, a->u_grad + d + h * dh, 3 * d, NULL, 0, par);
    }
    /* the gradients of the rotated queries and keys, back through RoPE (per distinct row: its position) */
    rope_distinct_rows(c, p->rope, a->u_grad, T, 1, par);
    SF(linear_backward)(a->u_gain, 0, gw->w_in, gw->b_in, a->u_grad, a->u_ain, w->w_in, U, d, 3 * d, par);
    if (c->norm == SF_NORM_PRE)
        SF(layernorm_backward)(a->u_gemb, NULL, gw->g1, gw->be1, a->u_gain, a->u_emb, a->u_mean, a->u_rstd, w->g1, U, d,
                               a->ln_partials, par);
}

/* One (sequence, head) of the pooled attention's backward, given g_pooled = dL/d(pooled):
 * g_rows (T,d) += p_j g_pooled + g_s_j qk (the rows feed both the pooling and the scores), and
 * g_qk (d) = sum_j g_s_j rows_j, with g_s = p o (g_p - p . g_p) scale, g_p_j = g_pooled . rows_j. */
SF_VECTOR_ISA static void pool_head_backward(real *g_rows, real *g_qk, const real *p, const real *g_pooled,
                                                const real *qk, const real *rows, long T, long d, real scale) {
    double dot = 0;
    for (long j = 0; j < T; j++) {
        const real *r = rows + j * d;
        real acc = 0;
#pragma omp simd reduction(+ : acc)
        for (long k = 0; k < d; k++) acc += g_pooled[k] * r[k];
        dot += (double)p[j] * acc;
    }
    for (long k = 0; k < d; k++) g_qk[k] = 0;
    for (long j = 0; j < T; j++) {
        const real *r = rows + j * d;
        real g_p = 0;
#pragma omp simd reduction(+ : g_p)
        for (long k = 0; k < d; k++) g_p += g_pooled[k] * r[k];
        const real pj = p[j], g_s = pj * (g_p - (real)dot) * scale;
        real *gr = g_rows + j * d;
#pragma omp simd
        for (long k = 0; k < d; k++) {
            gr[k] += pj * g_pooled[k] + g_s * qk[k];
            g_qk[k] += g_s * r[k];
        }
    }
}

/* The backward of pooled_attention_forward, from a->g_ctx (B,d): a->g_q (B,d); g_ain (N,d), the
 * gradient of the attention inputs (overwritten); the key and value rows of gw->w_in and gw->b_in
 * (the key bias cancels in the softmax: its gradient is exactly zero). */
static void pooled_attention_backward(const sf_config *c, const layer_params *w, layer_params *gw,
                                      const layer_acts *s, acts *a, real *g_ain, sf_par *par) {
    const long d = c->d_model, H = c->n_heads, dh = d / H, B = a->B, T = a->T;
    const real scale = score_scale(dh);
    for (long h = 0; h < H; h++) {
        const long v_row = 2 * d + h * dh;
        /* ctx_h = W_vh pooled_h + b_vh: g_pooled_h = W_vh^T g_ctx_h, g_W_vh = sum_b g_ctx_h pooled_h^T */
        SF(gemm)(B, d, dh, a->g_ctx + h * dh, d, 1, w->w_in + v_row * d, d, a->g_pool_a + h * d, H * d, NULL, 0, par);
        SF(gemm)(dh, d, B, a->g_ctx + h * dh, 1, d, a->pool_a + h * d, H * d, gw->w_in + v_row * d, d, NULL, 0, par);
    }
    SF(column_sums)(gw->b_in + 2 * d, a->g_ctx, B, d, d, par);
    for (long k = 0; k < d; k++) gw->b_in[d + k] = 0;
    const int nt = B * H * T * d >= 131072 ? par->nt : 1;
    (void)nt; /* unused in a serial build */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (long b = 0; b < B; b++) { /* one task per sequence: its heads add into the same rows, in order */
        real *g_rows = g_ain + b * T * d;
        for (long i = 0; i < T * d; i++) g_rows[i] = 0;
        for (long h = 0; h < H; h++) {
            const long task = b * H + h;
            pool_head_backward(g_rows, a->g_pool_q + task * d, s->p + task * T, a->g_pool_a + task * d,
                               a->pool_q + task * d, s->a_in + b * T * d, T, d, scale);
        }
    }
    for (long h = 0; h < H; h++) {
        const long k_row = d + h * dh;
        /* pool_q_h = W_kh^T q_h: g_q_h = W_kh g_pool_q_h, g_W_kh = sum_b q_h g_pool_q_h^T */
        SF(gemm_bt)(B, dh, d, a->g_pool_q + h * d, H * d, 1, w->w_in + k_row * d, d, a->g_q + h * dh, d, NULL, 0, par);
        SF(gemm)(dh, d, B, s->q + h * dh, 1, d, a->g_pool_q + h * d, H * d, gw->w_in + k_row * d, d, NULL, 0, par);
    }
    sf_par_note(par, nt);
}

/* g_out (Nq,d): gradient w.r.t. the layer output. Writes the layer's parameter gradients to gw
 * and returns the gradient w.r.t. the layer input (N,d): g_x, or on layer 0's distinct rows
 * with every position a query, the residual path's own buffer (the rest goes to a->u_gemb). */
static const real *layer_backward(const sf_config *c, const params *p, params *g, int l, acts *a, const uint8_t *x,
                                  const real *g_out, real *g_x, sf_par *par) {
    const layer_params *w = &p->layer[l];
    layer_params *gw = &g->layer[l];
    const layer_acts *s = &a->layer[l];
    const long d = c->d_model, F = c->d_ff, H = c->n_heads, B = a->B, T = a->T, N = B * T, Tq = s->Tq, Nq = B * Tq;
    const int pre = c->norm == SF_NORM_PRE, post = c->norm == SF_NORM_POST;
    /* out = LN2(r2) (post) or r2 */
    const real *g_r2 = g_out;
    if (post) {
        SF(layernorm_backward)(a->g_r2, NULL, gw->g2, gw->be2, g_out, s->r2, s->ln2_mean, s->ln2_rstd, w->g2, Nq, d,
                               a->ln_partials, par);
        g_r2 = a->g_r2;
    }
    /* r2 = h + linear2(act(linear1(f_in))): g_h = g_r2 + the FFN branch's gradient */
    SF(linear_backward)(a->g_f, 0, gw->w2, gw->b2, g_r2, s->act, w->w2, Nq, F, d, par);
    SF(activation_backward)(a->g_f, a->g_f, s->a1, Nq * F, c->activation, par);
    if (pre) {
        SF(linear_backward)(a->g_ctx, 0, gw->w1, gw->b1, a->g_f, s->f_in, w->w1, Nq, d, F, par);
        SF(layernorm_backward)(a->g_h, g_r2, gw->g2, gw->be2, a->g_ctx, s->h, s->ln2_mean, s->ln2_rstd, w->g2, Nq, d,
                               a->ln_partials, par);
    } else {
        memcpy(a->g_h, g_r2, (size_t)(Nq * d) * sizeof(real));
        SF(linear_backward)(a->g_h, 1, gw->w1, gw->b1, a->g_f, s->f_in, w->w1, Nq, d, F, par);
    }
    /* h = LN1(r1) (post) or r1; r1 = xq + out_proj(attention) */
    const real *g_r1 = a->g_h;
    if (post) {
        SF(layernorm_backward)(a->g_r1, NULL, gw->g1, gw->be1, a->g_h, s->r1, s->ln1_mean, s->ln1_rstd, w->g1, Nq, d,
                               a->ln_partials, par);
        g_r1 = a->g_r1;
    }
    SF(linear_backward)(a->g_ctx, 0, gw->w_out, gw->b_out, g_r1, s->ctx, w->w_out, Nq, d, d, par);
    real *g_ain = pre ? a->g_ain : g_x;
    if (s->pooled) {
        pooled_attention_backward(c, w, gw, s, a, g_ain, par);
    } else if (s->tabled) {
        SF(attention_backward_tabled)(a->dv_sum, a->ds_tab, a->g_ctx, s->p, a->u_qkv + 2 * d, 3 * d, x, B, T, d, H,
                                      a->attn_scratch, par);
    } else {
        SF(attention_backward)(a->g_q, a->g_kv, a->g_ctx, s->p, s->q, s->kv, B, T, Tq, d, H, a->attn_scratch, par);
    }
    if (x) { /* layer 0 on the distinct rows: g_x keeps only the residual path */
        distinct_inproj_backward(c, p, gw, s, a, x, par);
        if (Tq == T) return g_r1;
        memset(g_x, 0, (size_t)(N * d) * sizeof(real));
        scatter_add_last(g_x, g_r1, B, T, d);
        return g_x;
    }
    /* in_proj: weight rows [0,d) from the queries, [d,3d) from keys and values (back through RoPE) */
    rope_heads(c, p->rope, a->g_q, d, B, Tq, T, 1, par);
    if (!s->pooled) rope_heads(c, p->rope, a->g_kv, 2 * d, B, T, T, 1, par);
    if (!s->pooled)
        SF(linear_backward)(g_ain, 0, gw->w_in + d * d, gw->b_in + d, a->g_kv, s->a_in, w->w_in + d * d, N, d, 2 * d,
                            par);
    if (Tq == T) {
        SF(linear_backward)(g_ain, 1, gw->w_in, gw->b_in, a->g_q, s->aq, w->w_in, Nq, d, d, par);
    } else {
        SF(linear_backward)(a->g_aq, 0, gw->w_in, gw->b_in, a->g_q, s->aq, w->w_in, Nq, d, d, par);
        scatter_add_last(g_ain, a->g_aq, B, T, d);
    }
    if (pre)
        SF(layernorm_backward)(g_x, NULL, gw->g1, gw->be1, g_ain, s->x, s->ln1_mean, s->ln1_rstd, w->g1, N, d,
                               a->ln_partials, par);
    /* the residual path from xq */
    if (Tq == T) add_into(g_x, g_r1, N * d);
    else scatter_add_last(g_x, g_r1, B, T, d);
    return g_x;
}

void SF(stack_backward)(const sf_config *c, const params *p, params *g, const uint8_t *x, acts *a, sf_par *par) {
    const long B = a->B, T = a->T, d = c->d_model, L = c->n_layers;
    if (c->final_norm)
        SF(layernorm_backward)(a->g_cur, NULL, g->gf, g->bf, a->g_next, a->final_in, a->final_mean, a->final_rstd, p->gf,
                               a->Nf, d, a->ln_partials, par);
    real *g_out = a->g_cur, *g_in = a->g_next;
    const real *g_emb = g_out;
    for (long l = L - 1; l >= 0; l--) {
        g_emb = layer_backward(c, p, g, l, a, l == 0 && a->U ? x : NULL, g_out, g_in, par);
        real *t = g_out;
        g_out = g_in;
        g_in = t;
    }
    SF(embedding_backward_add)(g->tok, g->pos, g_emb, x, B, T, 2, d, concat_positions(c), par);
    add_distinct_rows_grad(g->tok, g->pos, a->u_gemb, a->U, T, d, concat_positions(c));
}

void SF(encoder_backward)(sf_model *m, const uint8_t *x, acts *a, sf_par *par) {
    const sf_config *c = &m->cfg;
    const long d = c->d_model;
    params p, g;
    SF(encoder_params)(m, (real *)m->params, &p);
    SF(encoder_params)(m, (real *)m->grads, &g);
    SF(readout_backward)(stack_output_grad(c, a), g.w_head, g.b_head, a->g_out, a->final_out, p.w_head, a->B, d);
    zero_embedding_grads(m, &g);
    SF(stack_backward)(c, &p, &g, x, a, par);
}
