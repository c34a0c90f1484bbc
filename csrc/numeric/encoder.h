/* The encoder stack, shared by both model kinds: embedding halves, L encoder layers and an
 * optional final LayerNorm. The encoder model reads it out at the last position; the seq2seq
 * model's decoder attends to every position of it (its memory). Parameter and activation views,
 * the layout of its workspace, and its forward, backward and tangent passes (hvp.c). */
#ifndef SF_ENCODER_H
#define SF_ENCODER_H

#include "kernels.h"

#include <string.h>

#define SF_MAX_LAYERS_INLINE SF_MAX_LAYERS

typedef struct {
    real *w_in, *b_in, *w_out, *b_out, *w1, *b1, *w2, *b2, *g1, *be1, *g2, *be2;
} layer_params;

typedef struct {
    real *tok, *pos;      /* the token table and the learned positional table (NULL when not learned) */
    const real *fixed_pos; /* the fixed sinusoids (positional sinusoidal), else NULL */
    const double *rope;    /* positional rope: the (cos, sin) table (rope_rows), else NULL */
    layer_params *layer;
    layer_params layer_storage[SF_MAX_LAYERS_INLINE];
    real *gf, *bf;        /* the final LayerNorm (c->final_norm) */
    real *w_head, *b_head; /* the encoder model's readout (NULL in the seq2seq model's stack) */
} params;

/* Saved activations of one layer; N = B*T rows, Nq = B*Tq query rows. Buffers that a norm
 * variant does not need alias their neighbours (e.g. h == r1 without post-LN). */
typedef struct {
    long Tq;
    real *x;                    /* (N,d) layer input */
    real *a_in;                 /* (N,d) attention input: LN1(x) (pre) or x */
    real *ln1_mean, *ln1_rstd;  /* (N) pre, (Nq) post */
    real *xq, *aq;              /* (Nq,d) query rows of x and of a_in */
    real *q;                    /* (Nq,d) */
    real *kv;                   /* (N,2d) keys | values */
    real *p;                    /* (B,H,Tq,T) attention probabilities */
    real *ctx;                  /* (Nq,d) heads concatenated (not stored when folded) */
    real *r1;                   /* (Nq,d) xq + out_proj(ctx) */
    real *h;                    /* (Nq,d) LN1(r1) (post) or r1 */
    real *f_in;                 /* (Nq,d) FFN input: LN2(h) (pre) or h */
    real *ln2_mean, *ln2_rstd;  /* (Nq) */
    real *a1, *act;             /* (Nq,F) pre-activation and activation */
    real *r2;                   /* (Nq,d) h + FFN */
    real *out;                  /* (Nq,d) LN2(r2) (post) or r2 */
    int pooled;                 /* attended in the input space (no keys or values; see encoder.c) */
    int tabled;                 /* layer 0: scores from a->s_tab; kv holds the values only */
    int folded;                 /* tabled and forward only: r1's out-projection from a->u_vw */
} layer_acts;

typedef struct {
    long B, T;
    long Nf;           /* rows the last layer and the final LayerNorm compute: B (readout) or B*T */
    layer_acts *layer;
    layer_acts layer_storage[SF_MAX_LAYERS_INLINE];
    real *final_in, *final_mean, *final_rstd, *final_out; /* (Nf,d), (Nf), (Nf), (Nf,d): the stack's output */
    real *out;                                            /* (B) the encoder model's outputs */
    /* Layer 0's attention input is a function of (token, position) only: with U = 2T < N such
     * rows, its in-projection runs on the U distinct rows (row v*T + t: token v at position t)
     * and is gathered, and its backward aggregates the gradient per distinct row first. */
    long U;                          /* 2T, or 0 when B <= 2 (no saving) with narrow heads (with wide
                                      * ones, forward-only outputs must not depend on B: the fold) */
    real *u_emb, *u_ain, *u_mean, *u_rstd; /* (U,d), (U,d), (U), (U) */
    real *u_qkv, *u_grad;            /* (U,3d) projections and their gradient */
    real *u_gain, *u_gemb;           /* (U,d) gradients of u_ain and u_emb */
    double *u_sum;                   /* (U,3d) the gradient summed in double, in row order */
    /* forward_only (callers that run no backward) or loss_only (the loss and training, whose
     * backward follows the same path): the last layer attends without keys and values, with its
     * scores and pooling in the input space (pooled_attention_forward; with loss_only not on
     * layer 0's distinct rows), and layer 0 takes its scores from a table (attention_table.c).
     * pool_last (the HVP, whose tangents of the pooled form are tangent_pooled.c): only the last
     * layer pooled. Callers that need the keys (attention logits) set none. */
    int forward_only, loss_only, pool_last;
    real *s_tab, *ds_tab; /* (H,U,U) layer 0's score table and its gradient (wide heads, U > 0);
                           * ds_tab has room for the per-group sums (attention_table.c) */
    double *dv_sum;       /* (U,d) layer 0's value gradients per distinct row, with room for the groups */
    real *u_vw;           /* (H,U,d) forward only: layer 0's distinct value rows out-projected per head */
    real *pool_q, *pool_a;   /* (B,H,d) W_k^T q per head, and the probability-weighted inputs */
    real *g_pool_q, *g_pool_a; /* (B,H,d) their gradients */
    /* backward scratch */
    real *g_cur, *g_next, *g_r2, *g_h, *g_f, *g_r1, *g_ctx, *g_q, *g_kv, *g_ain, *g_aq, *g_out;
    real *attn_scratch, *wt;
    double *ln_partials; /* LayerNorm backward's parameter-gradient partial sums (N rows) */
} acts;

