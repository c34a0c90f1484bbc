/* Public entry points that route to one build of the numeric code: the model's precision and the
 * process's CPU path, which is decided here once for every kernel of the engine. */
#include "engine.h"
#include "numeric/numeric.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- CPU paths ---------------------------------------------------------------------------------- */

#ifndef SF_BUILT_PATHS
#define SF_BUILT_PATHS 0x1 /* baseline only */
#endif

typedef struct {
    const char *name;
    int vector_bits;                /* of the GEMM micro-kernel */
    const sf_numeric *builds[2];    /* float32, float64; NULL where not compiled */
} cpu_path;

/* Fastest first; the index is the build's SF_CPU_PATH value. */
static const cpu_path paths[] = {
    {"baseline", 128, {&numeric_f32_base, &numeric_f64_base}},
#if SF_BUILT_PATHS & 0x2
    {"x86-64-v3", 256, {&numeric_f32_v3, &numeric_f64_v3}},
#else
    {"x86-64-v3", 256, {NULL, NULL}},
#endif
#if SF_BUILT_PATHS & 0x4
    {"x86-64-v4", 512, {&numeric_f32_v4, &numeric_f64_v4}},
#else
    {"x86-64-v4", 512, {NULL, NULL}},
#endif
};
enum { N_PATHS = sizeof paths / sizeof paths[0] };

