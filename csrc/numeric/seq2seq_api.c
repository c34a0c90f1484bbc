/* The seq2seq model's forward and loss: sf_forward and sf_loss_and_grad on a model of kind SF_MODEL_SEQ2SEQ. */
#include "seq2seq.h"

#include <string.h>

sf_status SF(seq2seq_forward)(sf_model *m, const sf_seq_data *d, void *out, int nt) {
    sf_par par = {sf_resolve_threads(nt), 1};
    s2s_acts a;
    sf_status st = SF(s2s_reserve)(m, d->rows, d->T, d->S, par.nt, &a);
    if (st) return st;
    s2s_params p;
    SF(s2s_params)(m, (real *)m->params, &p);
    SF(s2s_set_decoder)(&a, d->dec, d->S);
    SF(s2s_encode)(m, &p, d->x, &a, &par);
    SF(s2s_decode)(m, &p, &a, &par);
    memcpy(out, a.out, (size_t)d->rows * d->S * sizeof(real));
    m->last_threads = par.used;
    return SF_OK;
}

sf_status SF(seq2seq_loss_and_grad)(sf_model *m, const sf_seq_data *d, sf_loss loss, int grad, double *loss_out,
                                    void *out, int nt) {
    sf_par par = {sf_resolve_threads(nt), 1};
    s2s_acts a;
    sf_status st = SF(s2s_reserve)(m, d->rows, d->T, d->L, par.nt, &a);
    if (st) return st;
    s2s_params p;
    SF(s2s_params)(m, (real *)m->params, &p);
    *loss_out = SF(s2s_batch_loss)(m, &p, d, 0, d->rows, loss, grad, &a, &par);
    if (out) memcpy(out, a.out, (size_t)d->rows * d->L * sizeof(real));
    m->last_threads = par.used;
    return SF_OK;
}
