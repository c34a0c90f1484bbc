/* Layer 0's attention with its scores from a table. Layer 0's queries and keys are functions of
 * (token, position) only, so with the U = 2T distinct rows (row u = v T + t: token v at position
 * t) every score of every sequence is an entry of one U x U table per head,
 *     stab[h][u][u'] = q_u . k_u'   (the GEMM's arithmetic, so bitwise the per-sequence score),
 * and query i of sequence b reads row x_bi T + i at columns x_bj T + j. The backward sums the
 * score gradients of the whole batch into the same table shape, and two table-sized GEMMs give
 * the distinct rows' query and key gradients (encoder.c): the per-sequence Q K^T, dS K and
 * dS^T Q products (3 of attention's 6) are not done at all.
 *
 * The values, too, are a function of (token, position): each task gathers its sequence's value
 * rows from the U distinct ones (Vu, rows of stride ldv) into a small buffer that stays in cache,
 * instead of reading a (B,T,d) copy from memory in the forward and again in the backward.
 *
 * Callers that need no backward fold the out-projection in as well: the context only ever meets
 * W_out, so each head's distinct value rows times its columns of W_out (U,d; a U-row GEMM) give
 * the out-projected context directly, P_h VW_h summed over the heads: per query row H T d
 * multiply-adds instead of T d for P V plus d^2 for the out-projection (at the paper's d = 128,
 * T = 20, H = 2: about a quarter), and the context is never stored.
 *
 * The forward runs one task per (batch, head) as attention.c (folded: per sequence, its heads in
 * order), the backward one task per fixed group of sequences, so results never depend on the
 * thread count. P (B,H,T,T). Wide heads only (narrow ones keep attention.c's form). Scratch:
 * attention_scratch(T, T, d, H, threads). */
#include "kernels.h"

#include <string.h>

/* The probabilities of one query row: the scores s_j = row[x_j T + j] (a select between the
 * row's two halves, token 0 | token 1), scaled as softmax_row scales them, and their maximum in
 * the same pass, then its softmax. */
SF_VECTOR_ISA static void softmax_gathered_row(real *p, const real *row, const uint8_t *x, long T, real scale) {
    const real *r0 = row, *r1 = row + T;
    real mx = (x[0] ? r1[0] : r0[0]) * scale;
#pragma omp simd reduction(max : mx)
    for (long j = 0; j < T; j++) {
        p[j] = (x[j] ? r1[j] : r0[j]) * scale;
        mx = p[j] > mx ? p[j] : mx;
    }
    SF(softmax_scaled_row_max)(p, T, T, mx);
}

/* The softmax backward of one query row, added into its table row: with g = dP's row and p = P's,
 * dS_j = p_j (g_j - p . g) scale goes to row[x_j T + j], as two masked adds (adding +0 leaves an
 * entry unchanged) in the same pass (dS is never stored). */
SF_VECTOR_ISA static void scatter_score_gradients(real *row, const real *g, const real *p, const uint8_t *x, long T,
                                                     real scale) {
    const real dot = softmax_dot(g, p, T);
    real *r0 = row, *r1 = row + T;
    for (long j = 0; j < T; j++) {
        const real ds = p[j] * (g[j] - dot) * scale;
        r0[j] += x[j] ? 0 : ds;
        r1[j] += x[j] ? ds : 0;
    }
}

/* v (T,dh) = head h's value columns of one sequence's rows: distinct row x_j T + j of Vu. */
static void gather_values(real *v, const real *Vu, long ldv, const uint8_t *x, long T, long dh, long h) {
    for (long j = 0; j < T; j++) memcpy(v + j * dh, Vu + (x[j] * T + j) * ldv + h * dh, (size_t)dh * sizeof(real));
}

typedef struct {
    real *out, *P;
    const real *stab, *Vu, *bias;
    const uint8_t *x;
    long ldv, T, d, H;
} tabled_args;

/* Head h's probabilities of sequence b's queries, P_bh (T,T), from the score table. */
static void tabled_probabilities(real *p, const real *stab, const uint8_t *xb, long T, long h, real scale) {
    const long U = 2 * T;
    for (long i = 0; i < T; i++) softmax_gathered_row(p + i * T, stab + (h * U + xb[i] * T + i) * U, xb, T, scale);
}

static void tabled_task(const void *args, long task, real *v) {
    const tabled_args *a = args;
    const long T = a->T, d = a->d, H = a->H, dh = d / H, b = task / H, h = task % H;
    const head_slices sl = head_slices_of(task, H, T, T, T, d);
    const uint8_t *xb = a->x + b * T;
    sf_par one = {1, 0};
    tabled_probabilities(a->P + sl.p, a->stab, xb, T, h, score_scale(d / H));
    gather_values(v, a->Vu, a->ldv, xb, T, dh, h);
    SF(gemm)(T, dh, T, a->P + sl.p, T, 1, v, dh, a->out + sl.q, d, NULL, 0, &one);
}

void SF(attention_forward_tabled)(real *ctx, real *P, const real *stab, const uint8_t *x, const real *Vu, long ldv,
                                  long B, long T, long d, long H, real *scratch, sf_par *par) {
    const tabled_args args = {.out = ctx, .P = P, .stab = stab, .Vu = Vu, .x = x, .ldv = ldv, .T = T, .d = d, .H = H};
    const int nt = B * H > 1 && B * H * T * T * d >= 1048576 ? par->nt : 1;
    SF(for_each_head_task)(B * H, nt, scratch, SF(attention_scratch)(T, T, d, H, 1), tabled_task, &args, par);
}

