/* The precision and CPU path of a numeric translation unit: setup.py compiles each numeric source
 * once per precision, SF_DOUBLE=0 (float) or 1 (double), and CPU path, SF_CPU_PATH=0 (baseline),
 * 1 (x86-64-v3) or 2 (x86-64-v4); SF(name) gives every symbol the suffix of both, e.g. name_f32_v3. */
#ifndef SF_REAL_H
#define SF_REAL_H

#include <math.h>

#if SF_DOUBLE
typedef double real;
#define R(x) x
#define rexp exp
#define rerf erf
#define rtanh tanh
#define rsqrt sqrt
#define rfabs fabs
#else
typedef float real;
#define R(x) x##f
#define rexp expf
#define rerf erff
#define rtanh tanhf
#define rsqrt sqrtf
#define rfabs fabsf
#endif

#ifndef SF_CPU_PATH
#define SF_CPU_PATH 0
#endif
#define SF_CAT3_(a, b, c) a##b##c
#define SF_CAT3(a, b, c) SF_CAT3_(a, b, c)
#if SF_DOUBLE
#define SF_PRECISION_SUFFIX _f64
#else
#define SF_PRECISION_SUFFIX _f32
#endif
#if SF_CPU_PATH == 2
#define SF_PATH_SUFFIX _v4
#elif SF_CPU_PATH == 1
#define SF_PATH_SUFFIX _v3
#else
#define SF_PATH_SUFFIX _base
#endif
#define SF(name) SF_CAT3(name, SF_PRECISION_SUFFIX, SF_PATH_SUFFIX)

#endif
