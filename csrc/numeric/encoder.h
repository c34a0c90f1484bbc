/* The encoder's parameter and activation views, shared by the forward/backward driver,
 * initialisation and the training loop of one precision. */
#ifndef SF_ENCODER_H
#define SF_ENCODER_H

#include "kernels.h"

#define SF_MAX_LAYERS_INLINE SF_MAX_LAYERS

typedef struct {
    real *w_in, *b_in, *w_out, *b_out, *w1, *b1, *w2, *b2, *g1, *be1, *g2, *be2;
} layer_params;

typedef struct {
    real *tok, *pos;
    layer_params *layer;
    layer_params layer_storage[SF_MAX_LAYERS_INLINE];
    real *gf, *bf, *w_head, *b_head;
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
    real *ctx;                  /* (Nq,d) heads concatenated */
    real *r1;                   /* (Nq,d) xq + out_proj(ctx) */
    real *h;                    /* (Nq,d) LN1(r1) (post) or r1 */
    real *f_in;                 /* (Nq,d) FFN input: LN2(h) (pre) or h */
    real *ln2_mean, *ln2_rstd;  /* (Nq) */
    real *a1, *act;             /* (Nq,F) pre-activation and activation */
    real *r2;                   /* (Nq,d) h + FFN */
    real *out;                  /* (Nq,d) LN2(r2) (post) or r2 */
} layer_acts;

typedef struct {
    long B, T;
    layer_acts *layer;
    layer_acts layer_storage[SF_MAX_LAYERS_INLINE];
    real *final_in, *final_mean, *final_rstd, *final_out; /* (B,d), (B), (B), (B,d) */
    real *out;                                            /* (B) model outputs */
    /* backward scratch */
    real *g_cur, *g_next, *g_r2, *g_h, *g_f, *g_r1, *g_ctx, *g_q, *g_kv, *g_ain, *g_aq, *g_out;
    real *attn_scratch, *wt;
} acts;

void SF(encoder_params)(const sf_model *m, real *base, params *p);
/* Size the model's workspace for (B, T) with nt threads and point `a` into it. */
sf_status SF(encoder_reserve)(sf_model *m, long B, long T, int nt, acts *a);
void SF(encoder_forward)(sf_model *m, const uint8_t *x, acts *a, sf_par *par);
/* Needs a->g_out (B) = d(loss)/d(out) and the activations of the forward on the same x. */
void SF(encoder_backward)(sf_model *m, const uint8_t *x, acts *a, sf_par *par);

#endif
