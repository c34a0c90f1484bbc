/* Helpers shared by the probes of both model kinds (probes.c, seq2seq_probes.c). */
#ifndef SF_PROBES_H
#define SF_PROBES_H

#include "encoder.h"

/* Per sample: max and mean over the rows [t0, rows_per_seq) of each sequence of 1/std(row), with
 * std = sqrt(sum (x - mean)^2 / (d - 1)) (official: torch.std, unbiased, no eps) or
 * sqrt(sum (x - mean)^2 / d + eps) (theory: what LayerNorm divides by). X (B, rows_per_seq, d).
 * RMSNorm's analogue (c->norm_type rms): 1/RMS(row), RMS = sqrt(sum x^2 / d) (official: nothing is
 * centred, so there is no unbiased form) or sqrt(sum x^2 / d + eps) (theory: what RMSNorm divides by). */
void SF(inv_std_stats)(double *maxs, double *means, const real *X, long B, long rows_per_seq, long t0, long d,
                       int theory, const sf_config *c, const sf_par *par);

/* logits.c: one attention module's |q . k| / sqrt(d_head) with queries q (B*Tq,d) and keys|values kv
 * (B*Tk,2d): maxs, means (H) over the batch and every (query, visible key) pair (causal: query i,
 * at position Tk - Tq + i, sees keys j <= Tk - Tq + i). stats: 2 B H doubles of scratch. */
void SF(module_logits)(const sf_config *c, double *maxs, double *means, double *stats, const real *q, const real *kv,
                       long B, long Tq, long Tk, int causal, sf_par *par);

/* The input of an encoder-stack layer's LayerNorm k (0: norm1, 1: norm2), which the official
 * hooks see: post-LN norm1(r1), norm2(r2); pre-LN norm1(x), norm2(h). */
static inline const real *layer_norm_input(const sf_config *c, const layer_acts *s, int k) {
    const int pre = c->norm == SF_NORM_PRE;
    return k == 0 ? (pre ? s->x : s->r1) : (pre ? s->h : s->r2);
}

#endif
