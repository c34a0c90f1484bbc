/* Exact Fourier and sensitivity analysis of truth tables (see boolean.h).
 *
 * The transform is blocked: the low stages run inside cache-sized blocks, the high stages in
 * radix-8 passes over the whole table, so the table streams through memory about n/3 times
 * instead of n. Reductions are per fixed chunk (never per thread) and combined in chunk order. */
#include "boolean.h"

#include "engine.h"
#include "threads.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#define BLOCK_LOG 12   /* low transform stages run inside blocks of 2^12 doubles (32 KiB, in L1) */
#define CHUNK_LOG 14   /* reductions and owner-computes loops work on fixed chunks of 2^14 entries */
#define PAR_MIN_LOG 14 /* smaller tables stay on one thread: starting a team costs more than it saves */

static sf_status check_table(const void *p, int n, const char *what) {
    if (n < 0 || n > SF_BOOLEAN_MAX_N)
        return sf_fail(SF_EINVAL, "n must be in [0, %d] for exact analysis, got %d", SF_BOOLEAN_MAX_N, n);
    if (!p) return sf_fail(SF_EINVAL, "%s: missing array", what);
    return SF_OK;
}

/* A large uninitialised scratch table (free with free()). Not sf_alloc: its zeroing would be a
 * wasted sweep, and fresh 4 KiB pages fault expensively, so ask for transparent huge pages. */
static void *scratch_alloc(size_t bytes) {
    void *p = NULL;
    const size_t huge = (size_t)1 << 21;
    if (posix_memalign(&p, bytes >= huge ? huge : SF_ALIGN, bytes) != 0) return NULL;
#ifdef MADV_HUGEPAGE
    if (bytes >= huge) madvise(p, bytes, MADV_HUGEPAGE); /* advice only: failure changes nothing */
#endif
    return p;
}

static int team_for(int n, int n_threads) { return n >= PAR_MIN_LOG ? sf_resolve_threads(n_threads) : 1; }

static int chunk_log(int n) { return n < CHUNK_LOG ? n : CHUNK_LOG; }

/* ---- Walsh-Hadamard transform --------------------------------------------------------------- */

/* One to three butterfly stages on groups of 2^r elements spaced s apart, for m consecutive
 * groups (their elements are contiguous in each row, so the loops vectorise). */
static inline void butterfly2(double *p, long s, long m) {
    double *p0 = p, *p1 = p + s;
#pragma omp simd
    for (long k = 0; k < m; k++) {
        const double x0 = p0[k], x1 = p1[k];
        p0[k] = x0 + x1, p1[k] = x0 - x1;
    }
}

static inline void butterfly4(double *p, long s, long m) {
    double *p0 = p, *p1 = p + s, *p2 = p + 2 * s, *p3 = p + 3 * s;
#pragma omp simd
    for (long k = 0; k < m; k++) {
        const double a0 = p0[k] + p1[k], a1 = p0[k] - p1[k], a2 = p2[k] + p3[k], a3 = p2[k] - p3[k];
        p0[k] = a0 + a2, p2[k] = a0 - a2, p1[k] = a1 + a3, p3[k] = a1 - a3;
    }
}

static inline void butterfly8(double *p, long s, long m) {
    double *p0 = p, *p1 = p + s, *p2 = p + 2 * s, *p3 = p + 3 * s;
    double *p4 = p + 4 * s, *p5 = p + 5 * s, *p6 = p + 6 * s, *p7 = p + 7 * s;
#pragma omp simd
    for (long k = 0; k < m; k++) {
        const double a0 = p0[k] + p1[k], a1 = p0[k] - p1[k], a2 = p2[k] + p3[k], a3 = p2[k] - p3[k];
        const double a4 = p4[k] + p5[k], a5 = p4[k] - p5[k], a6 = p6[k] + p7[k], a7 = p6[k] - p7[k];
        const double b0 = a0 + a2, b2 = a0 - a2, b1 = a1 + a3, b3 = a1 - a3;
        const double b4 = a4 + a6, b6 = a4 - a6, b5 = a5 + a7, b7 = a5 - a7;
        p0[k] = b0 + b4, p4[k] = b0 - b4, p1[k] = b1 + b5, p5[k] = b1 - b5;
        p2[k] = b2 + b6, p6[k] = b2 - b6, p3[k] = b3 + b7, p7[k] = b3 - b7;
    }
}

