/* The seq2seq model (TorchModelWithScratchpad: nn.Transformer between a shared embedding and a
 * readout at every decoder position): parameter and activation views shared by its
 * forward/backward, decoding, initialisation, probes and the training loop of one precision. */
#ifndef SF_SEQ2SEQ_H
#define SF_SEQ2SEQ_H

#include "encoder.h" /* bump, take, add_into */

typedef struct {
    real *w_in, *b_in, *w_out, *b_out; /* packed in_proj (3d,d): rows [0,d) query, [d,3d) key|value */
} s2s_attn_w;

typedef struct {
    real *w1, *b1, *w2, *b2;
} s2s_ffn_w;

typedef struct {
    real *g, *b;
} s2s_norm_w;

/* An encoder layer uses self, ffn and norm[0..1]; a decoder layer also cross and norm[2]. */
typedef struct {
    s2s_attn_w self, cross;
    s2s_ffn_w ffn;
    s2s_norm_w norm[3];
} s2s_layer_w;

typedef struct {
    real *tok, *pos;          /* (3,d/2) with SF_SOS; (n_positions+1,d/2) */
    s2s_layer_w enc[SF_MAX_LAYERS], dec[SF_MAX_LAYERS];
    s2s_norm_w enc_norm, dec_norm;
    real *w_head, *b_head;
} s2s_params;

/* Saved activations of one residual sublayer over N = B*Tq rows: post-LN out = LN(x + f(x)),
 * pre-LN out = x + f(LN(x)). Buffers a variant does not need alias their neighbours. */
typedef struct {
    real *x;                 /* (N,d) input: the previous sublayer's output */
    real *n_in;              /* (N,d) branch input: LN(x) (pre) or x (post) */
    real *mean, *rstd;       /* (N) the sublayer's LayerNorm */
    real *q, *kv, *p, *ctx;  /* attention: (N,d), (B*Tk,2d), (B,H,Tq,Tk), (N,d) */
    real *a1, *act;          /* FFN: (N,F) pre-activation and activation */
    real *r;                 /* (N,d) x + f */
    real *out;               /* (N,d) LN(r) (post) or r (pre) */
} s2s_sub;

enum { S2S_SELF = 0, S2S_CROSS = 1, S2S_FFN_ENC = 1, S2S_FFN_DEC = 2 };

typedef struct {
    long B, T, S;                   /* encoder length, decoder positions */
    uint8_t *dec;                   /* (B,S) decoder tokens (the first S of the caller's) */
    s2s_sub enc[SF_MAX_LAYERS][2];  /* self-attention, FFN */
    s2s_sub dec_sub[SF_MAX_LAYERS][3]; /* causal self-attention, cross-attention, FFN */
    real *mem, *mem_mean, *mem_rstd;   /* (B*T,d) encoder output after the final encoder LN */
    real *z, *z_mean, *z_rstd;         /* (B*S,d) decoder output after the final decoder LN */
    real *out;                         /* (B*S) readout at every decoder position */
    /* backward scratch, shared by all sublayers */
    real *g_a, *g_b, *g_r, *g_nin, *g_ctx, *g_q, *g_kv, *g_f, *g_mem, *g_out;
    real *attn_scratch, *wt;
    double *ln_partials; /* LayerNorm backward's parameter-gradient partial sums (N rows) */
} s2s_acts;

void SF(s2s_params)(const sf_model *m, real *base, s2s_params *p);
/* Lay out (base == NULL: only measure) a workspace for (B, T, S) at base; returns its bytes. */
size_t SF(s2s_layout)(const sf_config *c, long B, long T, long S, int nt, char *base, s2s_acts *a);
/* Size the model's workspace for (B, T, S) and point `a` into it (checks the lengths). */
sf_status SF(s2s_reserve)(sf_model *m, long B, long T, long S, int nt, s2s_acts *a);
/* a->dec (B, a->S) = the first a->S columns of dec (B, S_given). */
void SF(s2s_set_decoder)(s2s_acts *a, const uint8_t *dec, long S_given);

/* Encoder stack and its final LN (a->mem); decoder stack, final LN and readout (a->out). */
void SF(s2s_encode)(const sf_model *m, const s2s_params *p, const uint8_t *x, s2s_acts *a, sf_par *par);
void SF(s2s_decode)(const sf_model *m, const s2s_params *p, s2s_acts *a, sf_par *par);
/* Needs a->g_out (B*S) and the activations of the forward; writes the gradient buffer. */
void SF(s2s_backward)(sf_model *m, const uint8_t *x, s2s_acts *a, sf_par *par);

/* Teacher-forced mean loss of rows [0, B) of d (batch `b` of B rows): runs the decoder on the
 * first d->L positions. grad: also g_out and the gradient buffer. */
double SF(s2s_batch_loss)(sf_model *m, const s2s_params *p, const sf_seq_data *d, int b, int B, sf_loss loss,
                          int grad, s2s_acts *a, sf_par *par);

sf_status SF(s2s_init)(sf_model *m, uint64_t seed, int identical_layers);

#endif
