/* Optimizer updates with torch.optim's single-tensor semantics (the CPU default), elementwise
 * over the flat parameter buffer; any partition of it gives the same bits. */
#include "kernels.h"

#include <string.h>

#define CHUNK 4096

/* Global L2 norm of the gradient: chunk sums in double, added in chunk order. */
static double grad_norm(const real *g, long n, sf_par *par) {
    const long chunks = (n + CHUNK - 1) / CHUNK;
    double *part = sf_alloc((size_t)chunks * sizeof(double));
    if (!part) { /* still deterministic, just serial */
        double s = 0;
        for (long i = 0; i < n; i++) s += (double)g[i] * g[i];
        return sqrt(s);
    }
#pragma omp parallel for num_threads(n >= 65536 ? par->nt : 1) schedule(static)
    for (long c = 0; c < chunks; c++) {
        const long lo = c * CHUNK, hi = lo + CHUNK < n ? lo + CHUNK : n;
        double s = 0;
        for (long i = lo; i < hi; i++) s += (double)g[i] * g[i];
        part[c] = s;
    }
    double total = 0;
    for (long c = 0; c < chunks; c++) total += part[c];
    sf_free(part);
    return sqrt(total);
}

typedef struct {
    const sf_optim_config *cfg;
    double lr, step_size, bc2_sqrt;
    int first;  /* SGD: the momentum buffer starts as a copy of the first gradient */
} update_args;

/* Computes the update of n entries; with commit=0 only counts entries that would become
 * non-finite (parameter or moment), so a bad step can be refused before anything changes. */
static long update_range(const update_args *u, real *p, const real *g, real *m, real *v, long n, int decay,
                         int commit) {
    const sf_optim_config *c = u->cfg;
    const double wd = decay ? c->weight_decay : 0.0;
    long bad = 0;
    if (c->kind == SF_OPT_SGD) {
        const real lr = (real)u->lr, mom = (real)c->momentum, damp = (real)(1 - c->dampening);
        for (long i = 0; i < n; i++) {
            real gi = g[i], mi = m[i];
            if (wd != 0) gi = gi + (real)wd * p[i];
            if (c->momentum != 0) {
                mi = u->first ? gi : mi * mom + damp * gi;
                gi = c->nesterov ? gi + mom * mi : mi;
            }
            const real pi = p[i] + (-lr) * gi;
            if (commit) p[i] = pi, m[i] = mi;
            else bad += !isfinite(pi) || !isfinite(mi);
        }
        return bad;
    }
    const real b1w = (real)(1 - c->beta1), b2 = (real)c->beta2, b2w = (real)(1 - c->beta2);
    const real neg_step = (real)(-u->step_size), bc2s = (real)u->bc2_sqrt, eps = (real)c->eps;
    const real decay_factor = (real)(1 - u->lr * wd);
    for (long i = 0; i < n; i++) {
        real gi = g[i], pi = p[i];
        if (wd != 0) {
            if (c->kind == SF_OPT_ADAMW) pi = pi * decay_factor;
            else gi = gi + (real)wd * pi;
        }
        const real mi = m[i] + b1w * (gi - m[i]);      /* torch lerp_ with weight < 0.5 */
        const real vi = v[i] * b2 + b2w * gi * gi;     /* mul_ then addcmul_ */
        const real denom = rsqrt(vi) / bc2s + eps;
        pi = pi + neg_step * (mi / denom);
        if (commit) p[i] = pi, m[i] = mi, v[i] = vi;
        else bad += !isfinite(pi) || !isfinite(mi) || !isfinite(vi);
    }
    return bad;
}

/* One pass of the update over the flat buffer in fixed chunks (tensor-aware for the decay flag). */
static long update_all(const sf_optimizer *o, const update_args *u, int commit, long *chunk_bad, sf_par *par) {
    const sf_model *model = o->model;
    real *p = (real *)model->params, *g = (real *)model->grads, *m = (real *)o->m, *v = (real *)o->v;
    const long n = model->n_params, chunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for num_threads(n >= (1 << 17) ? par->nt : 1) schedule(static)
    for (long ch = 0; ch < chunks; ch++) {
        const long lo = ch * CHUNK, hi = lo + CHUNK < n ? lo + CHUNK : n;
        long bad = 0;
        for (int ti = 0; ti < model->n_tensors; ti++) {
            const sf_tensor_info *tt = &model->tensors[ti];
            const long a = tt->offset > lo ? tt->offset : lo;
            const long b = tt->offset + tt->size < hi ? tt->offset + tt->size : hi;
            if (a < b) bad += update_range(u, p + a, g + a, m + a, v + a, b - a, o->decay[ti], commit);
        }
        chunk_bad[ch] = bad;
    }
    long total = 0;
    for (long ch = 0; ch < chunks; ch++) total += chunk_bad[ch];
    return total;
}

sf_status SF(optimizer_step)(sf_optimizer *o, double *grad_norm_out, int nt) {
    sf_model *model = o->model;
    const sf_optim_config *c = &o->cfg;
    sf_par par = {sf_resolve_threads(nt), 1};
    real *g = (real *)model->grads;
    const long n = model->n_params;
    const double norm = grad_norm(g, n, &par);
    if (grad_norm_out) *grad_norm_out = norm;
    if (!isfinite(norm)) return sf_fail(SF_ENUMERIC, "the gradient is not finite (norm %g); parameters left unchanged", norm);
    if (c->clip_norm > 0) { /* torch.nn.utils.clip_grad_norm_ */
        const double coef = c->clip_norm / (norm + 1e-6);
        if (coef < 1) {
            const real cf = (real)coef;
            for (long i = 0; i < n; i++) g[i] *= cf;
        }
    }
    const int64_t t = o->step + 1;
    update_args u = {c, sf_optimizer_lr_at(o, o->step), 0, 0, !o->has_momentum_buffer};
    u.step_size = u.lr / (1 - pow(c->beta1, (double)t));
    u.bc2_sqrt = sqrt(1 - pow(c->beta2, (double)t));
    long *chunk_bad = sf_alloc((size_t)((n + CHUNK - 1) / CHUNK) * sizeof(long));
    if (!chunk_bad) return sf_fail(SF_ENOMEM, "out of memory in the optimizer step");
    const long bad = update_all(o, &u, 0, chunk_bad, &par);
    if (!bad) update_all(o, &u, 1, chunk_bad, &par);
    sf_free(chunk_bad);
    if (bad)
        return sf_fail(SF_ENUMERIC, "the update would make %ld parameter or optimizer-state entries non-finite "
                       "(learning rate %g too large?); parameters left unchanged", bad, u.lr);
    o->step = t;
    if (c->kind == SF_OPT_SGD && c->momentum != 0) o->has_momentum_buffer = 1;
    model->last_threads = par.used;
    return SF_OK;
}
