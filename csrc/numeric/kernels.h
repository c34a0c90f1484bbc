/* Numeric kernels of one precision (see real.h). Conventions, as in llm.c: outputs first,
 * then inputs, then sizes; a shape comment per tensor; each forward is next to its backward
 * in the source. Gradients of parameters are overwritten (each parameter has one use). */
#ifndef SF_KERNELS_H
#define SF_KERNELS_H

#include "../engine.h"
#include "../threads.h"
#include "real.h"
#include "numeric.h"

/* The vector paths' row kernels (softmax, LayerNorm statistics, narrow-head attention, pooling): AVX2+FMA
 * code in both the x86-64-v3 and the x86-64-v4 build (so the two give the same bits), portable code in
 * the baseline build; everything else is portable code in every build. */
#if SF_CPU_PATH >= 1
#define SF_VECTOR_ISA __attribute__((target("arch=x86-64-v3")))
#else
#define SF_VECTOR_ISA
#endif

/* Start loading n contiguous elements from row into cache, a line at a time (for reading):
 * operands written long before would otherwise be demand-missed line by line. */
static inline void prefetch_row(const real *row, long n) {
    for (long j = 0; j < n; j += 64 / (long)sizeof(real)) __builtin_prefetch(row + j, 0, 2);
}

/* gemm.c */
void SF(gemm)(long M, long N, long K, const real *A, long sai, long sak, const real *B, long ldb,
              real *C, long ldc, const real *bias, int accumulate, sf_par *par);
/* The same (no bias, C overwritten) that also gives asum (M) = the row sums of A, in double: a
 * Linear layer's weight-gradient GEMM (A = dY^T) yields its bias gradient without another pass. */
void SF(gemm_row_sums)(long M, long N, long K, const real *A, long sai, long sak, const real *B, long ldb, real *C,
                       long ldc, double *asum, sf_par *par);
/* The same with B given transposed: B(k, j) = Bt[j * ldbt + k] (e.g. K^T as K is stored). */
void SF(gemm_bt)(long M, long N, long K, const real *A, long sai, long sak, const real *Bt, long ldbt,
                 real *C, long ldc, const real *bias, int accumulate, sf_par *par);

/* linear.c: Y (M,out) = X (M,in) W^T + b, W (out,in); wt is scratch of in*out, which gets W^T
 * (transpose_weight: the GEMM's B operand, contiguous along the output features). */
void SF(transpose_weight)(real *wt, const real *W, long out, long in);
void SF(linear_forward)(real *Y, const real *X, const real *W, const real *b, long M, long in, long out,
                        real *wt, sf_par *par);
/* dX (M,in) (+)= dY W;  dW (out,in) = dY^T X;  db (out) = column sums of dY. Any output may be NULL. */
void SF(linear_backward)(real *dX, int accumulate_dx, real *dW, real *db, const real *dY, const real *X,
                         const real *W, long M, long in, long out, sf_par *par);
/* out (N) = column sums of Y (M,N) (ldy = row stride), in row order. */
void SF(column_sums)(real *out, const real *Y, long M, long N, long ldy, sf_par *par);

/* layers.c */

/* One embedded row x (d) of token v at position t: [tok[v] ; pos[t]] (concat: tables d/2 wide), or
 * tok[v] + pos[t] (tables d wide; pos NULL: tok[v], no positions). */
static inline void embed_row(real *x, const real *tok, const real *pos, long v, long t, long d, int concat) {
    const long w = concat ? d / 2 : d;
    for (long j = 0; j < w; j++) x[j] = tok[v * w + j];
    if (concat) for (long j = 0; j < w; j++) x[w + j] = pos[t * w + j];
    else if (pos) for (long j = 0; j < d; j++) x[j] += pos[t * d + j];
}

/* The gradient g (d) of one embedded row added to its token's row of dtok and its position's of dpos
 * (NULL: no learned positions). */
