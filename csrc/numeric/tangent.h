/* Tangent (forward-mode) kernels for exact Hessian-vector products (Pearlmutter's R-operator),
 * one precision (see real.h). Naming: for a direction v on the parameters, tX is the
 * directional derivative of X, dX the gradient of the loss w.r.t. X, and tdX the directional
 * derivative of dX. A tangent backward kernel computes the primal gradient dX alongside tdX
 * (the pair flows down the layers together), and writes the tangents of parameter gradients,
 * i.e. blocks of H v, which are overwritten (each parameter has one use). Each tangent forward
 * is next to its tangent backward. */
#ifndef SF_TANGENT_H
#define SF_TANGENT_H

#include "kernels.h"

/* A value and its tangent, which the HVP's passes carry together: (X, tX), (dY, tdY), (W, tW). */
typedef struct {
    real *v, *t;
} dual;
typedef struct {
    const real *v, *t;
} cdual;
static inline dual dual_of(real *v, real *t) { return (dual){v, t}; }
static inline cdual cdual_of(const real *v, const real *t) { return (cdual){v, t}; }

/* tangent_layers.c */

/* tY (M,out) = tX W^T + X tW^T + tb;  X (M,in); W (out,in); wt: in*out scratch. */
void SF(linear_tangent_forward)(real *tY, cdual X, cdual W, const real *tb, long M, long in, long out, real *wt,
                                sf_par *par);
/* dX (M,in) (+)= dY W;  tdX (M,in) (+)= tdY W + dY tW;  tdW (out,in) = tdY^T X + dY^T tX;
 * tdb (out) = column sums of tdY. */
void SF(linear_tangent_backward)(dual dX, int accumulate_dx, real *tdW, real *tdb, cdual dY, cdual X, cdual W, long M,
                                 long in, long out, sf_par *par);

/* tY (N,d) for Y = LN(X; g, b); tmean, trstd (N): tangents of the saved mean and 1/std (kept for
 * the tangent backward). X's value, mean, rstd from the forward. mean NULL: RMSNorm (layers.c). */
void SF(layernorm_tangent_forward)(real *tY, real *tmean, real *trstd, cdual X, const real *mean, const real *rstd,
                                   cdual g, const real *tb, long N, long d, sf_par *par);
/* dX (N,d) (+)=, with its tangent; tdg, tdb (d) overwritten. mean, rstd: the saved statistics and
 * their tangents. */
void SF(layernorm_tangent_backward)(dual dX, int accumulate_dx, real *tdg, real *tdb, cdual dY, cdual X, cdual mean,
                                    cdual rstd, cdual g, long N, long d, sf_par *par);

/* tY (n) = act'(X) tX. */
void SF(activation_tangent_forward)(real *tY, const real *tX, const real *X, long n, sf_activation act,
                                    sf_par *par);
/* dX = act'(X) dY;  tdX = act'(X) tdY + act''(X) tX dY  (in place allowed: dX == dY). */
void SF(activation_tangent_backward)(dual dX, cdual dY, cdual X, long n, sf_activation act, sf_par *par);

/* tout (B) = tX w + X tw + tb. */
void SF(readout_tangent_forward)(real *tout, cdual X, cdual w, const real *tb, long B, long d);
/* dX (B,d) = dout w;  tdX = tdout w + dout tw;  tdw (d), tdb (1) overwritten. */
void SF(readout_tangent_backward)(dual dX, real *tdw, real *tdb, cdual dout, cdual X, cdual w, long B, long d);

/* tdout (B): tangent of d(mean loss)/d(out) for output tangents tout. */
void SF(loss_tangent)(real *tdout, const real *out, const real *tout, long B, sf_loss loss);

/* tangent_attention.c (shapes as attention.c) */

/* Scratch (elements) the tangent attention kernels need for nt threads. */
long SF(attention_tangent_scratch)(long T, long Tq, long d, long H, int nt);
/* tctx (B,Tq,d), tP (B,H,Tq,T) (saved) from Q, KV and their tangents and the forward's P. */
void SF(attention_tangent_forward)(real *tctx, real *tP, cdual Q, cdual KV, const real *P, long B, long T, long Tq,
                                   long d, long H, real *scratch, sf_par *par);
/* dQ (B,Tq,d) and dKV (B,T,2d) with their tangents, overwritten. */
void SF(attention_tangent_backward)(dual dQ, dual dKV, cdual dctx, cdual P, cdual Q, cdual KV, long B, long T,
                                    long Tq, long d, long H, real *scratch, sf_par *par);

/* out (P) = the running mean over batches of one (P): batch b of n_batches, added in a fixed order. */
static inline void running_mean_add(real *out, const real *one, long P, int b, int n_batches) {
    const real scale = (real)(1.0 / n_batches);
    if (b == 0)
        for (long j = 0; j < P; j++) out[j] = one[j] * scale;
    else
        for (long j = 0; j < P; j++) out[j] += one[j] * scale;
}

#endif
