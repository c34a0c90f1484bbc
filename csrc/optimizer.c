/* Optimizer objects: configuration, state buffers and the learning-rate schedule. */
#include "engine.h"
#include "numeric/numeric.h"

#include <math.h>
#include <string.h>

static sf_status check_optim_config(const sf_optim_config *c) {
#define FINITE_NONNEG(field)                                                                          \
    if (!isfinite(c->field) || c->field < 0) return sf_fail(SF_EINVAL, #field " must be finite and >= 0, got %g", c->field)
    if (c->kind < SF_OPT_ADAMW || c->kind > SF_OPT_SGD) return sf_fail(SF_EINVAL, "unknown optimizer kind %d", c->kind);
    FINITE_NONNEG(lr);
    FINITE_NONNEG(weight_decay);
    FINITE_NONNEG(eps);
    FINITE_NONNEG(momentum);
    FINITE_NONNEG(min_lr);
    if (!isfinite(c->clip_norm)) return sf_fail(SF_EINVAL, "clip_norm must be finite, got %g", c->clip_norm);
    if (!(c->beta1 >= 0 && c->beta1 < 1)) return sf_fail(SF_EINVAL, "betas[0] must be in [0, 1), got %g", c->beta1);
    if (!(c->beta2 >= 0 && c->beta2 < 1)) return sf_fail(SF_EINVAL, "betas[1] must be in [0, 1), got %g", c->beta2);
    if (!(c->dampening >= 0 && c->dampening <= 1)) return sf_fail(SF_EINVAL, "dampening must be in [0, 1], got %g", c->dampening);
    if (c->nesterov && (c->momentum <= 0 || c->dampening != 0))
        return sf_fail(SF_EINVAL, "nesterov momentum requires momentum > 0 and dampening = 0");
    if (c->schedule != SF_SCHED_CONSTANT && c->schedule != SF_SCHED_WARMUP_COSINE)
        return sf_fail(SF_EINVAL, "unknown schedule %d", c->schedule);
    if (c->warmup_steps < 0 || c->total_steps < 0) return sf_fail(SF_EINVAL, "warmup_steps and total_steps must be >= 0");
    if (c->total_steps > 0 && c->total_steps < c->warmup_steps)
        return sf_fail(SF_EINVAL, "total_steps (%lld) must be >= warmup_steps (%lld)", (long long)c->total_steps,
                       (long long)c->warmup_steps);
#undef FINITE_NONNEG
    return SF_OK;
}

sf_status sf_optimizer_set_config(sf_optimizer *o, const sf_optim_config *cfg) {
    sf_status st = check_optim_config(cfg);
    if (st) return st;
    o->cfg = *cfg;
    const sf_model *m = o->model;
    for (int i = 0; i < m->n_tensors; i++) {
        const sf_tensor_kind k = m->tensors[i].kind;
        o->decay[i] = cfg->decay_norm_bias_embedding || k == SF_KIND_WEIGHT;
    }
    return SF_OK;
}

sf_status sf_optimizer_create(sf_model *m, const sf_optim_config *cfg, sf_optimizer **out) {
    *out = NULL;
    sf_status st = check_optim_config(cfg);
    if (st) return st;
    const size_t bytes = (size_t)m->n_params * m->elem;
    if ((st = sf_check_budget(2 * bytes, "the optimizer state"))) return st;
    sf_optimizer *o = calloc(1, sizeof *o);
    if (o) {
        o->model = m;
        o->m = sf_alloc(bytes);
        o->v = sf_alloc(bytes);
        o->decay = calloc((size_t)m->n_tensors, 1);
    }
    if (!o || !o->m || !o->v || !o->decay) {
        sf_optimizer_free(o);
        return sf_fail(SF_ENOMEM, "could not allocate the optimizer state (%.3g GB)", 2 * bytes / 1e9);
    }
    sf_optimizer_set_config(o, cfg);
    *out = o;
    return SF_OK;
}

void sf_optimizer_free(sf_optimizer *o) {
    if (!o) return;
    sf_free(o->m);
    sf_free(o->v);
    free(o->decay);
    free(o);
}

const sf_optim_config *sf_optimizer_config(const sf_optimizer *o) { return &o->cfg; }
void *sf_optimizer_state(sf_optimizer *o, int which) { return which == 0 ? o->m : o->v; }
int64_t sf_optimizer_step_count(const sf_optimizer *o) { return o->step; }

void sf_optimizer_set_step_count(sf_optimizer *o, int64_t step) {
    o->step = step < 0 ? 0 : step;
    o->has_momentum_buffer = o->step > 0;
}

/* Learning rate of the update that follows `step` completed updates. */
double sf_optimizer_lr_at(const sf_optimizer *o, int64_t step) {
    const sf_optim_config *c = &o->cfg;
    if (c->schedule == SF_SCHED_CONSTANT) return c->lr;
    if (step < c->warmup_steps) return c->lr * (double)(step + 1) / (double)c->warmup_steps;
    if (c->total_steps <= c->warmup_steps) return c->lr;
    double progress = (double)(step - c->warmup_steps) / (double)(c->total_steps - c->warmup_steps);
    if (progress > 1) progress = 1;
    return c->min_lr + (c->lr - c->min_lr) * 0.5 * (1 + cos(3.14159265358979323846 * progress));
}

sf_status sf_optimizer_step(sf_optimizer *o, double *grad_norm_out, int n_threads) {
    return sf_numeric_of(o->model->cfg.dtype)->optimizer_step(o, grad_norm_out, n_threads);
}