static inline void embed_row_backward_add(real *dtok, real *dpos, const real *g, long v, long t, long d, int concat) {
    const long w = concat ? d / 2 : d;
    for (long j = 0; j < w; j++) dtok[v * w + j] += g[j];
    if (dpos) for (long j = 0; j < w; j++) dpos[t * w + j] += g[(concat ? w : 0) + j];
}

/* X (B,T,d): row (b, t) embeds token tokens[b*T + t] at position t (embed_row). */
void SF(embedding_forward)(real *X, const uint8_t *tokens, const real *tok, const real *pos, long B,
                           long T, long d, int concat, sf_par *par);
/* dtok (V rows), dpos (>= T rows, or NULL) += the gradient of X (B,T,d) (tables that several
 * embeddings share: the seq2seq encoder and decoder). */
void SF(embedding_backward_add)(real *dtok, real *dpos, const real *dX, const uint8_t *tokens, long B,
                                long T, long V, long d, int concat, sf_par *par);
/* Rotary position embedding (rotate-half, per head): row r of X (rows ld apart) is at position
 * t0 + r % period; each head's pair (i, i + dh/2) of its first d columns turns by the angle of
 * that position and i (cs: the model's (cos, sin) table, dh/2 pairs per position). inverse turns
 * back: a rotation's backward (and its tangent's) is its inverse. */
void SF(rope_rows)(real *X, long ld, long rows, long period, long t0, long d, long H, const double *cs, int inverse,
                   sf_par *par);
void SF(layernorm_forward)(real *Y, real *mean, real *rstd, const real *X, const real *g, const real *b,
                           double eps, long N, long d, sf_par *par);
/* dX = residual (NULL, dX itself, or another (N,d) gradient) + the input gradient; dg, db (may
 * be NULL) summed through partials (layernorm_partials(N, d) doubles; NULL if dg and db are). */
void SF(layernorm_backward)(real *dX, const real *residual, real *dg, real *db, const real *dY,
                            const real *X, const real *mean, const real *rstd, const real *g, long N,
                            long d, double *partials, sf_par *par);
long SF(layernorm_partials)(long N, long d);
void SF(activation_forward)(real *Y, const real *X, long n, sf_activation act, sf_par *par);
void SF(activation_backward)(real *dX, const real *dY, const real *X, long n, sf_activation act,
                             sf_par *par);
/* out (B) = X (B,d) . w + b */
void SF(readout_forward)(real *out, const real *X, const real *w, const real *b, long B, long d);
void SF(readout_backward)(real *dX, real *dw, real *db, const real *dout, const real *X, const real *w,
                          long B, long d);
/* Mean loss over B outputs; dout (may be NULL) gets d(loss)/d(out). */
double SF(loss_forward_backward)(real *dout, const real *out, const real *y, long B, sf_loss loss);

/* The attention scores' scale for heads dh wide, 1/sqrt(dh), as every attention kernel rounds it. */
static inline real score_scale(long dh) { return (real)(1.0 / sqrt((double)dh)); }

/* p (T): softmax over the first `seen` entries of scale * p (vectorised exp); the rest become
 * exactly 0. */
void SF(softmax_row)(real *p, long seen, long T, real scale);
void SF(softmax_scaled_row)(real *p, long seen, long T); /* the same, after the scaling */
void SF(softmax_scaled_row_max)(real *p, long seen, long T, real mx); /* ... whose maximum is mx */
/* g (T): the softmax backward of the probabilities p given dL/dp, then the score scale:
 * g_j = p_j (g_j - softmax_dot(g, p)) scale. */
