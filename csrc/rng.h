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

/* Two independent standard normals by Box-Muller (cosine and sine of one angle) on two counter-derived
 * uniforms: (z[0], z[1]) for elements 2 * pair and 2 * pair + 1 of a stream. */
static inline void sf_normal_pair(uint64_t key, uint64_t pair, double z[2]) {
    const double u1 = ((double)(sf_rand64(key, 2 * pair) >> 11) + 0.5) * 0x1.0p-53; /* (0,1) */
    const double u2 = sf_uniform(key, 2 * pair + 1), r = sqrt(-2.0 * log(u1)), a = 6.283185307179586476925 * u2;
    z[0] = r * cos(a), z[1] = r * sin(a);
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
