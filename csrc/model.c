/* Model configuration, the parameter table (names, shapes, offsets) and buffer ownership. */
#include "engine.h"
#include "numeric/numeric.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* The per-layer tensor lists of engine.h as data. */
typedef struct {
    const char *suffix;
    sf_tensor_kind kind;
    sf_init_rule init;
} slot_info;
#define SF_SLOT_INFO(slot, field, suffix, rows, cols, kind, init) {suffix, kind, SF_INIT_##init},
static const slot_info encoder_slots[SF_ENC_SLOTS] = {SF_ENCODER_LAYER_TENSORS(SF_SLOT_INFO)};
static const slot_info decoder_slots[SF_DEC_SLOTS] = {SF_DECODER_LAYER_TENSORS(SF_SLOT_INFO)};
#undef SF_SLOT_INFO

sf_init_rule sf_slot_init(int decoder, int slot) { return (decoder ? decoder_slots : encoder_slots)[slot].init; }

int sf_slot_present(const sf_config *c, int decoder, int slot) {
    const sf_tensor_kind kind = (decoder ? decoder_slots : encoder_slots)[slot].kind;
    const int norm = kind == SF_KIND_NORM_WEIGHT || kind == SF_KIND_NORM_BIAS;
    return !(norm && c->norm == SF_NORM_NONE) && !(kind == SF_KIND_NORM_BIAS && c->norm_type == SF_NORM_RMS);
}

/* Present slots before `slot` (its index within a layer's tensors), or, with slot = the list's
 * length, the tensors per layer. */
static int slot_rank(const sf_config *c, int decoder, int slot) {
    int rank = 0;
    for (int s = 0; s < slot; s++) rank += sf_slot_present(c, decoder, s);
    return rank;
}

int sf_layer_slots(const sf_config *c) { return slot_rank(c, 0, SF_ENC_SLOTS); }

int sf_final_norm_tensors(const sf_config *c) { return c->norm_type == SF_NORM_RMS ? 1 : 2; }

int sf_embedding_tensors(const sf_config *c) {
    return c->positional == SF_POS_CONCAT || c->positional == SF_POS_ADD ? 2 : 1;
}

int sf_tensor_index(const sf_model *m, int layer, int slot) {
    return sf_embedding_tensors(&m->cfg) + layer * sf_layer_slots(&m->cfg) + slot_rank(&m->cfg, 0, slot);
}

static sf_status seq2seq_check(const sf_config *c) {
    if (c->n_decoder_layers < 1 || c->n_decoder_layers > SF_MAX_LAYERS)
        return sf_fail(SF_EINVAL, "n_decoder_layers must be in [1, %d], got %d", SF_MAX_LAYERS, c->n_decoder_layers);
    if (c->norm != SF_NORM_POST && c->norm != SF_NORM_PRE)
        return sf_fail(SF_EINVAL, "the seq2seq model's norm must be post or pre (nn.Transformer's norm_first)");
    if (!c->final_norm)
        return sf_fail(SF_EINVAL, "the seq2seq model always has nn.Transformer's final encoder and decoder "
                       "LayerNorms: set final_norm=1");
    return SF_OK;
}

