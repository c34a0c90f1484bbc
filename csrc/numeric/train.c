/* The C training loop: sample, forward, loss, backward, update, with no Python per step.
 * The encoder regresses one label per row; the seq2seq model regresses a prefix target's label
 * sequence by teacher forcing (decoder input [SOS, y_1..y_{T-1}], one output per label). */
#include "seq2seq.h"

#include <string.h>
#include <time.h>

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* Either model's workspace and the batch buffers. */
typedef struct {
    uint8_t *x, *dec; /* (B,T) inputs; (B,T) teacher-forcing decoder inputs (seq2seq) */
    double *y;        /* (n_out) sampled labels */
    real *labels;     /* (n_out) regression targets */
    int seq2seq;
    long n_out;       /* labels per batch: B, or B*T for the seq2seq model */
    acts enc;         /* (the workspaces last: work_init zeroes what precedes them) */
    s2s_acts s2s;
    s2s_params p;
} train_work;

static sf_status work_init(sf_model *m, const sf_target *t, int B, int T, int nt, train_work *w) {
    memset(w, 0, offsetof(train_work, enc));
    w->seq2seq = m->cfg.kind == SF_MODEL_SEQ2SEQ;
    if (w->seq2seq && !t->prefix)
        return sf_fail(SF_EINVAL, "the seq2seq model trains on a label sequence: use a prefix target (e.g. prefix "
                       "parity)");
    if (!w->seq2seq && t->prefix)
        return sf_fail(SF_EINVAL, "a prefix target has one label per position: train a seq2seq model on it");
    w->n_out = w->seq2seq ? (long)B * T : B;
    sf_status st = w->seq2seq ? SF(s2s_reserve)(m, B, T, T, nt, &w->s2s) : SF(encoder_reserve)(m, B, T, nt, &w->enc);
    if (st) return st;
    w->enc.loss_only = !w->seq2seq; /* the loss and its backward as loss_and_grad runs them */
    if (w->seq2seq) SF(s2s_params)(m, (real *)m->params, &w->p);
    w->x = malloc((size_t)B * T);
    w->dec = w->seq2seq ? malloc((size_t)B * T) : NULL;
    w->y = malloc((size_t)w->n_out * sizeof(double));
    w->labels = malloc((size_t)w->n_out * sizeof(real));
    if (!w->x || (w->seq2seq && !w->dec) || !w->y || !w->labels) return sf_fail(SF_ENOMEM, "out of memory for a batch");
    return SF_OK;
}

static void work_free(train_work *w) {
    free(w->x);
    free(w->dec);
    free(w->y);
    free(w->labels);
}

/* [SOS, y_1..y_{T-1}] per row; the labels come back as tokens, so they must be 0 or 1. */
static sf_status teacher_forcing(uint8_t *dec, const double *y, long B, long T) {
    for (long b = 0; b < B; b++) {
        dec[b * T] = SF_SOS;
        for (long j = 1; j < T; j++) {
            const double v = y[b * T + j - 1];
            if (v != 0 && v != 1)
                return sf_fail(SF_EINVAL, "teacher forcing feeds the labels back as tokens, so they must be 0 or 1; "
                               "found %g", v);
            dec[b * T + j] = (uint8_t)v;
        }
    }
    return SF_OK;
}

/* Forward, loss and backward of one batch; returns the loss and points *out at the outputs. */
static double step_loss(sf_model *m, train_work *w, int B, int T, sf_loss loss, const real **out, sf_par *par) {
    if (w->seq2seq) {
        SF(s2s_set_decoder)(&w->s2s, w->dec, T);
        SF(s2s_encode)(m, &w->p, w->x, &w->s2s, par);
        SF(s2s_decode)(m, &w->p, &w->s2s, par);
        *out = w->s2s.out;
        const double l = SF(loss_forward_backward)(w->s2s.g_out, w->s2s.out, w->labels, w->n_out, loss);
        if (isfinite(l)) SF(s2s_backward)(m, w->x, &w->s2s, par);
        return l;
    }
    SF(encoder_forward)(m, w->x, &w->enc, par);
    *out = w->enc.out;
    const double l = SF(loss_forward_backward)(w->enc.g_out, w->enc.out, w->labels, B, loss);
    if (isfinite(l)) SF(encoder_backward)(m, w->x, &w->enc, par);
    return l;
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
    train_work w;
    sf_status st = work_init(m, t, B, T, par.nt, &w);
    if (st) goto out;
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
        if ((st = sf_sample_batch(t, s, tc->seed, first_step + i, B, T, w.x, w.y))) break;
        for (long b = 0; b < w.n_out; b++) w.labels[b] = (real)(tc->pm1_labels ? 2 * w.y[b] - 1 : w.y[b]);
        if ((st = sf_check_tokens(w.x, (int64_t)B * T))) break;
        if (w.seq2seq && (st = teacher_forcing(w.dec, w.y, B, T))) break;
        const real *out;
        const double l = step_loss(m, &w, B, T, tc->loss, &out, &par);
        if (!isfinite(l)) {
            st = sf_fail(SF_ENUMERIC, "the loss became %g at step %lld; parameters are those before this step",
                         l, (long long)(first_step + i));
            break;
        }
        const double step_lr = sf_optimizer_lr_at(o, o->step);
        double gn = 0;
        if ((st = SF(optimizer_step)(o, &gn, par.nt))) break;
        long correct = 0;
        for (long b = 0; b < w.n_out; b++) correct += (out[b] > tc->threshold) == (w.labels[b] > label_threshold);
        if (loss) loss[i] = l;
        if (acc) acc[i] = (double)correct / w.n_out;
        if (lr) lr[i] = step_lr;
        if (grad_norm) grad_norm[i] = gn;
        *done = i + 1;
    }
out:
    work_free(&w);
    if (par.used > m->last_threads || st == SF_OK) m->last_threads = par.used;
    return st;
}
