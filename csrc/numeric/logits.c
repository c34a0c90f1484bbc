/* Attention-logit scale: |q . k| / sqrt(d_head) per layer and head, the quantity the paper's
 * sensitivity bound depends on exponentially. */
#include "probes.h"

/* Per (batch, head) task: max and sum of |q_i . k_j| * scale over its queries and the keys each
 * sees (causal: query i, at position T - Tq + i, sees keys j <= T - Tq + i). */
static void task_logits(double *mx, double *sum, const real *Q, const real *KV, long T, long Tq, long d, long dh,
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

typedef struct {
    double *stats; /* per task: max, then (after `tasks` entries) sum */
    const real *q, *kv;
    long tasks, Tq, Tk, d, H;
    int causal;
} logits_args;

static void logits_task(const void *args, long task, real *work) {
    const logits_args *a = args;
    const head_slices sl = head_slices_of(task, a->H, a->Tq, a->Tk, a->Tk, a->d);
    (void)work;
    task_logits(a->stats + task, a->stats + a->tasks + task, a->q + sl.q, a->kv + sl.kv, a->Tk, a->Tq, a->d,
                a->d / a->H, a->causal, 1.0 / sqrt((double)(a->d / a->H)));
}

void SF(module_logits)(const sf_config *c, double *maxs, double *means, double *stats, const real *q, const real *kv,
                       long B, long Tq, long Tk, int causal, sf_par *par) {
    const long d = c->d_model, H = c->n_heads, tasks = B * H;
    const logits_args args = {stats, q, kv, tasks, Tq, Tk, d, H, causal};
    SF(for_each_head_task)(tasks, tasks * Tq * Tk * d >= 65536 ? par->nt : 1, NULL, 0, logits_task, &args, par);
    const double pairs = causal ? (double)Tq * (2.0 * Tk - Tq + 1) / 2 : (double)Tq * Tk;
    for (long h = 0; h < H; h++) { /* reduce over the batch in order */
        double mx = 0, sum = 0;
        for (long b = 0; b < B; b++) {
            mx = stats[b * H + h] > mx ? stats[b * H + h] : mx;
            sum += stats[tasks + b * H + h];
        }
        maxs[h] = mx;
        means[h] = sum / (B * pairs);
    }
}

sf_status SF(attention_logits)(sf_model *m, const sf_seq_data *data, double *maxs, double *means, int nt) {
    const uint8_t *x = data->x;
    const int B = data->rows, T = data->T;
    const sf_config *c = &m->cfg;
    sf_par par = {sf_resolve_threads(nt), 1};
    acts a;
    sf_status st = SF(encoder_reserve)(m, B, T, par.nt, &a);
    if (st) return st;
    const long H = c->n_heads, tasks = (long)B * H;
    if ((st = sf_check_budget((size_t)tasks * 2 * sizeof(double), "the attention-logit probe"))) return st;
    double *stats = sf_alloc((size_t)tasks * 2 * sizeof(double));
    if (!stats) return sf_fail(SF_ENOMEM, "could not allocate the attention-logit probe's per-task results");
    SF(encoder_forward)(m, x, &a, &par);
    for (long l = 0; l < c->n_layers; l++) {
        const layer_acts *s = &a.layer[l];
        SF(module_logits)(c, maxs + l * H, means + l * H, stats, s->q, s->kv, B, s->Tq, T, 0, &par);
    }
    sf_free(stats);
    m->last_threads = par.used;
    return SF_OK;
}
