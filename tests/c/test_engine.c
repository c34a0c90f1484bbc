/* Pure-C tests of the engine (no Python): every public entry point, for valgrind and
 * sanitizers. Built and run by .ci/memcheck.sh; prints "N passed, M failed". */
#include "sf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

#define CHECK(cond, ...)                                                                               \
    do {                                                                                               \
        if (cond) {                                                                                    \
            passed++;                                                                                  \
        } else {                                                                                       \
            failed++;                                                                                  \
            printf("FAILED %s:%d: ", __FILE__, __LINE__);                                              \
            printf(__VA_ARGS__);                                                                       \
            printf(" [%s]\n", sf_last_error());                                                        \
        }                                                                                              \
    } while (0)

static sf_config config(sf_norm norm, sf_dtype dtype) {
    sf_config c = {.n_positions = 7, .d_model = 8, .n_heads = 2, .n_layers = 2, .d_ff = 12, .norm = norm,
                   .final_norm = norm == SF_NORM_PRE, .ln_eps = 1e-5, .activation = SF_ACT_GELU, .dtype = dtype};
    return c;
}

static void fill_tokens(uint8_t *x, int n, unsigned seed) {
    for (int i = 0; i < n; i++) x[i] = (uint8_t)((seed = seed * 1103515245u + 12345u) >> 16 & 1);
}

/* Central differences of the float64 loss against the engine's gradient, on a few entries. */
static void test_gradient(sf_norm norm) {
    sf_config c = config(norm, SF_F64);
    sf_model *m = NULL;
    CHECK(sf_model_create(&c, 1, 0, &m) == SF_OK, "create");
    if (!m) return;
    enum { B = 3, T = 6 };
    uint8_t x[B * T];
    double y[B] = {0.3, -0.2, 1.0}, loss, lp, lm;
    fill_tokens(x, B * T, 7);
    CHECK(sf_loss_and_grad(m, x, y, B, T, SF_LOSS_MSE, 1, &loss, NULL, 1) == SF_OK, "loss_and_grad");
    double *p = sf_model_params(m), *g = sf_model_grads(m);
    const int64_t n = sf_model_num_params(m);
    double *grad = malloc((size_t)n * sizeof *grad);
    memcpy(grad, g, (size_t)n * sizeof *grad);
    double worst = 0;
    for (int64_t i = 0; i < n; i += 17) {
        const double keep = p[i], h = 1e-6;
        p[i] = keep + h;
        sf_loss_and_grad(m, x, y, B, T, SF_LOSS_MSE, 0, &lp, NULL, 1);
        p[i] = keep - h;
        sf_loss_and_grad(m, x, y, B, T, SF_LOSS_MSE, 0, &lm, NULL, 1);
        p[i] = keep;
        /* truncation ~h^2, rounding ~1e-16/h: allow 1e-6 relative plus 1e-8 absolute */
        const double fd = (lp - lm) / (2 * h), err = fabs(fd - grad[i]) / (1e-6 * fabs(grad[i]) + 1e-8);
        if (err > worst) worst = err;
    }
    CHECK(worst < 1, "finite differences (norm %d): worst relative error %g", norm, worst);
    free(grad);
    sf_model_free(m);
}