/* Views of the encoder model's parameters (or of anything in its layout: gradients, directions). */
void SF(encoder_params)(const sf_model *m, real *base, params *p);
/* Views of the stack's tensors, first in either model's table: tok, pos, the layers'
 * (sf_layer_slots each), the final LayerNorm's (c->final_norm); the head stays NULL. */
void SF(stack_params)(const sf_model *m, real *base, params *p);
/* Lay out (or, with base == NULL, only measure) a stack's workspace for (B, T) at base; returns
 * its bytes. every_position: the last layer and the final LayerNorm compute every position (the
 * seq2seq memory), else only the last one (the encoder model's readout, Tq = 1). The HVP lays
 * its tangents out with the same function, so every tangent sits where its primal would. */
size_t SF(encoder_layout)(const sf_config *c, long B, long T, int every_position, int nt, char *base, acts *a);
/* Size the encoder model's workspace for (B, T) with nt threads and point `a` into it. */
sf_status SF(encoder_reserve)(sf_model *m, long B, long T, int nt, acts *a);

/* The stack: embedding, layers and the final LayerNorm into a->final_out (Nf rows). */
void SF(stack_forward)(const sf_config *c, const params *p, const uint8_t *x, acts *a, sf_par *par);
/* Where the gradient w.r.t. a->final_out (Nf,d) goes before stack_backward. */
static inline real *stack_output_grad(const sf_config *c, const acts *a) { return c->final_norm ? a->g_next : a->g_cur; }
/* From that gradient and the forward's activations on the same x: the stack's parameter
 * gradients into g, the embedding tables' added (the seq2seq decoder's share may be there). */
void SF(stack_backward)(const sf_config *c, const params *p, params *g, const uint8_t *x, acts *a, sf_par *par);

/* The encoder model: the stack and its readout at the last position. */
void SF(encoder_forward)(sf_model *m, const uint8_t *x, acts *a, sf_par *par);
/* Needs a->g_out (B) = d(loss)/d(out) and the activations of the forward on the same x. */
void SF(encoder_backward)(sf_model *m, const uint8_t *x, acts *a, sf_par *par);

/* Layer 0 on the 2T distinct (token, position) rows (row u: token u / T at position u % T):
 * gather_distinct copies q (B*Tq,d; the last Tq positions) and kv (B*T,2d) of every row from the
 * distinct rows' u_qkv (U,3d); sum_by_distinct_row sums a->g_q and a->g_kv per distinct row into
 * a->u_grad (U,3d), in double and row order (s: layer 0's activations). */
void SF(gather_distinct)(real *q, real *kv, const real *u_qkv, const uint8_t *x, long B, long T, long Tq, long d);
void SF(sum_by_distinct_row)(acts *a, const layer_acts *s, const uint8_t *x, long d, sf_par *par);

/* The pooled last layer's tangents (tangent_pooled.c), for the HVP: forward, ts->p, ts->ctx and
 * t->pool_q, t->pool_a from the tangents of q and a_in; backward, from (a->g_ctx, t->g_ctx): the
 * attention inputs' gradient and its tangent (g_ain, tg_ain (N,d), overwritten), (a->g_q, t->g_q)
 * and hv's key and value rows of w_in and b_in. s, ts: the layer's activations and tangents. */
void SF(pooled_attention_tangent_forward)(const sf_config *c, const layer_params *w, const layer_params *v,
                                          const layer_acts *s, layer_acts *ts, const acts *a, acts *t, sf_par *par);
void SF(pooled_attention_tangent_backward)(const sf_config *c, const layer_params *w, const layer_params *v,
                                           layer_params *hv, const layer_acts *s, const layer_acts *ts, acts *a,
                                           acts *t, real *g_ain, real *tg_ain, sf_par *par);