void SF(softmax_row_backward)(real *g, const real *p, long T, real scale);
static inline real softmax_dot(const real *g, const real *p, long T) { /* p . g, summed in double */
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (long j = 0; j < T; j++) s += (double)g[j] * p[j];
    return (real)s;
}
/* The (sequence, head) tasks of multi-head attention: task b*H + h works on head h's columns of
 * sequence b's rows and owns its outputs, so the bits never depend on the thread count.
 * for_each_head_task runs fn(args, task, work) for tasks 0..tasks-1 on a team of nt threads in a
 * static schedule, each thread with its per_thread elements of scratch (work NULL without), and
 * notes the team size. head_slices_of gives a task's offsets into query rows (Tq per sequence, d
 * wide), key|value rows (kv_rows per sequence, 2d wide) and its (Tq,T) block of probabilities. */
typedef void (*head_task_fn)(const void *args, long task, real *work);
void SF(for_each_head_task)(long tasks, int nt, real *scratch, long per_thread, head_task_fn fn, const void *args,
                            sf_par *par);
typedef struct {
    long q, kv, p;
} head_slices;
static inline head_slices head_slices_of(long task, long H, long Tq, long T, long kv_rows, long d) {
    const long b = task / H, h = task % H, dh = d / H;
    return (head_slices){b * Tq * d + h * dh, b * kv_rows * 2 * d + h * dh, task * Tq * T};
}

/* attention.c: per (batch, head) softmax(Q K^T / sqrt(dh)) V.
 * Q (B,Tq,d) rows are the last Tq positions; KV (B,T,2d) holds K then V; P (B,H,Tq,T) saved. */
/* Scratch (elements) the attention kernels need for nt threads. */
long SF(attention_scratch)(long T, long Tq, long d, long H, int nt);
void SF(attention_forward)(real *ctx, real *P, const real *Q, const real *KV, long B, long T, long Tq,
                           long d, long H, real *scratch, sf_par *par);
/* The same with options: causal (query i, at position T - Tq + i, sees keys j <= T - Tq + i; masked
 * entries of P are exactly 0, so attention_backward serves both) and kv_rows >= T, the rows per batch
 * entry of KV (a key/value cache holds more rows than it has filled). */
void SF(attention_forward_ex)(real *ctx, real *P, const real *Q, const real *KV, long B, long T, long Tq,
                              long d, long H, int causal, long kv_rows, real *scratch, sf_par *par);
/* dQ (B,Tq,d), dKV (B,T,2d) overwritten. */
void SF(attention_backward)(real *dQ, real *dKV, const real *dctx, const real *P, const real *Q,
                            const real *KV, long B, long T, long Tq, long d, long H, real *scratch,
                            sf_par *par);
/* Heads at least this wide use the GEMM (narrower ones put the keys on the vector axis). */
#define SF_NARROW_HEAD 16

/* attention_table.c: layer 0's attention with scores from the (token, position) table stab
 * (H, 2T, 2T) of x (B,T) tokens and values from the 2T distinct rows Vu (rows of stride ldv). */
void SF(attention_forward_tabled)(real *ctx, real *P, const real *stab, const uint8_t *x, const real *Vu, long ldv,
                                  long B, long T, long d, long H, real *scratch, sf_par *par);
/* Forward only, layer 0's out-projection folded into its values: with VW (H, 2T, d) the distinct
 * value rows of each head times that head's columns of W_out (VW_h = V_h W_out,h^T), out (B*T, d)
 * = bias + sum_h P_h VW_h[x], the attention's context already out-projected. */
void SF(attention_forward_folded)(real *out, real *P, const real *stab, const uint8_t *x, const real *VW,
                                  const real *bias, long B, long T, long d, long H, real *scratch, sf_par *par);
/* dstab (H, 2T, 2T) = the score gradients summed per table entry; dv_sum (2T, d) = the value
 * gradients summed per distinct (token, position) row, in double. Both have room for
 * score_table_groups(B, T, H) copies. scratch: attention_scratch(T, T, d, H, threads). */
void SF(attention_backward_tabled)(double *dv_sum, real *dstab, const real *dctx, const real *P, const real *Vu,
                                   long ldv, const uint8_t *x, long B, long T, long d, long H, real *scratch,
                                   sf_par *par);
long SF(score_table_groups)(long B, long T, long H);

#endif
