/* Probes of a trained model: Gaussian sharpness (expected loss increase under parameter noise)
 * and LayerNorm blowup (the normalisation factors of the LayerNorm inputs). */
#include "probes.h"
#include "seq2seq.h"
#include "../rng.h"

#include <string.h>

/* The workspace of either model kind for batches of B rows. */
typedef struct {
    acts enc;
    s2s_acts s2s;
    s2s_params p;
} probe_work;

static sf_status reserve_rows(sf_model *m, const sf_seq_data *d, int B, int nt, probe_work *w) {
    if (m->cfg.kind == SF_MODEL_SEQ2SEQ) {
        sf_status st = SF(s2s_reserve)(m, B, d->T, d->L, nt, &w->s2s);
        if (!st) SF(s2s_params)(m, (real *)m->params, &w->p);
        return st;
    }
    sf_status st = SF(encoder_reserve)(m, B, d->T, nt, &w->enc);
    w->enc.forward_only = 1; /* losses only */
    return st;
}

/* Mean loss of the current parameters on batch b (B rows) of d. */
static double batch_loss(sf_model *m, const sf_seq_data *d, int b, int B, sf_loss loss, probe_work *w, sf_par *par) {
    if (m->cfg.kind == SF_MODEL_SEQ2SEQ) return SF(s2s_batch_loss)(m, &w->p, d, b, B, loss, 0, &w->s2s, par);
    SF(encoder_forward)(m, d->x + (size_t)b * B * d->T, &w->enc, par);
    return SF(loss_forward_backward)(NULL, w->enc.out, (const real *)d->y + (size_t)b * B, B, loss);
}

/* theta = backup + sigma * z on the masked tensors. z is explicit, or counter-based normals keyed by the
 * draw, the tensor's index and the element's index in its tensor: a tensor's noise never depends on the
 * other tensors' sizes or the mask (a model with more positions, whose positional table is excluded, gets
 * the same noise on every other tensor), nor on the thread count. Normals come in Box-Muller pairs
 * (elements 2j, 2j+1 of a tensor), drawn a block at a time (vectorised, rng.h), and the pairs of all
 * masked tensors are split among the threads. */
enum { NOISE_BLOCK = 64 }; /* pairs drawn at a time */

SF_VECTOR_ISA static void perturb_pairs(real *theta, const real *backup, long size, long a, long b, double sigma,
                                        const real *z, uint64_t key) {
    double zz[2 * NOISE_BLOCK];
    for (long j0 = a; j0 < b; j0 += NOISE_BLOCK) {
        const long n = b - j0 < NOISE_BLOCK ? b - j0 : NOISE_BLOCK, i0 = 2 * j0;
        const long elements = i0 + 2 * n <= size ? 2 * n : size - i0; /* an odd tensor's last pair has one */
        if (!z) sf_normal_pairs(key, (uint64_t)j0, n, zz);
        for (long e = 0; e < elements; e++)
            theta[i0 + e] = (real)(backup[i0 + e] + sigma * (z ? (double)z[i0 + e] : zz[e]));
    }
}

static void perturb(sf_model *m, real *theta, const real *backup, const unsigned char *mask, double sigma,
                    const real *z, uint64_t key, sf_par *par) {
    long pairs = 0; /* pair p of the masked tensors is pair p - first[t] of tensor t */
    for (int t = 0; t < m->n_tensors; t++)
        if (mask[t]) pairs += (m->tensors[t].size + 1) / 2;
    const int nt = pairs >= 16384 ? par->nt : 1;
    (void)nt; /* unused in a serial build */
#pragma omp parallel num_threads(nt)
    {
        long lo, hi, first = 0;
        sf_partition(pairs, 1, SF_THREAD_ID(), SF_TEAM_SIZE(), &lo, &hi);
        for (int t = 0; t < m->n_tensors && lo < hi; t++) {
            if (!mask[t]) continue;
            const sf_tensor_info *ti = &m->tensors[t];
            const long n = (ti->size + 1) / 2, a = lo > first ? lo - first : 0, b = hi - first < n ? hi - first : n;
            if (a < b)
                perturb_pairs(theta + ti->offset, backup + ti->offset, ti->size, a, b, sigma,
                              z ? z + ti->offset : NULL, sf_rand64(key, (uint64_t)t));
            first += n;
        }
    }
}

