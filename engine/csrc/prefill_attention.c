/* Prefill attention: one sequence's chunk of queries over its keys, read in place.
 *
 * Query i of the chunk sits at position pos0 + i (pos0 = kv_len - n_q: the tokens cached
 * before the chunk) and attends to keys 0..pos0 + i. That one rule covers a causal prompt
 * (pos0 = 0), a chunk of a chunked prefill and a prompt after a cached prefix; no mask is
 * built. Keys and values are read where they sit in the paged cache, through the block table
 * or from consecutive slots: no gather.
 *
 * Per KV head, the keys are transposed once into scratch (panels of 32 keys x D); then every query
 * head of the group is processed four queries at a time: scores for the four rows against
 * all the keys the last of them may see (a 4 x 32 register tile, the query broadcast, 32
 * keys in two 16-lane vectors), an exact max-shifted softmax per row over its own keys, and
 * the weighted sum of value rows (a 4 x D register tile). The scores of four rows stay in
 * L1/L2 (4 x kv_pad floats), so the softmax costs one pass that the cache absorbs, where
 * torch's CPU flash attention rescales a running sum block by block.
 *
 * Layouts (float32 / int64, contiguous rows):
 *   q, out           [n_q, Hq, D] (q rows q_stride floats apart)
 *   k_cache, v_cache [num_slots, Hkv, D]; key t lives in slot
 *                    block_table[t / block_size] * block_size + t % block_size,
 *                    or slot_start + t when block_table is NULL
 *   scratch          (D + 6) * kv_pad + 4 * D floats, kv_pad = kv_len rounded up to 32
 * Softmax is max-shifted, arithmetic float32 in the order written (no -ffast-math). head_dim
 * must be a multiple of 8 (64 and 128 have register-tiled value sums; others a plain loop).
 */
#include <math.h>
#include <stdint.h>

#include "vec8.h"

#define ROWS 4

/* s[r][0..n) = qs[r] . key for r < ROWS, n a multiple of 32; kt holds the keys in panels of
 * 32: key t's element d at kt[(t / 32) * D * 32 + d * 32 + t % 32] (zero past kv_len). */
static void scores_tile(const float *qs, const float *kt, int64_t kv_pad, int64_t D, int64_t n,
                        float *s) {
    for (int64_t j = 0; j < n; j += 32) {
        v16 a00 = {0}, a01 = {0}, a10 = {0}, a11 = {0}, a20 = {0}, a21 = {0}, a30 = {0}, a31 = {0};
        const float *k = kt + j * D;
        for (int64_t d = 0; d < D; ++d, k += 32) {
            const v16 k0 = ld16(k), k1 = ld16(k + 16);
            const float q0 = qs[d], q1 = qs[D + d], q2 = qs[2 * D + d], q3 = qs[3 * D + d];
            a00 += q0 * k0; a01 += q0 * k1;
            a10 += q1 * k0; a11 += q1 * k1;
            a20 += q2 * k0; a21 += q2 * k1;
            a30 += q3 * k0; a31 += q3 * k1;
        }
        st16(s + j, a00); st16(s + j + 16, a01);
        st16(s + kv_pad + j, a10); st16(s + kv_pad + j + 16, a11);
        st16(s + 2 * kv_pad + j, a20); st16(s + 2 * kv_pad + j + 16, a21);
        st16(s + 3 * kv_pad + j, a30); st16(s + 3 * kv_pad + j + 16, a31);
    }
}

/* Row s[0..len) -> exp(s - max) in place, s[len..n) -> 0; returns 1 / sum. */
static float softmax_row(float *s, int64_t len, int64_t n) {
    v16 vm = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY,
              -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    float m = -INFINITY;
    int64_t t = 0;
    for (; t + 16 <= len; t += 16) vm = max16(vm, ld16(s + t));
    for (int64_t i = 0; i < 16; ++i) m = vm[i] > m ? vm[i] : m;
    for (; t < len; ++t) m = s[t] > m ? s[t] : m;
    v16 vsum = {0};
    float sum = 0.0f;
    for (t = 0; t + 16 <= len; t += 16) {
        const v16 e = exp16_nonpos(ld16(s + t) - m);
        st16(s + t, e);
        vsum += e;
    }
    if (t < len) {
        float tail[16];
        for (int64_t i = 0; i < 16; ++i) tail[i] = t + i < len ? s[t + i] - m : -100.0f;
        const v16 e = exp16_nonpos(ld16(tail));
        for (int64_t i = 0; t + i < len; ++i) { s[t + i] = e[i]; sum += e[i]; }
        t = len;
    }
    for (; t < n; ++t) s[t] = 0.0f;
    for (int64_t i = 0; i < 16; ++i) sum += vsum[i];
    return 1.0f / sum;
}