static void test_training(sf_dtype dtype, sf_optimizer_kind kind, sf_sampler_kind sampler) {
    sf_config c = config(SF_NORM_POST, dtype);
    c.n_positions = 6;
    sf_model *m = NULL;
    sf_optimizer *o = NULL;
    sf_optim_config oc = {.kind = kind, .lr = kind == SF_OPT_SGD ? 0.05 : 3e-3, .beta1 = 0.9, .beta2 = 0.999,
                          .eps = 1e-8, .weight_decay = 0.01, .momentum = 0.9, .decay_norm_bias_embedding = 1,
                          .schedule = SF_SCHED_WARMUP_COSINE, .warmup_steps = 5, .total_steps = 60, .clip_norm = 1.0};
    CHECK(sf_model_create(&c, 2, 1, &m) == SF_OK, "create");
    CHECK(m && sf_optimizer_create(m, &oc, &o) == SF_OK, "optimizer");
    if (!m || !o) return;
    int64_t subset[4] = {0, 5, 17, 63};
    uint8_t data_x[4 * 6];
    double data_y[4] = {0, 1, 1, 0};
    fill_tokens(data_x, 24, 3);
    sf_target t = {.kind = SF_TARGET_FIRST, .n = 6};
    sf_sampler s = {.kind = sampler, .subset = subset, .subset_size = 4, .data_x = data_x, .data_y = data_y,
                    .data_width = 6, .data_rows = 4};
    sf_train_config tc = {.loss = SF_LOSS_MSE, .batch_size = 32, .seq_len = 6, .seed = 9, .threshold = 0.5};
    double loss[60], acc[60], lr[60], gn[60];
    int64_t done = 0;
    CHECK(sf_train(m, o, &t, &s, &tc, 0, 60, loss, acc, lr, gn, &done, 2, NULL, NULL) == SF_OK, "train");
    CHECK(done == 60, "all steps done (%lld)", (long long)done);
    CHECK(loss[59] < loss[0], "loss decreases (%g -> %g, optimizer %d, sampler %d)", loss[0], loss[59], kind, sampler);
    CHECK(sf_optimizer_step_count(o) == 60, "step count");
    sf_optimizer_free(o);
    sf_model_free(m);
}

static void test_probes(sf_dtype dtype) {
    sf_config c = config(SF_NORM_PRE, dtype);
    sf_model *m = NULL;
    CHECK(sf_model_create(&c, 3, 1, &m) == SF_OK, "create");
    if (!m) return;
    enum { B = 4, T = 7, NB = 2, R = 3 };
    uint8_t x[NB * B * T];
    double yd[NB * B] = {0, 1, 0, 1, 1, 1, 0, 0};
    float yf[NB * B];
    for (int i = 0; i < NB * B; i++) yf[i] = (float)yd[i];
    fill_tokens(x, NB * B * T, 5);
    const int n_tensors = sf_model_num_tensors(m);
    unsigned char *mask = calloc((size_t)n_tensors, 1);
    for (int i = 0; i < n_tensors; i++) mask[i] = sf_model_tensor(m, i)->kind != SF_KIND_POSITIONAL;
    const size_t bytes = (size_t)sf_model_num_params(m) * (dtype == SF_F64 ? 8 : 4);
    void *before = malloc(bytes);
    memcpy(before, sf_model_params(m), bytes);
    double base[NB], pert[R * NB];
    CHECK(sf_sharpness(m, x, dtype == SF_F64 ? (void *)yd : (void *)yf, NB, B, T, SF_LOSS_MSE, 0.02, R, 11, mask, NULL,
                       0, base, pert, 2, NULL, NULL) == SF_OK, "sharpness");
    CHECK(memcmp(before, sf_model_params(m), bytes) == 0, "sharpness restores the parameters");
    const int n_ln = sf_ln_count(m);
    double *maxs = malloc(sizeof(double) * n_ln * B), *means = malloc(sizeof(double) * n_ln * B);
    CHECK(n_ln == 5, "norm1, norm2 per layer and the final norm (%d)", n_ln);
    CHECK(sf_ln_blowup(m, x, B, T, 0, maxs, means, 2) == SF_OK, "blowup");
    int ok = 1;
    for (int i = 0; i < n_ln * B; i++) ok &= maxs[i] >= means[i] && means[i] > 0 && isfinite(maxs[i]);
    CHECK(ok, "blowup max >= mean > 0");
    free(maxs);
    free(means);
    free(before);
    free(mask);
    sf_model_free(m);
}

