/* A branch-free exp that the compiler can vectorise (libm's expf is a scalar call, which made
 * the softmax ~40% of a long-sequence forward). float: Cephes' expf scheme (round x/ln2 with
 * the 1.5*2^23 trick, two-part ln2 reduction, degree-6 polynomial; relative error ~1e-7, i.e.
 * 1-2 ulp). Arguments are clamped to [-87, 88], so tiny results are ~1e-38 rather than denormal
 * or 0: harmless next to the softmax's largest term, which is 1. double keeps libm's exp (the
 * float64 build is the accuracy reference, not the fast path). */
#ifndef SF_VEXP_H
#define SF_VEXP_H

#include <stdint.h>

#include "real.h"

#if SF_DOUBLE
static inline real vexp(real x) { return exp(x); }
#else
static inline real vexp(real x) {
    x = x < -87.0f ? -87.0f : x; /* maxps/minps patterns that keep a NaN (x < c is false) */
    x = x > 88.0f ? 88.0f : x;
    const float shifted = x * 1.44269504088896341f + 12582912.0f, n = shifted - 12582912.0f; /* nearest integer */
    const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;           /* x - n ln2, in two parts */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    /* 2^n from shifted's bits, whose mantissa holds 1.5 * 2^23 + n exactly: no float-to-int
     * conversion (nor its NaN guard); a NaN x has a NaN p, so the result is NaN whatever these
     * bits. Bit for bit the former (int32_t)n + 127 form on all 2^32 inputs, vector and scalar. */
    const union { float f; uint32_t i; } bits = {shifted};
    const union { uint32_t i; float f; } two_n = {(bits.i - (0x4B400000u - 127u)) << 23};
    return p * two_n.f;
}
#endif

#endif
