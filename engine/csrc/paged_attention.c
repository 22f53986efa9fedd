/* Decode attention over a paged KV cache, read in place (no gather, no padding).
 *
 * One query token per sequence. Each sequence's cached keys are read once, block by block,
 * and scored against every query head (a GQA group shares its KV head); then the values are
 * read once and summed with the softmax weights. Softmax is max-shifted, float32 throughout.
 *
 * Layouts (float32 and int64, contiguous):
 *   q, out           [B, Hq, D]
 *   k_cache, v_cache [num_slots, Hkv, D]; token t of sequence b lives in slot
 *                    block_tables[b, t / block_size] * block_size + t % block_size
 *   block_tables     [B, max_blocks];  seq_lens [B] (keys attended by each sequence)
 *   scratch          Hq * (max(seq_lens) + D) floats
 * The inner loops use GCC vector extensions, 8 floats wide (AVX/AVX-512 or SSE pairs under
 * -march=native), with explicit independent accumulators; head_dim must be a multiple of 8.
 * No -ffast-math: the arithmetic is what is written, in that order.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "vec8.h"

/* Softmax of len scores in place (max-shifted); the tail is padded into one 8-lane pass. */
static void softmax(float *s, int64_t len) {
    float m = -INFINITY, sum = 0.0f;
    for (int64_t t = 0; t < len; ++t) m = s[t] > m ? s[t] : m;
    v8 vsum = {0};
    int64_t t = 0;
    for (; t + 8 <= len; t += 8) {
        const v8 e = exp8_nonpos(ld(s + t) - m);
        st(s + t, e);
        vsum += e;
    }
    if (t < len) {
        float tail[8] = {0};
        for (int64_t i = 0; t + i < len; ++i) tail[i] = s[t + i] - m;
        const v8 e = exp8_nonpos(ld(tail));
        for (int64_t i = 0; t + i < len; ++i) { s[t + i] = e[i]; sum += e[i]; }
    }
    sum += hsum(vsum);
    const float inv = 1.0f / sum;
    for (t = 0; t < len; ++t) s[t] *= inv;
}

/* Blocks sit anywhere in the cache, so the hardware prefetcher loses the stream at every
 * block (and 4 KiB page) boundary: fetch the next block while working on this one. */
static inline void prefetch_rows(const float *next, int64_t i, int64_t rows, int64_t row) {
    if (!next) return;
    const char *p = (const char *)(next + i * row), *end = (const char *)(next + (i + rows) * row);
    for (; p < end; p += 64) __builtin_prefetch(p, 0, 3);
}

/* scores[hq, t] = scale * q[hq] . k[t, hq / G] for the n tokens of one block. */
static void score_block(const float *qb, const float *kb, const float *next, int64_t n, int64_t H,
                        int64_t G, int64_t D, int64_t row, float scale, float *scores, int64_t len) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        prefetch_rows(next, i, 4, row);
        for (int64_t hq = 0; hq < H; ++hq) {
            const float *qh = qb + hq * D, *k0 = kb + i * row + (hq / G) * D;
            const float *k1 = k0 + row, *k2 = k1 + row, *k3 = k2 + row;
            v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            for (int64_t d = 0; d < D; d += 8) {
                const v8 qv = ld(qh + d);
                a0 += qv * ld(k0 + d);
                a1 += qv * ld(k1 + d);
                a2 += qv * ld(k2 + d);
                a3 += qv * ld(k3 + d);
            }
            float *s = scores + hq * len + i;
            s[0] = hsum(a0) * scale; s[1] = hsum(a1) * scale;
            s[2] = hsum(a2) * scale; s[3] = hsum(a3) * scale;
        }
    }
    for (; i < n; ++i) {
        for (int64_t hq = 0; hq < H; ++hq) {
            const float *qh = qb + hq * D, *k = kb + i * row + (hq / G) * D;
            v8 a = {0};
            for (int64_t d = 0; d < D; d += 8) a += ld(qh + d) * ld(k + d);
            scores[hq * len + i] = hsum(a) * scale;
        }
    }
}

/* acc[hq] += sum over the block's n tokens of p[hq, t] * v[t, hq / G]. */
static void mix_block(const float *vb, const float *next, int64_t n, int64_t H, int64_t G, int64_t D,
                      int64_t row, const float *probs, int64_t len, float *acc) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        prefetch_rows(next, i, 4, row);
        for (int64_t hq = 0; hq < H; ++hq) {
            const float *p = probs + hq * len + i, *v0 = vb + i * row + (hq / G) * D;
            const float *v1 = v0 + row, *v2 = v1 + row, *v3 = v2 + row;
            const float p0 = p[0], p1 = p[1], p2 = p[2], p3 = p[3];
            float *a = acc + hq * D;
            for (int64_t d = 0; d < D; d += 8)
                st(a + d, ld(a + d) + ((p0 * ld(v0 + d) + p1 * ld(v1 + d)) +
                                       (p2 * ld(v2 + d) + p3 * ld(v3 + d))));
        }
    }
    for (; i < n; ++i) {
        for (int64_t hq = 0; hq < H; ++hq) {
            const float p = probs[hq * len + i], *v = vb + i * row + (hq / G) * D;
            float *a = acc + hq * D;
            for (int64_t d = 0; d < D; d += 8) st(a + d, ld(a + d) + p * ld(v + d));
        }
    }
}

int tandem_paged_decode_attention(
        const float *q, const float *k_cache, const float *v_cache,
        const int64_t *block_tables, const int64_t *seq_lens,
        int64_t batch, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
        int64_t max_blocks, int64_t block_size, float scale, float *scratch, float *out) {
    const int64_t G = num_heads / num_kv_heads, D = head_dim, H = num_heads;
    const int64_t row = num_kv_heads * D;            /* floats per cached token */
    if (D % 8 != 0 || num_heads % num_kv_heads != 0) return -1;
    for (int64_t b = 0; b < batch; ++b) {
        const int64_t len = seq_lens[b];
        const int64_t *table = block_tables + b * max_blocks;
        const float *qb = q + b * H * D;
        float *scores = scratch;             /* [H, len] */
        float *acc = scores + H * len;       /* [H, D]   */
        for (int64_t t0 = 0; t0 < len; t0 += block_size) {
            const int64_t n = len - t0 < block_size ? len - t0 : block_size;
            const int64_t j = t0 / block_size, last = (len - 1) / block_size;
            score_block(qb, k_cache + table[j] * block_size * row,
                        j < last ? k_cache + table[j + 1] * block_size * row : NULL, n, H, G, D, row,
                        scale, scores + t0, len);
        }
        for (int64_t hq = 0; hq < H; ++hq) softmax(scores + hq * len, len);
        memset(acc, 0, (size_t)(H * D) * sizeof(float));
        for (int64_t t0 = 0; t0 < len; t0 += block_size) {
            const int64_t n = len - t0 < block_size ? len - t0 : block_size;
            const int64_t j = t0 / block_size, last = (len - 1) / block_size;
            mix_block(v_cache + table[j] * block_size * row,
                      j < last ? v_cache + table[j + 1] * block_size * row : NULL, n, H, G, D, row,
                      scores + t0, len, acc);
        }
        memcpy(out + b * H * D, acc, (size_t)(H * D) * sizeof(float));
    }
    return 0;
}
