/* 8- and 16-wide float vectors (GCC vector extensions: AVX/AVX-512 or SSE pairs under
 * -march=native) and the small helpers the kernels share. */
#ifndef TANDEM_VEC8_H
#define TANDEM_VEC8_H

#include <stdint.h>

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias));
static inline v8 ld(const float *p) { return *(const v8u *)p; }
static inline void st(float *p, v8 x) { *(v8u *)p = x; }
static inline float hsum(v8 x) {
    return ((x[0] + x[4]) + (x[1] + x[5])) + ((x[2] + x[6]) + (x[3] + x[7]));
}

typedef int32_t v8i __attribute__((vector_size(32)));

/* The same, 16 lanes (one AVX-512 register; a pair of AVX2 ones elsewhere). */
typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4), may_alias));
typedef int32_t v16i __attribute__((vector_size(64)));
static inline v16 ld16(const float *p) { return *(const v16u *)p; }
static inline void st16(float *p, v16 x) { *(v16u *)p = x; }
static inline v16 max16(v16 a, v16 b) {
    const v16i gt = a > b;
    return (v16)((gt & (v16i)a) | (~gt & (v16i)b));
}

/* exp(x) for x <= 0 (scores minus their max), 8 or 16 lanes: x = n ln2 + r with
 * n = round(x / ln2), e^r by a degree-6 polynomial (Cephes' expf coefficients), times 2^n
 * built in the exponent bits. Relative error ~2e-7 (about 1 ulp); below -87 it returns e^-87
 * (~1.6e-38). */
#define TANDEM_EXP_NONPOS(name, V, VI)                                                         \
static inline V name(V x) {                                                                    \
    const V lo = (V){0} - 87.f;                                                                \
    const VI small = x < lo;                                                                   \
    x = (V)((small & (VI)lo) | (~small & (VI)x));                                              \
    const VI ni = __builtin_convertvector(x * 1.44269504088896341f - 0.5f, VI); /* x <= 0 */  \
    const V n = __builtin_convertvector(ni, V);                                                \
    const V r = x - n * 0.693359375f + n * 2.12194440e-4f;                                     \
    V p = r * 1.9875691500e-4f + 1.3981999507e-3f;                                             \
    p = p * r + 8.3334519073e-3f;                                                              \
    p = p * r + 4.1665795894e-2f;                                                              \
    p = p * r + 1.6666665459e-1f;                                                              \
    p = p * r + 5.0000001201e-1f;                                                              \
    p = p * r * r + r + 1.0f;                                                                  \
    return p * (V)((ni + 127) << 23);                                                          \
}
TANDEM_EXP_NONPOS(exp8_nonpos, v8, v8i)
TANDEM_EXP_NONPOS(exp16_nonpos, v16, v16i)

#endif
