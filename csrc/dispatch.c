/* Public entry points that route to the float32 or float64 build of the numeric code. */
#include "engine.h"
#include "numeric/numeric.h"

#include <math.h>

#define BY_DTYPE(m, call) ((m)->cfg.dtype == SF_F64 ? call##_f64 : call##_f32)

sf_status sf_forward(sf_model *m, const uint8_t *x, int B, int T, void *out, int n_threads) {
    return BY_DTYPE(m, forward)(m, x, B, T, out, n_threads);
}

sf_status sf_loss_and_grad(sf_model *m, const uint8_t *x, const void *y, int B, int T, sf_loss loss, int grad,
                           double *loss_out, void *out, int n_threads) {
    if (loss != SF_LOSS_MSE && loss != SF_LOSS_BCE) return sf_fail(SF_EINVAL, "unknown loss %d", loss);
    return BY_DTYPE(m, loss_and_grad)(m, x, y, B, T, loss, grad, loss_out, out, n_threads);
}

sf_status sf_train(sf_model *m, sf_optimizer *o, const sf_target *t, const sf_sampler *s, const sf_train_config *tc,
                   int64_t first_step, int64_t n_steps, double *loss, double *acc, double *lr, double *grad_norm,
                   int64_t *done, int n_threads, sf_stop_hook stop, void *stop_ctx) {
    if (tc->loss != SF_LOSS_MSE && tc->loss != SF_LOSS_BCE) return sf_fail(SF_EINVAL, "unknown loss %d", tc->loss);
    return BY_DTYPE(m, train)(m, o, t, s, tc, first_step, n_steps, loss, acc, lr, grad_norm, done, n_threads, stop,
                              stop_ctx);
}

const char *sf_cpu_path(void) { return gemm_path_f32(); }

sf_status sf_sharpness(sf_model *m, const uint8_t *x, const void *y, int n_batches, int B, int T, sf_loss loss,
                       double sigma, int repeats, uint64_t seed, const unsigned char *mask, const void *noise,
                       int shared_draws, double *base, double *perturbed, int n_threads, sf_stop_hook stop,
                       void *stop_ctx) {
    if (n_batches < 1 || repeats < 1) return sf_fail(SF_EINVAL, "need at least one batch and one draw");
    if (!(sigma >= 0) || !isfinite(sigma)) return sf_fail(SF_EINVAL, "sigma must be finite and >= 0, got %g", sigma);
    sf_status st = sf_check_tokens(x, (int64_t)n_batches * B * T);
    if (st) return st;
    return BY_DTYPE(m, sharpness)(m, x, y, n_batches, B, T, loss, sigma, repeats, seed, mask, noise, shared_draws, base,
                                  perturbed, n_threads, stop, stop_ctx);
}

int sf_ln_count(const sf_model *m) { return ln_count_f32(&m->cfg); }

sf_status sf_ln_blowup(sf_model *m, const uint8_t *x, int B, int T, int theory, double *maxs, double *means,
                       int n_threads) {
    sf_status st = sf_check_tokens(x, (int64_t)B * T);
    if (st) return st;
    return BY_DTYPE(m, ln_blowup)(m, x, B, T, theory, maxs, means, n_threads);
}

sf_status sf_hvp(sf_model *m, const uint8_t *x, const void *y, int n_batches, int B, int T, sf_loss loss,
                 const void *v, int k, void *hv, double *loss_out, int n_threads, sf_stop_hook stop, void *stop_ctx) {
    if (loss != SF_LOSS_MSE && loss != SF_LOSS_BCE) return sf_fail(SF_EINVAL, "unknown loss %d", loss);
    if (n_batches < 1 || k < 0) return sf_fail(SF_EINVAL, "need at least one batch and k >= 0 directions");
    sf_status st = sf_check_tokens(x, (int64_t)n_batches * B * T);
    if (st) return st;
    return BY_DTYPE(m, hvp)(m, x, y, n_batches, B, T, loss, v, k, hv, loss_out, n_threads, stop, stop_ctx);
}

sf_status sf_attention_logits(sf_model *m, const uint8_t *x, int B, int T, double *maxs, double *means,
                              int n_threads) {
    sf_status st = sf_check_tokens(x, (int64_t)B * T);
    if (st) return st;
    return BY_DTYPE(m, attention_logits)(m, x, B, T, maxs, means, n_threads);
}