/* The stack's tangents (hvp.c): t holds the tangents of a's activations for the direction v. */
void SF(stack_tangent_forward)(const sf_config *c, const params *p, const params *v, const uint8_t *x, acts *a,
                               acts *t, real *attn, sf_par *par);
/* From (gradient, tangent) w.r.t. final_out at stack_output_grad of a and of t: the blocks of H v
 * into hv (the embedding tables' added). */
void SF(stack_tangent_backward)(const sf_config *c, const params *p, const params *v, params *hv, const uint8_t *x,
                                acts *a, acts *t, real *attn, sf_par *par);

/* ---- small helpers shared by the encoder's drivers (forward/backward, HVP) ---------------- */

/* How a row embeds: concatenated halves, or full-width tables added (embed_row). */
static inline int concat_positions(const sf_config *c) { return c->positional == SF_POS_CONCAT; }

/* The positional table the forward adds or concatenates: learned, fixed, or none (NULL). */
static inline const real *position_table(const params *p) { return p->pos ? p->pos : p->fixed_pos; }

/* Rotate (inverse: back) the queries (ld d) or keys (ld 2d) of B sequences' rows that sit at
 * positions T - rows_per_seq .. T - 1 (rope: the model's table; NULL without RoPE: nothing). */
static inline void rope_heads(const sf_config *c, const double *rope, real *X, long ld, long B, long rows_per_seq,
                              long T, int inverse, sf_par *par) {
    if (rope)
        SF(rope_rows)(X, ld, B * rows_per_seq, rows_per_seq, T - rows_per_seq, c->d_model, c->n_heads, rope, inverse,
                      par);
}

/* Layer 0's 2T distinct rows (row u: token u / T at position u % T): their embeddings (U,d) from the
 * tables; their gradients (U,d) added to the tables' gradients; their queries and keys, columns
 * [0,2d) of rows 3d wide (q|k|v), turned by RoPE (inverse: back). */
static inline void embed_distinct_rows(real *u_emb, const real *tok, const real *pos, long U, long T, long d,
                                       int concat) {
    for (long u = 0; u < U; u++) embed_row(u_emb + u * d, tok, pos, u / T, u % T, d, concat);
}
static inline void add_distinct_rows_grad(real *dtok, real *dpos, const real *u_grad, long U, long T, long d,
                                          int concat) {
    for (long u = 0; u < U; u++) embed_row_backward_add(dtok, dpos, u_grad + u * d, u / T, u % T, d, concat);
}
static inline void rope_distinct_rows(const sf_config *c, const double *rope, real *u_qkv, long T, int inverse,
                                      sf_par *par) {
    rope_heads(c, rope, u_qkv, 3 * c->d_model, 2, T, T, inverse, par);
    rope_heads(c, rope, u_qkv + c->d_model, 3 * c->d_model, 2, T, T, inverse, par);
}

/* Zero the embedding tables' gradient views (their uses add into them). */
static inline void zero_embedding_grads(const sf_model *m, params *g) {
    memset(g->tok, 0, (size_t)m->tensors[0].size * sizeof(real));
    if (g->pos) memset(g->pos, 0, (size_t)m->tensors[1].size * sizeof(real));
}

/* A bump allocator over a workspace; with p == NULL it only measures. */
typedef struct {
    char *p;
    size_t used;
} bump;

static inline real *take(bump *b, long elements) {
    real *r = b->p ? (real *)(b->p + b->used) : NULL;
    b->used += ((size_t)elements * sizeof(real) + SF_ALIGN - 1) / SF_ALIGN * SF_ALIGN;
    return r;
}

/* A norm's saved means: none for RMSNorm, which does not centre (the norm kernels take a NULL mean
 * as RMSNorm; layers.c). */
static inline real *take_means(bump *b, const sf_config *c, long rows) {
    return c->norm_type == SF_NORM_RMS ? NULL : take(b, rows);
}

/* rows r.. of a per-row array that may be absent (NULL) */
static inline real *rows_from(real *p, long r) { return p ? p + r : NULL; }

/* dst (B,d) = rows b*T + T-1 of src (B,T,d) */
static inline void gather_last(real *dst, const real *src, long B, long T, long d) {
    for (long b = 0; b < B; b++) memcpy(dst + b * d, src + (b * T + T - 1) * d, (size_t)d * sizeof(real));
}

/* dst (B,T,d) rows b*T + T-1 += src (B,d) */
static inline void scatter_add_last(real *dst, const real *src, long B, long T, long d) {
    for (long b = 0; b < B; b++) {
        real *r = dst + (b * T + T - 1) * d;
        const real *s = src + b * d;
        for (long j = 0; j < d; j++) r[j] += s[j];
    }
}

static inline void add_into(real *dst, const real *src, long n) {
#pragma omp simd
    for (long i = 0; i < n; i++) dst[i] += src[i];
}

#endif