/* Can this CPU run path i (and was it compiled)? */
static int path_runs_here(int i) {
    if (!paths[i].builds[0]) return 0;
    if (i == 0) return 1;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    const int v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                   __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
    if (i == 1) return v3;
    return v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

static int path_index(const char *name) {
    for (int i = 0; i < N_PATHS; i++)
        if (!strcmp(paths[i].name, name)) return i;
    return -1;
}

static int widest_path(void) {
    int widest = 0;
    for (int i = 1; i < N_PATHS; i++)
        if (path_runs_here(i)) widest = i;
    return widest;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* Best of 7 one-thread runs of a float32 (512 x 128) x (128 x 128) product on path i (about 17 MFLOP:
 * 0.1 ms on an AVX-512 core). */
static double gemm_seconds(int i, const float *a, const float *b, float *c) {
    sf_par par = {1, 0};
    double best = 1e30;
    for (int rep = 0; rep < 7; rep++) {
        const double t0 = now();
        paths[i].builds[0]->gemm_strided(512, 128, 128, a, 128, 1, b, 128, 1, c, 128, NULL, 0, &par);
        const double t = now() - t0;
        if (t < best) best = t;
    }
    return best;
}

static double v4_speedup; /* x86-64-v3's GEMM time / x86-64-v4's, measured by auto_path (0: not measured) */

/* The path "auto" chooses: the widest this CPU runs, except that x86-64-v4 must prove itself. Its row
 * kernels are x86-64-v3's and its GEMM gives the same bits, so the two differ only in the GEMM's speed:
 * measured here once (about a millisecond), x86-64-v4 is taken only if its GEMM is at least 5% faster on
 * this host (a CPU with one 512-bit FMA unit, or one that clocks down for 512-bit code, keeps x86-64-v3). */
static int auto_path(void) {
    const int widest = widest_path();
    if (widest != 2 || !path_runs_here(1)) return widest;
    float *buf = malloc(sizeof(float) * (512 * 128 + 128 * 128 + 512 * 128));
    if (!buf) return widest;
    for (int j = 0; j < 512 * 128 + 128 * 128; j++) buf[j] = (float)((j * 7919) % 101) / 101.0f - 0.5f;
    const float *a = buf, *b = buf + 512 * 128;
    float *c = buf + 512 * 128 + 128 * 128;
    double t3 = 1e30, t4 = 1e30; /* alternate, so a busy moment hits both */
    for (int round = 0; round < 3; round++) {
        const double s3 = gemm_seconds(1, a, b, c), s4 = gemm_seconds(2, a, b, c);
        t3 = s3 < t3 ? s3 : t3, t4 = s4 < t4 ? s4 : t4;
    }
    free(buf);
    v4_speedup = t3 / t4;
    return v4_speedup >= 1.05 ? 2 : 1;
}

double sf_cpu_path_speedup(void) {
    (void)sf_cpu_path();
    return v4_speedup;
}

static int current = -1; /* set once, before the first model call (a benign race otherwise: same value) */

static int current_path(void) {
    if (current < 0) current = auto_path();
    return current;
}

sf_status sf_select_cpu_path(const char *name) {
    if (!name || !*name || !strcmp(name, "auto")) {
        current = auto_path();
        return SF_OK;
    }
    const int i = path_index(name);
    if (i < 0) return sf_fail(SF_EINVAL, "unknown CPU path '%s' (expected auto, baseline, x86-64-v3 or x86-64-v4)", name);
    if (!path_runs_here(i))
        return sf_fail(SF_EINVAL, "CPU path '%s' cannot run here: %s", name,
                       paths[i].builds[0] ? "this CPU lacks its instructions" : "this build did not compile it");
    current = i;
    return SF_OK;
}

const char *sf_cpu_path(void) { return paths[current_path()].name; }

int sf_cpu_vector_bits(void) { return paths[current_path()].vector_bits; }

int sf_widest_vector_bits(void) { return paths[widest_path()].vector_bits; }

int sf_cpu_paths(const char **names, int capacity) {
    int n = 0;
    for (int i = N_PATHS - 1; i >= 0; i--)
        if (path_runs_here(i)) {
            if (n < capacity) names[n] = paths[i].name;
            n++;
        }
    return n;
}

const sf_numeric *sf_numeric_of(sf_dtype dtype) { return paths[current_path()].builds[dtype == SF_F64]; }

/* ---- one entry point per operation, either model kind ------------------------------------------ */

#define BY_DTYPE(m, call) (sf_numeric_of((m)->cfg.dtype)->call)
/* The model kind's table of operations (numeric.h): the only place the kind is looked at. */
#define OPS(m) (&sf_numeric_of((m)->cfg.dtype)->kinds[(m)->cfg.kind])

/* Shapes and tokens of d for model m; need_y: labels present (seq2seq: 1 <= L <= S); batches: the rows
 * split into that many equal batches. */
static sf_status check_data(const sf_model *m, const sf_seq_data *d, int need_y, int batches) {
    const int seq2seq = m->cfg.kind == SF_MODEL_SEQ2SEQ;
    if (d->rows < 1) return sf_fail(SF_EINVAL, "batch size must be >= 1 (sequences), got %d", d->rows);
    if (batches < 1 || d->rows % batches)
        return sf_fail(SF_EINVAL, "%d rows do not split into %d batches", d->rows, batches);
    if (d->T < 1 || d->T > m->cfg.n_positions)
        return sf_fail(SF_EINVAL, "the %s length must be in [1, n_positions=%d], got %d",
                       seq2seq ? "encoder input" : "input", m->cfg.n_positions, d->T);
    if (need_y && !d->y) return sf_fail(SF_EINVAL, "this call needs labels");
    sf_status st = sf_check_tokens(d->x, (int64_t)d->rows * d->T);
    if (st) return st;
    if (!seq2seq) {
        if (d->dec || d->S) return sf_fail(SF_EINVAL, "the encoder model takes no decoder inputs");
        if (need_y && d->L != 1) return sf_fail(SF_EINVAL, "the encoder model has one label per sequence, got %d", d->L);
        return SF_OK;
    }
    if (!d->dec) return sf_fail(SF_EINVAL, "the seq2seq model needs decoder inputs");
    if (d->S < 1 || d->S > m->cfg.n_positions + 1)
        return sf_fail(SF_EINVAL, "the decoder input length must be in [1, n_positions+1=%d], got %d",
                       m->cfg.n_positions + 1, d->S);
    if (need_y && (d->L < 1 || d->L > d->S))
        return sf_fail(SF_EINVAL, "need labels for 1 to S=%d decoder positions, got %d", d->S, d->L);
    const int64_t n = (int64_t)d->rows * d->S;
    for (int64_t i = 0; i < n; i++)
        if (d->dec[i] > SF_SOS)
            return sf_fail(SF_EINVAL, "decoder inputs must hold tokens 0, 1 or SOS=2, found %d at flat index %lld",
                           d->dec[i], (long long)i);
    return SF_OK;
}

static sf_status check_loss(sf_loss loss) {
    return loss == SF_LOSS_MSE || loss == SF_LOSS_BCE ? SF_OK : sf_fail(SF_EINVAL, "unknown loss %d", loss);
}

sf_status sf_forward(sf_model *m, const sf_seq_data *d, void *out, int n_threads) {
    sf_status st = check_data(m, d, 0, 1);
    return st ? st : OPS(m)->forward(m, d, out, n_threads);
}

sf_status sf_loss_and_grad(sf_model *m, const sf_seq_data *d, sf_loss loss, int grad, double *loss_out, void *out,
                           int n_threads) {
    sf_status st = check_loss(loss);
    if (!st) st = check_data(m, d, 1, 1);
    return st ? st : OPS(m)->loss_and_grad(m, d, loss, grad, loss_out, out, n_threads);
}

sf_status sf_sharpness(sf_model *m, const sf_seq_data *d, int n_batches, sf_loss loss, double sigma, int repeats,
                       uint64_t seed, const unsigned char *mask, const void *noise, int shared_draws, double *base,
                       double *perturbed, int n_threads, sf_stop_hook stop, void *stop_ctx) {
    if (n_batches < 1 || repeats < 1) return sf_fail(SF_EINVAL, "need at least one batch and one draw");
    if (!(sigma >= 0) || !isfinite(sigma)) return sf_fail(SF_EINVAL, "sigma must be finite and >= 0, got %g", sigma);
    sf_status st = check_loss(loss);
    if (!st) st = check_data(m, d, 1, n_batches);
    return st ? st
              : BY_DTYPE(m, sharpness)(m, d, n_batches, loss, sigma, repeats, seed, mask, noise, shared_draws, base,
                                       perturbed, n_threads, stop, stop_ctx);
}

int sf_seq2seq_ln_counts(const sf_model *m, int counts[4]) {
    const int Le = m->cfg.n_layers, Ld = m->cfg.n_decoder_layers;
    counts[0] = 2 * Le + 1, counts[1] = 3 * Ld + 1, counts[2] = 2 * Le, counts[3] = 2 * Ld;
    return counts[0] + counts[1] + counts[2] + counts[3];
}

int sf_ln_count(const sf_model *m) {
    int counts[4];
    return m->cfg.kind == SF_MODEL_SEQ2SEQ ? sf_seq2seq_ln_counts(m, counts) : numeric_f32_base.ln_count(&m->cfg);
}

sf_status sf_ln_blowup(sf_model *m, const sf_seq_data *d, int theory, double *maxs, double *means, int n_threads) {
    sf_status st = check_data(m, d, 0, 1);
    return st ? st : OPS(m)->ln_blowup(m, d, theory, maxs, means, n_threads);
}

sf_status sf_hvp(sf_model *m, const sf_seq_data *d, int n_batches, sf_loss loss, const void *v, int k, void *hv,
                 double *loss_out, int n_threads, sf_stop_hook stop, void *stop_ctx) {
    if (n_batches < 1 || k < 0) return sf_fail(SF_EINVAL, "need at least one batch and k >= 0 directions");
    sf_status st = check_loss(loss);
    if (!st) st = check_data(m, d, 1, n_batches);
    return st ? st : OPS(m)->hvp(m, d, n_batches, loss, v, k, hv, loss_out, n_threads, stop, stop_ctx);
}

sf_status sf_attention_logits(sf_model *m, const sf_seq_data *d, double *maxs, double *means, int n_threads) {
    sf_status st = check_data(m, d, 0, 1);
    return st ? st : OPS(m)->attention_logits(m, d, maxs, means, n_threads);
}

sf_status sf_train(sf_model *m, sf_optimizer *o, const sf_target *t, const sf_sampler *s, const sf_train_config *tc,
                   int64_t first_step, int64_t n_steps, double *loss, double *acc, double *lr, double *grad_norm,
                   int64_t *done, int n_threads, sf_stop_hook stop, void *stop_ctx) {
    if (tc->loss != SF_LOSS_MSE && tc->loss != SF_LOSS_BCE) return sf_fail(SF_EINVAL, "unknown loss %d", tc->loss);
    return BY_DTYPE(m, train)(m, o, t, s, tc, first_step, n_steps, loss, acc, lr, grad_norm, done, n_threads, stop,
                              stop_ctx);
}

sf_status sf_kernel_gemm(const char *path, sf_dtype dtype, int64_t M, int64_t N, int64_t K, const void *A,
                         int transpose_a, const void *B, int transpose_b, void *C, const void *bias, int accumulate,
                         int n_threads) {
    if (M < 0 || N < 0 || K < 0) return sf_fail(SF_EINVAL, "negative GEMM size");
    const int i = path_index(path);
    if (i < 0 || !path_runs_here(i)) return sf_fail(SF_EINVAL, "unknown CPU path '%s', or this CPU cannot run it", path);
    sf_par par = {sf_resolve_threads(n_threads), 0};
    const long sai = transpose_a ? 1 : (long)K, sak = transpose_a ? (long)M : 1;
    const long sbk = transpose_b ? 1 : (long)N, sbj = transpose_b ? (long)K : 1;
    paths[i].builds[dtype == SF_F64]->gemm_strided(M, N, K, A, sai, sak, B, sbk, sbj, C, N, bias, accumulate, &par);
    return SF_OK;
}

sf_status sf_generate(sf_model *m, const uint8_t *x, int B, int T, int steps, int cache, double threshold,
                      uint8_t *tokens, void *outputs, int n_threads, sf_stop_hook stop, void *stop_ctx) {
    if (m->cfg.kind != SF_MODEL_SEQ2SEQ) return sf_fail(SF_EINVAL, "generation is for the seq2seq model; this is an encoder model");
    if (B < 1) return sf_fail(SF_EINVAL, "need at least one sequence, got %d", B);
    if (T < 1 || T > m->cfg.n_positions)
        return sf_fail(SF_EINVAL, "the encoder input length must be in [1, n_positions=%d], got %d",
                       m->cfg.n_positions, T);
    if (!isfinite(threshold)) return sf_fail(SF_EINVAL, "threshold must be finite, got %g", threshold);
    sf_status st = sf_check_tokens(x, (int64_t)B * T);
    if (st) return st;
    return BY_DTYPE(m, generate)(m, x, B, T, steps, cache, threshold, tokens, outputs, n_threads, stop, stop_ctx);
}