sf_status sf_config_check(const sf_config *c) {
    if (c->kind != SF_MODEL_ENCODER && c->kind != SF_MODEL_SEQ2SEQ)
        return sf_fail(SF_EINVAL, "unknown model kind %d", c->kind);
    if (c->n_positions < 1) return sf_fail(SF_EINVAL, "n_positions must be >= 1, got %d", c->n_positions);
    if (c->n_positions > SF_MAX_POSITIONS)
        return sf_fail(SF_EINVAL, "n_positions must be <= %d, got %d", SF_MAX_POSITIONS, c->n_positions);
    if (c->d_model < 2 || c->d_model % 2)
        return sf_fail(SF_EINVAL, "d_model must be even and >= 2 (token and position halves), got %d", c->d_model);
    if (c->n_heads < 1) return sf_fail(SF_EINVAL, "n_heads must be >= 1, got %d", c->n_heads);
    if (c->d_model % c->n_heads)
        return sf_fail(SF_EINVAL, "d_model (%d) must be divisible by n_heads (%d)", c->d_model, c->n_heads);
    if (c->d_model > SF_MAX_D_MODEL)
        return sf_fail(SF_EINVAL, "d_model must be <= %d, got %d", SF_MAX_D_MODEL, c->d_model);
    if (c->n_layers < 1 || c->n_layers > SF_MAX_LAYERS)
        return sf_fail(SF_EINVAL, "n_layers must be in [1, %d], got %d", SF_MAX_LAYERS, c->n_layers);
    if (c->d_ff < 1 || c->d_ff > SF_MAX_D_FF) return sf_fail(SF_EINVAL, "d_ff must be in [1, 2^20], got %d", c->d_ff);
    if (c->norm < SF_NORM_POST || c->norm > SF_NORM_NONE) return sf_fail(SF_EINVAL, "norm must be post, pre or none");
    if (c->norm_type != SF_NORM_LAYER && c->norm_type != SF_NORM_RMS)
        return sf_fail(SF_EINVAL, "norm_type must be layer or rms");
    if (c->positional < SF_POS_CONCAT || c->positional > SF_POS_ROPE)
        return sf_fail(SF_EINVAL, "positional must be concat, add, sinusoidal, none or rope");
    if (c->positional == SF_POS_ROPE && (c->d_model / c->n_heads) % 2)
        return sf_fail(SF_EINVAL, "positional rope rotates pairs of each head's dimensions: d_model / n_heads "
                       "(%d) must be even", c->d_model / c->n_heads);
    if (c->positional == SF_POS_ROPE && !(c->rope_base > 0 && isfinite(c->rope_base)))
        return sf_fail(SF_EINVAL, "rope_base must be finite and > 0, got %g", c->rope_base);
    if (!(c->ln_eps >= 0) || !isfinite(c->ln_eps))
        return sf_fail(SF_EINVAL, "ln_eps must be finite and >= 0, got %g", c->ln_eps);
    if (c->activation < SF_ACT_RELU || c->activation > SF_ACT_GELU_TANH)
        return sf_fail(SF_EINVAL, "activation must be relu, gelu or gelu_tanh");
    if (c->dtype != SF_F32 && c->dtype != SF_F64) return sf_fail(SF_EINVAL, "dtype must be float32 or float64");
    if (c->kind == SF_MODEL_SEQ2SEQ) return seq2seq_check(c);
    if (c->n_decoder_layers != 0) return sf_fail(SF_EINVAL, "n_decoder_layers must be 0 for the encoder model");
    if (c->final_norm && c->norm != SF_NORM_PRE)
        return sf_fail(SF_EINVAL, "final_norm is only available with norm='pre'");
    return SF_OK;
}

