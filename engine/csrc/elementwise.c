/* The decoder layer's elementwise work, one pass each, float32 (torch runs each as several
 * eager ops, every one a full pass over memory):
 *   RMSNorm     out = w * (x * 1/sqrt(mean(x^2) + eps))            (HF's order)
 *   SiLU-gate   out = silu(gate) * up, from the fused [gate | up] projection
 *   RoPE        out = x * cos + rotate_half(x) * sin, queries and keys in one call
 * Rows may be strided (a view into a fused projection's output); outputs are contiguous.
 * No -ffast-math: the arithmetic is what is written, in that order.
 */
#include <math.h>
#include <stdint.h>

#include "vec8.h"

void tandem_rms_norm(const float *x, int64_t x_stride, const float *w, int64_t rows, int64_t dim,
                     float eps, float *out) {
    for (int64_t r = 0; r < rows; ++r) {
        const float *xr = x + r * x_stride;
        float *o = out + r * dim;
        v8 acc = {0};
        int64_t d = 0;
        for (; d + 8 <= dim; d += 8) {
            const v8 v = ld(xr + d);
            acc += v * v;
        }
        float ss = hsum(acc);
        for (; d < dim; ++d) ss += xr[d] * xr[d];
        const float inv = 1.0f / sqrtf(ss / (float)dim + eps);
        for (d = 0; d < dim; ++d) o[d] = w[d] * (xr[d] * inv);
    }
}

/* silu(g) * u with silu(g) = g * sigmoid(g), sigmoid from e = exp(-|g|) (never overflows). */
static inline v8 silu_mul8(v8 g, v8 u) {
    const v8i sign = {INT32_MIN, INT32_MIN, INT32_MIN, INT32_MIN, INT32_MIN, INT32_MIN, INT32_MIN, INT32_MIN};
    const v8 e = exp8_nonpos((v8)((v8i)g | sign));            /* exp(-|g|) */
    const v8 one = e * 0.0f + 1.0f;
    const v8i pos = g >= 0.0f;
    const v8 sig = (v8)((pos & (v8i)(one / (one + e))) | (~pos & (v8i)(e / (one + e))));
    return g * sig * u;
}

void tandem_silu_mul(const float *gate_up, int64_t rows, int64_t inter, float *out) {
    for (int64_t r = 0; r < rows; ++r) {
        const float *g = gate_up + r * 2 * inter, *u = g + inter;
        float *o = out + r * inter;
        int64_t i = 0;
        for (; i + 8 <= inter; i += 8) st(o + i, silu_mul8(ld(g + i), ld(u + i)));
        if (i < inter) {
            float gt[8] = {0}, ut[8] = {0};
            for (int64_t j = 0; i + j < inter; ++j) { gt[j] = g[i + j]; ut[j] = u[i + j]; }
            const v8 t = silu_mul8(ld(gt), ld(ut));
            for (int64_t j = 0; i + j < inter; ++j) o[i + j] = t[j];
        }
    }
}

/* x: [n, heads, dim] with row stride x_stride (floats between tokens); cos, sin: [n, dim]. */
void tandem_rope(const float *x, int64_t x_stride, const float *cos_t, const float *sin_t,
                 int64_t n, int64_t heads, int64_t dim, float *out) {
    const int64_t half = dim / 2;
    for (int64_t t = 0; t < n; ++t) {
        const float *c = cos_t + t * dim, *s = sin_t + t * dim;
        for (int64_t h = 0; h < heads; ++h) {
            const float *xh = x + t * x_stride + h * dim;
            float *o = out + (t * heads + h) * dim;
            for (int64_t d = 0; d < half; ++d) o[d] = xh[d] * c[d] + (-xh[d + half]) * s[d];
            for (int64_t d = half; d < dim; ++d) o[d] = xh[d] * c[d] + xh[d - half] * s[d];
        }
    }
}
