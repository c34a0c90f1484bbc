/* Internal definitions shared by the engine's translation units (never by Python code). */
#ifndef SF_ENGINE_H
#define SF_ENGINE_H

#include "sf.h"

#include <stdarg.h>
#include <stdlib.h>

#define SF_ALIGN 64

/* Workspace: activations saved by the last forward, and backward scratch. */
typedef struct {
    void *base;
    size_t bytes;
} sf_workspace;

struct sf_model {
    sf_config cfg;
    int n_tensors;
    sf_tensor_info *tensors;
    int64_t n_params;
    size_t elem;              /* bytes per element: 4 or 8 */
    void *params;
    void *grads;
    sf_workspace work;
    int last_threads;
    void *sinusoid;           /* positional sinusoidal: the fixed (rows of pos, d) table, model dtype */
    double *rope;             /* positional rope: (cos, sin) per (position, head pair), double */
};

struct sf_optimizer {
    sf_model *model;
    sf_optim_config cfg;
    int64_t step;             /* number of updates taken (torch's state["step"]) */
    void *m, *v;              /* first and second moments (SGD: momentum buffer in m) */
    unsigned char *decay;     /* per-parameter-tensor weight decay flag */
    int has_momentum_buffer;  /* SGD: torch creates the buffer on the first step */
};

