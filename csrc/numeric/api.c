/* The numeric entry points behind sf_forward and sf_loss_and_grad for one build, and the build's
 * table of entry points. */
#include "encoder.h"

#include <string.h>

/* Workspace for (B, T), token check, forward: what both entry points start with. */
static sf_status checked_forward(sf_model *m, const uint8_t *x, int B, int T, int forward_only, acts *a,
                                 sf_par *par) {
    sf_status st = SF(encoder_reserve)(m, B, T, par->nt, a);
    a->forward_only = forward_only;
    a->loss_only = 1;
    if (!st) st = sf_check_tokens(x, (int64_t)B * T);
    if (!st) SF(encoder_forward)(m, x, a, par);
    return st;
}

sf_status SF(forward)(sf_model *m, const sf_seq_data *d, void *out, int nt) {
    const uint8_t *x = d->x;
    const int B = d->rows, T = d->T;
    sf_par par = {sf_resolve_threads(nt), 1};
    acts a;
    sf_status st = checked_forward(m, x, B, T, 1, &a, &par);
    if (st) return st;
    memcpy(out, a.out, (size_t)B * sizeof(real));
    m->last_threads = par.used;
    return SF_OK;
}

sf_status SF(loss_and_grad)(sf_model *m, const sf_seq_data *d, sf_loss loss, int grad, double *loss_out, void *out,
                            int nt) {
    const uint8_t *x = d->x;
    const void *y = d->y;
    const int B = d->rows, T = d->T;
    sf_par par = {sf_resolve_threads(nt), 1};
    acts a;
    sf_status st = checked_forward(m, x, B, T, 0, &a, &par); /* a loss equals its value with gradients, bit for bit */
    if (st) return st;
    *loss_out = SF(loss_forward_backward)(grad ? a.g_out : NULL, a.out, (const real *)y, B, loss);
    if (grad) SF(encoder_backward)(m, x, &a, &par);
    if (out) memcpy(out, a.out, (size_t)B * sizeof(real));
    m->last_threads = par.used;
    return SF_OK;
}

/* This build's table of entry points (numeric.h), e.g. numeric_f32_v3. */
#define SF_NUMERIC_ENTRY(ret, name, params) .name = SF(name),
#define SF_SEQ2SEQ_ENTRY(ret, name, params) .name = SF(seq2seq_##name),
const sf_numeric SF(numeric) = {SF_NUMERIC_ENTRY_POINTS(SF_NUMERIC_ENTRY) .kinds = {
    [SF_MODEL_ENCODER] = {SF_MODEL_OPERATIONS(SF_NUMERIC_ENTRY)},
    [SF_MODEL_SEQ2SEQ] = {SF_MODEL_OPERATIONS(SF_SEQ2SEQ_ENTRY)},
}};