/* Stages h .. h+r-1 (r = 1..3) on butterfly groups [t0, t1). Group t holds the elements
 * base + j 2^h (j < 2^r) with base = (t >> h) << (h + r) | (t mod 2^h). */
static void radix_pass(double *a, int h, int r, long t0, long t1) {
    const long s = 1L << h;
    if (h == 0) { /* groups are contiguous runs of 2^r: no row to vectorise along */
        for (long t = t0; t < t1; t++) {
            if (r == 3) butterfly8(a + 8 * t, 1, 1);
            else if (r == 2) butterfly4(a + 4 * t, 1, 1);
            else butterfly2(a + 2 * t, 1, 1);
        }
        return;
    }
    for (long t = t0; t < t1;) {
        const long lo = t & (s - 1);
        const long m = t1 - t < s - lo ? t1 - t : s - lo;
        double *p = a + ((t >> h) << (h + r)) + lo;
        if (r == 3) butterfly8(p, s, m);
        else if (r == 2) butterfly4(p, s, m);
        else butterfly2(p, s, m);
        t += m;
    }
}

/* The transform of a, or with src of (map01 ? 1 - 2 src : src) * factor: the load is fused into
 * the first pass over each block, saving a sweep of the table. factor must be a power of two,
 * so that scaling commutes exactly with the additions. */
static void fwht_team(double *a, const double *src, int map01, double factor, int n, int nt) {
    const int bl = n < BLOCK_LOG ? n : BLOCK_LOG;
    const long len = 1L << n;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        const int tid = SF_THREAD_ID(), team = SF_TEAM_SIZE();
        long lo, hi;
        /* stages below bl: each thread owns whole blocks, and each block stays in cache */
        sf_partition(len >> bl, 1, tid, team, &lo, &hi);
        for (long blk = lo; blk < hi; blk++) {
            double *b = a + (blk << bl);
            if (src) {
                const double *sb = src + (blk << bl);
                const double mul = map01 ? -2.0 * factor : factor, add = map01 ? factor : 0.0;
                for (long i = 0; i < 1L << bl; i++) b[i] = sb[i] * mul + add; /* exact: powers of two */
            }
            for (int h = 0; h < bl; h += 3) {
                const int r = bl - h < 3 ? bl - h : 3;
                radix_pass(b, h, r, 0, (1L << bl) >> r);
            }
        }
        /* stages from bl up: radix-8 passes, each thread owning a contiguous range of groups */
        for (int h = bl; h < n; h += 3) {
            const int r = n - h < 3 ? n - h : 3;
#pragma omp barrier
            sf_partition(len >> r, 64, tid, team, &lo, &hi);
            radix_pass(a, h, r, lo, hi);
        }
    }
}

sf_status sf_fwht(double *a, int n, int n_threads) {
    sf_status st = check_table(a, n, "fwht");
    if (st) return st;
    fwht_team(a, NULL, 0, 1.0, n, team_for(n, n_threads));
    return SF_OK;
}

sf_status sf_fourier(double *coef, const double *v, int n, int map01, int n_threads) {
    sf_status st = check_table(v, n, "fourier values");
    if (st || (st = check_table(coef, n, "fourier coefficients"))) return st;
    fwht_team(coef, v, map01, ldexp(1.0, -n), n, team_for(n, n_threads));
    return SF_OK;
}

/* ---- degree statistics ---------------------------------------------------------------------- */

/* Per-degree weight and largest |coefficient|, chunk by chunk. Within a chunk, rows of 64 are
 * grouped by the popcount of their row index, so the inner loop is a plain vector update and the
 * degree is resolved once per chunk: |S| = popcount(chunk) + popcount(row) + popcount(column). */