static void test_errors(void) {
    sf_config c = config(SF_NORM_POST, SF_F32);
    sf_model *m = NULL;
    c.d_model = 7;
    CHECK(sf_model_create(&c, 0, 1, &m) == SF_EINVAL && !m, "odd d_model refused");
    c = config(SF_NORM_POST, SF_F32);
    c.n_heads = 3;
    CHECK(sf_model_create(&c, 0, 1, &m) == SF_EINVAL, "heads must divide d_model");
    c = config(SF_NORM_POST, SF_F32);
    c.ln_eps = NAN;
    CHECK(sf_model_create(&c, 0, 1, &m) == SF_EINVAL, "NaN eps refused");
    c = config(SF_NORM_POST, SF_F32);
    CHECK(sf_model_create(&c, 0, 1, &m) == SF_OK, "create");
    uint8_t x[64 * 7] = {0, 1, 2};
    float out[64];
    CHECK(sf_forward(m, x, 2, 7, out, 1) == SF_EINVAL, "token 2 refused");
    CHECK(sf_forward(m, x, 2, 8, out, 1) == SF_EINVAL, "length > n_positions refused");
    sf_set_memory_limit(100000);
    x[2] = 0;
    CHECK(sf_forward(m, x, 64, 7, out, 1) == SF_ENOMEM, "workspace over the memory limit refused");
    sf_set_memory_limit(0);
    CHECK(sf_forward(m, x, 64, 7, out, 1) == SF_OK, "forward after the limit is lifted");
    sf_model_free(m);
}

/* The seq2seq model: finite differences of the teacher-forced loss, decoding with and without the
 * cache, training on prefix parity, probes and its errors. */
