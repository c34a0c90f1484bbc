/* The precision of a numeric translation unit: setup.py compiles each numeric source twice,
 * with SF_DOUBLE=0 (float, suffix _f32) and SF_DOUBLE=1 (double, suffix _f64). */
#ifndef SF_REAL_H
#define SF_REAL_H

#include <math.h>

#if SF_DOUBLE
typedef double real;
#define SF(name) name##_f64
#define R(x) x
#define rexp exp
#define rerf erf
#define rtanh tanh
#define rsqrt sqrt
#define rfabs fabs
#else
typedef float real;
#define SF(name) name##_f32
#define R(x) x##f
#define rexp expf
#define rerf erff
#define rtanh tanhf
#define rsqrt sqrtf
#define rfabs fabsf
#endif

#endif
