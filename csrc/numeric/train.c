/* The C training loop: sample, forward, loss, backward, update, with no Python per step. */
#include "encoder.h"

#include <string.h>
#include <time.h>

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

sf_status SF(train)(sf_model *m, sf_optimizer *o, const sf_target *t, const sf_sampler *s,
                    const sf_train_config *tc, int64_t first_step, int64_t n_steps, double *loss,
                    double *acc, double *lr, double *grad_norm, int64_t *done, int nt, sf_stop_hook stop,
                    void *stop_ctx) {
    *done = 0;
    const int B = tc->batch_size, T = tc->seq_len;
    if (o->model != m) return sf_fail(SF_EINVAL, "the optimizer belongs to another model");
    if (B < 1) return sf_fail(SF_EINVAL, "batch_size must be >= 1, got %d", B);
    sf_par par = {sf_resolve_threads(nt), 1};
    acts a;
    sf_status st = SF(encoder_reserve)(m, B, T, par.nt, &a);
    if (st) return st;
    uint8_t *x = malloc((size_t)B * T);
    double *y = malloc((size_t)B * sizeof(double));
    real *labels = malloc((size_t)B * sizeof(real));
    if (!x || !y || !labels) {
        st = sf_fail(SF_ENOMEM, "out of memory for a batch");
        goto out;
    }
    const double label_threshold = tc->pm1_labels ? 0.0 : 0.5;
    double last_check = now_seconds();
    for (int64_t i = 0; i < n_steps; i++) {
        if (stop && now_seconds() - last_check > 0.05) {
            last_check = now_seconds();
            if (stop(stop_ctx)) {
                st = sf_fail(SF_EINTR, "interrupted after %lld steps", (long long)i);
                break;
            }
        }
        if ((st = sf_sample_batch(t, s, tc->seed, first_step + i, B, T, x, y))) break;
        for (int b = 0; b < B; b++) labels[b] = (real)(tc->pm1_labels ? 2 * y[b] - 1 : y[b]);
        if ((st = sf_check_tokens(x, (int64_t)B * T))) break;
        SF(encoder_forward)(m, x, &a, &par);
        const double l = SF(loss_forward_backward)(a.g_out, a.out, labels, B, tc->loss);
        if (!isfinite(l)) {
            st = sf_fail(SF_ENUMERIC, "the loss became %g at step %lld; parameters are those before this step",
                         l, (long long)(first_step + i));
            break;
        }
        SF(encoder_backward)(m, x, &a, &par);
        const double step_lr = sf_optimizer_lr_at(o, o->step);
        double gn = 0;
        if ((st = SF(optimizer_step)(o, &gn, par.nt))) break;
        int correct = 0;
        for (int b = 0; b < B; b++) correct += (a.out[b] > tc->threshold) == (labels[b] > label_threshold);
        if (loss) loss[i] = l;
        if (acc) acc[i] = (double)correct / B;
        if (lr) lr[i] = step_lr;
        if (grad_norm) grad_norm[i] = gn;
        *done = i + 1;
    }
out:
    free(x);
    free(y);
    free(labels);
    if (par.used > m->last_threads || st == SF_OK) m->last_threads = par.used;
    return st;
}