/* out[r] = inv[r] * sum_{t < n} p[r][t] * V(t), ROWS rows, D = 16 * NV (NV constant). */
#define DEFINE_MIX(NV)                                                                           \
static void mix_##NV(const float *p, int64_t kv_pad, int64_t n, const float *v_head,           \
                     const int64_t *at, const float *inv, float *const *outs) {                  \
    v16 acc[ROWS][NV];                                                                           \
    for (int r = 0; r < ROWS; ++r)                                                               \
        for (int c = 0; c < NV; ++c) acc[r][c] = (v16){0};                                       \
    for (int64_t t = 0; t < n; ++t) {                                                            \
        const float *v = v_head + at[t];                                                         \
        v16 vv[NV];                                                                              \
        for (int c = 0; c < NV; ++c) vv[c] = ld16(v + 16 * c);                                   \
        for (int r = 0; r < ROWS; ++r) {                                                         \
            const float pr = p[r * kv_pad + t];                                                  \
            for (int c = 0; c < NV; ++c) acc[r][c] += pr * vv[c];                                \
        }                                                                                        \
    }                                                                                            \
    for (int r = 0; r < ROWS; ++r)                                                               \
        if (outs[r])                                                                             \
            for (int c = 0; c < NV; ++c) st16(outs[r] + 16 * c, acc[r][c] * inv[r]);             \
}
DEFINE_MIX(4)
DEFINE_MIX(8)

static void mix_any(const float *p, int64_t kv_pad, int64_t n, const float *v_head,
                    const int64_t *at, int64_t D, const float *inv, float *const *outs) {
    for (int r = 0; r < ROWS; ++r) {
        if (!outs[r]) continue;
        for (int64_t c = 0; c < D; c += 8) {
            v8 acc = {0};
            for (int64_t t = 0; t < n; ++t)
                acc += p[r * kv_pad + t] * ld(v_head + at[t] + c);
            st(outs[r] + c, acc * inv[r]);
        }
    }
}

int tandem_prefill_attention(
        const float *q, int64_t q_stride, const float *k_cache, const float *v_cache,
        const int64_t *block_table, int64_t slot_start, int64_t n_q, int64_t kv_len,
        int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, int64_t block_size,
        float scale, float *scratch, float *out) {
    const int64_t D = head_dim, H = num_heads, G = num_heads / num_kv_heads;
    const int64_t row = num_kv_heads * D, pos0 = kv_len - n_q;
    const int64_t kv_pad = (kv_len + 31) / 32 * 32;
    if (D % 8 != 0 || num_heads % num_kv_heads != 0 || n_q < 1 || pos0 < 0) return -1;
    int64_t *at = (int64_t *)scratch;           /* offset of key t's row in the cache */
    float *kt = scratch + 2 * kv_pad, *s = kt + D * kv_pad, *qs = s + ROWS * kv_pad;
    for (int64_t t = 0; t < kv_len; ++t)
        at[t] = (block_table ? block_table[t / block_size] * block_size + t % block_size
                             : slot_start + t) * row;
    for (int64_t hk = 0; hk < num_kv_heads; ++hk) {
        const float *k_head = k_cache + hk * D, *v_head = v_cache + hk * D;
        for (int64_t t = 0; t < kv_pad; ++t) {
            float *panel = kt + (t / 32) * D * 32 + t % 32;
            if (t < kv_len)
                for (int64_t d = 0; d < D; ++d) panel[d * 32] = k_head[at[t] + d];
            else
                for (int64_t d = 0; d < D; ++d) panel[d * 32] = 0.0f;
        }
        for (int64_t h = hk * G; h < (hk + 1) * G; ++h) {
            for (int64_t i0 = 0; i0 < n_q; i0 += ROWS) {
                const int64_t rows = n_q - i0 < ROWS ? n_q - i0 : ROWS;
                float *outs[ROWS] = {0};
                float inv[ROWS] = {0};
                for (int64_t r = 0; r < ROWS; ++r) {
                    const float *qr = q + (i0 + (r < rows ? r : 0)) * q_stride + h * D;
                    for (int64_t d = 0; d < D; ++d) qs[r * D + d] = qr[d] * scale;
                }
                const int64_t keys = pos0 + i0 + rows;          /* what the last row sees */
                const int64_t n = (keys + 31) / 32 * 32;
                scores_tile(qs, kt, kv_pad, D, n, s);
                for (int64_t r = 0; r < ROWS; ++r) {
                    const int64_t len = r < rows ? pos0 + i0 + r + 1 : keys;
                    inv[r] = softmax_row(s + r * kv_pad, len, keys);
                    if (r < rows) outs[r] = out + (i0 + r) * H * D + h * D;
                }
                if (D == 64)
                    mix_4(s, kv_pad, keys, v_head, at, inv, outs);
                else if (D == 128)
                    mix_8(s, kv_pad, keys, v_head, at, inv, outs);
                else
                    mix_any(s, kv_pad, keys, v_head, at, D, inv, outs);
            }
        }
    }
    return 0;
}
