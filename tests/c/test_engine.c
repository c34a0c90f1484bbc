/* Pure-C tests of the engine (no Python): every public entry point, for valgrind and
 * sanitizers. Built and run by .ci/memcheck.sh; prints "N passed, M failed". */
#include "boolean.h"
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

/* The encoder model's data for one call: B sequences of T tokens, labels y (or NULL). */
#define ENC(x, y, B, T) (&(sf_seq_data){(x), NULL, (y), (B), (T), 0, 1})

static sf_config config(sf_norm norm, sf_dtype dtype) {
    sf_config c = {.n_positions = 7, .d_model = 8, .n_heads = 2, .n_layers = 2, .d_ff = 12, .norm = norm,
                   .final_norm = norm == SF_NORM_PRE, .ln_eps = 1e-5, .activation = SF_ACT_GELU, .dtype = dtype};
    return c;
}

static void fill_tokens(uint8_t *x, int n, unsigned seed) {
    for (int i = 0; i < n; i++) x[i] = (uint8_t)((seed = seed * 1103515245u + 12345u) >> 16 & 1);
}

/* Worst over every stride-th parameter of the float64 loss's central difference (h = 1e-6) against
 * grad, the engine's gradient, relative to 1e-6 |grad| + 1e-8 (truncation ~h^2, rounding ~1e-16/h):
 * below 1 passes. The parameters are left as they were. */
static double gradient_fd_error(sf_model *m, const sf_seq_data *d, const double *grad, int64_t stride) {
    double *p = sf_model_params(m), worst = 0, lp, lm;
    const double h = 1e-6;
    for (int64_t i = 0; i < sf_model_num_params(m); i += stride) {
        const double keep = p[i];
        p[i] = keep + h;
        sf_loss_and_grad(m, d, SF_LOSS_MSE, 0, &lp, NULL, 1);
        p[i] = keep - h;
        sf_loss_and_grad(m, d, SF_LOSS_MSE, 0, &lm, NULL, 1);
        p[i] = keep;
        const double fd = (lp - lm) / (2 * h), err = fabs(fd - grad[i]) / (1e-6 * fabs(grad[i]) + 1e-8);
        if (err > worst) worst = err;
    }
    return worst;
}

/* Worst over the parameters of the gradient's central difference along v (h = 1e-5) against hv,
 * relative to 1e-5 |hv| + 1e-7: below 1 passes. The parameters are left as they were; the gradient
 * buffer holds the gradient at theta - h v. */
static double hvp_fd_error(sf_model *m, const sf_seq_data *d, const double *v, const double *hv) {
    const int64_t n = sf_model_num_params(m);
    double *p = sf_model_params(m), *g = sf_model_grads(m), *gp = malloc(n * sizeof *gp), loss, worst = 0;
    const double h = 1e-5;
    for (int64_t i = 0; i < n; i++) p[i] += h * v[i];
    sf_loss_and_grad(m, d, SF_LOSS_MSE, 1, &loss, NULL, 1);
    memcpy(gp, g, n * sizeof *g);
    for (int64_t i = 0; i < n; i++) p[i] -= 2 * h * v[i];
    sf_loss_and_grad(m, d, SF_LOSS_MSE, 1, &loss, NULL, 1);
    for (int64_t i = 0; i < n; i++) {
        p[i] += h * v[i];
        const double fd = (gp[i] - g[i]) / (2 * h), err = fabs(fd - hv[i]) / (1e-5 * fabs(hv[i]) + 1e-7);
        if (err > worst) worst = err;
    }
    free(gp);
    return worst;
}

/* Central differences of the float64 loss against the engine's gradient, on a few entries. With
 * d_model = 32 the heads are 16 wide: layer 0 takes its scores from the (token, position) table. */
