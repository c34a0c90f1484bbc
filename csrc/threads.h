/* Thread-count policy shared by every parallel loop. */
#ifndef SF_THREADS_H
#define SF_THREADS_H

#if SF_HAVE_OPENMP
#include <omp.h>
#define SF_THREAD_ID() omp_get_thread_num()
#define SF_TEAM_SIZE() omp_get_num_threads()
#else
#define SF_THREAD_ID() 0
#define SF_TEAM_SIZE() 1
#endif

/* Contiguous owner-computes partition of [0, n) into parts aligned to `align`:
 * part `i` of `p` is [*lo, *hi). Which thread gets which part never changes the arithmetic. */
static inline void sf_partition(long n, long align, int i, int p, long *lo, long *hi) {
    long blocks = (n + align - 1) / align;
    long per = blocks / p, extra = blocks % p;
    long b0 = i * per + (i < extra ? i : extra);
    long b1 = b0 + per + (i < extra ? 1 : 0);
    *lo = b0 * align < n ? b0 * align : n;
    *hi = b1 * align < n ? b1 * align : n;
}

#endif
