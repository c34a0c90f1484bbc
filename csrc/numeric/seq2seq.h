/* The seq2seq model (TorchModelWithScratchpad: nn.Transformer between a shared embedding and a
 * readout at every decoder position): parameter and activation views shared by its
 * forward/backward, decoding, initialisation, probes and the training loop of one precision. */
#ifndef SF_SEQ2SEQ_H
#define SF_SEQ2SEQ_H

#include "encoder.h" /* the encoder stack; bump, take, add_into */

typedef struct {
    real *w_in, *b_in, *w_out, *b_out; /* packed in_proj (3d,d): rows [0,d) query, [d,3d) key|value */
} s2s_attn_w;

typedef struct {
    real *w1, *b1, *w2, *b2;
} s2s_ffn_w;

typedef struct {
    real *g, *b;
} s2s_norm_w;

/* A decoder layer: causal self-attention, cross-attention, FFN, and their LayerNorms. */
typedef struct {
    s2s_attn_w self, cross;
    s2s_ffn_w ffn;
    s2s_norm_w norm[3];
} s2s_layer_w;

typedef struct {
    params enc; /* the encoder stack: tok (3,d/2) with SF_SOS and pos (n_positions+1,d/2), shared with the
                 * decoder; the layers; the final encoder LayerNorm as gf, bf */
    s2s_layer_w dec[SF_MAX_LAYERS];
    s2s_norm_w dec_norm;
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

enum { S2S_SELF = 0, S2S_CROSS = 1, S2S_FFN = 2 };

typedef struct {
    long B, T, S;                   /* encoder length, decoder positions */
    uint8_t *dec;                   /* (B,S) decoder tokens (the first S of the caller's) */
    acts enc;                       /* the encoder stack over every position: enc.final_out (B*T,d) is the
                                     * memory, the gradient w.r.t. it goes to stack_output_grad */
    s2s_sub dec_sub[SF_MAX_LAYERS][3]; /* causal self-attention, cross-attention, FFN */
    real *z, *z_mean, *z_rstd;         /* (B*S,d) decoder output after the final decoder LN */
    real *out;                         /* (B*S) readout at every decoder position */
    /* the decoder's backward scratch, shared by its sublayers */
    real *g_a, *g_b, *g_r, *g_nin, *g_ctx, *g_q, *g_kv, *g_f, *g_out;
    real *attn_scratch, *wt;
    double *ln_partials; /* LayerNorm backward's parameter-gradient partial sums (N rows) */
} s2s_acts;

void SF(s2s_params)(const sf_model *m, real *base, s2s_params *p);
/* Lay out (base == NULL: only measure) a workspace for (B, T, S) at base; returns its bytes. The
 * encoder stack's may take layer 0's scores from a table (enc.loss_only: a forward, or one whose
 * backward follows the same path); callers that read its keys (the HVP, the logit probe) clear it. */
size_t SF(s2s_layout)(const sf_config *c, long B, long T, long S, int nt, char *base, s2s_acts *a);
/* Size the model's workspace for (B, T, S) and point `a` into it (checks the lengths). */
sf_status SF(s2s_reserve)(sf_model *m, long B, long T, long S, int nt, s2s_acts *a);
/* a->dec (B, a->S) = the first a->S columns of dec (B, S_given). */
void SF(s2s_set_decoder)(s2s_acts *a, const uint8_t *dec, long S_given);

/* The encoder stack and its final LN (the memory); the decoder stack, final LN and readout (a->out). */
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
