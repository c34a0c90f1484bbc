/* Counter-based random numbers: every value is a pure function of (key, counter), so results
 * never depend on which thread draws them or in what order. */
#ifndef SF_RNG_H
#define SF_RNG_H

#include <math.h>
#include <stdint.h>

/* Stream tags keep independent uses of one seed apart. */
enum { SF_STREAM_INIT = 1, SF_STREAM_DATA = 2, SF_STREAM_SUBSET = 3, SF_STREAM_NOISE = 4 };

static inline uint64_t sf_mix64(uint64_t z) {
    /* splitmix64 finaliser: a bijection with good avalanche */
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t sf_key(uint64_t seed, uint64_t stream, uint64_t a) {
    return sf_mix64(sf_mix64(sf_mix64(seed) ^ stream) ^ a);
}

static inline uint64_t sf_rand64(uint64_t key, uint64_t counter) {
    return sf_mix64(key ^ sf_mix64(counter));
}

/* Uniform in [0, 1) with 53 random bits. */
static inline double sf_uniform(uint64_t key, uint64_t counter) {
    return (double)(sf_rand64(key, counter) >> 11) * 0x1.0p-53;
}

/* Standard normal by Box-Muller on two counter-derived uniforms. */
static inline double sf_normal(uint64_t key, uint64_t counter) {
    double u1 = ((double)(sf_rand64(key, 2 * counter) >> 11) + 0.5) * 0x1.0p-53; /* (0,1) */
    double u2 = sf_uniform(key, 2 * counter + 1);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925 * u2);
}

/* ---- normals in blocks, vectorisable -------------------------------------------------------
 * Box-Muller as a pure function of (key, pair) that a compiler vectorises: no libm call, no
 * branch, no 64-bit integer <-> double conversion instruction (AVX2 has none). log and sincos are
 * series on reduced arguments, accurate to a few units in the last place of a double: the normals
 * agree with libm's Box-Muller on the same uniforms to ~1e-15. */

static inline double sf_double_of_bits(uint64_t b) {
    union { uint64_t u; double d; } x = {b};
    return x.d;
}
static inline uint64_t sf_bits_of_double(double d) {
    union { double d; uint64_t u; } x = {d};
    return x.u;
}

/* v < 2^53 exactly, from its two halves placed in the mantissa of 2^52 */
static inline double sf_double_of_u53(uint64_t v) {
    const double two52 = 4503599627370496.0;
    const double hi = sf_double_of_bits(0x4330000000000000ULL | (v >> 26)) - two52;
    const double lo = sf_double_of_bits(0x4330000000000000ULL | (v & 0x3ffffffULL)) - two52;
    return hi * 67108864.0 + lo; /* exact: 27 + 26 bits */
}

/* log(u) for normal u > 0: u = 2^e m with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s) with
 * s = (m - 1) / (m + 1), |s| <= 0.1716, by its series to s^21 (the next term is below 1e-18 of it). */
static inline double sf_log_series(double u) {
    const uint64_t bits = sf_bits_of_double(u);
    double e = sf_double_of_bits(0x4330000000000000ULL | (bits >> 52)) - 4503599627371519.0; /* 2^52 + 1023 */
    double m = sf_double_of_bits((bits & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL);
    const int over = m > 1.4142135623730951;
    m = over ? 0.5 * m : m;
    e = over ? e + 1.0 : e;
    const double s = (m - 1.0) / (m + 1.0), s2 = s * s;
    double p = 1.0 / 21;
    p = p * s2 + 1.0 / 19;
    p = p * s2 + 1.0 / 17;
    p = p * s2 + 1.0 / 15;
    p = p * s2 + 1.0 / 13;
    p = p * s2 + 1.0 / 11;
    p = p * s2 + 1.0 / 9;
    p = p * s2 + 1.0 / 7;
    p = p * s2 + 1.0 / 5;
    p = p * s2 + 1.0 / 3;
    const double log_m = 2.0 * s + 2.0 * s * (p * s2);
    return e * 0.693147180369123816490 + (e * 1.90821492927058770002e-10 + log_m); /* ln 2 in two parts */
}

/* (cos, sin) of 2 pi u for u in [0, 1): the quarter turn q nearest to 4u, and the series of x =
 * (4u - q) pi/2 in [-pi/4, pi/4] (to x^15 and x^16: the next terms are below 1e-16 of them). */
static inline void sf_cos_sin_turn(double u, double *c, double *s) {
    const double t = 4.0 * u, shifted = t + 6755399441055744.0; /* 1.5 * 2^52: rounds t to an integer */
    const double q = shifted - 6755399441055744.0, x = (t - q) * 1.5707963267948966, x2 = x * x;
    const uint64_t quarter = sf_bits_of_double(shifted) & 3;
    double sp = -1.0 / 1307674368000;
    sp = sp * x2 + 1.0 / 6227020800;
    sp = sp * x2 - 1.0 / 39916800;
    sp = sp * x2 + 1.0 / 362880;
    sp = sp * x2 - 1.0 / 5040;
    sp = sp * x2 + 1.0 / 120;
    sp = sp * x2 - 1.0 / 6;
    const double sx = x + x * (x2 * sp);
    double cp = 1.0 / 20922789888000;
    cp = cp * x2 - 1.0 / 87178291200;
    cp = cp * x2 + 1.0 / 479001600;
    cp = cp * x2 - 1.0 / 3628800;
    cp = cp * x2 + 1.0 / 40320;
    cp = cp * x2 - 1.0 / 720;
    cp = cp * x2 + 1.0 / 24;
    cp = cp * x2 - 0.5;
    const double cx = 1.0 + x2 * cp;
    /* angle q pi/2 + x: q = 1 swaps (cos, sin) -> (-sin, cos), q = 2 negates both */
    const double a = quarter & 1 ? sx : cx, b = quarter & 1 ? cx : sx;
    *c = (quarter + 1) & 2 ? -a : a;
    *s = quarter & 2 ? -b : b;
}

/* z (2n) = the standard normals of pairs first .. first + n - 1 of a stream: (z[2p], z[2p+1]) =
 * r (cos, sin) of 2 pi u2, r = sqrt(-2 log u1), with u1 in (0, 1) and u2 in [0, 1) from counters
 * 2 pair and 2 pair + 1 (53 random bits each). Elements 2 pair and 2 pair + 1 of a stream. */
static inline void sf_normal_pairs(uint64_t key, uint64_t first, long n, double *z) {
#pragma omp simd
    for (long p = 0; p < n; p++) {
        const uint64_t pair = first + (uint64_t)p;
        const double u1 = (sf_double_of_u53(sf_rand64(key, 2 * pair) >> 11) + 0.5) * 0x1.0p-53;
        const double u2 = sf_double_of_u53(sf_rand64(key, 2 * pair + 1) >> 11) * 0x1.0p-53;
        const double r = sqrt(-2.0 * sf_log_series(u1));
        double c, s;
        sf_cos_sin_turn(u2, &c, &s);
        z[2 * p] = r * c;
        z[2 * p + 1] = r * s;
    }
}

/* Uniform integer in [0, n) (n > 0), unbiased by rejection on a fixed counter sequence. */
static inline uint64_t sf_below(uint64_t key, uint64_t counter, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    for (uint64_t k = 0;; k++) {
        uint64_t r = sf_rand64(key, counter * 0x10001ULL + k);
        if (r < limit) return r % n;
    }
}

#endif
