/* Initialisation with PyTorch's rules for the reference model (distributions, not bits):
 * embeddings N(0,1); in_proj xavier_uniform with zero bias; out_proj kaiming-uniform(a=sqrt 5)
 * weight with zero bias; linear1/linear2/readout Linear defaults U(+-1/sqrt(fan_in)) for weight
 * and bias; LayerNorm gain 1, bias 0. With identical_layers every layer is a copy of layer 0,
 * as nn.TransformerEncoder's deep copies are. Draws are counter-based per tensor. */
#include "seq2seq.h"
#include "../rng.h"

#include <string.h>

static void fill_uniform(real *w, long n, double bound, uint64_t key) {
    for (long i = 0; i < n; i++) w[i] = (real)((2.0 * sf_uniform(key, (uint64_t)i) - 1.0) * bound);
}

static void fill_normal(real *w, long n, uint64_t key) {
    for (long i = 0; i < n; i++) w[i] = (real)sf_normal(key, (uint64_t)i);
}

static void fill_const(real *w, long n, real v) {
    for (long i = 0; i < n; i++) w[i] = v;
}

static int ends_with(const char *s, const char *suffix) {
    const size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* nn.Transformer: its layers are built (and, within a stack, deep-copied) with the encoder's rules,
 * then _reset_parameters redraws every matrix inside it with xavier_uniform. So the matrices differ
 * between layers while linear1/linear2 biases stay copies within a stack (identical_layers) and the
 * attention biases stay 0. Embeddings N(0,1), readout Linear defaults, LayerNorms 1 and 0. */
sf_status SF(s2s_init)(sf_model *m, uint64_t seed, int identical_layers) {
    const sf_config *c = &m->cfg;
    real *base = (real *)m->params;
    const double d = c->d_model, F = c->d_ff;
    for (int i = 0; i < m->n_tensors; i++) {
        const sf_tensor_info *t = &m->tensors[i];
        real *w = base + t->offset;
        int key_index = i;
        if (identical_layers && t->layer >= 0) { /* a layer > 0 bias copies layer 0 of its stack */
            const int dec = t->layer >= c->n_layers, l = dec ? t->layer - c->n_layers : t->layer;
            key_index = i - sf_seq2seq_tensor_index(m, dec, l, 0) + sf_seq2seq_tensor_index(m, dec, 0, 0);
        }
        const uint64_t own = sf_key(seed, SF_STREAM_INIT, (uint64_t)i);
        switch (t->kind) {
        case SF_KIND_TOKEN_EMBEDDING:
        case SF_KIND_POSITIONAL: fill_normal(w, t->size, own); break;
        case SF_KIND_NORM_WEIGHT: fill_const(w, t->size, 1); break;
        case SF_KIND_NORM_BIAS: fill_const(w, t->size, 0); break;
        case SF_KIND_WEIGHT:
            if (t->layer < 0) fill_uniform(w, t->size, 1.0 / sqrt(d), own); /* readout */
            else fill_uniform(w, t->size, sqrt(6.0 / (double)(t->shape[0] + t->shape[1])), own);
            break;
        case SF_KIND_BIAS: {
            const uint64_t key = sf_key(seed, SF_STREAM_INIT, (uint64_t)key_index);
            if (t->layer < 0) fill_uniform(w, t->size, 1.0 / sqrt(d), own);
            else if (ends_with(t->name, "linear1.bias")) fill_uniform(w, t->size, 1.0 / sqrt(d), key);
            else if (ends_with(t->name, "linear2.bias")) fill_uniform(w, t->size, 1.0 / sqrt(F), key);
            else fill_const(w, t->size, 0); /* in_proj and out_proj biases */
            break;
        }
        }
    }
    memset(m->grads, 0, (size_t)m->n_params * sizeof(real));
    return SF_OK;
}

sf_status SF(model_init)(sf_model *m, uint64_t seed, int identical_layers) {
    if (m->cfg.kind == SF_MODEL_SEQ2SEQ) return SF(s2s_init)(m, seed, identical_layers);
    const sf_config *c = &m->cfg;
    real *base = (real *)m->params;
    const double d = c->d_model, F = c->d_ff;
    for (int i = 0; i < m->n_tensors; i++) {
        const sf_tensor_info *t = &m->tensors[i];
        real *w = base + t->offset;
        const int slot = t->layer >= 0 ? i - sf_tensor_index(m, t->layer, 0) : -1;
        /* copies of layer 0 draw from layer 0's streams */
        const int key_index = identical_layers && t->layer > 0 ? sf_tensor_index(m, 0, slot) : i;
        const uint64_t key = sf_key(seed, SF_STREAM_INIT, (uint64_t)key_index);
        switch (t->kind) {
        case SF_KIND_TOKEN_EMBEDDING:
        case SF_KIND_POSITIONAL: fill_normal(w, t->size, key); break;
        case SF_KIND_NORM_WEIGHT: fill_const(w, t->size, 1); break;
        case SF_KIND_NORM_BIAS: fill_const(w, t->size, 0); break;
        case SF_KIND_WEIGHT:
            if (slot == 0) fill_uniform(w, t->size, sqrt(6.0 / (d + 3 * d)), key);    /* in_proj */
            else if (slot == 6) fill_uniform(w, t->size, 1.0 / sqrt(F), key);         /* linear2 */
            else fill_uniform(w, t->size, 1.0 / sqrt(d), key);                        /* out_proj, linear1, head */
            break;
        case SF_KIND_BIAS:
            if (slot == 1 || slot == 3) fill_const(w, t->size, 0);                    /* in_proj, out_proj */
            else if (slot == 7) fill_uniform(w, t->size, 1.0 / sqrt(F), key);         /* linear2 */
            else fill_uniform(w, t->size, 1.0 / sqrt(d), key);                        /* linear1, head */
            break;
        }
    }
    memset(m->grads, 0, (size_t)m->n_params * sizeof(real));
    return SF_OK;
}