static void add_tensor(sf_model *m, const char *name, int ndim, int64_t r, int64_t c,
                       sf_tensor_kind kind, int layer, int slot) {
    sf_tensor_info *t = &m->tensors[m->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->shape[0] = r;
    t->shape[1] = ndim == 2 ? c : 1;
    t->size = ndim == 2 ? r * c : r;
    t->offset = m->n_params;
    t->kind = kind;
    t->layer = layer;
    t->slot = slot;
    m->n_params += t->size;
}

/* Layers first_layer.. of one stack, named "<prefix>.<l>.<suffix>": the slots of its list the
 * configuration has (sf_slot_present). */
static void add_layers(sf_model *m, const char *prefix, int first_layer, int layers, int decoder) {
    const int64_t d = m->cfg.d_model, f = m->cfg.d_ff;
#define SF_SLOT_SHAPE(slot, field, suffix, rows, cols, kind, init) {rows, cols},
    const int64_t enc[SF_ENC_SLOTS][2] = {SF_ENCODER_LAYER_TENSORS(SF_SLOT_SHAPE)};
    const int64_t dec[SF_DEC_SLOTS][2] = {SF_DECODER_LAYER_TENSORS(SF_SLOT_SHAPE)};
#undef SF_SLOT_SHAPE
    for (int l = 0; l < layers; l++)
        for (int s = 0; s < (decoder ? SF_DEC_SLOTS : SF_ENC_SLOTS); s++) {
            if (!sf_slot_present(&m->cfg, decoder, s)) continue;
            const int64_t *shape = decoder ? dec[s] : enc[s];
            const slot_info *info = decoder ? &decoder_slots[s] : &encoder_slots[s];
            char name[96];
            snprintf(name, sizeof name, "%s.%d.%s", prefix, l, info->suffix);
            add_tensor(m, name, shape[1] ? 2 : 1, shape[0], shape[1], info->kind, first_layer + l, s);
        }
}

/* The token table (tokens rows: 2, or 3 with SOS) and the learned positional table (positions rows):
 * half width each when concatenated, full width when added; no positional tensor otherwise. */
static void add_embeddings(sf_model *m, int64_t tokens, int64_t positions) {
    const sf_config *c = &m->cfg;
    const int64_t width = c->positional == SF_POS_CONCAT ? c->d_model / 2 : c->d_model;
    add_tensor(m, "embedding.weight", 2, tokens, width, SF_KIND_TOKEN_EMBEDDING, -1, -1);
    if (sf_embedding_tensors(c) == 2)
        add_tensor(m, "positional_encoding.weight", 2, positions, width, SF_KIND_POSITIONAL, -1, -1);
}

/* The fixed table of positional sinusoidal (the original transformer's: pe[t, 2i] = sin(t w_i),
 * pe[t, 2i + 1] = cos(t w_i), w_i = 10000^(-2i/d)), in the model's dtype. */
static sf_status make_sinusoid(sf_model *m, int64_t positions) {
    const int64_t d = m->cfg.d_model;
    if (!(m->sinusoid = sf_alloc((size_t)(positions * d) * m->elem)))
        return sf_fail(SF_ENOMEM, "could not allocate the sinusoidal table");
    for (int64_t t = 0; t < positions; t++)
        for (int64_t j = 0; j < d; j++) {
            const double w = pow(10000.0, -(double)(j - j % 2) / (double)d), v = j % 2 ? cos(t * w) : sin(t * w);
            if (m->elem == 8) ((double *)m->sinusoid)[t * d + j] = v;
            else ((float *)m->sinusoid)[t * d + j] = (float)v;
        }
    return SF_OK;
}

/* positional rope: cos and sin of angle t / base^(2i / dh) for every position t and head pair i
 * (rotate-half convention: pair (i, i + dh/2)), computed once in double. */
static sf_status make_rope(sf_model *m, int64_t positions) {
    const int64_t half = m->cfg.d_model / m->cfg.n_heads / 2;
    if (!(m->rope = sf_alloc((size_t)(positions * half * 2) * sizeof(double))))
        return sf_fail(SF_ENOMEM, "could not allocate the rotary table");
    for (int64_t t = 0; t < positions; t++)
        for (int64_t i = 0; i < half; i++) {
            const double angle = (double)t * pow(m->cfg.rope_base, -(double)i / (double)half);
            m->rope[(t * half + i) * 2] = cos(angle);
            m->rope[(t * half + i) * 2 + 1] = sin(angle);
        }
    return SF_OK;
}

/* A stack's final norm "<prefix>.weight" (and ".bias" for a LayerNorm). */
static void add_final_norm(sf_model *m, const char *prefix) {
    char name[96];
    snprintf(name, sizeof name, "%s.weight", prefix);
    add_tensor(m, name, 1, m->cfg.d_model, 0, SF_KIND_NORM_WEIGHT, -1, -1);
    if (sf_final_norm_tensors(&m->cfg) < 2) return;
    snprintf(name, sizeof name, "%s.bias", prefix);
    add_tensor(m, name, 1, m->cfg.d_model, 0, SF_KIND_NORM_BIAS, -1, -1);
}

static void build_tensor_table(sf_model *m) {
    const sf_config *c = &m->cfg;
    const int64_t d = c->d_model;
    add_embeddings(m, 2, c->n_positions);
    add_layers(m, "encoders.layers", 0, c->n_layers, 0);
    if (c->final_norm) add_final_norm(m, "encoders.norm");
    add_tensor(m, "linear_head.weight", 2, 1, d, SF_KIND_WEIGHT, -1, -1);
    add_tensor(m, "linear_head.bias", 1, 1, 0, SF_KIND_BIAS, -1, -1);
}

/* TorchModelWithScratchpad's named_parameters(): embedding (3 tokens with SOS), positions
 * (n_positions + 1), nn.Transformer's encoder and decoder stacks with their final norms, head. */
static void build_seq2seq_table(sf_model *m) {
    const sf_config *c = &m->cfg;
    const int64_t d = c->d_model;
    add_embeddings(m, 3, (int64_t)c->n_positions + 1);
    add_layers(m, "model.encoder.layers", 0, c->n_layers, 0);
    add_final_norm(m, "model.encoder.norm");
    add_layers(m, "model.decoder.layers", c->n_layers, c->n_decoder_layers, 1);
    add_final_norm(m, "model.decoder.norm");
    add_tensor(m, "linear_head.weight", 2, 1, d, SF_KIND_WEIGHT, -1, -1);
    add_tensor(m, "linear_head.bias", 1, 1, 0, SF_KIND_BIAS, -1, -1);
}

sf_status sf_model_create(const sf_config *cfg, uint64_t seed, int identical_layers, sf_model **out) {
    *out = NULL;
    sf_status st = sf_config_check(cfg);
    if (st) return st;
    sf_model *m = calloc(1, sizeof *m);
    if (!m) return sf_fail(SF_ENOMEM, "out of memory creating the model");
    m->cfg = *cfg;
    m->elem = cfg->dtype == SF_F64 ? 8 : 4;
    int max_tensors = 2 + cfg->n_layers * SF_ENC_SLOTS + 4 + cfg->n_decoder_layers * SF_DEC_SLOTS + 2;
    m->tensors = calloc((size_t)max_tensors, sizeof *m->tensors);
    if (!m->tensors) {
        free(m);
        return sf_fail(SF_ENOMEM, "out of memory creating the model");
    }
    if (cfg->kind == SF_MODEL_SEQ2SEQ) build_seq2seq_table(m);
    else build_tensor_table(m);
    size_t bytes = (size_t)m->n_params * m->elem;
    st = sf_check_budget(2 * bytes, "the parameter and gradient buffers");
    if (st == SF_OK) {
        m->params = sf_alloc(bytes);
        m->grads = sf_alloc(bytes);
        if (!m->params || !m->grads) st = sf_fail(SF_ENOMEM, "could not allocate %.3g GB of parameters", 2 * bytes / 1e9);
    }
    const int64_t positions = (int64_t)cfg->n_positions + (cfg->kind == SF_MODEL_SEQ2SEQ);
    if (st == SF_OK && cfg->positional == SF_POS_SINUSOIDAL) st = make_sinusoid(m, positions);
    if (st == SF_OK && cfg->positional == SF_POS_ROPE) st = make_rope(m, positions);
    if (st == SF_OK) st = sf_model_reinit(m, seed, identical_layers);
    if (st) {
        sf_model_free(m);
        return st;
    }
    *out = m;
    return SF_OK;
}

void sf_model_free(sf_model *m) {
    if (!m) return;
    sf_free(m->params);
    sf_free(m->grads);
    sf_free(m->sinusoid);
    sf_free(m->rope);
    sf_free(m->work.base);
    free(m->tensors);
    free(m);
}

sf_status sf_model_reinit(sf_model *m, uint64_t seed, int identical_layers) {
    return sf_numeric_of(m->cfg.dtype)->model_init(m, seed, identical_layers);
}

const sf_config *sf_model_config(const sf_model *m) { return &m->cfg; }
int64_t sf_model_num_params(const sf_model *m) { return m->n_params; }
void *sf_model_params(sf_model *m) { return m->params; }
void *sf_model_grads(sf_model *m) { return m->grads; }
int sf_model_num_tensors(const sf_model *m) { return m->n_tensors; }
const sf_tensor_info *sf_model_tensor(const sf_model *m, int i) {
    return i >= 0 && i < m->n_tensors ? &m->tensors[i] : NULL;
}
int sf_model_last_threads(const sf_model *m) { return m->last_threads; }

size_t sf_model_workspace_bytes(const sf_model *m) { return m->work.bytes; }
