/* Exact Fourier and sensitivity analysis of Boolean-cube truth tables. Plain C, float64, no
 * Python types.
 *
 * A truth table holds the 2^n values v[idx(x)] of a function on {0,1}^n, with x_1 the most
 * significant bit of idx (as the official code). Fourier sets S are indexed the same way, so
 * chi_S(x) = (-1)^popcount(S & idx(x)) and variable x_{j+1} (j = 0..n-1) is index bit n-1-j.
 *
 * Every parallel loop is owner-computes, and every floating-point sum runs over fixed chunks
 * in a fixed order, so results are bitwise identical for any thread count.
 */
#ifndef SF_BOOLEAN_H
#define SF_BOOLEAN_H

#include "sf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest n whose truth table the exact analysis accepts (2^26 doubles = 512 MiB). */
#define SF_BOOLEAN_MAX_N 26

/* In-place unnormalised Walsh-Hadamard transform of a (2^n values):
 * a[S] <- sum_x a[x] (-1)^popcount(S & x). Applying it twice multiplies by 2^n. */
sf_status sf_fwht(double *a, int n, int n_threads);

/* Fourier coefficients coef[S] = 2^-n sum_x g(x) chi_S(x) of g = 1 - 2v (map01 = 1, the
 * {0,1} scale) or g = v (map01 = 0). coef may alias v. */
sf_status sf_fourier(double *coef, const double *v, int n, int map01, int n_threads);

/* From Fourier coefficients: weight[k] = sum_{|S|=k} coef[S]^2 and maxabs[k] = max_{|S|=k}
 * |coef[S]|, for k = 0..n (both n + 1 long). */
sf_status sf_degree_stats(double *weight, double *maxabs, const double *coef, int n, int n_threads);

/* sf_fourier followed by sf_degree_stats, through a scratch table counted against the memory
 * limit. */
sf_status sf_spectrum(double *weight, double *maxabs, const double *v, int n, int map01, int n_threads);

/* inf[j] = 2^-n sum_x (v(x) - v(x xor e_j))^2 for variable x_{j+1}: the raw squared flip
 * differences on the values' own scale (divide by 4 for the +-1 scale). A 0/1 table takes an
 * exact bit-packed path. */
sf_status sf_influences(double *inf, const double *v, int n, int n_threads);

/* s[x] = sum_j (v(x) - v(x xor e_j))^2 for every input x (raw, like sf_influences). */
sf_status sf_point_sensitivity(double *s, const double *v, int n, int n_threads);

/* counts[k] = #{x : x has exactly k sensitive bits}, k = 0..n, for a table of 0/1 values;
 * any other value is an SF_EINVAL naming its index. */
sf_status sf_sensitivity_profile(int64_t *counts, const double *v, int n, int n_threads);

#ifdef __cplusplus
}
#endif
#endif /* SF_BOOLEAN_H */