sf_status SF(sharpness)(sf_model *m, const sf_seq_data *d, int n_batches, sf_loss loss, double sigma, int repeats,
                        uint64_t seed, const unsigned char *mask, const void *noise_, int shared_draws, double *base,
                        double *perturbed, int nt, sf_stop_hook stop, void *stop_ctx) {
    const real *noise = noise_;
    const int B = d->rows / n_batches;
    sf_par par = {sf_resolve_threads(nt), 1};
    probe_work w;
    const size_t bytes = (size_t)m->n_params * sizeof(real);
    sf_status st = sf_check_budget(bytes, "the sharpness probe's perturbed parameters");
    if (st) return st;
    /* The model computes from a private perturbed copy while the probe runs: its own parameters
     * (which NumPy views expose) are never written, so nothing can observe them perturbed and
     * nothing needs restoring, whatever stops the probe. */
    real *backup = (real *)m->params, *theta = sf_alloc(bytes);
    if (!theta) return sf_fail(SF_ENOMEM, "could not allocate the sharpness probe's perturbed parameters");
    memcpy(theta, backup, bytes);
    m->params = theta;
    if ((st = reserve_rows(m, d, B, par.nt, &w))) goto done;
    for (int b = 0; b < n_batches; b++) base[b] = batch_loss(m, d, b, B, loss, &w, &par);
    for (int r = 0; r < repeats && st == SF_OK; r++) {
        if (stop && stop(stop_ctx)) {
            st = sf_fail(SF_EINTR, "interrupted after %d of %d draws", r, repeats);
            break;
        }
        for (int b = 0; b < n_batches; b++) {
            /* shared: draw r serves every batch (the official code's reuse); else draw (r, b) */
            if (b == 0 || !shared_draws) {
                const uint64_t draw = shared_draws ? (uint64_t)r : (uint64_t)r * n_batches + b;
                perturb(m, theta, backup, mask, sigma, noise ? noise + (size_t)r * m->n_params : NULL,
                        sf_key(seed, SF_STREAM_NOISE, draw), &par);
            }
            perturbed[(size_t)r * n_batches + b] = batch_loss(m, d, b, B, loss, &w, &par);
        }
    }
    m->last_threads = par.used;
done:
    m->params = backup;
    sf_free(theta);
    return st;
}

/* ---- LayerNorm blowup ------------------------------------------------------------------------ */

void SF(inv_std_stats)(double *maxs, double *means, const real *X, long B, long rows_per_seq, long t0, long d,
                       int theory, const sf_config *c, const sf_par *par) {
    const double eps = c->ln_eps;
    const int centre = c->norm_type != SF_NORM_RMS;
#pragma omp parallel for num_threads(B * (rows_per_seq - t0) * d >= 65536 ? par->nt : 1) schedule(static)
    for (long b = 0; b < B; b++) {
        double mx = 0, sum = 0;
        for (long t = t0; t < rows_per_seq; t++) {
            const real *x = X + (b * rows_per_seq + t) * d;
            double s = 0, v = 0;
            for (long j = 0; centre && j < d; j++) s += x[j];
            const double mu = s / d;
            for (long j = 0; j < d; j++) v += (x[j] - mu) * (x[j] - mu);
            const double inv = theory ? 1.0 / sqrt(v / d + eps) : 1.0 / sqrt(v / (centre ? d - 1 : d));
            mx = t == t0 || inv > mx ? inv : mx;
            sum += inv;
        }
        maxs[b] = mx;
        means[b] = sum / (rows_per_seq - t0);
    }
}

int SF(ln_count)(const sf_config *c) {
    return c->norm == SF_NORM_NONE ? 0 : 2 * c->n_layers + (c->final_norm ? 1 : 0);
}

sf_status SF(ln_blowup)(sf_model *m, const sf_seq_data *data, int theory, double *maxs, double *means, int nt) {
    const uint8_t *x = data->x;
    const int B = data->rows, T = data->T;
    const sf_config *c = &m->cfg;
    if (c->norm == SF_NORM_NONE) return sf_fail(SF_EINVAL, "a model with norm='none' has no LayerNorm to probe");
    if (!theory && c->d_model < 2) return sf_fail(SF_EINVAL, "the unbiased std needs d_model >= 2");
    sf_par par = {sf_resolve_threads(nt), 1};
    acts a;
    sf_status st = SF(encoder_reserve)(m, B, T, par.nt, &a);
    if (st) return st;
    SF(encoder_forward)(m, x, &a, &par);
    const long d = c->d_model, L = c->n_layers;
    const int pre = c->norm == SF_NORM_PRE;
    for (long l = 0; l < L; l++) {
        const layer_acts *s = &a.layer[l];
        /* In the last layer only the readout position counts (rows_per_seq = Tq = 1). */
        const real *in1 = layer_norm_input(c, s, 0), *in2 = layer_norm_input(c, s, 1);
        const long rows1 = pre ? T : s->Tq, first1 = pre && s->Tq < T ? T - 1 : 0;
        double *mx = maxs + 2 * l * B, *mn = means + 2 * l * B;
        SF(inv_std_stats)(mx, mn, in1, B, rows1, first1, d, theory, c, &par);
        SF(inv_std_stats)(mx + B, mn + B, in2, B, s->Tq, 0, d, theory, c, &par);
    }
    if (c->final_norm)
        SF(inv_std_stats)(maxs + 2 * L * B, means + 2 * L * B, a.final_in, B, 1, 0, d, theory, c, &par);
    m->last_threads = par.used;
    return SF_OK;
}