static sf_status degree_stats_chunked(double *weight, double *maxabs, const double *c, int n, int nt) {
    if (n < 6) { /* fewer than one row: direct */
        for (int k = 0; k <= n; k++) weight[k] = maxabs[k] = 0;
        for (long i = 0; i < 1L << n; i++) {
            const int k = __builtin_popcountl((unsigned long)i);
            weight[k] += c[i] * c[i];
            maxabs[k] = fmax(maxabs[k], fabs(c[i]));
        }
        return SF_OK;
    }
    const int cl = chunk_log(n), K = n + 1, rows = 1 << (cl - 6);
    const long chunks = 1L << (n - cl);
    double *part = sf_alloc(sizeof(double) * 2 * (size_t)K * (size_t)chunks);
    if (!part) return sf_fail(SF_ENOMEM, "could not allocate the degree-spectrum partial sums");
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (long ch = 0; ch < chunks; ch++) {
        double acc[9][64], big[9][64]; /* by popcount of the row index (< 2^8 rows) and column */
        memset(acc, 0, sizeof acc);
        memset(big, 0, sizeof big);
        const double *cc = c + (ch << cl);
        for (int r = 0; r < rows; r++) {
            double *ar = acc[__builtin_popcount((unsigned)r)], *br = big[__builtin_popcount((unsigned)r)];
            const double *x = cc + 64 * r;
#pragma omp simd
            for (int l = 0; l < 64; l++) {
                const double ax = fabs(x[l]);
                ar[l] += ax * ax;
                br[l] = ax > br[l] ? ax : br[l];
            }
        }
        double *w = part + 2 * K * ch, *m = w + K;
        const int khi = __builtin_popcountl((unsigned long)ch);
        for (int p = 0; p <= cl - 6; p++)
            for (int l = 0; l < 64; l++) {
                const int k = khi + p + __builtin_popcount((unsigned)l);
                w[k] += acc[p][l];
                m[k] = fmax(m[k], big[p][l]);
            }
    }
    for (int k = 0; k < K; k++) {
        double w = 0, m = 0;
        for (long ch = 0; ch < chunks; ch++) { /* chunk order: the same sum for any team */
            w += part[2 * K * ch + k];
            m = fmax(m, part[2 * K * ch + K + k]);
        }
        weight[k] = w;
        maxabs[k] = m;
    }
    sf_free(part);
    return SF_OK;
}

sf_status sf_degree_stats(double *weight, double *maxabs, const double *coef, int n, int n_threads) {
    sf_status st = check_table(coef, n, "degree_stats coefficients");
    if (st || (st = check_table(weight, n, "degree_stats weights")) || (st = check_table(maxabs, n, "degree_stats maxabs")))
        return st;
    return degree_stats_chunked(weight, maxabs, coef, n, team_for(n, n_threads));
}

sf_status sf_spectrum(double *weight, double *maxabs, const double *v, int n, int map01, int n_threads) {
    sf_status st = check_table(v, n, "spectrum values");
    if (st) return st;
    const size_t bytes = sizeof(double) << n;
    if ((st = sf_check_budget(bytes, "the Fourier transform's scratch table"))) return st;
    double *a = scratch_alloc(bytes);
    if (!a) return sf_fail(SF_ENOMEM, "could not allocate %.3g GB for the Fourier transform", bytes / 1e9);
    const int nt = team_for(n, n_threads);
    fwht_team(a, v, map01, ldexp(1.0, -n), n, nt);
    st = sf_degree_stats(weight, maxabs, a, n, n_threads);
    free(a);
    return st;
}

/* ---- bit-packed 0/1 tables ------------------------------------------------------------------ */

/* Word masks of the positions whose bit b (b < 6) is 0, i.e. the first element of each pair. */
static const uint64_t LOW_HALF[6] = {0x5555555555555555ULL, 0x3333333333333333ULL, 0x0f0f0f0f0f0f0f0fULL,
                                     0x00ff00ff00ff00ffULL, 0x0000ffff0000ffffULL, 0x00000000ffffffffULL};

/* Packs a 0/1 table (n >= 6) into words (bit k of word w is v[64 w + k]). Returns the index of
 * the first value that is neither 0 nor 1, or -1. */
static long pack_bits(uint64_t *words, const double *v, int n, int nt) {
    const int cl = chunk_log(n);
    const long chunks = 1L << (n - cl), per = (1L << cl) / 64;
    long first_bad = -1;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (long ch = 0; ch < chunks; ch++) {
        long bad = -1;
        for (long w = ch * per; w < (ch + 1) * per; w++) {
            uint64_t word = 0;
            for (int k = 0; k < 64; k++) {
                const double x = v[64 * w + k];
                if (x != 0.0 && x != 1.0 && bad < 0) bad = 64 * w + k;
                word |= (uint64_t)(x == 1.0) << k;
            }
            words[w] = word;
        }
        if (bad >= 0) {
#pragma omp critical(sf_pack_bits)
            if (first_bad < 0 || bad < first_bad) first_bad = bad; /* the minimum: order-free */
        }
    }
    return first_bad;
}