/* One sequence b: for each head, its probabilities, its T folded value rows gathered (T,d), and
 * out_b (T,d) = bias + P_b0 VW_0[x] + P_b1 VW_1[x] + ..., head by head (the heads add into the
 * same rows, so a task is a whole sequence). */
static void folded_task(const void *args, long b, real *g) {
    const tabled_args *a = args;
    const long T = a->T, d = a->d, H = a->H, U = 2 * T;
    const uint8_t *xb = a->x + b * T;
    real *out = a->out + b * T * d;
    sf_par one = {1, 0};
    for (long h = 0; h < H; h++) {
        real *p = a->P + (b * H + h) * T * T;
        tabled_probabilities(p, a->stab, xb, T, h, score_scale(d / H));
        gather_values(g, a->Vu + h * U * d, d, xb, T, d, 0);
        SF(gemm)(T, d, T, p, T, 1, g, d, out, d, h ? NULL : a->bias, h > 0, &one);
    }
}

void SF(attention_forward_folded)(real *out, real *P, const real *stab, const uint8_t *x, const real *VW,
                                  const real *bias, long B, long T, long d, long H, real *scratch, sf_par *par) {
    const tabled_args args = {.out = out, .P = P, .stab = stab, .Vu = VW, .bias = bias, .x = x, .T = T, .d = d, .H = H};
    const int nt = B > 1 && B * H * T * T * d >= 1048576 ? par->nt : 1;
    SF(for_each_head_task)(B, nt, scratch, SF(attention_scratch)(T, T, d, H, 1), folded_task, &args, par);
}

long SF(score_table_groups)(long B, long T, long H) {
    long groups = 8;
    while (groups > 1 && groups * H * 4 * T * T > (1L << 22)) groups /= 2; /* at most 4M entries */
    return groups < B ? groups : B;
}

/* The backward, for the sequences in `groups` fixed groups (score_table_groups): per (sequence,
 * head) dP = dctx V^T, dS = softmax backward, dV = P^T dctx; dS is added into its group's score
 * table and dV into its group's distinct-row sums while they are in cache (the values, too, are
 * a function of (token, position), and only their sums per distinct row are needed). Then the
 * group sums are added in group order: every entry is summed in one order (sequence order
 * within a group, then group order) on any thread count. A group runs head by head, so one
 * head's table (U x U) is in cache at a time, and each task prefetches the next one's P and
 * dctx.
 * dstab: groups * H * U * U; dv_sum: groups * U * d. */
void SF(attention_backward_tabled)(double *dv_sum, real *dstab, const real *dctx, const real *P, const real *Vu,
                                   long ldv, const uint8_t *x, long B, long T, long d, long H, real *scratch,
                                   sf_par *par) {
    const long dh = d / H, U = 2 * T, table = H * U * U, sums = U * d, groups = SF(score_table_groups)(B, T, H);
    const real scale = score_scale(d / H);
    const int nt = groups > 1 && B * H * T * T * d >= 1048576 ? par->nt : 1;
    (void)nt; /* unused in a serial build */
#pragma omp parallel num_threads(nt)
    {
        real *g = scratch + (long)SF_THREAD_ID() * SF(attention_scratch)(T, T, d, H, 1), *v = g + T * T;
        if (SF_THREAD_ID() == 0) sf_par_note(par, SF_TEAM_SIZE());
        sf_par one = {1, 0};
#pragma omp for schedule(static)
        for (long grp = 0; grp < groups; grp++) {
            real *tab = dstab + grp * table;
            double *vsum = dv_sum + grp * sums;
            const long b0 = grp * B / groups, b1 = (grp + 1) * B / groups;
            for (long e = 0; e < table; e++) tab[e] = 0;
            for (long e = 0; e < sums; e++) vsum[e] = 0;
            for (long h = 0; h < H; h++)
                for (long b = b0; b < b1; b++) {
                    const uint8_t *xb = x + b * T;
                    const long off = b * T * d + h * dh;
                    const real *p = P + (b * H + h) * T * T;
                    const long nb = b + 1 < b1 ? b + 1 : b0, nh = b + 1 < b1 ? h : h + 1; /* the next task */
                    gather_values(v, Vu, ldv, xb, T, dh, h);
                    SF(gemm_bt)(T, T, dh, dctx + off, d, 1, v, dh, g, T, NULL, 0, &one);
                    for (long i = 0; i < T; i++) {
                        scatter_score_gradients(tab + (h * U + xb[i] * T + i) * U, g + i * T, p + i * T, xb, T, scale);
                        if (nh < H) { /* the next task's operands, a row per row of this one */
                            prefetch_row(P + ((nb * H + nh) * T + i) * T, T);
                            prefetch_row(dctx + (nb * T + i) * d + nh * dh, dh);
                        }
                    }
                    SF(gemm)(T, dh, T, p, 1, T, dctx + off, d, g, dh, NULL, 0, &one); /* dV, (T,dh) */
                    for (long t = 0; t < T; t++) {
                        double *row = vsum + (xb[t] * T + t) * d + h * dh;
                        for (long c = 0; c < dh; c++) row[c] += g[t * dh + c];
                    }
                }
        }
        /* group by group over each thread's range of entries: contiguous, vector adds */
        long lo, hi;
        sf_partition(table, 16, SF_THREAD_ID(), SF_TEAM_SIZE(), &lo, &hi);
        for (long grp = 1; grp < groups; grp++)
            for (long e = lo; e < hi; e++) dstab[e] += dstab[grp * table + e];
        sf_partition(sums, 16, SF_THREAD_ID(), SF_TEAM_SIZE(), &lo, &hi);
        for (long grp = 1; grp < groups; grp++)
            for (long e = lo; e < hi; e++) dv_sum[e] += dv_sum[grp * sums + e];
    }
}