/* Errors: set the thread-local message and return the code. */
sf_status sf_fail(sf_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* SF_EINVAL unless every token is 0 or 1. */
sf_status sf_check_tokens(const uint8_t *x, int64_t n);

/* Aligned, zeroed allocation counted against the memory limit; free with sf_free. */
void *sf_alloc(size_t bytes);
void sf_free(void *p);
/* Fails with a message naming `what` when `bytes` would pass the memory limit. */
sf_status sf_check_budget(size_t bytes, const char *what);

/* Ensure the workspace holds at least `bytes`. */
sf_status sf_workspace_reserve(sf_workspace *w, size_t bytes);

/* The per-layer tensors, declared once, in PyTorch's named_parameters() order:
 * X(slot, view field, name suffix, rows, cols (0: a vector), kind, init rule). An encoder layer's
 * fields are layer_params' (encoder.h): both model kinds run their encoder layers through one stack.
 * The tensor tables (model.c), the parameter views (encoder.c, seq2seq.c) and the initialisation
 * (init.c) all follow from them; `d` and `f` (d_ff) are in scope where a list is expanded. The
 * init rules: XAVIER (xavier_uniform of the matrix), UNIFORM_D / UNIFORM_F (U(+-1/sqrt(d)),
 * U(+-1/sqrt(d_ff)): Linear's defaults), ZERO, ONE. The seq2seq model redraws every matrix inside
 * nn.Transformer with xavier_uniform (init.c). */
#define SF_ENCODER_LAYER_TENSORS(X)                                                                                   \
    X(W_IN, w_in, "self_attn.in_proj_weight", 3 * d, d, SF_KIND_WEIGHT, XAVIER)                                      \
    X(B_IN, b_in, "self_attn.in_proj_bias", 3 * d, 0, SF_KIND_BIAS, ZERO)                                            \
    X(W_OUT, w_out, "self_attn.out_proj.weight", d, d, SF_KIND_WEIGHT, UNIFORM_D)                                    \
    X(B_OUT, b_out, "self_attn.out_proj.bias", d, 0, SF_KIND_BIAS, ZERO)                                             \
    X(W1, w1, "linear1.weight", f, d, SF_KIND_WEIGHT, UNIFORM_D)                                                     \
    X(B1, b1, "linear1.bias", f, 0, SF_KIND_BIAS, UNIFORM_D)                                                         \
    X(W2, w2, "linear2.weight", d, f, SF_KIND_WEIGHT, UNIFORM_F)                                                     \
    X(B2, b2, "linear2.bias", d, 0, SF_KIND_BIAS, UNIFORM_F)                                                         \
    X(G1, g1, "norm1.weight", d, 0, SF_KIND_NORM_WEIGHT, ONE)                                                        \
    X(BE1, be1, "norm1.bias", d, 0, SF_KIND_NORM_BIAS, ZERO)                                                         \
    X(G2, g2, "norm2.weight", d, 0, SF_KIND_NORM_WEIGHT, ONE)                                                        \
    X(BE2, be2, "norm2.bias", d, 0, SF_KIND_NORM_BIAS, ZERO)
/* nn.TransformerDecoderLayer's (only the seq2seq model has them; fields of s2s_layer_w) */
#define SF_DECODER_LAYER_TENSORS(X)                                                                                   \
    X(D_W_IN, self.w_in, "self_attn.in_proj_weight", 3 * d, d, SF_KIND_WEIGHT, XAVIER)                               \
    X(D_B_IN, self.b_in, "self_attn.in_proj_bias", 3 * d, 0, SF_KIND_BIAS, ZERO)                                     \
    X(D_W_OUT, self.w_out, "self_attn.out_proj.weight", d, d, SF_KIND_WEIGHT, UNIFORM_D)                             \
    X(D_B_OUT, self.b_out, "self_attn.out_proj.bias", d, 0, SF_KIND_BIAS, ZERO)                                      \
    X(D_CW_IN, cross.w_in, "multihead_attn.in_proj_weight", 3 * d, d, SF_KIND_WEIGHT, XAVIER)                        \
    X(D_CB_IN, cross.b_in, "multihead_attn.in_proj_bias", 3 * d, 0, SF_KIND_BIAS, ZERO)                              \
    X(D_CW_OUT, cross.w_out, "multihead_attn.out_proj.weight", d, d, SF_KIND_WEIGHT, UNIFORM_D)                      \
    X(D_CB_OUT, cross.b_out, "multihead_attn.out_proj.bias", d, 0, SF_KIND_BIAS, ZERO)                               \
    X(D_W1, ffn.w1, "linear1.weight", f, d, SF_KIND_WEIGHT, UNIFORM_D)                                               \
    X(D_B1, ffn.b1, "linear1.bias", f, 0, SF_KIND_BIAS, UNIFORM_D)                                                   \
    X(D_W2, ffn.w2, "linear2.weight", d, f, SF_KIND_WEIGHT, UNIFORM_F)                                               \
    X(D_B2, ffn.b2, "linear2.bias", d, 0, SF_KIND_BIAS, UNIFORM_F)                                                   \
    X(D_G1, norm[0].g, "norm1.weight", d, 0, SF_KIND_NORM_WEIGHT, ONE)                                               \
    X(D_BE1, norm[0].b, "norm1.bias", d, 0, SF_KIND_NORM_BIAS, ZERO)                                                 \
    X(D_G2, norm[1].g, "norm2.weight", d, 0, SF_KIND_NORM_WEIGHT, ONE)                                               \
    X(D_BE2, norm[1].b, "norm2.bias", d, 0, SF_KIND_NORM_BIAS, ZERO)                                                 \
    X(D_G3, norm[2].g, "norm3.weight", d, 0, SF_KIND_NORM_WEIGHT, ONE)                                               \
    X(D_BE3, norm[2].b, "norm3.bias", d, 0, SF_KIND_NORM_BIAS, ZERO)

#define SF_SLOT_ENUM(slot, ...) SF_SLOT_##slot,
enum { SF_ENCODER_LAYER_TENSORS(SF_SLOT_ENUM) SF_ENC_SLOTS };
enum { SF_DECODER_LAYER_TENSORS(SF_SLOT_ENUM) SF_DEC_SLOTS };
#undef SF_SLOT_ENUM
typedef enum { SF_INIT_XAVIER, SF_INIT_UNIFORM_D, SF_INIT_UNIFORM_F, SF_INIT_ZERO, SF_INIT_ONE } sf_init_rule;

/* Whether a configuration has a slot of a layer list (decoder: the decoder list): no norm tensors
 * with norm none, no norm biases with RMSNorm. */
int sf_slot_present(const sf_config *c, int decoder, int slot);
/* Tensors per encoder layer (the slots present). */
int sf_layer_slots(const sf_config *c);
/* Tensors before the layers: the token embedding, and the positional table when it is learned. */
int sf_embedding_tensors(const sf_config *c);
/* Tensors of a stack's final norm: weight and bias (LayerNorm) or weight (RMSNorm). */
int sf_final_norm_tensors(const sf_config *c);
/* Index in the tensor table of slot `slot` of encoder layer `layer` (either model: the stack's
 * tensors come first after the embedding tables). */
int sf_tensor_index(const sf_model *m, int layer, int slot);
/* The init rule of a stack's slot (encoder layer, or seq2seq decoder layer). */
sf_init_rule sf_slot_init(int decoder, int slot);

/* Parallel-call bookkeeping: the requested team size, and the largest team actually used. */
typedef struct {
    int nt;
    int used;
} sf_par;

static inline void sf_par_note(sf_par *p, int team) {
    if (team > p->used) p->used = team;
}

#endif
