/* Helpers shared by the probes of both model kinds (probes.c, seq2seq_probes.c). */
#ifndef SF_PROBES_H
#define SF_PROBES_H

#include "encoder.h"

/* Per sample: max and mean over the rows [t0, rows_per_seq) of each sequence of 1/std(row), with
 * std = sqrt(sum (x - mean)^2 / (d - 1)) (official: torch.std, unbiased, no eps) or
 * sqrt(sum (x - mean)^2 / d + eps) (theory: what LayerNorm divides by). X (B, rows_per_seq, d). */
void SF(inv_std_stats)(double *maxs, double *means, const real *X, long B, long rows_per_seq, long t0, long d,
                       int theory, double eps, const sf_par *par);

#endif
