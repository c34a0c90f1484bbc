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

/* tangent_layers.c */

/* tY (M,out) = tX W^T + X tW^T + tb;  X, tX (M,in); W, tW (out,in); wt: in*out scratch. */
void SF(linear_tangent_forward)(real *tY, const real *tX, const real *X, const real *W, const real *tW,
                                const real *tb, long M, long in, long out, real *wt, sf_par *par);
/* dX (M,in) (+)= dY W;  tdX (M,in) (+)= tdY W + dY tW;  tdW (out,in) = tdY^T X + dY^T tX;
 * tdb (out) = column sums of tdY. */
void SF(linear_tangent_backward)(real *dX, real *tdX, int accumulate_dx, real *tdW, real *tdb, const real *dY,
                                 const real *tdY, const real *X, const real *tX, const real *W, const real *tW,
                                 long M, long in, long out, sf_par *par);

/* tY (N,d) for Y = LN(X; g, b); tmean, trstd (N): tangents of the saved mean and 1/std (kept for
 * the tangent backward). X, mean, rstd from the forward. */
void SF(layernorm_tangent_forward)(real *tY, real *tmean, real *trstd, const real *tX, const real *X,
                                   const real *mean, const real *rstd, const real *g, const real *tg,
                                   const real *tb, long N, long d, sf_par *par);
/* dX, tdX (N,d) (+)=; tdg, tdb (d) overwritten. */
void SF(layernorm_tangent_backward)(real *dX, real *tdX, int accumulate_dx, real *tdg, real *tdb,
                                    const real *dY, const real *tdY, const real *X, const real *tX,
                                    const real *mean, const real *rstd, const real *tmean, const real *trstd,
                                    const real *g, const real *tg, long N, long d, sf_par *par);

/* tY (n) = act'(X) tX. */
void SF(activation_tangent_forward)(real *tY, const real *tX, const real *X, long n, sf_activation act,
                                    sf_par *par);
/* dX = act'(X) dY;  tdX = act'(X) tdY + act''(X) tX dY  (in place allowed: dX == dY, tdX == tdY). */
void SF(activation_tangent_backward)(real *dX, real *tdX, const real *dY, const real *tdY, const real *X,
                                     const real *tX, long n, sf_activation act, sf_par *par);

/* tout (B) = tX w + X tw + tb. */
void SF(readout_tangent_forward)(real *tout, const real *tX, const real *X, const real *w, const real *tw,
                                 const real *tb, long B, long d);
/* dX (B,d) = dout w;  tdX = tdout w + dout tw;  tdw (d), tdb (1) overwritten. */
void SF(readout_tangent_backward)(real *dX, real *tdX, real *tdw, real *tdb, const real *dout, const real *tdout,
                                  const real *X, const real *tX, const real *w, const real *tw, long B, long d);

/* tdout (B): tangent of d(mean loss)/d(out) for output tangents tout. */
void SF(loss_tangent)(real *tdout, const real *out, const real *tout, long B, sf_loss loss);

/* tangent_attention.c (shapes as attention.c) */

/* Scratch (elements) the tangent attention kernels need for nt threads. */
long SF(attention_tangent_scratch)(long T, long Tq, long d, long H, int nt);
/* tctx (B,Tq,d), tP (B,H,Tq,T) (saved) from tQ, tKV and the forward's P, Q, KV. */
void SF(attention_tangent_forward)(real *tctx, real *tP, const real *tQ, const real *tKV, const real *P,
                                   const real *Q, const real *KV, long B, long T, long Tq, long d, long H,
                                   real *scratch, sf_par *par);
/* dQ, tdQ (B,Tq,d) and dKV, tdKV (B,T,2d) overwritten. */
void SF(attention_tangent_backward)(real *dQ, real *dKV, real *tdQ, real *tdKV, const real *dctx,
                                    const real *tdctx, const real *P, const real *tP, const real *Q,
                                    const real *tQ, const real *KV, const real *tKV, long B, long T, long Tq,
                                    long d, long H, real *scratch, sf_par *par);

/* out (P) = the running mean over batches of one (P): batch b of n_batches, added in a fixed order. */
static inline void running_mean_add(real *out, const real *one, long P, int b, int n_batches) {
    const real scale = (real)(1.0 / n_batches);
    if (b == 0)
        for (long j = 0; j < P; j++) out[j] = one[j] * scale;
    else
        for (long j = 0; j < P; j++) out[j] += one[j] * scale;
}

#endif
