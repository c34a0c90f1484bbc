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

/* w by its init rule (engine.h's layer lists): xavier_uniform of the matrix's shape, Linear's default
 * U(+-1/sqrt(fan_in)) with fan_in d or d_ff, or a constant. */
static void init_by_rule(real *w, const sf_tensor_info *t, sf_init_rule rule, uint64_t key, const sf_config *c) {
    switch (rule) {
    case SF_INIT_XAVIER: fill_uniform(w, t->size, sqrt(6.0 / (double)(t->shape[0] + t->shape[1])), key); break;
    case SF_INIT_UNIFORM_D: fill_uniform(w, t->size, 1.0 / sqrt((double)c->d_model), key); break;
    case SF_INIT_UNIFORM_F: fill_uniform(w, t->size, 1.0 / sqrt((double)c->d_ff), key); break;
    case SF_INIT_ZERO: fill_const(w, t->size, 0); break;
    case SF_INIT_ONE: fill_const(w, t->size, 1); break;
    }
}

/* Outside the layers: final LayerNorms 1 and 0, the readout Linear's defaults. */
static sf_init_rule outer_rule(sf_tensor_kind kind) {
    return kind == SF_KIND_NORM_WEIGHT ? SF_INIT_ONE : kind == SF_KIND_NORM_BIAS ? SF_INIT_ZERO : SF_INIT_UNIFORM_D;
}

/* The index of tensor i's slot in the first layer of its stack (layers of a stack are alike). */
static int same_slot_in_layer_0(const sf_model *m, int i) {
    const int layer = m->tensors[i].layer, first = layer >= m->cfg.n_layers ? m->cfg.n_layers : 0;
    int j = i;
    while (m->tensors[j].layer != first || m->tensors[j].slot != m->tensors[i].slot) j--;
    return j;
}

/* nn.Transformer: its layers are built (and, within a stack, deep-copied) with the encoder's rules,
 * then _reset_parameters redraws every matrix inside it with xavier_uniform. So the matrices differ
 * between layers while linear1/linear2 biases stay copies within a stack (identical_layers) and the
 * attention biases stay 0. Embeddings N(0,1), readout Linear defaults, LayerNorms 1 and 0. */
sf_status SF(s2s_init)(sf_model *m, uint64_t seed, int identical_layers) {
    const sf_config *c = &m->cfg;
    real *base = (real *)m->params;
    for (int i = 0; i < m->n_tensors; i++) {
        const sf_tensor_info *t = &m->tensors[i];
        real *w = base + t->offset;
        const uint64_t own = sf_key(seed, SF_STREAM_INIT, (uint64_t)i);
        if (t->kind == SF_KIND_TOKEN_EMBEDDING || t->kind == SF_KIND_POSITIONAL) {
            fill_normal(w, t->size, own);
            continue;
        }
        if (t->layer < 0) {
            init_by_rule(w, t, outer_rule(t->kind), own, c);
            continue;
        }
        const int dec = t->layer >= c->n_layers;
        /* a layer > 0 bias copies layer 0 of its stack (its draws use layer 0's key) */
        const int key_index = identical_layers ? same_slot_in_layer_0(m, i) : i;
        const uint64_t key = t->kind == SF_KIND_BIAS ? sf_key(seed, SF_STREAM_INIT, (uint64_t)key_index) : own;
        init_by_rule(w, t, t->kind == SF_KIND_WEIGHT ? SF_INIT_XAVIER : sf_slot_init(dec, t->slot), key, c);
    }
    memset(m->grads, 0, (size_t)m->n_params * sizeof(real));
    return SF_OK;
}

sf_status SF(model_init)(sf_model *m, uint64_t seed, int identical_layers) {
    if (m->cfg.kind == SF_MODEL_SEQ2SEQ) return SF(s2s_init)(m, seed, identical_layers);
    const sf_config *c = &m->cfg;
    real *base = (real *)m->params;
    for (int i = 0; i < m->n_tensors; i++) {
        const sf_tensor_info *t = &m->tensors[i];
        real *w = base + t->offset;
        /* copies of layer 0 draw from layer 0's streams */
        const int key_index = identical_layers && t->layer > 0 ? same_slot_in_layer_0(m, i) : i;
        const uint64_t key = sf_key(seed, SF_STREAM_INIT, (uint64_t)key_index);
        if (t->kind == SF_KIND_TOKEN_EMBEDDING || t->kind == SF_KIND_POSITIONAL) fill_normal(w, t->size, key);
        else init_by_rule(w, t, t->slot >= 0 ? sf_slot_init(0, t->slot) : outer_rule(t->kind), key, c);
    }
    memset(m->grads, 0, (size_t)m->n_params * sizeof(real));
    return SF_OK;
}