static void test_gradient(sf_norm norm, int d_model) {
    sf_config c = config(norm, SF_F64);
    c.d_model = d_model;
    sf_model *m = NULL;
    CHECK(sf_model_create(&c, 1, 0, &m) == SF_OK, "create");
    if (!m) return;
    enum { B = 3, T = 6 };
    uint8_t x[B * T];
    double y[B] = {0.3, -0.2, 1.0}, loss;
    fill_tokens(x, B * T, 7);
    CHECK(sf_loss_and_grad(m, ENC(x, y, B, T), SF_LOSS_MSE, 1, &loss, NULL, 1) == SF_OK, "loss_and_grad");
    const int64_t n = sf_model_num_params(m);
    double *grad = malloc((size_t)n * sizeof *grad);
    memcpy(grad, sf_model_grads(m), (size_t)n * sizeof *grad);
    const double worst = gradient_fd_error(m, ENC(x, y, B, T), grad, 17);
    CHECK(worst < 1, "finite differences (norm %d, d_model %d): worst relative error %g", norm, d_model, worst);
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
    CHECK(sf_sharpness(m, ENC(x, dtype == SF_F64 ? (void *)yd : (void *)yf, NB * B, T), NB, SF_LOSS_MSE, 0.02, R, 11, mask, NULL, 0, base, pert, 2, NULL, NULL) == SF_OK, "sharpness");
    CHECK(memcmp(before, sf_model_params(m), bytes) == 0, "sharpness restores the parameters");
    const int n_ln = sf_ln_count(m);
    double *maxs = malloc(sizeof(double) * n_ln * B), *means = malloc(sizeof(double) * n_ln * B);
    CHECK(n_ln == 5, "norm1, norm2 per layer and the final norm (%d)", n_ln);
    CHECK(sf_ln_blowup(m, ENC(x, NULL, B, T), 0, maxs, means, 2) == SF_OK, "blowup");
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
    CHECK(sf_forward(m, ENC(x, NULL, 2, 7), out, 1) == SF_EINVAL, "token 2 refused");
    CHECK(sf_forward(m, ENC(x, NULL, 2, 8), out, 1) == SF_EINVAL, "length > n_positions refused");
    sf_set_memory_limit(100000);
    x[2] = 0;
    CHECK(sf_forward(m, ENC(x, NULL, 64, 7), out, 1) == SF_ENOMEM, "workspace over the memory limit refused");
    sf_set_memory_limit(0);
    CHECK(sf_forward(m, ENC(x, NULL, 64, 7), out, 1) == SF_OK, "forward after the limit is lifted");
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
    CHECK(sf_forward(m, &d, out, 2) == SF_OK, "seq2seq forward");
    CHECK(sf_loss_and_grad(m, &d, SF_LOSS_MSE, 1, &loss, NULL, 2) == SF_OK, "seq2seq loss_and_grad");
    if (dtype == SF_F64) {
        double *p = sf_model_params(m), *g = sf_model_grads(m);
        const int64_t n = sf_model_num_params(m);
        double *grad = malloc((size_t)n * sizeof *grad);
        memcpy(grad, g, (size_t)n * sizeof *grad);
        const double worst = gradient_fd_error(m, &d, grad, 13);
        CHECK(worst < 1, "seq2seq finite differences (norm %d): worst relative error %g", norm, worst);
        /* H v against central differences of the gradient along v */
        double *v = malloc((size_t)n * sizeof *v), *hv = malloc((size_t)n * sizeof *hv);
        double *gp = malloc((size_t)n * sizeof *gp), hv_loss = 0, h = 1e-5, err = 0, scale = 0;
        for (int64_t i = 0; i < n; i++) v[i] = sin(0.37 * (double)i);
        CHECK(sf_hvp(m, &d, 1, SF_LOSS_MSE, v, 1, hv, &hv_loss, 2, NULL, NULL) == SF_OK, "seq2seq hvp");
        CHECK(memcmp(g, grad, (size_t)n * sizeof *g) == 0, "seq2seq hvp leaves the gradient buffer alone");
        for (int64_t i = 0; i < n; i++) p[i] += h * v[i];
        sf_loss_and_grad(m, &d, SF_LOSS_MSE, 1, &lp, NULL, 1);
        memcpy(gp, g, (size_t)n * sizeof *gp);
        for (int64_t i = 0; i < n; i++) p[i] -= 2 * h * v[i];
        sf_loss_and_grad(m, &d, SF_LOSS_MSE, 1, &lm, NULL, 1);
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
    CHECK(sf_sharpness(m, &all, NB, SF_LOSS_MSE, 0.02, 2, 3, mask, NULL, 0, base, pert, 2, NULL, NULL) ==
              SF_OK, "seq2seq sharpness");
    int counts[4];
    const int n_ln = sf_seq2seq_ln_counts(m, counts);
    CHECK(n_ln == 5 + 4 + 4 + 2 && sf_ln_count(m) == n_ln, "seq2seq LayerNorm rows (%d)", n_ln);
    double *maxs = malloc(sizeof(double) * n_ln * B), *means = malloc(sizeof(double) * n_ln * B);
    CHECK(sf_ln_blowup(m, &d, 0, maxs, means, 2) == SF_OK, "seq2seq blowup");
    int ok = 1;
    for (int i = 0; i < n_ln * B; i++) ok &= maxs[i] >= means[i] && means[i] > 0 && isfinite(maxs[i]);
    CHECK(ok, "seq2seq blowup max >= mean > 0");
    free(maxs);
    free(means);
    const int n_mod = c.n_layers + 2 * c.n_decoder_layers;
    double lmax[n_mod * c.n_heads], lmean[n_mod * c.n_heads]; /* (modules, heads) */
    CHECK(sf_attention_logits(m, &d, lmax, lmean, 2) == SF_OK, "seq2seq attention logits");
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
    CHECK(sf_forward(m, &d, out, 1) == SF_EINVAL, "decoder token 3 refused");
    dec[1] = 0;
    d.S = T + 2;
    CHECK(sf_forward(m, &d, out, 1) == SF_EINVAL, "decoder longer than n_positions + 1 refused");
    d.S = S, d.L = S + 1;
    CHECK(sf_loss_and_grad(m, &d, SF_LOSS_MSE, 0, &loss, NULL, 1) == SF_EINVAL, "more labels than S refused");
    CHECK(sf_forward(m, ENC(x, NULL, B, T), out, 1) == SF_EINVAL, "the encoder forward refuses a seq2seq model");
    CHECK(sf_generate(m, x, B, T, T + 2, 1, 0.5, tok_c, NULL, 1, NULL, NULL) == SF_EINVAL, "too many steps refused");
    sf_model_free(m);
    sf_config e = config(SF_NORM_POST, dtype);
    CHECK(sf_model_create(&e, 0, 1, &m) == SF_OK, "create encoder");
    CHECK(m && sf_generate(m, x, B, T, 2, 1, 0.5, tok_c, NULL, 1, NULL, NULL) == SF_EINVAL, "an encoder cannot generate");
    sf_model_free(m);
    c.norm = SF_NORM_NONE;
    CHECK(sf_model_create(&c, 0, 1, &m) == SF_EINVAL, "seq2seq without LayerNorm refused");
}

/* ---- reliability: the entry points the tests above do not reach, and their error paths -------- */

static int always_stop(void *ctx) {
    (*(int *)ctx)++;
    return 1;
}

/* Exact analysis of the parity table: every quantity is known in closed form; 1 and 2 threads agree
 * bit for bit; bad tables and the memory limit are refused. */
static void test_boolean_kernels(void) {
    enum { N = 10, S = 1 << N };
    double *v = malloc(S * sizeof *v), *a = malloc(S * sizeof *a), *coef = malloc(S * sizeof *coef);
    double *coef2 = malloc(S * sizeof *coef2), *sens = malloc(S * sizeof *sens);
    double w[N + 1], mx[N + 1], w2[N + 1], mx2[N + 1], inf[N], inf2[N];
    int64_t prof[N + 1];
    for (int i = 0; i < S; i++) v[i] = __builtin_popcount(i) & 1, a[i] = v[i];
    CHECK(sf_fwht(a, N, 2) == SF_OK && sf_fwht(a, N, 1) == SF_OK, "fwht");
    int ok = 1;
    for (int i = 0; i < S; i++) ok &= a[i] == S * v[i];
    CHECK(ok, "fwht twice multiplies by 2^n");
    CHECK(sf_fourier(coef, v, N, 1, 1) == SF_OK && sf_fourier(coef2, v, N, 1, 2) == SF_OK, "fourier");
    CHECK(memcmp(coef, coef2, S * sizeof *coef) == 0, "fourier: 1 and 2 threads agree");
    ok = coef[S - 1] == 1;
    for (int i = 0; i < S - 1; i++) ok &= coef[i] == 0;
    CHECK(ok, "parity has the single coefficient 1 on the full set");
    CHECK(sf_degree_stats(w, mx, coef, N, 2) == SF_OK && w[N] == 1 && mx[N] == 1 && w[0] == 0, "degree stats");
    CHECK(sf_spectrum(w2, mx2, v, N, 1, 1) == SF_OK && memcmp(w, w2, sizeof w) == 0 && memcmp(mx, mx2, sizeof mx) == 0,
          "spectrum equals fourier + degree stats");
    CHECK(sf_influences(inf, v, N, 1) == SF_OK && sf_influences(inf2, v, N, 2) == SF_OK, "influences");
    ok = memcmp(inf, inf2, sizeof inf) == 0;
    for (int j = 0; j < N; j++) ok &= inf[j] == 1;
    CHECK(ok, "every bit of parity has influence 1");
    CHECK(sf_point_sensitivity(sens, v, N, 2) == SF_OK, "point sensitivity");
    ok = 1;
    for (int i = 0; i < S; i++) ok &= sens[i] == N;
    CHECK(ok, "parity is fully sensitive everywhere");
    CHECK(sf_sensitivity_profile(prof, v, N, 2) == SF_OK && prof[N] == S && prof[0] == 0, "sensitivity profile");
    v[5] = 0.5;
    CHECK(sf_sensitivity_profile(prof, v, N, 1) == SF_EINVAL, "a non-Boolean table is refused by the profile");
    CHECK(sf_influences(inf, v, N, 1) == SF_OK && inf[0] > 0, "real tables take the general path");
    CHECK(sf_fwht(a, SF_BOOLEAN_MAX_N + 1, 1) == SF_EINVAL, "n beyond the exact limit is refused");
    sf_set_memory_limit(1000);
    CHECK(sf_spectrum(w, mx, v, N, 1, 1) == SF_ENOMEM, "the spectrum's scratch table respects the memory limit");
    sf_set_memory_limit(0);
    free(v), free(a), free(coef), free(coef2), free(sens);
}

/* Every target kind against a direct evaluation, the three samplers, label noise and the checks. */
static void test_targets_and_sampling(void) {
    enum { B = 64, T = 6 };
    uint8_t x[B * T], x2[B * T], flips[B];
    double y[B], y2[B], table[1 << T], junta_table[4] = {0, 1, 1, 0}, coefficients[2] = {0.5, -0.75};
    int32_t sparse_bits[2] = {0, 3}, junta_bits[2] = {1, 5}, fourier_bits[3] = {0, 2, 4};
    int64_t offsets[3] = {0, 1, 3}, subset[3] = {0, 7, 63};
    for (int i = 0; i < (1 << T); i++) table[i] = (i * 37 % 11) / 10.0;
    fill_tokens(x, B * T, 11);
    sf_target kinds[8] = {
        {.kind = SF_TARGET_PARITY, .n = T}, {.kind = SF_TARGET_MAJORITY, .n = T}, {.kind = SF_TARGET_FIRST, .n = T},
        {.kind = SF_TARGET_MEAN, .n = T}, {.kind = SF_TARGET_TABLE, .n = T, .table = table},
        {.kind = SF_TARGET_SPARSE_PARITY, .n = T, .bits = sparse_bits, .n_bits = 2},
        {.kind = SF_TARGET_JUNTA, .n = T, .table = junta_table, .bits = junta_bits, .n_bits = 2},
        {.kind = SF_TARGET_FOURIER, .n = T, .bits = fourier_bits, .n_bits = 3, .set_offsets = offsets,
         .coefficients = coefficients, .n_terms = 2}};
    for (int k = 0; k < 8; k++) {
        CHECK(sf_target_eval(&kinds[k], x, B, T, y) == SF_OK, "target kind %d", k);
        int ok = 1;
        for (int b = 0; b < B; b++) {
            const uint8_t *r = x + b * T;
            int ones = 0, idx = 0;
            for (int j = 0; j < T; j++) ones += r[j], idx = idx << 1 | r[j];
            const double g = (r[0] ? -0.5 : 0.5) + ((r[2] ^ r[4]) ? 0.75 : -0.75);
            const double want[8] = {ones & 1, 2 * ones > T, r[0], (double)ones / T, table[idx], r[0] ^ r[3],
                                    junta_table[r[1] << 1 | r[5]], 0.5 * (1 - g)};
            ok &= y[b] == want[k];
        }
        CHECK(ok, "target kind %d matches its definition", k);
        sf_sampler uniform = {.kind = SF_SAMPLE_UNIFORM};
        CHECK(sf_sample_batch(&kinds[k], &uniform, 5, 9, B, T, x2, y2) == SF_OK, "sample kind %d", k);
        CHECK(sf_target_eval(&kinds[k], x2, B, T, y) == SF_OK && memcmp(y, y2, sizeof y) == 0,
              "sampled labels are the target's (kind %d)", k);
    }
    /* determinism, samplers, label noise */
    sf_target noisy = {.kind = SF_TARGET_PARITY, .n = T, .noise = 0.3};
    sf_sampler uniform = {.kind = SF_SAMPLE_UNIFORM}, sub = {.kind = SF_SAMPLE_SUBSET, .subset = subset, .subset_size = 3};
    sf_sampler data = {.kind = SF_SAMPLE_DATASET, .data_x = x, .data_width = T, .data_y = table, .data_rows = B};
    CHECK(sf_sample_batch(&noisy, &uniform, 1, 2, B, T, x2, y) == SF_OK, "noisy batch");
    CHECK(sf_label_noise(flips, 1, 2, B, 0.3) == SF_OK, "label noise");
    CHECK(sf_target_eval(&kinds[0], x2, B, T, y2) == SF_OK, "clean labels");
    int ok = 1, flipped = 0;
    for (int b = 0; b < B; b++) ok &= y[b] == (flips[b] ? 1 - y2[b] : y2[b]), flipped += flips[b];
    CHECK(ok && flipped > 0 && flipped < B, "noise flips exactly the rows label_noise names (%d)", flipped);
    CHECK(sf_sample_batch(&kinds[0], &sub, 3, 4, B, T, x2, y2) == SF_OK, "subset sampler");
    ok = 1;
    for (int b = 0; b < B; b++) {
        int idx = 0;
        for (int j = 0; j < T; j++) idx = idx << 1 | x2[b * T + j];
        ok &= idx == 0 || idx == 7 || idx == 63;
    }
    CHECK(ok, "subset rows come from the subset");
    CHECK(sf_sample_batch(&kinds[0], &data, 3, 4, B, T, x2, y2) == SF_OK, "dataset sampler");
    /* refusals */
    int64_t bad_subset[1] = {1 << T};
    sf_sampler bad_sub = {.kind = SF_SAMPLE_SUBSET, .subset = bad_subset, .subset_size = 1};
    CHECK(sf_sample_batch(&kinds[0], &bad_sub, 0, 0, B, T, x2, y2) == SF_EINVAL, "subset index out of range");
    data.data_width = T - 1;
    CHECK(sf_sample_batch(&kinds[0], &data, 0, 0, B, T, x2, y2) == SF_EINVAL, "dataset width mismatch");
    CHECK(sf_target_eval(&kinds[5], x, B, 3, y) == SF_EINVAL, "sparse parity reading beyond the input");
    sf_target bad = {.kind = 99, .n = T};
    CHECK(sf_target_eval(&bad, x, B, T, y) == SF_EINVAL, "unknown target kind");
    int64_t bad_offsets[3] = {0, 2, 1};
    sf_target bad_fourier = kinds[7];
    bad_fourier.set_offsets = bad_offsets;
    CHECK(sf_target_eval(&bad_fourier, x, B, T, y) == SF_EINVAL, "decreasing Fourier set offsets");
    CHECK(sf_label_noise(flips, 0, 0, B, 1.5) == SF_EINVAL, "noise above 1");
    x[3] = 2;
    CHECK(sf_target_eval(&kinds[0], x, B, T, y) == SF_EINVAL, "token 2 refused");
}

/* Optimizer configuration, schedule and state; a refused configuration changes nothing. */
static void test_optimizer_api(void) {
    sf_config c = config(SF_NORM_PRE, SF_F64);
    sf_model *m = NULL;
    sf_optimizer *o = NULL;
    sf_optim_config oc = {.kind = SF_OPT_ADAMW, .lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                          .schedule = SF_SCHED_WARMUP_COSINE, .warmup_steps = 4, .total_steps = 20, .min_lr = 1e-4,
                          .decay_norm_bias_embedding = 1};
    CHECK(sf_model_create(&c, 1, 1, &m) == SF_OK && sf_optimizer_create(m, &oc, &o) == SF_OK, "create");
    if (!m || !o) return;
    CHECK(fabs(sf_optimizer_lr_at(o, 0) - 1e-2 / 4) < 1e-15 && fabs(sf_optimizer_lr_at(o, 3) - 1e-2) < 1e-15,
          "linear warm-up");
    CHECK(fabs(sf_optimizer_lr_at(o, 20) - 1e-4) < 1e-15 && fabs(sf_optimizer_lr_at(o, 1000) - 1e-4) < 1e-15,
          "cosine floor");
    sf_optim_config bad = oc;
    bad.beta1 = 1.0;
    CHECK(sf_optimizer_set_config(o, &bad) == SF_EINVAL && sf_optimizer_config(o)->beta1 == 0.9,
          "a refused configuration is not applied");
    bad = oc, bad.total_steps = 2;
    CHECK(sf_optimizer_set_config(o, &bad) == SF_EINVAL, "total_steps below warmup_steps");
    bad = oc, bad.lr = NAN;
    CHECK(sf_optimizer_create(m, &bad, &(sf_optimizer *){NULL}) == SF_EINVAL, "NaN learning rate");
    const double *m1 = sf_optimizer_state(o, 0), *v1 = sf_optimizer_state(o, 1);
    int zero = 1;
    for (int64_t i = 0; i < sf_model_num_params(m); i++) zero &= m1[i] == 0 && v1[i] == 0;
    CHECK(zero && sf_optimizer_step_count(o) == 0, "fresh state is zero");
    uint8_t x[4 * 7];
    double y[4] = {0, 1, 1, 0}, loss, norm;
    fill_tokens(x, 4 * 7, 3);
    CHECK(sf_loss_and_grad(m, ENC(x, y, 4, 7), SF_LOSS_BCE, 1, &loss, NULL, 1) == SF_OK, "bce loss and grad");
    CHECK(sf_optimizer_step(o, &norm, 2) == SF_OK && norm > 0 && sf_optimizer_step_count(o) == 1, "one step");
    sf_optimizer_set_step_count(o, 10);
    CHECK(sf_optimizer_step_count(o) == 10, "step count restored");
    oc.kind = SF_OPT_SGD, oc.momentum = 0.9, oc.nesterov = 1, oc.clip_norm = 1e-3;
    CHECK(sf_optimizer_set_config(o, &oc) == SF_OK && sf_optimizer_step(o, &norm, 1) == SF_OK, "nesterov, clipped");
    sf_optimizer_free(o);
    sf_model_free(m);
}

/* The stop hook and divergence: training, sharpness and HVP stop cleanly; a diverging run keeps the
 * parameters from before the failing step (equal to a clean run of that many steps). */
static void test_stop_and_divergence(sf_dtype dtype) {
    sf_config c = config(SF_NORM_POST, dtype);
    sf_model *m = NULL, *ref = NULL;
    sf_optimizer *o = NULL, *ro = NULL;
    sf_optim_config oc = {.kind = SF_OPT_SGD, .lr = dtype == SF_F32 ? 1e30 : 1e300};
    CHECK(sf_model_create(&c, 4, 1, &m) == SF_OK && sf_optimizer_create(m, &oc, &o) == SF_OK, "create");
    if (!m || !o) return;
    sf_target t = {.kind = SF_TARGET_PARITY, .n = 7};
    sf_sampler s = {.kind = SF_SAMPLE_UNIFORM};
    sf_train_config tc = {.loss = SF_LOSS_MSE, .batch_size = 16, .seq_len = 7, .seed = 2, .threshold = 0.5};
    double loss[50];
    int64_t done = -1;
    CHECK(sf_train(m, o, &t, &s, &tc, 0, 50, loss, NULL, NULL, NULL, &done, 1, NULL, NULL) == SF_ENUMERIC,
          "a huge learning rate diverges");
    const size_t bytes = (size_t)sf_model_num_params(m) * (dtype == SF_F64 ? 8 : 4);
    CHECK(done >= 0 && done < 50 && sf_optimizer_step_count(o) == done, "steps counted up to the failure (%lld)",
          (long long)done);
    CHECK(sf_model_create(&c, 4, 1, &ref) == SF_OK && sf_optimizer_create(ref, &oc, &ro) == SF_OK, "reference");
    int64_t ref_done = 0;
    if (done > 0)
        CHECK(sf_train(ref, ro, &t, &s, &tc, 0, done, loss, NULL, NULL, NULL, &ref_done, 2, NULL, NULL) == SF_OK,
              "the steps before the failure");
    CHECK(memcmp(sf_model_params(m), sf_model_params(ref), bytes) == 0, "the parameters from before the failing step");
    sf_optimizer_free(o), sf_optimizer_free(ro);
    sf_model_free(m);
    /* stop hooks: training stops between steps; probes restore the parameters */
    oc.lr = 1e-3;
    CHECK(sf_model_create(&c, 4, 1, &m) == SF_OK && sf_optimizer_create(m, &oc, &o) == SF_OK, "fresh model");
    if (!m || !o) return;
    int calls = 0;
    CHECK(sf_train(m, o, &t, &s, &tc, 0, 1 << 30, NULL, NULL, NULL, NULL, &done, 1, always_stop, &calls) == SF_EINTR,
          "training stops on request");
    CHECK(calls == 1 && done > 0 && sf_optimizer_step_count(o) == done, "stopped after %lld whole steps",
          (long long)done);
    void *before = malloc(bytes);
    memcpy(before, sf_model_params(m), bytes);
    enum { B = 8 };
    uint8_t x[B * 7];
    double yd[B] = {0};
    float yf[B] = {0};
    const void *y = dtype == SF_F64 ? (void *)yd : (void *)yf;
    fill_tokens(x, B * 7, 9);
    unsigned char mask[64];
    memset(mask, 1, sizeof mask);
    double base[1], pert[1000];
    calls = 0;
    CHECK(sf_sharpness(m, ENC(x, y, B, 7), 1, SF_LOSS_MSE, 0.5, 1000, 1, mask, NULL, 0, base, pert, 2, always_stop, &calls) ==
              SF_EINTR, "sharpness stops on request");
    CHECK(memcmp(before, sf_model_params(m), bytes) == 0, "an interrupted sharpness restores the parameters");
    void *v = calloc(2 * bytes, 1), *hv = malloc(2 * bytes);
    calls = 0;
    CHECK(sf_hvp(m, ENC(x, y, B, 7), 2, SF_LOSS_MSE, v, 2, hv, NULL, 1, always_stop, &calls) == SF_EINTR,
          "hvp stops on request");
    CHECK(sf_hvp(m, ENC(x, y, B, 7), 2, SF_LOSS_MSE, v, 2, hv, NULL, 1, NULL, NULL) == SF_OK, "hvp");
    int zero = 1;
    for (int64_t i = 0; i < 2 * sf_model_num_params(m); i++)
        zero &= dtype == SF_F64 ? ((double *)hv)[i] == 0 : ((float *)hv)[i] == 0;
    CHECK(zero, "H 0 = 0");
    free(before), free(v), free(hv);
    sf_optimizer_free(o);
    sf_model_free(ref);
    sf_model_free(m);
}

/* HVP against central differences of the gradient, the attention-logit probe, reinit == create. */
static void test_hvp_logits_reinit(void) {
    sf_config c = config(SF_NORM_PRE, SF_F64);
    sf_model *m = NULL, *other = NULL;
    CHECK(sf_model_create(&c, 5, 0, &m) == SF_OK && sf_model_create(&c, 6, 0, &other) == SF_OK, "create");
    if (!m || !other) return;
    const int64_t n = sf_model_num_params(m);
    enum { B = 4, T = 7 };
    uint8_t x[B * T];
    double y[B] = {0.2, 0.9, -0.3, 0.5}, loss;
    fill_tokens(x, B * T, 21);
    double *v = malloc(n * sizeof *v), *hv = malloc(n * sizeof *hv);
    double *grad_before = malloc(n * sizeof *grad_before), *g = sf_model_grads(m);
    for (int64_t i = 0; i < n; i++) v[i] = sin(0.37 * i);
    CHECK(sf_loss_and_grad(m, ENC(x, y, B, T), SF_LOSS_MSE, 1, &loss, NULL, 1) == SF_OK, "gradient");
    memcpy(grad_before, g, n * sizeof *g);
    CHECK(sf_hvp(m, ENC(x, y, B, T), 1, SF_LOSS_MSE, v, 1, hv, NULL, 2, NULL, NULL) == SF_OK, "hvp");
    CHECK(memcmp(grad_before, g, n * sizeof *g) == 0, "hvp leaves the gradient buffer alone");
    const double worst = hvp_fd_error(m, ENC(x, y, B, T), v, hv);
    CHECK(worst < 1, "hvp against central differences: worst relative error %g", worst);
    double maxs[2 * 2], means[2 * 2];
    CHECK(sf_attention_logits(m, ENC(x, NULL, B, T), maxs, means, 2) == SF_OK, "attention logits");
    int ok = 1;
    for (int i = 0; i < 4; i++) ok &= isfinite(maxs[i]) && maxs[i] >= means[i] && means[i] >= 0;
    CHECK(ok, "logit scale max >= mean >= 0");
    CHECK(sf_model_reinit(m, 6, 0) == SF_OK, "reinit");
    CHECK(memcmp(sf_model_params(m), sf_model_params(other), n * sizeof(double)) == 0,
          "reinit(seed) equals a fresh model with that seed");
    uint8_t longer[B * (T + 1)];
    fill_tokens(longer, B * (T + 1), 4);
    CHECK(sf_attention_logits(m, ENC(longer, NULL, B, T + 1), maxs, means, 1) == SF_EINVAL, "length beyond n_positions");
    free(v), free(hv), free(grad_before);
    sf_model_free(other);
    sf_model_free(m);
}

/* Norm types and positional encodings: float64 finite differences of the loss and of the gradient
 * along a direction (H v), for the encoder model (narrow heads, and wide heads whose layer 0 takes
 * its scores from the table) and for the seq2seq model. */
static void check_options(sf_config c, const char *what) {
    sf_model *m = NULL;
    CHECK(sf_model_create(&c, 3, 0, &m) == SF_OK, "create (%s)", what);
    if (!m) return;
    enum { B = 3, T = 6, S = 7 };
    uint8_t x[B * T], dec[B * S];
    double y[B * T], loss;
    fill_tokens(x, B * T, 9);
    fill_tokens(dec, B * S, 13);
    for (int i = 0; i < B * T; i++) y[i] = 0.1 * (i % 7) - 0.2;
    const int s2s = c.kind == SF_MODEL_SEQ2SEQ;
    sf_seq_data d = s2s ? (sf_seq_data){x, dec, y, B, T, S, T} : (sf_seq_data){x, NULL, y, B, T, 0, 1};
    const int64_t n = sf_model_num_params(m);
    double *grad = malloc(n * sizeof *grad), *v = malloc(n * sizeof *v), *hv = malloc(n * sizeof *hv);
    CHECK(sf_loss_and_grad(m, &d, SF_LOSS_MSE, 1, &loss, NULL, 2) == SF_OK, "loss_and_grad (%s)", what);
    memcpy(grad, sf_model_grads(m), n * sizeof *grad);
    double worst = gradient_fd_error(m, &d, grad, n / 60 + 1); /* about 60 entries: cheap under valgrind */
    CHECK(worst < 1, "finite differences (%s): worst relative error %g", what, worst);
    for (int64_t i = 0; i < n; i++) v[i] = sin(0.37 * (double)i);
    CHECK(sf_hvp(m, &d, 1, SF_LOSS_MSE, v, 1, hv, NULL, 2, NULL, NULL) == SF_OK, "hvp (%s)", what);
    worst = hvp_fd_error(m, &d, v, hv);
    CHECK(worst < 1, "hvp against central differences (%s): worst relative error %g", what, worst);
    if (s2s) {
        uint8_t tok_c[B * S], tok_f[B * S];
        CHECK(sf_generate(m, x, B, T, S, 1, 0.5, tok_c, NULL, 2, NULL, NULL) == SF_OK &&
                  sf_generate(m, x, B, T, S, 0, 0.5, tok_f, NULL, 1, NULL, NULL) == SF_OK &&
                  memcmp(tok_c, tok_f, sizeof tok_c) == 0,
              "the cache gives the recomputed tokens (%s)", what);
    }
    free(grad), free(v), free(hv);
    sf_model_free(m);
}

static void test_model_options(void) {
    const struct {
        sf_norm_type norm_type;
        sf_positional positional;
    } options[] = {{SF_NORM_RMS, SF_POS_ROPE}, {SF_NORM_LAYER, SF_POS_ADD}, {SF_NORM_RMS, SF_POS_SINUSOIDAL},
                   {SF_NORM_LAYER, SF_POS_NONE}, {SF_NORM_LAYER, SF_POS_ROPE}};
    char what[96];
    for (size_t i = 0; i < sizeof options / sizeof *options; i++)
        for (int wide = 0; wide < 2; wide++)
            for (int kind = SF_MODEL_ENCODER; kind <= SF_MODEL_SEQ2SEQ; kind++) {
                sf_config c = config(i % 2 ? SF_NORM_POST : SF_NORM_PRE, SF_F64);
                c.d_model = wide ? 32 : 8, c.norm_type = options[i].norm_type, c.positional = options[i].positional;
                c.rope_base = 100.0, c.kind = kind;
                if (kind == SF_MODEL_SEQ2SEQ) c.final_norm = 1, c.n_decoder_layers = 1;
                snprintf(what, sizeof what, "%s, norm type %d, positional %d, d %d",
                         kind ? "seq2seq" : "encoder", c.norm_type, c.positional, c.d_model);
                check_options(c, what);
            }
}

/* Process settings and build facts: thread policy, memory limit, config checks, model views. */
static void test_settings_and_facts(void) {
    sf_set_default_threads(1);
    CHECK(sf_default_threads() == 1 && sf_resolve_threads(0) == 1, "default of one thread");
    CHECK(sf_resolve_threads(2) == (sf_openmp_enabled() ? 2 : 1), "explicit thread count (OpenMP: %d)",
          sf_openmp_enabled());
    sf_set_default_threads(0);
    CHECK(sf_default_threads() >= 1, "OpenMP's default restored");
    sf_set_memory_limit(12345);
    CHECK(sf_memory_limit() == 12345, "memory limit set");
    sf_set_memory_limit(0);
    CHECK(sf_memory_limit() > 12345, "default memory limit restored");
    CHECK(strlen(sf_cpu_path()) > 0 && strlen(sf_build_flags()) > 0, "build facts");
    int n_lists = 0, found = 0;
    const sf_word_list *lists = sf_vocabulary(&n_lists);
    for (int i = 0; i < n_lists; i++)
        for (int j = 0; j < lists[i].count; j++)
            found += !strcmp(lists[i].name, "norm") && !strcmp(lists[i].words[j].name, "pre") &&
                     lists[i].words[j].value == SF_NORM_PRE;
    CHECK(n_lists == 14 && found == 1, "vocabulary: %d lists", n_lists);
    int bits = 0;
    CHECK(sf_measure_peak_gflops(0, 1, 0.001, &bits) > 0 && bits == sf_widest_vector_bits(), "peak measurement");
    sf_config c = config(SF_NORM_POST, SF_F32);
    CHECK(sf_config_check(&c) == SF_OK, "valid config");
    c.n_layers = 0;
    CHECK(sf_config_check(&c) == SF_EINVAL && strstr(sf_last_error(), "n_layers"), "n_layers 0: %s",
          sf_last_error());
    c = config(SF_NORM_POST, SF_F32);
    c.d_ff = 1 << 21;
    CHECK(sf_config_check(&c) == SF_EINVAL && strstr(sf_last_error(), "d_ff"), "huge d_ff: %s", sf_last_error());
    c = config(SF_NORM_POST, SF_F32);
    sf_model *m = NULL;
    CHECK(sf_model_create(&c, 3, 1, &m) == SF_OK, "create");
    if (!m) return;
    const sf_config *kept = sf_model_config(m);
    CHECK(kept->n_positions == c.n_positions && kept->d_model == c.d_model && kept->d_ff == c.d_ff &&
              kept->n_layers == c.n_layers && kept->dtype == c.dtype, "the model keeps its config");
    uint8_t x[4 * 7];
    float out[4];
    fill_tokens(x, 4 * 7, 5);
    CHECK(sf_forward(m, ENC(x, NULL, 4, 7), out, 1) == SF_OK && sf_model_last_threads(m) == 1, "last team size");
    sf_model_free(m);
}

static void test_reliability_entry_points(void) {
    test_settings_and_facts();
    test_boolean_kernels();
    test_targets_and_sampling();
    test_optimizer_api();
    test_stop_and_divergence(SF_F32);
    test_stop_and_divergence(SF_F64);
    test_hvp_logits_reinit();
}

/* Every CPU path this build and CPU run: finite-difference gradients on each, and the same forward
 * outputs (bitwise for x86-64-v3 and x86-64-v4, which promise it; to rounding for the baseline). */
static void test_cpu_paths(void) {
    const char *names[8];
    const int n = sf_cpu_paths(names, 8);
    const int v4_kept = !strcmp(names[0], "x86-64-v4") && sf_cpu_path_speedup() >= 1.05;
    const char *expected = !strcmp(names[0], "x86-64-v4") && !v4_kept ? names[1] : names[0];
    CHECK(n >= 1 && !strcmp(names[n - 1], "baseline") && !strcmp(expected, sf_cpu_path()),
          "%d paths, auto = the widest that proves itself (%s; x86-64-v4 GEMM speedup %.2f)", n, sf_cpu_path(),
          sf_cpu_path_speedup());
    CHECK(sf_select_cpu_path("avx9000") == SF_EINVAL && strstr(sf_last_error(), "avx9000"), "unknown path refused");
    float ref[5], out[5];
    uint8_t x[5 * 7];
    fill_tokens(x, 5 * 7, 11);
    for (int i = 0; i < n; i++) {
        CHECK(sf_select_cpu_path(names[i]) == SF_OK && !strcmp(sf_cpu_path(), names[i]), "select %s", names[i]);
        for (int norm = SF_NORM_POST; norm <= SF_NORM_NONE; norm++) test_gradient(norm, 8), test_gradient(norm, 32);
        sf_config c = config(SF_NORM_POST, SF_F32);
        c.d_model = 32; /* 16-wide heads: the score table */
        sf_model *m = NULL;
        CHECK(sf_model_create(&c, 4, 1, &m) == SF_OK && sf_forward(m, ENC(x, NULL, 5, 7), i ? out : ref, 1) == SF_OK,
              "forward on %s", names[i]);
        sf_model_free(m);
        if (!i) continue;
        double worst = 0;
        for (int b = 0; b < 5; b++) worst = fmax(worst, fabs(out[b] - ref[b]));
        const int bitwise = strcmp(names[i], "baseline") != 0;
        CHECK(bitwise ? worst == 0 : worst < 1e-5, "%s vs %s: forward differs by %g", names[i], names[0], worst);
    }
    CHECK(sf_select_cpu_path("auto") == SF_OK && (!strcmp(sf_cpu_path(), names[0]) || !strcmp(sf_cpu_path(), names[1])),
          "auto restored");
}

int main(void) {
    test_cpu_paths();
    for (int dtype = SF_F32; dtype <= SF_F64; dtype++) {
        for (int kind = SF_OPT_ADAMW; kind <= SF_OPT_SGD; kind++) test_training(dtype, kind, SF_SAMPLE_UNIFORM);
        test_training(dtype, SF_OPT_ADAMW, SF_SAMPLE_SUBSET);
        test_training(dtype, SF_OPT_ADAMW, SF_SAMPLE_DATASET);
        test_probes(dtype);
        test_seq2seq(SF_NORM_POST, dtype);
        test_seq2seq(SF_NORM_PRE, dtype);
    }
    test_errors();
    test_model_options();
    test_reliability_entry_points();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
