/* Attention-logit scale: |q . k| / sqrt(d_head) per layer and head, the quantity the paper's
 * sensitivity bound depends on exponentially. */
#include "encoder.h"

/* Per (batch, head) task: max and sum of |q_i . k_j| * scale over its queries and the keys each
 * sees (causal: query i, at position T - Tq + i, sees keys j <= T - Tq + i). */
void SF(task_logits)(double *mx, double *sum, const real *Q, const real *KV, long T, long Tq, long d, long dh,
                     int causal, double scale) {
    double m = 0, s = 0;
    for (long i = 0; i < Tq; i++) {
        const real *q = Q + i * d;
        const long seen = causal ? T - Tq + i + 1 : T;
        for (long j = 0; j < seen; j++) {
            const real *k = KV + j * 2 * d;
            double dot = 0;
            for (long c = 0; c < dh; c++) dot += (double)q[c] * k[c];
            const double a = fabs(dot) * scale;
            m = a > m ? a : m;
            s += a;
        }
    }
    *mx = m;
    *sum = s;
}

sf_status SF(attention_logits)(sf_model *m, const sf_seq_data *data, double *maxs, double *means, int nt) {
    const uint8_t *x = data->x;
    const int B = data->rows, T = data->T;
    const sf_config *c = &m->cfg;
    sf_par par = {sf_resolve_threads(nt), 1};
    acts a;
    sf_status st = SF(encoder_reserve)(m, B, T, par.nt, &a);
    if (st) return st;
    const long d = c->d_model, H = c->n_heads, dh = d / H, tasks = (long)B * H;
    if ((st = sf_check_budget((size_t)tasks * 2 * sizeof(double), "the attention-logit probe"))) return st;
    double *tmax = sf_alloc((size_t)tasks * 2 * sizeof(double)), *tsum = tmax + tasks;
    if (!tmax) return sf_fail(SF_ENOMEM, "could not allocate the attention-logit probe's per-task results");
    SF(encoder_forward)(m, x, &a, &par);
    const double scale = 1.0 / sqrt((double)dh);
    for (long l = 0; l < c->n_layers; l++) {
        const layer_acts *s = &a.layer[l];
        const long Tq = s->Tq;
#pragma omp parallel for num_threads(tasks * Tq * T * d >= 65536 ? par.nt : 1) schedule(static)
        for (long task = 0; task < tasks; task++) {
            const long b = task / H, h = task % H;
            SF(task_logits)(tmax + task, tsum + task, s->q + b * Tq * d + h * dh, s->kv + b * T * 2 * d + h * dh, T,
                            Tq, d, dh, 0, scale);
        }
        for (long h = 0; h < H; h++) { /* reduce over the batch in order */
            double mx = 0, sum = 0;
            for (long b = 0; b < B; b++) {
                mx = tmax[b * H + h] > mx ? tmax[b * H + h] : mx;
                sum += tsum[b * H + h];
            }
            maxs[l * H + h] = mx;
            means[l * H + h] = sum / ((double)B * Tq * T);
        }
    }
    sf_free(tmax);
    m->last_threads = par.used;
    return SF_OK;
}