/* Words packed, or NULL with *status set (memory) or *bad >= 0 (not a 0/1 table). */
static uint64_t *packed_table(const double *v, int n, int nt, long *bad, sf_status *status) {
    const size_t bytes = (size_t)1 << (n - 3);
    *bad = -1;
    if ((*status = sf_check_budget(bytes, "the bit-packed truth table"))) return NULL;
    uint64_t *words = sf_alloc(bytes);
    if (!words) {
        *status = sf_fail(SF_ENOMEM, "could not allocate %.3g GB for the bit-packed table", bytes / 1e9);
        return NULL;
    }
    if ((*bad = pack_bits(words, v, n, nt)) >= 0) {
        sf_free(words);
        return NULL;
    }
    return words;
}

/* The positions in word w whose bit-b neighbour differs: all 64 of them, both of each pair. */
static inline uint64_t flip_diff(const uint64_t *words, long w, int b) {
    const uint64_t x = words[w];
    if (b >= 6) return x ^ words[w ^ (1L << (b - 6))];
    const int sh = 1 << b;
    const uint64_t m = LOW_HALF[b];
    return x ^ (((x & m) << sh) | ((x >> sh) & m));
}

/* ---- influences ----------------------------------------------------------------------------- */

/* Exact integer pair counts of a packed table: count[b] = #{x : x_b = 0, v(x) != v(x + 2^b)}. */
static sf_status packed_influences(double *inf, const uint64_t *words, int n, int nt) {
    const long nw = 1L << (n - 6);
    const long per = 256, chunks = (nw + per - 1) / per;
    int64_t *part = sf_alloc(sizeof(int64_t) * (size_t)n * (size_t)chunks);
    if (!part) return sf_fail(SF_ENOMEM, "could not allocate the influence partial counts");
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (long ch = 0; ch < chunks; ch++) {
        const long w0 = ch * per, w1 = w0 + per < nw ? w0 + per : nw;
        for (int b = 0; b < n; b++) {
            int64_t c = 0;
            for (long w = w0; w < w1; w++) {
                if (b < 6) c += __builtin_popcountll(flip_diff(words, w, b) & LOW_HALF[b]);
                else if (!(w & (1L << (b - 6)))) c += __builtin_popcountll(flip_diff(words, w, b));
            }
            part[(size_t)n * ch + b] = c;
        }
    }
    for (int b = 0; b < n; b++) {
        int64_t c = 0;
        for (long ch = 0; ch < chunks; ch++) c += part[(size_t)n * ch + b];
        inf[n - 1 - b] = ldexp(2.0 * (double)c, -n); /* both orders of each pair, over 2^n */
    }
    sf_free(part);
    return SF_OK;
}

/* Real-valued tables: chunk ch sums (v(x) - v(x + 2^b))^2 over its x with bit b clear. */
static sf_status real_influences(double *inf, const double *v, int n, int nt) {
    const int cl = chunk_log(n);
    const long chunks = 1L << (n - cl), C = 1L << cl;
    double *part = sf_alloc(sizeof(double) * (size_t)(n > 0 ? n : 1) * (size_t)chunks);
    if (!part) return sf_fail(SF_ENOMEM, "could not allocate the influence partial sums");
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (long ch = 0; ch < chunks; ch++) {
        const long c0 = ch * C;
        for (int b = 0; b < n; b++) {
            const long s = 1L << b;
            double sum = 0;
            if (b < cl) {
                for (long base = c0; base < c0 + C; base += 2 * s)
                    for (long k = 0; k < s; k++) {
                        const double d = v[base + k] - v[base + k + s];
                        sum += d * d;
                    }
            } else if (!(c0 & s)) {
                for (long x = c0; x < c0 + C; x++) {
                    const double d = v[x] - v[x + s];
                    sum += d * d;
                }
            }
            part[(size_t)n * ch + b] = sum;
        }
    }
    for (int b = 0; b < n; b++) {
        double sum = 0;
        for (long ch = 0; ch < chunks; ch++) sum += part[(size_t)n * ch + b];
        inf[n - 1 - b] = ldexp(2.0 * sum, -n);
    }
    sf_free(part);
    return SF_OK;
}

sf_status sf_influences(double *inf, const double *v, int n, int n_threads) {
    sf_status st = check_table(v, n, "influences values");
    if (st || (st = check_table(inf, n, "influences output"))) return st;
    const int nt = team_for(n, n_threads);
    if (n >= 6) {
        long bad;
        uint64_t *words = packed_table(v, n, nt, &bad, &st);
        if (words) {
            st = packed_influences(inf, words, n, nt);
            sf_free(words);
            return st;
        }
        if (st) return st;
        /* not a 0/1 table: the real-valued path below */
    }
    return real_influences(inf, v, n, nt);
}