static void test_seq2seq(sf_norm norm, sf_dtype dtype) {
    sf_config c = {.n_positions = 6, .d_model = 8, .n_heads = 2, .n_layers = 2, .d_ff = 12, .norm = norm,
                   .final_norm = 1, .ln_eps = 1e-5, .activation = SF_ACT_RELU, .dtype = dtype,
                   .kind = SF_MODEL_SEQ2SEQ, .n_decoder_layers = 1};
    sf_model *m = NULL;
    CHECK(sf_model_create(&c, 4, 1, &m) == SF_OK, "create seq2seq");
    if (!m) return;
    enum { B = 3, T = 6, S = T + 1, NB = 2 };
    uint8_t x[NB * B * T], dec[NB * B * S], tok_c[B * S], tok_f[B * S];
    double yd[NB * B * T];
    float yf[NB * B * T];
    fill_tokens(x, NB * B * T, 11);
    for (int b = 0; b < NB * B; b++) { /* teacher forcing on prefix parities */
        int odd = 0;
        dec[b * S] = SF_SOS;
        for (int t = 0; t < T; t++) {
            odd ^= x[b * T + t];
            yd[b * T + t] = odd, yf[b * T + t] = (float)odd;
            dec[b * S + t + 1] = (uint8_t)odd;
        }
    }
    void *y = dtype == SF_F64 ? (void *)yd : (void *)yf;
    sf_seq_data d = {x, dec, y, B, T, S, T};
    double loss, lp, lm, out[B * S];
    CHECK(sf_seq2seq_forward(m, &d, out, 2) == SF_OK, "seq2seq forward");
    CHECK(sf_seq2seq_loss_and_grad(m, &d, SF_LOSS_MSE, 1, &loss, NULL, 2) == SF_OK, "seq2seq loss_and_grad");
    if (dtype == SF_F64) {
        double *p = sf_model_params(m), *g = sf_model_grads(m), worst = 0;
        const int64_t n = sf_model_num_params(m);
        double *grad = malloc((size_t)n * sizeof *grad);
        memcpy(grad, g, (size_t)n * sizeof *grad);
        for (int64_t i = 0; i < n; i += 13) {
            const double keep = p[i], h = 1e-6;
            p[i] = keep + h;
            sf_seq2seq_loss_and_grad(m, &d, SF_LOSS_MSE, 0, &lp, NULL, 1);
            p[i] = keep - h;
            sf_seq2seq_loss_and_grad(m, &d, SF_LOSS_MSE, 0, &lm, NULL, 1);
            p[i] = keep;
            const double fd = (lp - lm) / (2 * h), err = fabs(fd - grad[i]) / (1e-6 * fabs(grad[i]) + 1e-8);
            if (err > worst) worst = err;
        }
        CHECK(worst < 1, "seq2seq finite differences (norm %d): worst relative error %g", norm, worst);
        /* H v against central differences of the gradient along v */
        double *v = malloc((size_t)n * sizeof *v), *hv = malloc((size_t)n * sizeof *hv);
        double *gp = malloc((size_t)n * sizeof *gp), hv_loss = 0, h = 1e-5, err = 0, scale = 0;
        for (int64_t i = 0; i < n; i++) v[i] = sin(0.37 * (double)i);
        CHECK(sf_seq2seq_hvp(m, &d, 1, SF_LOSS_MSE, v, 1, hv, &hv_loss, 2, NULL, NULL) == SF_OK, "seq2seq hvp");
        CHECK(memcmp(g, grad, (size_t)n * sizeof *g) == 0, "seq2seq hvp leaves the gradient buffer alone");
        for (int64_t i = 0; i < n; i++) p[i] += h * v[i];
        sf_seq2seq_loss_and_grad(m, &d, SF_LOSS_MSE, 1, &lp, NULL, 1);
        memcpy(gp, g, (size_t)n * sizeof *gp);
        for (int64_t i = 0; i < n; i++) p[i] -= 2 * h * v[i];
        sf_seq2seq_loss_and_grad(m, &d, SF_LOSS_MSE, 1, &lm, NULL, 1);
        for (int64_t i = 0; i < n; i++) {
            p[i] += h * v[i];
            const double fd = (gp[i] - g[i]) / (2 * h);
            err += (fd - hv[i]) * (fd - hv[i]), scale += hv[i] * hv[i];
        }
        CHECK(sqrt(err / scale) < 1e-6 && hv_loss == loss, "seq2seq hvp vs differences of gradients: %g",
              sqrt(err / scale));
        free(v);
        free(hv);
        free(gp);
        free(grad);
    }
    CHECK(sf_generate(m, x, B, T, S, 1, 0.5, tok_c, NULL, 2, NULL, NULL) == SF_OK, "generate with the cache");
    CHECK(sf_generate(m, x, B, T, S, 0, 0.5, tok_f, NULL, 1, NULL, NULL) == SF_OK, "generate by recomputation");
    CHECK(memcmp(tok_c, tok_f, sizeof tok_c) == 0, "the cache gives the recomputed tokens");
    /* probes */
    const int n_tensors = sf_model_num_tensors(m);
    unsigned char *mask = calloc((size_t)n_tensors, 1);
    for (int i = 0; i < n_tensors; i++) mask[i] = sf_model_tensor(m, i)->kind != SF_KIND_POSITIONAL;
    double base[NB], pert[2 * NB];
    sf_seq_data all = {x, dec, y, NB * B, T, S, T};
    CHECK(sf_seq2seq_sharpness(m, &all, NB, SF_LOSS_MSE, 0.02, 2, 3, mask, NULL, 0, base, pert, 2, NULL, NULL) ==
              SF_OK, "seq2seq sharpness");
    int counts[4];
    const int n_ln = sf_seq2seq_ln_counts(m, counts);
    CHECK(n_ln == 5 + 4 + 4 + 2 && sf_ln_count(m) == n_ln, "seq2seq LayerNorm rows (%d)", n_ln);
    double *maxs = malloc(sizeof(double) * n_ln * B), *means = malloc(sizeof(double) * n_ln * B);
    CHECK(sf_seq2seq_ln_blowup(m, &d, 0, maxs, means, 2) == SF_OK, "seq2seq blowup");
    int ok = 1;
    for (int i = 0; i < n_ln * B; i++) ok &= maxs[i] >= means[i] && means[i] > 0 && isfinite(maxs[i]);
    CHECK(ok, "seq2seq blowup max >= mean > 0");
    free(maxs);
    free(means);
    const int n_mod = c.n_layers + 2 * c.n_decoder_layers;
    double lmax[n_mod * c.n_heads], lmean[n_mod * c.n_heads]; /* (modules, heads) */
    CHECK(sf_seq2seq_attention_logits(m, &d, lmax, lmean, 2) == SF_OK, "seq2seq attention logits");
    ok = 1;
    for (int i = 0; i < n_mod * c.n_heads; i++) ok &= lmax[i] >= lmean[i] && lmean[i] > 0 && isfinite(lmax[i]);
    CHECK(ok, "seq2seq logit max >= mean > 0");
    free(mask);
    /* training on prefix parity */
    sf_optimizer *o = NULL;
    sf_optim_config oc = {.kind = SF_OPT_ADAMW, .lr = 3e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                          .weight_decay = 0.1, .decay_norm_bias_embedding = 1};
    CHECK(sf_optimizer_create(m, &oc, &o) == SF_OK, "seq2seq optimizer");
    sf_target t = {.kind = SF_TARGET_PARITY, .n = T, .prefix = 1};
    sf_sampler s = {.kind = SF_SAMPLE_UNIFORM};
    sf_train_config tc = {.loss = SF_LOSS_MSE, .batch_size = 16, .seq_len = T, .seed = 2, .threshold = 0.5};
    double tl[40], ta[40];
    int64_t done = 0;
    CHECK(sf_train(m, o, &t, &s, &tc, 0, 40, tl, ta, NULL, NULL, &done, 2, NULL, NULL) == SF_OK && done == 40,
          "seq2seq train");
    CHECK(tl[39] < tl[0], "seq2seq loss decreases (%g -> %g)", tl[0], tl[39]);
    t.prefix = 0;
    CHECK(sf_train(m, o, &t, &s, &tc, 40, 1, tl, ta, NULL, NULL, &done, 1, NULL, NULL) == SF_EINVAL,
          "a seq2seq model refuses a target without per-position labels");
    sf_optimizer_free(o);
    /* errors */
    dec[1] = 3;
    CHECK(sf_seq2seq_forward(m, &d, out, 1) == SF_EINVAL, "decoder token 3 refused");
    dec[1] = 0;
    d.S = T + 2;
    CHECK(sf_seq2seq_forward(m, &d, out, 1) == SF_EINVAL, "decoder longer than n_positions + 1 refused");
    d.S = S, d.L = S + 1;
    CHECK(sf_seq2seq_loss_and_grad(m, &d, SF_LOSS_MSE, 0, &loss, NULL, 1) == SF_EINVAL, "more labels than S refused");
    CHECK(sf_forward(m, x, B, T, out, 1) == SF_EINVAL, "the encoder forward refuses a seq2seq model");
    CHECK(sf_generate(m, x, B, T, T + 2, 1, 0.5, tok_c, NULL, 1, NULL, NULL) == SF_EINVAL, "too many steps refused");
    sf_model_free(m);
    sf_config e = config(SF_NORM_POST, dtype);
    CHECK(sf_model_create(&e, 0, 1, &m) == SF_OK, "create encoder");
    CHECK(m && sf_generate(m, x, B, T, 2, 1, 0.5, tok_c, NULL, 1, NULL, NULL) == SF_EINVAL, "an encoder cannot generate");
    sf_model_free(m);
    c.norm = SF_NORM_NONE;
    CHECK(sf_model_create(&c, 0, 1, &m) == SF_EINVAL, "seq2seq without LayerNorm refused");
}

int main(void) {
    for (int norm = SF_NORM_POST; norm <= SF_NORM_NONE; norm++) test_gradient(norm);
    for (int dtype = SF_F32; dtype <= SF_F64; dtype++) {
        for (int kind = SF_OPT_ADAMW; kind <= SF_OPT_SGD; kind++) test_training(dtype, kind, SF_SAMPLE_UNIFORM);
        test_training(dtype, SF_OPT_ADAMW, SF_SAMPLE_SUBSET);
        test_training(dtype, SF_OPT_ADAMW, SF_SAMPLE_DATASET);
        test_probes(dtype);
        test_seq2seq(SF_NORM_POST, dtype);
        test_seq2seq(SF_NORM_PRE, dtype);
    }
    test_errors();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