/* ---- sensitivity at every input, and the profile -------------------------------------------- */

sf_status sf_point_sensitivity(double *s, const double *v, int n, int n_threads) {
    sf_status st = check_table(v, n, "sensitivity values");
    if (st || (st = check_table(s, n, "sensitivity output"))) return st;
    const int cl = chunk_log(n), nt = team_for(n, n_threads);
    const long chunks = 1L << (n - cl), C = 1L << cl;
    (void)nt; /* read by the pragma only */
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (long ch = 0; ch < chunks; ch++) {
        const long c0 = ch * C;
        double *o = s + c0;
        for (long k = 0; k < C; k++) o[k] = 0;
        for (int b = 0; b < n; b++) { /* bits in a fixed order for every x */
            const long sb = 1L << b;
            if (b < cl) {
                for (long base = 0; base < C; base += 2 * sb)
                    for (long k = base; k < base + sb; k++) {
                        const double d = v[c0 + k] - v[c0 + k + sb];
                        o[k] += d * d;
                        o[k + sb] += d * d;
                    }
            } else {
                const double *partner = v + (c0 ^ sb);
                for (long k = 0; k < C; k++) {
                    const double d = v[c0 + k] - partner[k];
                    o[k] += d * d;
                }
            }
        }
    }
    return SF_OK;
}

/* Adds the bit-vector d to a bit-sliced counter (plane p holds bit p of 64 counts). */
static inline void counter_add(uint64_t *planes, int n_planes, uint64_t d) {
    for (int p = 0; p < n_planes && d; p++) {
        const uint64_t carry = planes[p] & d;
        planes[p] ^= d;
        d = carry;
    }
}

static sf_status packed_profile(int64_t *counts, const uint64_t *words, int n, int nt) {
    const long nw = 1L << (n - 6), per = 256, chunks = (nw + per - 1) / per;
    const int K = n + 1;
    int n_planes = 0;
    while ((1 << n_planes) <= n) n_planes++;
    int64_t *part = sf_alloc(sizeof(int64_t) * (size_t)K * (size_t)chunks);
    if (!part) return sf_fail(SF_ENOMEM, "could not allocate the sensitivity-profile partial counts");
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (long ch = 0; ch < chunks; ch++) {
        int64_t *c = part + (size_t)K * ch;
        const long w1 = (ch + 1) * per < nw ? (ch + 1) * per : nw;
        for (long w = ch * per; w < w1; w++) {
            uint64_t planes[8] = {0};
            for (int b = 0; b < n; b++) counter_add(planes, n_planes, flip_diff(words, w, b));
            for (int k = 0; k < K; k++) { /* the positions whose count equals k */
                uint64_t hit = ~0ULL;
                for (int p = 0; p < n_planes; p++) hit &= (k >> p & 1) ? planes[p] : ~planes[p];
                c[k] += __builtin_popcountll(hit);
            }
        }
    }
    for (int k = 0; k < K; k++) {
        int64_t total = 0;
        for (long ch = 0; ch < chunks; ch++) total += part[(size_t)K * ch + k];
        counts[k] = total;
    }
    sf_free(part);
    return SF_OK;
}

static sf_status not_boolean(const double *v, long i) {
    return sf_fail(SF_EINVAL, "the truth table must hold only 0 and 1 here, found %.17g at index %ld", v[i], i);
}

sf_status sf_sensitivity_profile(int64_t *counts, const double *v, int n, int n_threads) {
    sf_status st = check_table(v, n, "sensitivity_profile values");
    if (st || (st = check_table(counts, n, "sensitivity_profile output"))) return st;
    const int nt = team_for(n, n_threads);
    if (n >= 6) {
        long bad;
        uint64_t *words = packed_table(v, n, nt, &bad, &st);
        if (!words) return st ? st : not_boolean(v, bad);
        st = packed_profile(counts, words, n, nt);
        sf_free(words);
        return st;
    }
    /* tiny tables: count directly */
    const long len = 1L << n;
    for (long i = 0; i < len; i++)
        if (v[i] != 0.0 && v[i] != 1.0) return not_boolean(v, i);
    for (int k = 0; k <= n; k++) counts[k] = 0;
    for (long x = 0; x < len; x++) {
        int k = 0;
        for (int b = 0; b < n; b++) k += v[x] != v[x ^ (1L << b)];
        counts[k]++;
    }
    return SF_OK;
}
